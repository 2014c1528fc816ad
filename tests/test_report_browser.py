"""The HTML report as a browser shows it: headless Chromium screenshots and DOM."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")
mpimg = pytest.importorskip("matplotlib.image")

from gradvitals import FailureMode, Finding, remedies_for  # noqa: E402
from gradvitals.report import TensorBoardSink, write_report  # noqa: E402
from gradvitals.report._synthetic import synthetic_run  # noqa: E402
from gradvitals.stats import LayerStats, SiteStats, WindowRecord  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)


def chromium(tmp: Path, page: Path, *args: str) -> str:
    """Run headless Chromium on ``page`` and return its stdout."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        *args,
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def write_run(log_dir: Path, mode: str) -> list[Finding]:
    records, findings = synthetic_run(mode)
    with TensorBoardSink(log_dir) as sink:
        for r in records:
            sink.write_window(r, [f for f in findings if f.step == r.step])
        for f in findings:
            sink.write_repair(
                {
                    "step": f.step,
                    "action": f.remedies[0].key,
                    "reason": f.message,
                    "kind": f.kind.value,
                    "layer": f.layer,
                    "healthy_after": False,
                }
            )
    return findings


def test_failing_report_renders(tmp_path: Path) -> None:
    findings = write_run(tmp_path / "run", "dying_relu")
    page = write_report(tmp_path / "run")
    shot = tmp_path / "shot.png"
    chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1280,2000")
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (2000, 1280)
    assert img.std() > 0.1  # not blank
    assert (img.mean(axis=2) < 0.9).mean() > 0.05  # not all white
    saturation = img.max(axis=2) - img.min(axis=2)
    assert (saturation > 0.3).mean() > 0.02  # the heat maps decoded and drew in colour

    dom = chromium(tmp_path, page, "--dump-dom")
    for sec in ("summary", "heatmaps", "grad-norms", "timeline", "final-stats"):
        assert f'id="{sec}"' in dom
    assert dom.count('<img src="data:image/png;base64,') >= 4
    f = findings[0]
    assert "Not healthy: 1 failure found" in dom
    assert '<span class="kind">dying_relu</span>' in dom and "<code>net.3</code>" in dom
    assert f.remedies[0].action in dom
    assert "Still failing after." in dom


def test_healthy_report_renders(tmp_path: Path) -> None:
    write_run(tmp_path / "run", "healthy")
    page = write_report(tmp_path / "run")
    dom = chromium(tmp_path, page, "--dump-dom")
    assert "Healthy: No failures found" in dom and "No findings and no repairs." in dom


def test_hostile_layer_name_shows_as_text(tmp_path: Path) -> None:
    evil = "<script>document.title='pwned'</script>"
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
                n_zero=6,
                ever_positive=np.array([True, False]),
            )
        },
        layers={evil: LayerStats(evil, grad_norm=1.0, weight_norm=1.0, update_norm=0.001)},
    )
    f = Finding(
        FailureMode.DYING_RELU, evil, 10, "half dead", remedies=remedies_for(FailureMode.DYING_RELU)
    )
    with TensorBoardSink(tmp_path / "run") as sink:
        sink.write_window(rec, [f])
    page = write_report(tmp_path / "run")
    dom = chromium(tmp_path, page, "--dump-dom")
    assert "pwned" not in dom.split("</title>")[0]  # the script did not run
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "<script" not in dom
