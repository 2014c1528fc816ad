"""Output activation: a non-negative activation on the logits a cross-entropy reads.

``nn.CrossEntropyLoss`` applies ``log_softmax`` to raw logits and
``BCEWithLogitsLoss`` a ``logsigmoid``: a ReLU (or softplus, sigmoid, softmax) after the
model's last weight layer forbids negative logits, caps the probabilities it can reach,
and can kill a class for good. The pre-flight lint finds it when given a batch and the
loss; during training the collector knows both — the activation sites after the last
weight layer (``record.facts["output_activations"]``) and the ops of the loss
(``record.facts["loss_ops"]``, read on sampled steps) — so this detector finds it in
the first window that has them, once.

>>> from gradvitals.stats import WindowRecord
>>> rec = WindowRecord(0, 0, 0, facts={"output_activations": {"head.1": "relu"},
...     "loss_ops": ["NllLossBackward0", "LogSoftmaxBackward0", "ReluBackward0"]})
>>> [(f.kind.value, f.layer, f.cause.value) for f in OutputActivationDetector().update(rec)]
[('output_activation', 'head.1', 'output_activation')]
"""

from __future__ import annotations

from typing import Any

from gradvitals.detectors._base import EdgeTrigger
from gradvitals.detectors._thresholds import Thresholds
from gradvitals.findings import Cause, FailureMode, Finding
from gradvitals.stats import WindowRecord

__all__ = ["OutputActivationDetector"]

#: activations whose output is never negative: they cannot produce logits
NON_NEGATIVE = frozenset({"relu", "relu6", "softplus", "sigmoid", "hardsigmoid", "softmax"})
#: autograd ops of the losses that read raw logits
_LOGIT_LOSSES = {
    "LogSoftmaxBackward0": "cross-entropy (log_softmax of the logits)",
    "BinaryCrossEntropyWithLogitsBackward0": "BCEWithLogitsLoss",
}


class OutputActivationDetector:
    kind = FailureMode.OUTPUT_ACTIVATION

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.trigger = EdgeTrigger(patience=1, recover=10**9)  # once per run

    def update(self, record: WindowRecord) -> list[Finding]:
        outputs: dict[str, str] = dict(record.facts.get("output_activations") or {})
        ops = list(record.facts.get("loss_ops") or ())
        loss = next((v for k, v in _LOGIT_LOSSES.items() if k in ops), None)
        bad = {n: a for n, a in outputs.items() if a in NON_NEGATIVE}
        if loss is None or not bad:
            return []
        name, act = next(iter(bad.items()))
        if not self.trigger.observe("model", True):
            return []
        return [
            Finding(
                kind=self.kind,
                layer=name,
                step=record.step,
                message=(
                    f"{name} applies {act} to the model's output, and the loss is {loss}, "
                    "which expects raw logits: they can never be negative, which caps the "
                    "reachable probabilities and can kill a class"
                ),
                evidence={"activation": act, "loss": loss, "loss_ops": ops[:8]},
                cause=Cause.OUTPUT_ACTIVATION,
            )
        ]

    def rearm(self, forget_history: bool = False) -> None:
        return None  # a structural fact: repair does not change it

    def state_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trigger.load_state_dict(state.get("trigger", {}))
