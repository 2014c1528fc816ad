"""The HTML report, the ``gradvitals report`` command and its errors, console text."""

from __future__ import annotations

import html
import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")
pytest.importorskip("matplotlib")

from gradvitals import FailureMode, Finding, remedies_for
from gradvitals.cli import main
from gradvitals.errors import GradvitalsError
from gradvitals.report import (
    TensorBoardSink,
    format_finding,
    read_run,
    summary_text,
    write_report,
)
from gradvitals.report._synthetic import synthetic_run
from gradvitals.stats import LayerStats, LossStats, SiteStats, WindowRecord

FAILURES = ["dying_relu", "vanishing_gradient", "exploding_gradient", "saturation", "nonfinite"]


def write_run(log_dir: Path, mode: str, *, repair: bool = False) -> list[Finding]:
    records, findings = synthetic_run(mode)
    with TensorBoardSink(log_dir, run_info={"mode": mode}) as sink:
        for r in records:
            sink.write_window(r, [f for f in findings if f.step == r.step])
        if repair and findings:
            f = findings[0]
            sink.write_repair(
                {
                    "step": f.step,
                    "action": f.remedies[0].key,
                    "reason": f.message,
                    "kind": f.kind.value,
                    "layer": f.layer,
                    "healthy_after": True,
                }
            )
        sink.write_final(findings)
    return findings


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, list[Finding]]]:
    out = {}
    for mode in ["healthy", *FAILURES]:
        d = tmp_path_factory.mktemp(mode)
        findings = write_run(d, mode, repair=mode == "dying_relu")
        out[mode] = (write_report(d).read_text(encoding="utf-8"), findings)
    return out


@pytest.mark.parametrize("mode", FAILURES)
def test_report_names_kind_layer_and_remedy(reports: dict, mode: str) -> None:
    page, findings = reports[mode]
    (f,) = findings
    assert "Not healthy: 1 failure found" in page
    assert f'<span class="kind">{mode}</span>' in page
    if f.layer:
        assert f"<code>{html.escape(f.layer)}</code>" in page
    first = f.remedies[0]
    assert f"What to do first: <strong>{html.escape(first.action)}</strong>" in page
    for r in f.remedies:
        assert html.escape(r.action) in page
        assert html.escape(r.code) in page
    assert html.escape(f.message) in page


def test_healthy_report_says_so(reports: dict) -> None:
    page, _ = reports["healthy"]
    assert "Healthy: No failures found" in page
    assert "No failures found in 12 windows (steps 10–120)" in page
    assert "No findings and no repairs." in page
    assert "What to do first" not in page


def test_report_sections_and_embedded_images(reports: dict) -> None:
    page, _ = reports["dying_relu"]
    for sec in ("summary", "heatmaps", "grad-norms", "timeline", "final-stats"):
        assert f'<section id="{sec}">' in page
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', page)
    assert len(images) == 5  # heat maps: dead units, grad norm, update ratio; norms; loss
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "Dead units heat map" in page and "gradient norms per layer" in page


def test_saturation_run_has_a_saturation_heatmap(reports: dict) -> None:
    page, _ = reports["saturation"]
    assert 'alt="Saturation heat map"' in page and 'alt="Dead units heat map"' not in page


def test_timeline_shows_repairs(reports: dict) -> None:
    page, _ = reports["dying_relu"]
    assert '<span class="kind repair">repair</span>' in page
    assert "Applied <code>lower_lr</code>" in page and "Healthy after." in page
    assert "1 repair</li>" not in page and "<strong>1</strong> repair (1 healthy after)" in page


def test_final_statistics_table(reports: dict) -> None:
    page, _ = reports["dying_relu"]
    table = page[page.index('<section id="final-stats">') :]
    for layer in ("net.0", "net.1", "net.2", "net.3", "net.4"):
        assert f"<code>{layer}</code>" in table
    assert "dead fraction" in table and "update ratio" in table and "dying_relu" in table


