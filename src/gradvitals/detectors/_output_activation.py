"""Output activation: an activation on the model's output that its loss or targets cannot fit.

Three facts the collectors hand over in ``record.facts`` decide it, once per run:

1. **An activation site after the last weight layer** (``"output_activations"``,
   PyTorch) whose output is never negative (ReLU, softplus, sigmoid, softmax...), while
   the loss reads raw logits (``"loss_ops"`` holds ``LogSoftmaxBackward0`` or
   ``BinaryCrossEntropyWithLogitsBackward0``). ``nn.CrossEntropyLoss`` applies
   ``log_softmax`` itself and ``BCEWithLogitsLoss`` a ``logsigmoid``: a ReLU before
   them forbids negative logits and can kill a class; a softmax before them is applied
   twice and caps every probability near ``1/k``.
2. **The loss graph** (``"loss_graph"``, PyTorch, see :func:`graph_inputs`): an op
   that reads logits (``log_softmax``, ``nll_loss`` on probabilities,
   ``binary_cross_entropy_with_logits``) is fed, through reshapes only, by a softmax,
   sigmoid or ReLU-family op. This finds ``nn.Softmax`` (not an activation site: it is
   not elementwise) and functional activations.
3. **The output layers** (``"output_layers"``, Keras: name, activation, units, and the
   probe targets' range): a softmax over one unit is constantly 1 (nothing can be
   learned); a sigmoid/tanh/softmax/ReLU output whose targets lie outside its range
   can never reach them. The first two rules name the cause (``output_activation``);
   for the third the diagnosis decides what to change first (the labels or the scale),
   from ``evidence["targets"]``.

>>> from gradvitals.stats import WindowRecord
>>> rec = WindowRecord(0, 0, 0, facts={"output_activations": {"head.1": "relu"},
...     "loss_ops": ["NllLossBackward0", "LogSoftmaxBackward0", "ReluBackward0"]})
>>> [(f.kind.value, f.layer, f.cause.value) for f in OutputActivationDetector().update(rec)]
[('output_activation', 'head.1', 'output_activation')]
>>> graph = {"ops": ["NllLossBackward0", "LogSoftmaxBackward0", "SoftmaxBackward0",
...                  "AddmmBackward0"], "inputs": [[1], [2], [3], []], "layers": [3]}
>>> [f.evidence["activation"] for f in OutputActivationDetector().update(
...     WindowRecord(0, 0, 0, facts={"loss_graph": graph}))]
['softmax']
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from gradvitals.detectors._base import EdgeTrigger
from gradvitals.detectors._thresholds import Thresholds
from gradvitals.findings import Cause, FailureMode, Finding
from gradvitals.stats import WindowRecord

__all__ = ["NON_NEGATIVE", "OutputActivationDetector", "graph_inputs", "graph_ops", "op_name"]

#: activations whose output is never negative: they cannot produce logits
NON_NEGATIVE = frozenset({"relu", "relu6", "softplus", "sigmoid", "hardsigmoid", "softmax"})
#: autograd ops of the losses that read raw logits
_LOGIT_LOSSES = {
    "LogSoftmaxBackward0": "cross-entropy (log_softmax of the logits)",
    "BinaryCrossEntropyWithLogitsBackward0": "BCEWithLogitsLoss",
}
#: loss-graph ops that expect logits (or log-probabilities) as their input
_LOGIT_READERS = {
    "LogSoftmax": "cross-entropy (log_softmax of the logits)",
    "BinaryCrossEntropyWithLogits": "BCEWithLogitsLoss",
    "NllLoss": "NLLLoss (it expects log-probabilities)",
}
#: loss-graph ops that squash or clamp: their output is never a logit
_SQUASHING = {
    "Softmax": "softmax",
    "Sigmoid": "sigmoid",
    "Relu": "relu",
    "Softplus": "softplus",
    "Hardsigmoid": "hardsigmoid",
}
#: ops that only reshape, select or cast values: looked through
_PASS_THROUGH = frozenset(
    {
        "View",
        "Reshape",
        "ReshapeAlias",
        "UnsafeView",
        "Squeeze",
        "Unsqueeze",
        "Expand",
        "Permute",
        "Transpose",
        "T",
        "Select",
        "Slice",
        "Index",
        "Clone",
        "ToCopy",
        "Contiguous",
        "Flatten",
    }
)
#: the range of an output activation (Keras output layers)
_RANGES = {
    "sigmoid": (0.0, 1.0),
    "hardsigmoid": (0.0, 1.0),
    "softmax": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "relu": (0.0, math.inf),
    "softplus": (0.0, math.inf),
}
_SUFFIX = re.compile(r"Backward\d*$")


def op_name(node: str) -> str:
    """An autograd node's op: ``"LogSoftmaxBackward0"`` -> ``"LogSoftmax"``.

    >>> op_name("SqueezeBackward1"), op_name("AccumulateGrad")
    ('Squeeze', 'AccumulateGrad')
    """
    return _SUFFIX.sub("", node)


def graph_ops(graph: dict[str, Any] | None) -> list[str]:
    """The loss's own ops (the model's last weight layer left out), as op names.

    >>> graph_ops({"ops": ["MeanBackward0", "SqrtBackward0", "AddmmBackward0"],
    ...            "inputs": [[1], [2], []], "layers": [2]})
    ['Mean', 'Sqrt']
    """
    if not graph:
        return []
    layers = set(graph.get("layers", ()))
    return [op_name(n) for i, n in enumerate(graph.get("ops", ())) if i not in layers]


def graph_inputs(graph: dict[str, Any], i: int) -> Iterator[int]:
    """The nodes feeding node ``i``, looking through reshapes, selections and casts."""
    ops = graph.get("ops", [])
    inputs = graph.get("inputs", [])
    seen: set[int] = set()
    stack = list(inputs[i]) if i < len(inputs) else []
    while stack:
        j = stack.pop(0)
        if j in seen or j >= len(ops):
            continue
        seen.add(j)
        if op_name(ops[j]) in _PASS_THROUGH and j not in set(graph.get("layers", ())):
            stack += list(inputs[j]) if j < len(inputs) else []
        else:
            yield j


def _squashed_logits(graph: dict[str, Any] | None) -> tuple[str, str] | None:
    """Rule 2: ``(activation, loss)`` when a logit-reading op is fed by a squashing op."""
    if not graph:
        return None
    ops = [op_name(n) for n in graph.get("ops", ())]
    for i, op in enumerate(ops):
        if op not in _LOGIT_READERS:
            continue
        for j in graph_inputs(graph, i):
            act = _SQUASHING.get(ops[j])
            if act is not None:
                return act, _LOGIT_READERS[op]
    return None


def _out_of_range(layer: dict[str, Any]) -> dict[str, Any] | None:
    """Rule 3: the targets the probe carries lie outside the output activation's range."""
    lo, hi = _RANGES.get(str(layer.get("activation")), (-math.inf, math.inf))
    t_min, t_max = layer.get("target_min"), layer.get("target_max")
    if not isinstance(t_min, (int, float)) or not isinstance(t_max, (int, float)):
        return None
    if not (math.isfinite(t_min) and math.isfinite(t_max)):
        return None
    span = max(hi - lo, 1.0) if math.isfinite(hi - lo) else 1.0
    tol = 1e-3 * span
    if t_min >= lo - tol and t_max <= hi + tol:
        return None
    return {"range": [lo, hi], "target_min": t_min, "target_max": t_max}


