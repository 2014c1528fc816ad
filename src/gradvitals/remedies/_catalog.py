"""The remedy catalog, keyed by :class:`~gradvitals.findings.FailureMode`.

Cause -> remedy, in the order a practitioner should try them. Lookup is by enum,
never by parsing a message. Some remedies take numbers from the run itself, e.g. a
gradient-clipping threshold from the run's healthy gradient norms (Pascanu et al.
2013: "values from half to ten times this average norm can still yield convergence").

>>> [r.key for r in remedies_for(FailureMode.DYING_RELU)][:2]
['lower_lr', 'leaky_variant']
>>> remedies_for(FailureMode.EXPLODING_GRADIENT, clip_norm=2.5)[1].code
'torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=2.5)'
"""

from __future__ import annotations

from gradvitals.findings import FailureMode, Remedy

__all__ = ["remedies_for"]

_LOWER_LR = Remedy(
    action="Lower the learning rate (try 10x lower)",
    why="Steps that are too large push weights far past the region where the loss is "
    "well approximated; norms grow step after step.",
    code="for g in optimizer.param_groups: g['lr'] *= 0.1",
    key="lower_lr",
)

_BATCHNORM = Remedy(
    action="Add batch normalization before each nonlinearity",
    why="Normalizing pre-activations keeps their scale fixed from layer to layer, so "
    "signals and gradients neither shrink nor blow up with depth (Ioffe & Szegedy 2015).",
    code="nn.Sequential(nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(), ...)",
    key="batchnorm",
)


def _clip(clip_norm: float | None) -> Remedy:
    value = f"{clip_norm:.3g}" if clip_norm else "1.0"
    src = (
        "twice the median of this run's healthy gradient norms"
        if clip_norm
        else "a threshold from your healthy gradient norms"
    )
    return Remedy(
        action=f"Clip the global gradient norm at {value}",
        why="Norm clipping rescales a too-long gradient and keeps its direction "
        f"(Pascanu et al. 2013). {value} is {src}.",
        code=f"torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={value})",
        key="clip_grad_norm",
    )


def remedies_for(
    kind: FailureMode,
    *,
    clip_norm: float | None = None,
    activation: str | None = None,
) -> list[Remedy]:
    """Ordered remedies for ``kind``.

    Args:
        kind: the failure mode.
        clip_norm: a clipping threshold suggested from the run's healthy history.
        activation: the offending activation's name, when known (for the wording).

    Returns:
        A new list; the first remedy is the one to try first.
    """
    act = activation or "sigmoid/tanh"
    if kind is FailureMode.VANISHING_GRADIENT:
        return [
            Remedy(
                action=f"Replace {act} with a ReLU-family activation and use He init",
                why="Sigmoid's derivative is at most 0.25 and tanh's shrinks away from 0; "
                "the product over layers vanishes toward the input. ReLU passes gradient 1.",
                code="nn.ReLU()  # and: nn.init.kaiming_normal_(layer.weight, nonlinearity='relu')",
                key="relu_he",
            ),
            _BATCHNORM,
            Remedy(
                action="Add residual connections",
                why="A skip path carries the gradient around each block unchanged.",
                code="x = x + block(x)",
                key="residual",
            ),
        ]
    if kind is FailureMode.EXPLODING_GRADIENT:
        return [_LOWER_LR, _clip(clip_norm), _BATCHNORM]
    if kind is FailureMode.NONFINITE:
        return [
            _LOWER_LR,
            _clip(clip_norm),
            Remedy(
                action="Check the inputs and the loss for NaN/Inf and unsafe ops",
                why="log(0), division by zero or an fp16 overflow turn one value into NaN, "
                "which then spreads to every weight.",
                code="torch.autograd.set_detect_anomaly(True)  # while debugging only",
                key="check_numerics",
            ),
        ]
    if kind is FailureMode.DYING_RELU:
        return [
            _LOWER_LR,
            Remedy(
                action="Use Leaky ReLU, ELU or GELU instead of ReLU",
                why="A small negative-side slope keeps gradient flowing to a unit whose "
                "input is negative, so it can come back.",
                code="nn.LeakyReLU(0.01)  # or nn.ELU(), nn.GELU()",
                key="leaky_variant",
            ),
            Remedy(
                action="Use He (Kaiming) initialization",
                why="Var(w) = 2/fan_in keeps the pre-activation scale through ReLU layers.",
                code="nn.init.kaiming_normal_(layer.weight, nonlinearity='relu'); "
                "nn.init.zeros_(layer.bias)",
                key="he_init",
            ),
            Remedy(
                action="Check for large negative biases",
                why="A bias far below zero keeps the pre-activation negative for every input.",
                code="print(layer.bias.min())",
                key="check_bias",
            ),
        ]
    if kind is FailureMode.SATURATION:
        return [
            Remedy(
                action="Rescale the inputs and re-initialise with Xavier/Glorot init",
                why="Large pre-activations push sigmoid/tanh onto their flat tails, where "
                "the derivative is near 0.",
                code="nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain('tanh'))",
                key="xavier_init",
            ),
            _LOWER_LR,
            _BATCHNORM,
            Remedy(
                action="Use a non-saturating activation (ReLU family)",
                why="ReLU has no upper asymptote.",
                code="nn.ReLU()",
                key="relu_he",
            ),
        ]
    if kind is FailureMode.LINEAR_COLLAPSE:
        return [
            Remedy(
                action="Put a nonlinearity between the affine layers (or merge them)",
                why="W2(W1x+b1)+b2 = (W2W1)x + (W2b1+b2): stacked affine layers are one "
                "affine map and add no capacity.",
                code="nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k))",
                key="add_nonlinearity",
            )
        ]
    if kind is FailureMode.DEEP_SATURATING_STACK:
        return remedies_for(FailureMode.VANISHING_GRADIENT, activation=activation)
    if kind is FailureMode.INIT_MISMATCH:
        return [
            Remedy(
                action="Initialise with the gain that matches the activation",
                why="PyTorch's default Linear/Conv init has Var(w) = 1/(3 fan_in): in a ReLU "
                "stack the signal's second moment shrinks x1/6 per layer.",
                code="nn.init.kaiming_normal_(layer.weight, nonlinearity='relu')",
                key="he_init",
            )
        ]
    if kind is FailureMode.BORN_DEAD:
        return [
            Remedy(
                action="Widen the layers or make the net shallower",
                why="A width-N ReLU layer is all-zero at a given input with probability "
                "2^-N; over L-1 layers the chance that one is grows quickly.",
                code="nn.Linear(d, 64)  # wider hidden layers",
                key="widen",
            ),
            Remedy(
                action="Use Leaky ReLU, ELU or GELU",
                why="No zero-gradient half-line, so no layer can be all-dead.",
                code="nn.LeakyReLU(0.01)",
                key="leaky_variant",
            ),
            Remedy(
                action="Use He init with zero biases, or a small positive bias",
                why="Keeps about half of each layer's units active at initialisation.",
                code="nn.init.kaiming_normal_(w, nonlinearity='relu'); nn.init.constant_(b, 0.01)",
                key="he_init",
            ),
        ]
    raise ValueError(f"no remedies for {kind!r}; known: {[m.value for m in FailureMode]}")
