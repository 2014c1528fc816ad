"""The one-page HTML report of a gradvitals run (``gradvitals report LOGDIR``).

One self-contained file: figures are embedded PNGs, styles are inline, nothing is
fetched. Sections: a summary (what the log covers, healthy or not, what to do
first, counts), heat maps of each vital sign (layers x steps), gradient norms and
loss, a timeline of findings (cause first) and repairs with their remedies and code,
and the final statistics per layer.

NaN is never shown as a number: a NaN/Inf statistic is "NaN" in the tables and pink
in the figures; a value that was not measured is "–" and grey. The window count is
:meth:`~gradvitals.report.RunData.steps`, the windows the log holds.

Every piece of text from the log (layer names, messages, code) is escaped with
:func:`html.escape`, so a module named ``<script>`` shows as text.
"""

from __future__ import annotations

import html
import math
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gradvitals.errors import GradvitalsError
from gradvitals.findings import Cause, Finding
from gradvitals.report._read import RunData, find_event_files, read_run
from gradvitals.report._summary import fmt_value, most_important, repair_outcome, sentence
from gradvitals.stats import SIGNALS

__all__ = ["render_html", "write_report"]


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;
padding:24px;color:#1d1d1f;background:#fff;line-height:1.45}
h1{margin:0 0 4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.path{color:#666;font-family:ui-monospace,monospace;margin:0}
.status{border-radius:8px;padding:16px 20px;margin-top:20px}
.status.healthy{background:#e8f6ec;border:1px solid #5cb85c}
.status.failing{background:#fdecea;border:1px solid #d9534f}
.status.empty{background:#f4f4f6;border:1px solid #aaa}
.status h2{margin:0;border:none}
.first{margin-top:12px}
pre{background:#f4f4f6;border:1px solid #e1e1e6;border-radius:4px;padding:8px 10px;overflow-x:auto;margin:6px 0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:0.92em}
table{border-collapse:collapse;width:100%;font-size:0.93em}
th,td{border:1px solid #ddd;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f7f7f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
.kind{display:inline-block;border-radius:10px;padding:1px 8px;font-size:0.85em;background:#d9534f;color:#fff}
.kind.repair{background:#337ab7}
figure{margin:16px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:0.9em}
ul.counts{display:flex;flex-wrap:wrap;gap:8px 22px;padding:0;list-style:none;margin:12px 0 0}
ol.remedies{margin:4px 0 0 0;padding-left:20px}
.muted{color:#666}
.nan{color:#c2185b;font-weight:600}
.coverage{margin:14px 0 0;padding:8px 12px;background:#f4f4f6;border-radius:6px}
.note{margin:10px 0 0;padding:8px 12px;background:#fff7e0;border:1px solid #f0c36d;border-radius:6px}
.cause{font-weight:600}
footer{margin-top:40px;color:#888;font-size:0.85em}
"""

#: (section, label) of the final-values table: every per-site and per-layer signal
_FINAL_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (s.name, s.label) for s in SIGNALS if s.scope in ("site", "layer")
)

#: heat-map captions, from the signal table (log-scale ones are drawn as log10)
_CAPTIONS = {
    s.name: (f"log10 of the {s.caption}" if s.log_scale else s.caption)
    for s in SIGNALS
    if s.heatmap
}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _count(n: int, word: str) -> str:
    return f"<strong>{n}</strong> {word if n == 1 else word + 's'}"


def _where(f: Finding) -> str:
    return f" in <code>{_e(f.layer)}</code>" if f.layer else ""


def _cause(f: Finding) -> str:
    """``"Cause: learning rate. "`` (HTML), or ``""`` when the cause is unknown."""
    if f.cause is Cause.UNKNOWN:
        return ""
    return f'<span class="cause">Cause: {_e(f.cause.value.replace("_", " "))}.</span> '


def _number(x: Any) -> str:
    """A statistic for a table cell: NaN/Inf as ``NaN``/``Inf`` (marked), missing as ``–``."""
    if x is None:
        return '<span class="muted" title="not measured">–</span>'
    if isinstance(x, float) and not math.isfinite(x):
        word = "NaN" if math.isnan(x) else ("Inf" if x > 0 else "-Inf")
        return f'<span class="nan">{word}</span>'
    return _e(fmt_value(x))


def _nonfinite_windows(run: RunData) -> list[int]:
    """Windows with a NaN/Inf statistic in the log, or marked NaN by the reader."""
    steps = set(run.nonfinite_steps)
    for tag in run.arrays:
        s, v = run.arrays[tag]
        bad = ~np.isfinite(v)
        if bad.any():
            steps.update(s[bad].tolist())
    window = set(run.steps())
    return sorted(steps & window)


def _coverage(run: RunData) -> str:
    """``activation sites: n of m; not measured: layer (reason), ...``, if the log says."""
    c = run.coverage
    if not c:
        return ""
    text = f"activation sites: <strong>{c['sites_measured']} of {c['sites_total']}</strong>"
    missing = c["not_measured"]
    if missing:
        items = ", ".join(
            f"<code>{_e(layer)}</code>" + (f" ({_e(why)})" if why else "")
            for layer, why in missing.items()
        )
        text += f"; not measured: {items}"
    return f'<p class="coverage">{text}</p>'


def _summary(run: RunData) -> str:
    steps = run.steps()
    layers = {la for sec, *_ in _FINAL_COLUMNS for la in run.layers(sec)}
    nonfinite = _nonfinite_windows(run)
    counts = [
        f"<li>{_count(len(steps), 'window')}</li>",
        f"<li>steps <strong>{steps[0]}–{steps[-1]}</strong></li>" if steps else "",
        f"<li>{_count(len(layers), 'layer')}</li>",
        f"<li>{_count(len(run.findings), 'finding')}</li>",
        f'<li><span class="nan">NaN/Inf</span> in {_count(len(nonfinite), "window")}</li>'
        if nonfinite
        else "",
    ]
    if run.repairs:
        ok = sum(1 for r in run.repairs if r.get("healthy_after") is True)
        counts.append(f"<li>{_count(len(run.repairs), 'repair')} ({ok} healthy after)</li>")
    by_kind = Counter(f.kind.value for f in run.findings)
    counts.extend(f"<li>{_e(k)}: <strong>{n}</strong></li>" for k, n in sorted(by_kind.items()))
    first = most_important(run.findings)
    if first is None and not steps:
        head = (
            '<div class="status empty"><h2>No statistics yet</h2>'
            "<p>The log marks a gradvitals run but holds no window: training stopped (or is "
            "still running) before the first sync. No failures found so far.</p>"
        )
    elif first is None and nonfinite:
        head = (
            '<div class="status failing"><h2>No findings, but NaN/Inf statistics</h2>'
            f"<p>No detector fired, yet {_plural(len(nonfinite), 'window')} (first at step "
            f"{nonfinite[0]}) logged a NaN or Inf statistic: see the pink cells below.</p>"
        )
    elif first is None:
        span = f" (steps {steps[0]}–{steps[-1]})" if steps else ""
        head = (
            '<div class="status healthy"><h2>Healthy: No failures found</h2>'
            f"<p>No failures found in {_plural(len(steps), 'window')}{span}: no vanishing or "
            "exploding gradients, dead units, saturation or NaNs crossed their thresholds.</p>"
        )
    else:
        n = len(run.findings)
        head = (
            f'<div class="status failing"><h2>Not healthy: {_plural(n, "failure")} found</h2>'
            f"<p>Most urgent: <strong>{_e(first.kind.value)}</strong>{_where(first)} at step "
            f"{first.step}: {_cause(first)}{_e(sentence(first.message))}</p>"
        )
        if first.remedies:
            r = first.remedies[0]
            head += (
                f'<div class="first">What to do first: <strong>{_e(r.action)}</strong>.'
                f' <span class="muted">{_e(r.why)}</span>'
                + (f"<pre><code>{_e(r.code)}</code></pre>" if r.code else "")
                + "</div>"
            )
    head += f'<ul class="counts">{"".join(c for c in counts if c)}</ul></div>'
    notes = "".join(f'<p class="note">{_e(sentence(n))}</p>' for n in run.notes)
    head = _coverage(run) + notes + head
    if run.run_info:
        rows = "".join(
            f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in run.run_info.items()
        )
        head += f'<details><summary>Run info</summary><table class="info">{rows}</table></details>'
    return f'<section id="summary">{head}</section>'


def _figure(uri: str | None, alt: str, caption: str) -> str:
    if uri is None:
        return ""
    return (
        f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _heatmaps(run: RunData, figs: dict[str, str | None]) -> str:
    from gradvitals.report._plots import HEATMAPS

    parts = []
    for section, (title, _, _, _) in HEATMAPS.items():
        parts.append(
            _figure(
                figs.get(section),
                f"{title} heat map",
                f"{title}: {_CAPTIONS[section]}. One row per layer (first layer on top), one "
                "column per window; markers: findings; grey: not measured; pink: NaN/Inf.",
            )
        )
    body = "".join(parts) or '<p class="muted">No per-layer statistics in this log.</p>'
    return f'<section id="heatmaps"><h2>Vital signs per layer</h2>{body}</section>'


def _norms(figs: dict[str, str | None]) -> str:
    body = _figure(
        figs.get("grad_norm_lines"),
        "gradient norms per layer",
        "Gradient norm of each layer on a log scale; dotted red lines: findings.",
    ) + _figure(figs.get("loss"), "training loss", "Mean training loss per window.")
    body = body or '<p class="muted">No gradient norms or loss in this log.</p>'
    return f'<section id="grad-norms"><h2>Gradient norms and loss</h2>{body}</section>'


def _remedies(f: Finding) -> str:
    if not f.remedies:
        return ""
    items = "".join(
        f'<li><strong>{_e(r.action)}</strong>. <span class="muted">{_e(r.why)}</span>'
        + (f"<pre><code>{_e(r.code)}</code></pre>" if r.code else "")
        + "</li>"
        for r in f.remedies
    )
    return f'<ol class="remedies">{items}</ol>'


def _evidence(f: Finding) -> str:
    if not f.evidence:
        return ""
    items = ", ".join(
        f"{_e(k)}={_number(v) if isinstance(v, float) else _e(v)}" for k, v in f.evidence.items()
    )
    return f'<div class="muted">evidence: {items}</div>'


def _consequences(f: Finding) -> str:
    if not f.consequences:
        return ""
    items = "; ".join(
        f"{_e(c.kind.value)}{_where(c)} at step {c.step}: {_e(sentence(c.message))}"
        for c in f.consequences
    )
    return f'<div class="muted">led to: {items}</div>'


def _timeline(run: RunData) -> str:
    rows: list[tuple[int, int, str]] = []
    for f in run.findings:
        final = " (could not repair)" if f.final else ""
        rows.append(
            (
                f.step,
                0,
                f'<tr class="finding"><td class="num">{f.step}</td>'
                f'<td><span class="kind">{_e(f.kind.value)}</span>{_e(final)}</td>'
                f"<td>{'<code>' + _e(f.layer) + '</code>' if f.layer else '<span class=muted>model</span>'}</td>"
                f"<td>{_cause(f)}{_e(sentence(f.message))}{_evidence(f)}{_consequences(f)}"
                f"{_remedies(f)}</td></tr>",
            )
        )
    for r in run.repairs:
        step = r.get("step", "?")
        kind = r.get("kind") or ""
        layer = r.get("layer")
        reason = f" {_e(sentence(str(r['reason'])))}" if r.get("reason") else ""
        rows.append(
            (
                step if isinstance(step, int) else -1,
                1,
                f'<tr class="repair"><td class="num">{_e(step)}</td>'
                f'<td><span class="kind repair">repair</span> {_e(kind)}</td>'
                f"<td>{'<code>' + _e(layer) + '</code>' if layer else '<span class=muted>model</span>'}</td>"
                f"<td>Applied <code>{_e(r.get('action', '?'))}</code>.{reason} "
                f"<strong>{_e(repair_outcome(r).capitalize())}.</strong></td></tr>",
            )
        )
    if not rows:
        body = '<p class="muted">No findings and no repairs.</p>'
    else:
        rows.sort(key=lambda x: (x[0], x[1]))
        body = (
            "<table><thead><tr><th>step</th><th>event</th><th>layer</th><th>details and remedies</th>"
            f"</tr></thead><tbody>{''.join(r[2] for r in rows)}</tbody></table>"
        )
    return f'<section id="timeline"><h2>Timeline of findings and repairs</h2>{body}</section>'


def _final_table(run: RunData) -> str:
    finals = {sec: run.final_values(sec) for sec, _ in _FINAL_COLUMNS}
    cols = [(sec, name) for sec, name in _FINAL_COLUMNS if finals[sec]]
    layers: list[str] = []
    for sec, _ in cols:
        layers.extend(la for la in run.layers(sec) if la not in layers)
    if not layers:
        return (
            '<section id="final-stats"><h2>Final statistics per layer</h2>'
            '<p class="muted">No per-layer statistics in this log.</p></section>'
        )
    kinds: dict[str, set[str]] = {}
    for f in run.findings:
        if f.layer:
            kinds.setdefault(f.layer, set()).add(f.kind.value)
    head = "".join(f"<th>{_e(name)}</th>" for _, name in cols)
    rows = []
    for layer in layers:
        cells = "".join(
            f'<td class="num">{_number(finals[sec].get(layer))}</td>' for sec, _ in cols
        )
        found = ", ".join(sorted(kinds.get(layer, ())))
        rows.append(f"<tr><td><code>{_e(layer)}</code></td>{cells}<td>{_e(found)}</td></tr>")
    values = [v for sec, _ in cols for v in finals[sec].values()]
    legend = ""
    if any(not math.isfinite(v) for v in values):
        legend += '; <span class="nan">NaN</span>/<span class="nan">Inf</span>: not finite there'
    if any(layer not in finals[sec] for sec, _ in cols for layer in layers):
        legend += "; –: not measured"
    return (
        '<section id="final-stats"><h2>Final statistics per layer</h2>'
        f'<p class="muted">Each layer\'s value in its last logged window{legend}.</p>'
        f"<table><thead><tr><th>layer</th>{head}<th>findings</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def render_html(run: RunData, *, on_figure: Callable[[], None] | None = None) -> str:
    """The report page for ``run``, as a string.

    Args:
        run: what :func:`~gradvitals.report.read_run` returned.
        on_figure: called after each figure is drawn (for a progress bar).
    """
    from gradvitals._version import __version__
    from gradvitals.report import _plots

    tick: Callable[[], None] = on_figure or (lambda: None)
    figs: dict[str, str | None] = {}
    for section in _plots.HEATMAPS:
        findings = [
            f for f in run.findings if f.layer in set(run.layers(section)) or f.layer is None
        ]
        figs[section] = _plots.heatmap(run, section, findings)
        tick()
    figs["grad_norm_lines"] = _plots.grad_norm_plot(run, run.findings)
    tick()
    figs["loss"] = _plots.loss_plot(run)
    tick()
    title = f"gradvitals report: {run.log_dir.name or run.log_dir}"
    body = "".join(
        [
            f'<header><h1>gradvitals report</h1><p class="path">{_e(run.log_dir)}</p></header>',
            _summary(run),
            _heatmaps(run, figs),
            _norms(figs),
            _timeline(run),
            _final_table(run),
            f"<footer>Written by gradvitals {_e(__version__)} from "
            f"{_plural(len(run.event_files), 'event file')}.</footer>",
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def write_report(
    log_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    *,
    progress: bool = False,
    verify: bool = True,
    allow_truncated: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> Path:
    """Read a gradvitals log and write its HTML report.

    Args:
        log_dir: the ``log_dir`` given to ``gradvitals.watch`` (or one event file).
        out_path: where to write; default ``<log_dir>/report.html``.
        progress: show progress on stderr if it takes more than 2 seconds (a bar on a
            terminal, one line per stage elsewhere).
        verify: check the event files' checksums (default True).
        allow_truncated: read a log still being written up to its last complete
            record (the page and ``on_note`` say where it was cut).
        on_note: called with each one-line note about the reading.

    Returns:
        The path written.

    Raises:
        GradvitalsError: the log is missing, unreadable, empty, corrupt or not from
            gradvitals, or the output cannot be written.
    """
    from gradvitals._progress import Progress

    # units: 1 per MiB read (rounded up), 6 figures, 1 write
    total_bytes = _event_bytes(log_dir)
    mib = -(-total_bytes // (1 << 20))
    bar = Progress(
        mib + 7, f"gradvitals report: reading {total_bytes / 1e6:.0f} MB", disable=not progress
    )
    read = [0]  # bytes read so far

    def on_progress(n: int) -> None:
        before = -(-read[0] // (1 << 20))
        read[0] += n
        bar.update(min(mib, -(-read[0] // (1 << 20))) - min(mib, before))

    try:
        run = read_run(
            log_dir,
            verify=verify,
            allow_truncated=allow_truncated,
            on_progress=on_progress,
            on_note=on_note,
        )
        bar.update(mib - bar.n)  # a file that grew or shrank while it was read
        bar.set_description("gradvitals report: drawing figures")
        html_text = render_html(run, on_figure=bar.update)
        bar.set_description("gradvitals report: writing")
        out = Path(out_path) if out_path is not None else _default_out(Path(log_dir))
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(html_text, encoding="utf-8")
        except OSError as e:
            raise GradvitalsError(f"cannot write the report to {out}: {e.strerror or e}") from e
        bar.update()
    except BaseException:
        bar.abort()  # so the error is the only line left
        raise
    finally:
        bar.close()
    return out


def _default_out(log_dir: Path) -> Path:
    return (log_dir if log_dir.is_dir() else log_dir.parent) / "report.html"


def _event_bytes(log_dir: str | os.PathLike[str]) -> int:
    """Bytes of the event files to read; 0 if they cannot be listed (read_run says why)."""
    try:
        _, files = find_event_files(log_dir)
        return sum(f.stat().st_size for f in files)
    except (GradvitalsError, OSError):
        return 0
