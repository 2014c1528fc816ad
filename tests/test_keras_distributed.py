"""Keras under ``tf.distribute.MirroredStrategy``: watched the whole time, in step.

TensorFlow fixes its logical devices at first use, so the run happens in a fresh
process with two logical CPUs (the suite's strict mode is inherited: an internal error
there raises instead of passing silently).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

SCRIPT = textwrap.dedent(
    """
    import json, warnings
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np, keras
    from gradvitals.keras import VitalsCallback

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.random((256, 8)).astype("float32")
    y = (x.sum(1) > 4).astype("int32")
    out = {}
    for name, bias in (("healthy", 0.0), ("dead", -50.0)):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = keras.Sequential([
                keras.Input((8,)),
                keras.layers.Dense(16, activation="relu", name="hidden",
                                   bias_initializer=keras.initializers.Constant(bias)),
                keras.layers.BatchNormalization(),
                keras.layers.Dense(2, name="out"),
            ])
            model.compile(keras.optimizers.SGD(0.01),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        cb = VitalsCallback(probe=(x[:128], y[:128]), every=4, console=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
        out[name] = {
            "findings": [(f.kind.value, f.layer) for f in cb.findings],
            "windows": len(cb.history),
            "disabled": cb.disabled,
            "sites": sorted({s for r in cb.history for s in r.sites}),
            "warnings": [str(w.message) for w in caught if "gradvitals" in str(w.message)],
        }
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_is_watched_and_finds_dead_units() -> None:
    env = dict(os.environ, GRADVITALS_STRICT="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, proc.stderr[-2000:]
    import json

    out = json.loads(line.removeprefix("RESULT"))
    for name in ("healthy", "dead"):
        assert not out[name]["disabled"] and not out[name]["warnings"]
        assert out[name]["windows"] >= 4 and out[name]["sites"] == ["hidden"]
    assert out["healthy"]["findings"] == []
    assert ["dying_relu", "hidden"] in out["dead"]["findings"]
