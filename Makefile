# Two commands for a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# The development environment: the package itself (editable) with every published
# extra, plus the exact pins and tools of requirements/ (torch==2.13.0 among them).
EXTRAS   := torch,report,lab,keras,lightning,huggingface
DEV_REQS := requirements/dev.txt requirements/bench.txt

# `make test-oldest`: a separate venv with the oldest declared framework releases.
OLDEST_VENV  := build/venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed
OLDEST_TESTS := tests/test_keras.py tests/test_lightning.py tests/test_huggingface.py \
                tests/test_detectors.py tests/test_monitor_api.py

.PHONY: demo test lint typecheck pytest venv sysdeps docs dist test-oldest test-kernels clean

$(STAMP): pyproject.toml $(DEV_REQS)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(addprefix -r ,$(DEV_REQS)) -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests need (headless Chromium for the report test).
sysdeps:
	@bash scripts/sysdeps.sh

demo: $(STAMP)
	$(BIN)/gradvitals demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) sysdeps
	$(BIN)/pytest -q

test: lint typecheck pytest

# The API reference, from the docstrings (offline), into site/.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

# The wheel and the sdist, into dist/.
dist: $(STAMP)
	$(BIN)/python -m build --no-isolation --outdir dist .

$(OLDEST_STAMP): pyproject.toml requirements/oldest.txt
	rm -rf $(OLDEST_VENV)
	$(PY) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/pip install -q -r requirements/oldest.txt
	touch $(OLDEST_STAMP)

# The end-to-end (slow) tests again on two other CPU kernel paths: AVX2 (many AMD
# machines) and the portable scalar default. A test that asserts one seeded trajectory
# fails here instead of on a user's machine. x86-64 only; about 3 min on 2 cores.
test-kernels: $(STAMP)
	@if [ "$$(uname -m)" = x86_64 ]; then \
	  for cap in avx2 default; do \
	    echo "== ATEN_CPU_CAPABILITY=$$cap"; \
	    ATEN_CPU_CAPABILITY=$$cap $(BIN)/pytest -q -m slow -p no:cacheprovider || exit 1; \
	  done; \
	else echo "test-kernels: not an x86-64 machine, nothing to do"; fi

# The framework tests against the oldest releases the extras admit (requirements/oldest.txt).
# USE_TF=0: transformers before 5 would load its TensorFlow side, which refuses Keras 3.
test-oldest: $(OLDEST_STAMP)
	USE_TF=0 PYTHONPATH=src $(OLDEST_VENV)/bin/python -m pytest -q -p no:cacheprovider \
	  -o addopts="-ra --strict-markers" $(OLDEST_TESTS)

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .pytest_cache .mypy_cache .ruff_cache site dist