def test_hostile_layer_names_are_escaped(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    rec = WindowRecord(
        index=0,
        step_start=1,
        step_end=10,
        sites={
            evil: SiteStats(
                evil,
                "relu",
                units=2,
                n_examples=4,
                n_elements=8,
                n_zero=8,
                ever_positive=np.array([True, False]),
            )
        },
        layers={
            evil: LayerStats(evil, grad_norm=1.0, weight_norm=1.0, update_norm=0.001),
            "$x_1$": LayerStats("$x_1$", grad_norm=2.0, weight_norm=1.0, update_norm=0.001),
        },
    )
    rem = remedies_for(FailureMode.DYING_RELU)
    f = Finding(FailureMode.DYING_RELU, evil, 10, "<img src=x onerror=alert(2)> dead", remedies=rem)
    with TensorBoardSink(tmp_path, run_info={"<b>": "<i>"}) as sink:
        sink.write_window(rec, [f])
        sink.write_repair({"step": 10, "action": "<u>", "kind": "dying_relu", "layer": evil})
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "<b>" not in page and "<u>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script") == 0


def test_log_without_windows_is_not_called_healthy(tmp_path: Path) -> None:
    TensorBoardSink(tmp_path, run_info={"model": "mlp"}).close()  # crashed before the first sync
    run = read_run(tmp_path)
    assert run.steps() == [] and run.run_info["model"] == "mlp"
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "No statistics yet" in page and "Healthy" not in page


