"""Tag names gradvitals writes, shared by every writer (sink) and the reader.

Statistics are ``<statistic>/<layer>`` (one TensorBoard section per statistic), plus
``loss/train`` and ``grad_norm_total/model``, as ``WindowRecord.scalars()`` names
them. Every sink writes them under the :data:`TAG_PREFIX` namespace
(:func:`namespaced`: ``gradvitals/loss/train``), so they never collide with a
run's own ``loss`` or ``grad_norm``. Text summaries carry findings and repairs twice:
as markdown for people and as JSON for :func:`~gradvitals.report.read_run`. The
reader takes both spellings (:func:`canonical_tag`), so logs written before the
namespace read as before.

>>> split_tag("dead_fraction/net.1")
('dead_fraction', 'net.1')
>>> split_tag("grad_norm/encoder/layer.0")  # a layer name may contain slashes
('grad_norm', 'encoder/layer.0')
>>> split_tag("loss")
('loss', '')
>>> canonical_tag("gradvitals/loss/train"), canonical_tag("loss/train")  # either spelling
('loss/train', 'loss/train')
>>> canonical_tag("gradvitals/run_info")  # already namespaced: kept
'gradvitals/run_info'
>>> namespaced("grad_norm/fc1"), namespaced("gradvitals/findings_json")
('gradvitals/grad_norm/fc1', 'gradvitals/findings_json')
>>> namespaced_scalars({"loss/train": 2.5})
{'gradvitals/loss/train': 2.5}
"""

from __future__ import annotations

from collections.abc import Mapping

from gradvitals.stats._signals import SIGNALS, get, tag

__all__ = [
    "FINAL_JSON_TAG",
    "FINDINGS_COUNT_TAG",
    "FINDINGS_JSON_TAG",
    "FINDINGS_TAG",
    "FORMAT_VERSION",
    "GRADVITALS_SECTIONS",
    "LAYER_SECTIONS",
    "LOSS_TAG",
    "REPAIRS_JSON_TAG",
    "REPAIRS_TAG",
    "RUN_INFO_TAG",
    "SUMMARY_TAG",
    "TAG_PREFIX",
    "TOTAL_GRAD_NORM_TAG",
    "canonical_tag",
    "namespaced",
    "namespaced_scalars",
    "split_tag",
]

#: Per-layer statistics, in the order the report shows them.
LAYER_SECTIONS: tuple[str, ...] = tuple(s.name for s in SIGNALS if s.scope in ("site", "layer"))
LOSS_TAG = tag(get("loss"), get("loss").key)
TOTAL_GRAD_NORM_TAG = tag(get("grad_norm_total"), get("grad_norm_total").key)
#: Every scalar section gradvitals writes; a log with none of them is not ours.
GRADVITALS_SECTIONS: frozenset[str] = frozenset(s.name for s in SIGNALS)

#: Markdown text, for people (TensorBoard's Text tab).
FINDINGS_TAG = "findings"
REPAIRS_TAG = "repairs"
SUMMARY_TAG = "summary"
#: JSON text, for machines: a list of ``Finding.to_dict()`` / repair dicts per event.
FINDINGS_JSON_TAG = "gradvitals/findings_json"
REPAIRS_JSON_TAG = "gradvitals/repairs_json"
FINAL_JSON_TAG = "gradvitals/final_findings_json"
#: JSON object ``{"gradvitals": version, "format": FORMAT_VERSION, ...}``; marks our logs.
RUN_INFO_TAG = "gradvitals/run_info"
FORMAT_VERSION = 1
#: The namespace every writer puts in front of every tag (``gradvitals/loss/train``).
TAG_PREFIX = "gradvitals/"
#: A metric, for outputs without text (CSV, MLflow, HF ``report_to``): the number of
#: findings so far in the run, logged with each window.
FINDINGS_COUNT_TAG = "gradvitals/findings_count"
_TEXT_TAGS = frozenset({FINDINGS_TAG, REPAIRS_TAG, SUMMARY_TAG})


def split_tag(tag: str) -> tuple[str, str]:
    """``"<section>/<rest>"`` -> ``(section, rest)``; the rest may contain ``/``."""
    section, _, rest = tag.partition("/")
    return section, rest


def canonical_tag(tag: str) -> str:
    """``tag`` without a leading :data:`TAG_PREFIX` when what follows is a statistic
    (``gradvitals/grad_norm/fc1`` -> ``grad_norm/fc1``) or a markdown text tag; the
    JSON tags (``gradvitals/run_info``...) keep theirs, so readers accept both spellings."""
    while tag.startswith(TAG_PREFIX):
        rest = tag[len(TAG_PREFIX) :]
        if split_tag(rest)[0] in GRADVITALS_SECTIONS or rest in _TEXT_TAGS:
            return rest
        if not rest.startswith(TAG_PREFIX):
            return tag
        tag = rest
    return tag


def namespaced(tag: str) -> str:
    """``tag`` under :data:`TAG_PREFIX` (unchanged when it already is): what sinks write."""
    return tag if tag.startswith(TAG_PREFIX) else TAG_PREFIX + tag


def namespaced_scalars(scalars: Mapping[str, float]) -> dict[str, float]:
    """``record.scalars()`` with every tag :func:`namespaced`."""
    return {namespaced(tag): float(v) for tag, v in scalars.items()}
