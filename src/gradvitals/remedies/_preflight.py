"""Remedies for the pre-flight modes that :func:`gradvitals.lint` finds from a batch and a loss.

``PREFLIGHT_REMEDIES`` maps each mode to its remedies, the first the one to try first:

- ``output_activation`` (an output activation that cannot fit the loss or the targets):
  ``remove_output_activation``, then ``match_loss``.
- ``loss_mismatch`` (a loss that does not fit the targets): ``match_loss``.
- ``unstable_loss`` (``log(softmax(x))`` and the like): ``stable_loss``.
- ``unscaled_data`` (inputs or targets far from unit scale): ``normalize_data``.

The ``code`` is PyTorch; the Keras lint swaps in Keras code by ``key``.

>>> from gradvitals.findings import FailureMode
>>> [r.key for r in PREFLIGHT_REMEDIES[FailureMode.OUTPUT_ACTIVATION]]
['remove_output_activation', 'match_loss']
>>> preflight_remedy("stable_loss").code.splitlines()[0]
'log_p = F.log_softmax(logits, dim=-1)      # not torch.log(F.softmax(logits, dim=-1))'
"""

from __future__ import annotations

from gradvitals.findings import FailureMode, Remedy

__all__ = ["PREFLIGHT_REMEDIES", "preflight_remedy"]

_REMOVE_OUTPUT_ACTIVATION = Remedy(
    action="Remove the output activation and let the loss see raw logits",
    why="nn.CrossEntropyLoss applies log_softmax and nn.BCEWithLogitsLoss applies "
    "logsigmoid themselves. A softmax/sigmoid before them is applied twice and caps the "
    "reachable probability; a ReLU/softplus forbids negative logits and can kill outputs. "
    "Apply softmax/sigmoid only when you need probabilities at inference.",
    code="model = nn.Sequential(..., nn.Linear(h, n_classes))  # no nn.Softmax/nn.ReLU after\n"
    "loss = nn.CrossEntropyLoss()(model(x), y)\n"
    "probs = model(x).softmax(dim=-1)  # at inference only",
    key="remove_output_activation",
)

_MATCH_LOSS = Remedy(
    action="Pair the output layer, the loss and the targets",
    why="Each loss assumes an output range and a target form: class indices -> raw logits "
    "+ CrossEntropyLoss; 0/1 (multi-)labels -> raw logits + BCEWithLogitsLoss; real "
    "values -> a linear output + MSELoss/L1Loss on scaled targets. A one-unit output "
    "cannot carry a softmax or a cross-entropy over classes.",
    code="nn.Linear(h, n_classes) + nn.CrossEntropyLoss()       # y: int64 class ids, shape (N,)\n"
    "nn.Linear(h, 1) + nn.BCEWithLogitsLoss()              # y: float 0/1, shape (N, 1)\n"
    "nn.Linear(h, 1) + nn.MSELoss()                        # y: float, standardised",
    key="match_loss",
)

_STABLE_LOSS = Remedy(
    action="Use the fused, stable log-probability ops",
    why="In float32, softmax underflows to exactly 0 once two logits differ by 104 (the "
    "precision is gone from a gap of 88) and sigmoid rounds to exactly 1.0 above 16.7; "
    "log then gives -inf and the gradient NaN or 0. log_softmax and logsigmoid compute the "
    "same values from the logits without forming the probability.",
    code="log_p = F.log_softmax(logits, dim=-1)      # not torch.log(F.softmax(logits, dim=-1))\n"
    "loss = F.nll_loss(log_p, y)                # or F.cross_entropy(logits, y)\n"
    "loss = F.binary_cross_entropy_with_logits(logits, y)  # not log(sigmoid(logits))",
    key="stable_loss",
)

_NORMALIZE_DATA = Remedy(
    action="Standardise the inputs (and regression targets) to about unit scale",
    why="Default initialisations assume inputs with mean ~0 and variance ~1 (LeCun et al. "
    "1998). At input scale s the first layer's pre-activations are s times too large and "
    "its SGD step s^2 times; a target of scale s makes the initial loss ~s^2 and the output "
    "layer needs ~s/lr steps just to reach it. Invert the target scaling at prediction time.",
    code="mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-8)\n"
    "x = (x - mean) / std                       # images: x = x.float() / 255\n"
    "y_mean, y_std = y_train.mean(), y_train.std()\n"
    "y = (y - y_mean) / y_std                   # predict: out * y_std + y_mean",
    key="normalize_data",
)

#: pre-flight mode -> remedies, first to try first
PREFLIGHT_REMEDIES: dict[FailureMode, tuple[Remedy, ...]] = {
    FailureMode.OUTPUT_ACTIVATION: (_REMOVE_OUTPUT_ACTIVATION, _MATCH_LOSS),
    FailureMode.LOSS_MISMATCH: (_MATCH_LOSS,),
    FailureMode.UNSTABLE_LOSS: (_STABLE_LOSS,),
    FailureMode.UNSCALED_DATA: (_NORMALIZE_DATA,),
}

_BY_KEY: dict[str, Remedy] = {r.key: r for rs in PREFLIGHT_REMEDIES.values() for r in rs}


def preflight_remedy(key: str) -> Remedy:
    """The pre-flight remedy with ``key`` (``KeyError`` naming the known keys otherwise).

    >>> preflight_remedy("normalize_data").action
    'Standardise the inputs (and regression targets) to about unit scale'
    """
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"no pre-flight remedy {key!r}; known: {sorted(_BY_KEY)}") from None