def test_cli_writes_report_and_prints_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "run", "vanishing_gradient")
    out = tmp_path / "out" / "page.html"
    assert main(["report", str(tmp_path / "run"), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert "vanishing_gradient" in out.read_text(encoding="utf-8")
    assert main(["report", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "report.html").exists()


def test_parent_dir_with_one_run_and_event_file_path(tmp_path: Path) -> None:
    write_run(tmp_path / "logs" / "run1", "healthy")
    assert read_run(tmp_path / "logs").log_dir == tmp_path / "logs" / "run1"
    (event,) = (tmp_path / "logs" / "run1").glob("events.out.tfevents.*")
    assert read_run(event).steps()[-1] == 120
    write_run(tmp_path / "logs" / "run2", "healthy")
    with pytest.raises(GradvitalsError, match="holds 2 runs, not one; pass one of them"):
        read_run(tmp_path / "logs")


def _valid_log(d: Path) -> Path:
    write_run(d, "dying_relu")
    (event,) = d.glob("events.out.tfevents.*")
    return event


def _missing(d: Path) -> Path:
    return d / "nope"


def _no_events(d: Path) -> Path:
    (d / "notes.txt").write_text("hi")
    return d


def _empty_file(d: Path) -> Path:
    (d / "events.out.tfevents.123.host").write_bytes(b"")
    return d


def _truncated(d: Path) -> Path:
    event = _valid_log(d)
    data = event.read_bytes()
    event.write_bytes(data[: len(data) - 30])
    return d


def _corrupt(d: Path) -> Path:
    event = _valid_log(d)
    data = bytearray(event.read_bytes())
    data[len(data) // 2] ^= 0xFF
    event.write_bytes(bytes(data))
    return d


def _not_tfrecord(d: Path) -> Path:
    (d / "events.out.tfevents.123.host").write_bytes(b"this is not a TFRecord file at all\n")
    return d


def _foreign(d: Path) -> Path:
    """A Keras-style log: other scalar tags, no gradvitals ones."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    with open(d / "events.out.tfevents.123.host", "wb") as fh:
        rw = RecordWriter(fh)
        for step in (1, 2):
            value = summary_pb2.Summary.Value(tag="epoch_loss", simple_value=0.5 / step)
            event = event_pb2.Event(step=step, summary=summary_pb2.Summary(value=[value]))
            rw.write(event.SerializeToString())
    return d


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, "does not exist"),
        (_no_events, "no TensorBoard event files"),
        (_empty_file, "is empty (0 bytes)"),
        (_truncated, "is truncated at byte"),
        (_corrupt, "is corrupt"),
        (_not_tfrecord, "is corrupt"),
        (_foreign, "no gradvitals statistics found in"),
    ],
)
def test_bad_logs_print_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:
    path = make(tmp_path)
    capsys.readouterr()
    assert main(["report", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gradvitals report: error: ")
    assert message in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_foreign_log_message_says_how_to_write_one(tmp_path: Path) -> None:
    with pytest.raises(
        GradvitalsError, match=r"was it written by gradvitals\.watch\(\.\.\., log_dir=\.\.\.\)\?"
    ):
        read_run(_foreign(tmp_path))


def test_format_finding() -> None:
    f = Finding(
        FailureMode.DYING_RELU,
        "net.3",
        120,
        "62% of units dead",
        remedies=remedies_for(FailureMode.DYING_RELU),
    )
    assert format_finding(f) == (
        "gradvitals: step 120 dying_relu in net.3: 62% of units dead. "
        "Try: Lower the learning rate (try 10x lower)"
    )
    g = Finding(FailureMode.NONFINITE, None, 5, "loss is NaN.", final=True)
    assert format_finding(g) == "gradvitals: step 5 nonfinite: loss is NaN. Could not repair."


def test_summary_text() -> None:
    assert summary_text([], history_len=1) == "gradvitals: healthy, no failures found in 1 window."
    records, findings = synthetic_run("exploding_gradient")
    sat = synthetic_run("saturation")[1]
    repairs = [
        {
            "step": 80,
            "action": "clip_grad_norm",
            "kind": "exploding_gradient",
            "layer": None,
            "reason": "norm 1e4",
            "healthy_after": False,
        }
    ]
    text = summary_text(sat + findings, history_len=len(records), repairs=repairs)
    lines = text.splitlines()
    assert lines[0] == "gradvitals: 2 failures found in 12 windows."
    # exploding outranks saturation: its first remedy comes first
    assert lines[1] == f"Do this first (exploding_gradient): {findings[0].remedies[0].action}"
    assert "    " + findings[0].remedies[0].code in lines
    assert any(line.startswith("1. step") and "saturation in net.3" in line for line in lines)
    assert "Repairs:" in lines
    assert (
        lines[-1]
        == "  step 80 clip_grad_norm for exploding_gradient: norm 1e4 (still failing after)"
    )


# -- the page tells the truth: NaN, window counts, labels, coverage, causes -------------


def site(name: str, dead_units: int, units: int = 4) -> SiteStats:
    ever = np.ones(units, bool)
    ever[:dead_units] = False
    return SiteStats(
        name, "relu", units=units, n_examples=8, n_elements=8 * units, n_zero=16, ever_positive=ever
    )


def window(w: int, *, nan: bool = False, dead: dict[str, int] | None = None) -> WindowRecord:
    """Window ``w`` (steps 10w+1..10w+10) of a 2-site net; ``nan``: loss and gradients NaN."""
    dead = dead or {}
    grad = float("nan") if nan else 0.5
    return WindowRecord(
        index=w,
        step_start=10 * w + 1,
        step_end=10 * (w + 1),
        sites={n: site(n, dead.get(n, 1)) for n in ("net.1", "net.3")},
        layers={
            n: LayerStats(n, grad_norm=grad, weight_norm=2.0, update_norm=0.002, n_samples=2)
            for n in ("net.0", "net.2")
        },
        loss=LossStats(sum=0.0 if nan else 10.0, count=10, n_nonfinite=10 if nan else 0),
    )


def write_records(d: Path, records: list[WindowRecord], findings: list[Finding], **info) -> Path:
    with TensorBoardSink(d, run_info=info) as sink:
        for r in records:
            sink.write_window(r, [f for f in findings if f.step == r.step])
        sink.write_final(findings)
    return write_report(d)


def nan_finding(step: int, sites: list[str], grads: tuple[str, ...] = ()) -> Finding:
    evidence = {"activation_layers": sites, "gradient_layers": list(grads), "loss_nonfinite": 10}
    return Finding(
        FailureMode.NONFINITE,
        sites[0] if sites else None,
        step,
        "NaN/Inf in the loss",
        evidence=evidence,
        remedies=remedies_for(FailureMode.NONFINITE),
    )


def image(page: str, alt: str) -> np.ndarray:
    """The RGB pixels of the figure ``alt`` embedded in ``page``."""
    import base64
    import io

    import matplotlib.image as mpimg

    (data,) = re.findall(rf'<img src="data:image/png;base64,([^"]+)" alt="{alt}">', page)
    return mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png")[..., :3]


def pink_pixels(img: np.ndarray) -> int:
    from gradvitals.report._plots import NAN_COLOR

    rgb = np.array([int(NAN_COLOR[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return int((np.abs(img - rgb).max(axis=2) < 0.02).sum())


def final_row(page: str, layer: str) -> str:
    table = page[page.index('<section id="final-stats">') :]
    start = table.index(f"<tr><td><code>{layer}</code></td>")
    return table[start : table.index("</tr>", start)]


def windows_in(page: str) -> int:
    (n,) = re.findall(r"<li><strong>(\d+)</strong> windows?</li>", page)
    return int(n)


def test_nan_activations_show_as_nan_not_dead(tmp_path: Path) -> None:
    """NaN is never positive: a site fed NaNs reads 100% dead. The page says NaN."""
    records = [window(w) for w in range(3)]
    # window 3: the loss turns NaN, net.1 is fed NaNs, net.3 (finite) really is all dead
    records.append(window(3, nan=True, dead={"net.1": 4, "net.3": 4}))
    records += [window(w, nan=True, dead={"net.1": 4, "net.3": 4}) for w in (4, 5)]
    findings = [nan_finding(40, ["net.1"], grads=("net.0",))]
    page = write_records(tmp_path, records, findings).read_text(encoding="utf-8")
    run = read_run(tmp_path)
    assert run.nonfinite_steps == [40, 50, 60]
    dead1, dead3 = run.scalars["dead_fraction/net.1"], run.scalars["dead_fraction/net.3"]
    assert [v for _, v in dead1[:3]] == [0.25, 0.25, 0.25]
    assert all(np.isnan(v) for _, v in dead1[3:])
    assert dead3[3] == (40, 1.0)  # finite and all dead where the finding names only net.1
    assert all(np.isnan(v) for _, v in dead3[4:])  # nothing finite in these windows at all
    row = final_row(page, "net.1")
    assert '<span class="nan">NaN</span>' in row and '<td class="num">1</td>' not in row
    assert pink_pixels(image(page, "Dead units heat map")) > 100
    assert "NaN/Inf</span> in <strong>3</strong> windows" in page
    # in a window whose data held NaN/Inf, the NaNs are written: every norm reads NaN there
    assert [s for s, v in run.scalars["grad_norm/net.0"] if np.isnan(v)] == [40, 50, 60]
    assert [s for s, v in run.scalars["grad_norm/net.2"] if np.isnan(v)] == [40, 50, 60]
    assert '<span class="nan">NaN</span>' in final_row(page, "net.0")
    assert pink_pixels(image(page, "Gradient norm heat map")) > 100


def test_all_dead_without_nans_stays_dead(tmp_path: Path) -> None:
    """The other direction: a truly dead layer in a finite run is 100% dead, not NaN."""
    records = [window(w, dead={"net.3": 4}) for w in range(4)]
    f = Finding(
        FailureMode.DYING_RELU,
        "net.3",
        40,
        "100% dead",
        remedies=remedies_for(FailureMode.DYING_RELU),
    )
    page = write_records(tmp_path, records, [f]).read_text(encoding="utf-8")
    assert read_run(tmp_path).nonfinite_steps == []
    assert '<td class="num">1</td>' in final_row(page, "net.3") and 'class="nan"' not in page
    assert pink_pixels(image(page, "Dead units heat map")) == 0


def test_nan_values_in_the_log_are_nan_not_missing(tmp_path: Path) -> None:
    """A writer that logs NaN itself (TensorBoard shows NaN): pink, "NaN", counted."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    TensorBoardSink(tmp_path, run_info={"model": "mlp"}).close()
    with open(tmp_path / "events.out.tfevents.9999999999.nan", "wb") as fh:
        rw = RecordWriter(fh)
        for step, g in ((10, 0.5), (20, float("nan")), (30, float("inf"))):
            values = [
                summary_pb2.Summary.Value(tag="grad_norm/fc", simple_value=g),
                summary_pb2.Summary.Value(tag="update_ratio/fc", simple_value=1e-3),
            ]
            rw.write(
                event_pb2.Event(
                    step=step, summary=summary_pb2.Summary(value=values)
                ).SerializeToString()
            )
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert windows_in(page) == 3
    assert '<span class="nan">Inf</span>' in final_row(page, "fc")
    assert "No findings, but NaN/Inf statistics" in page and "Healthy" not in page
    assert pink_pixels(image(page, "Gradient norm heat map")) > 100


def test_window_with_only_findings_is_counted(tmp_path: Path) -> None:
    """A window whose every statistic is NaN still carries its finding: the console
    (``summary_text``, what ``monitor.report()`` prints) and the page count it alike."""
    records = [window(0), window(1)]
    bare = WindowRecord(
        index=2, step_start=21, step_end=30, loss=LossStats(count=10, n_nonfinite=10)
    )
    records.append(bare)  # nothing finite to log: only the finding is written
    findings = [nan_finding(30, [])]
    page = write_records(tmp_path, records, findings).read_text(encoding="utf-8")
    console = summary_text(findings, history_len=len(records)).splitlines()[0]
    assert console == "gradvitals: 1 failure found in 3 windows."
    assert windows_in(page) == 3


def test_all_nan_windows_are_counted(tmp_path: Path) -> None:
    bare = [
        WindowRecord(
            index=w,
            step_start=10 * w + 1,
            step_end=10 * (w + 1),
            loss=LossStats(count=10, n_nonfinite=10),
        )
        for w in range(11)
    ]
    page = write_records(tmp_path, bare, [nan_finding(10, [])]).read_text(encoding="utf-8")
    assert windows_in(page) == 11


def test_torch_run_counts_the_windows_the_console_counts(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import gradvitals

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradvitals.watch(model, opt, every=10, log_dir=str(tmp_path), console=False) as monitor:
        for _ in range(45):  # ends inside a window: the flush adds a partial one
            loss = model(torch.randn(16, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            monitor.observe_loss(loss)
    n = len(monitor.history)
    assert f"in {n} windows" in monitor.report()
    assert windows_in(write_report(tmp_path).read_text(encoding="utf-8")) == n


def test_short_labels_keep_block_indices_and_stay_unique() -> None:
    from gradvitals.report._plots import short_labels

    names = [f"transformer.h.{i}.mlp.act" for i in range(12)] + ["transformer.ln_f"]
    labels, prefix = short_labels(names)
    assert prefix == "transformer."
    assert labels[3] == "h.3.mlp.act" and labels[11] == "h.11.mlp.act" and labels[-1] == "ln_f"
    assert len(set(labels)) == len(labels)
    long = [f"model.encoder.layers.{i}.self_attention.output.dense" for i in range(3)]
    labels, _ = short_labels([*long, "model.decoder.head"], limit=30)
    assert all(f".{i}" in lab and len(lab) <= 30 for i, lab in enumerate(labels[:3]))
    assert len(set(labels)) == 4
    # names that would shorten alike keep their full names
    twins = ["a.very_long_prefix_one.layer.out", "a.very_long_prefix_two.layer.out"]
    labels, _ = short_labels(twins, limit=12)
    assert len(set(labels)) == 2
    assert short_labels(["net.0", "net.2"])[0] == ["net.0", "net.2"]  # nothing to cut


def test_coverage_line_from_run_info_or_final_summary(tmp_path: Path) -> None:
    cov = {"sites_measured": 3, "sites_total": 5, "not_measured": {"attn.<sdpa>": "fused kernel"}}
    records, findings = synthetic_run("healthy", n_windows=2)
    page = write_records(tmp_path / "a", records, findings, coverage=cov).read_text(
        encoding="utf-8"
    )
    line = "activation sites: <strong>3 of 5</strong>; not measured: <code>attn.&lt;sdpa&gt;</code> (fused kernel)"
    assert line in page and page.index(line) < page.index('class="status')

    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    from gradvitals.report import _tags as T
    from gradvitals.report._tensorboard import _Protos

    write_records(tmp_path / "b", records, findings)  # no coverage: nothing said
    assert "activation sites" not in (tmp_path / "b" / "report.html").read_text(encoding="utf-8")
    text = _Protos().text(T.FINAL_JSON_TAG, json.dumps([{"coverage": cov}]))
    with open(tmp_path / "b" / "events.out.tfevents.9999999999.end", "wb") as fh:
        ev = event_pb2.Event(step=20, summary=summary_pb2.Summary(value=[text]))
        RecordWriter(fh).write(ev.SerializeToString())
    assert read_run(tmp_path / "b").coverage == cov
    assert line in write_report(tmp_path / "b").read_text(encoding="utf-8")


def test_findings_lead_with_their_cause(tmp_path: Path) -> None:
    from gradvitals import Cause

    records, _ = synthetic_run("exploding_gradient", n_windows=3)
    known = Finding(
        FailureMode.EXPLODING_GRADIENT,
        None,
        20,
        "norm 1e4",
        remedies=remedies_for(FailureMode.EXPLODING_GRADIENT),
        cause=Cause.LEARNING_RATE,
    )
    unknown = Finding(FailureMode.SATURATION, "net.3", 30, "90% saturated")
    page = write_records(tmp_path, records, [known, unknown]).read_text(encoding="utf-8")
    assert '<span class="cause">Cause: learning rate.</span> norm 1e4.' in page
    assert (
        'Most urgent: <strong>exploding_gradient</strong> at step 20: <span class="cause">' in page
    )
    assert page.count('class="cause"') == 2  # the summary and the timeline; none for unknown
    assert "Cause: unknown" not in page


# -- reading fast: C checksums, streaming, the template path --------------------------


def test_c_crc32c_matches_tensorboards() -> None:
    """Whatever CRC-32C is picked computes tensorboard's masked checksum."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    from gradvitals.report._records import crc_implementation, masked_crc32c

    rng = np.random.default_rng(0)
    for n in (0, 1, 8, 12, 1000, 70_000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == reference(data)
    assert crc_implementation()  # names what is used
    found = []
    for module, fn in (("google_crc32c", "value"), ("crc32c", "crc32c")):
        try:
            lib = importlib.import_module(module)
        except ImportError:
            continue  # either one is enough; the dev requirements install google-crc32c
        assert getattr(lib, fn)(b"123456789") == 0xE3069283  # the CRC-32C check value
        found.append(module)
    if not found:
        pytest.skip("no C CRC-32C installed (pip install google-crc32c)")
    c_available = "crc32c" in found or (
        importlib.import_module("google_crc32c").implementation == "c"
    )
    assert ("(C)" in crc_implementation()) == c_available  # the reader uses C when it can


def test_records_straddling_read_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading in small chunks (records cut across them) gives the same run."""
    from gradvitals.report import _records

    write_run(tmp_path, "dying_relu")
    whole = read_run(tmp_path)
    monkeypatch.setattr(_records, "_CHUNK", 37)
    chunked = read_run(tmp_path)
    assert dict(chunked.scalars) == dict(whole.scalars)
    assert [f.to_dict() for f in chunked.findings] == [f.to_dict() for f in whole.findings]


def test_template_path_reads_what_protobuf_reads(tmp_path: Path) -> None:
    """Window summaries read from their bytes equal protobuf's parse of them, including
    windows whose layout changes (a layer appears) and repeated steps (a resume)."""
    from tensorboard.compat.proto import event_pb2

    from gradvitals.report import _tags as T
    from gradvitals.report._records import iter_records

    records, _ = synthetic_run("vanishing_gradient", n_windows=6)
    records[3].layers["net.9"] = LayerStats(
        "net.9", grad_norm=3.0, weight_norm=1.0, update_norm=0.1
    )
    with TensorBoardSink(tmp_path) as sink:
        for r in [*records, records[-1]]:  # the last window twice: a resumed run
            sink.write_window(r, [])
    expected: dict[str, list[tuple[int, float]]] = {}
    (event,) = tmp_path.glob("events.out.tfevents.*")
    for raw in iter_records(event):
        ev = event_pb2.Event.FromString(raw)
        for v in ev.summary.value:
            if v.WhichOneof("value") == "simple_value":
                expected.setdefault(T.canonical_tag(v.tag), []).append((ev.step, v.simple_value))
    run = read_run(tmp_path)
    assert dict(run.scalars) == {t: sorted(p, key=lambda x: x[0]) for t, p in expected.items()}
    assert run.scalars["grad_norm/net.9"] == [(records[3].step, 3.0)]


def test_benchmark_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "benchmarks" / "report_read.py"
    args = ["--size-mb", "1", "--pure-mb", "0.2", "--repeat", "1", "--no-page", "--dir"]
    import os

    proc = subprocess.run(
        [sys.executable, str(script), *args, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in proc.stdout.splitlines()}
    for case in ("framing + CRC", "read_run (verify)", "read_run --no-verify"):
        assert case in rows
    assert "CRC-32C: " in proc.stdout and "machine: " in proc.stdout