class OutputActivationDetector:
    kind = FailureMode.OUTPUT_ACTIVATION

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.trigger = EdgeTrigger(patience=1, recover=10**9)  # once per run

    def _find(self, record: WindowRecord) -> tuple[str | None, str, dict[str, Any]] | None:
        """``(layer, message, evidence)`` of the first rule that holds, or None."""
        facts = record.facts
        outputs: dict[str, str] = dict(facts.get("output_activations") or {})
        ops = list(facts.get("loss_ops") or ())
        loss = next((v for k, v in _LOGIT_LOSSES.items() if k in ops), None)
        bad = {n: a for n, a in outputs.items() if a in NON_NEGATIVE}
        if loss is not None and bad:  # rule 1
            name, act = next(iter(bad.items()))
            return (
                name,
                f"{name} applies {act} to the model's output, and the loss is {loss}, which "
                "expects raw logits: they can never be negative, which caps the reachable "
                "probabilities and can kill a class",
                {"activation": act, "loss": loss, "loss_ops": ops[:8], "rule": "logit_loss"},
            )
        squashed = _squashed_logits(facts.get("loss_graph"))
        if squashed is not None:  # rule 2
            act, loss = squashed
            site = next((n for n, a in outputs.items() if a == act), None)
            where = f"{site} applies {act}" if site else f"the model's output goes through {act}"
            return (
                site,
                f"{where} and the loss is {loss}, which expects raw logits: "
                + (
                    "the softmax is applied twice, so every probability stays near 1/k and "
                    "the gradient is tiny"
                    if act == "softmax"
                    else "its output is never negative, which caps the reachable "
                    "probabilities and can kill a class"
                ),
                {"activation": act, "loss": loss, "rule": "logit_loss"},
            )
        for layer in facts.get("output_layers") or ():  # rule 3
            act, units, name = layer.get("activation"), layer.get("units"), layer.get("name")
            if act == "softmax" and units == 1:
                return (
                    name,
                    f"{name} applies softmax over a single unit: its output is always exactly "
                    "1, whatever the input, so nothing can be learned",
                    {"activation": act, "units": units, "rule": "softmax_one_unit"},
                )
            out = _out_of_range(layer)
            if out is not None:
                lo, hi = out["range"]
                kind = "class labels" if layer.get("target_integer") else "values"
                return (
                    name,
                    f"{name} applies {act}, whose output lies in [{lo:g}, {hi:g}], but the "
                    f"targets are {kind} from {out['target_min']:g} to {out['target_max']:g}: "
                    "the output can never reach them",
                    {
                        "activation": act,
                        "rule": "targets_out_of_range",
                        "targets": "labels" if layer.get("target_integer") else "continuous",
                        **out,
                    },
                )
        return None

    def update(self, record: WindowRecord) -> list[Finding]:
        found = self._find(record)
        if found is None or not self.trigger.observe("model", True):
            return []
        layer, message, evidence = found
        evidence.setdefault("cause_evidence", message)
        # a target range mismatch is fixed in the data or in the output layer: the
        # diagnosis decides which (``evidence["targets"]``)
        cause = (
            Cause.UNKNOWN if evidence["rule"] == "targets_out_of_range" else Cause.OUTPUT_ACTIVATION
        )
        return [
            Finding(
                kind=self.kind,
                layer=layer,
                step=record.step,
                message=message,
                evidence=evidence,
                cause=cause,
            )
        ]

    def rearm(self, forget_history: bool = False) -> None:
        return None  # a structural fact: repair does not change it

    def state_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trigger.load_state_dict(state.get("trigger", {}))
