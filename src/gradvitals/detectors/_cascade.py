"""One root, its consequences nested: which new findings an earlier failure explains.

A learning rate 100x too large first *explodes*; the large steps then leave ReLU units
dead and sigmoid units saturated, and later the weights overflow to NaN. Reported
flat, that is a list of unrelated-looking failures; the user needs the first one and
what to change. :func:`nest` takes a window's new findings and the findings so far,
attaches every new finding that an earlier (or same-window) *root* explains to that
root's :attr:`~gradvitals.Finding.consequences`, and returns the findings that
remain roots. The rules, in order:

1. **The same units under two names** (``same_units``). A dying-ReLU finding whose
   dead units are the same units as another dying-ReLU finding's (same unit count,
   dead index sets with a Jaccard overlap of at least :data:`SAME_UNITS`) is one
   failure seen twice: the ReLU module's output ``layer4.1.relu`` and the input of
   the layer after it (``fc``, behind a pooling). The twin is looked for in the same
   window and among earlier findings still open (rule 3). The output site is kept
   (it names the activation), or else the first site in forward order, or else the
   finding made first; the other is nested under it.
2. **Instability explains its aftermath** (``aftermath``). A finding of kind ``k``
   is a consequence of an open root ``r`` when ``k`` is in :data:`EFFECTS` ``[r.kind]``,
   the root came first (``r.step <= f.step``; in the same window by
   :data:`ROOT_RANK`), and the finding's cause does not point elsewhere (it is the
   root's, or not one of :data:`OWN_ORIGIN`: bad data, a loop bug, an unstable loss, a
   bad init or output layer). :data:`EFFECTS`:

   - ``exploding_gradient`` and ``diverged_plateau`` explain dead and saturated
     units (large steps push pre-activations far out), NaNs (the overflow that
     follows), vanishing gradients behind them (a recurrent net's gates saturate
     after an explosion), a stalled net (everything dead), and later episodes of
     either kind while the first has not closed;
   - ``dying_relu`` and ``saturation`` explain vanishing gradients below them (a
     dead or saturated layer cuts the gradient, as the suite already assumes in one
     window) and a stalled net (every unit dead);
   - ``nonfinite``, ``vanishing_gradient`` and ``stalled`` explain nothing.
3. **A root is open** while its damage lasts: the window ends within :data:`GAP`
   window lengths (of the window just closed) of the root's latest step (its own,
   or its latest consequence's), or the window's loss is non-finite or still more
   than 10% of its magnitude above the loss before the root
   (``evidence["loss_before"]``, ``"loss_median"`` or ``"first_loss"``, the first
   present). A run that recovered and fails much later starts a new root.
4. A consequence attaches to the **earliest** open root that explains it, so a
   cascade has one root. A consequence whose cause is ``UNKNOWN`` takes the root's
   cause (dead units after a learning-rate explosion are fixed by the learning
   rate); ``evidence["root"]`` names the root and ``evidence["cascade_rule"]`` the rule.

>>> from gradvitals.findings import Cause, FailureMode, Finding
>>> from gradvitals.stats import LossStats, WindowRecord
>>> boom = Finding(FailureMode.EXPLODING_GRADIENT, "fc2", 20, "norm 50x",
...                {"first_loss": 2.3}, cause=Cause.LEARNING_RATE)
>>> dead = Finding(FailureMode.DYING_RELU, "relu1", 60, "70% dead")
>>> window = WindowRecord(3, 41, 60, loss=LossStats(sum=9.0, count=1))
>>> nest([dead], [boom], window)
[]
>>> [(c.kind.value, c.cause.value) for c in boom.consequences]
[('dying_relu', 'learning_rate')]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from gradvitals.findings import Cause, FailureMode, Finding
from gradvitals.stats import WindowRecord

__all__ = [
    "EFFECTS",
    "GAP",
    "OWN_ORIGIN",
    "ROOT_RANK",
    "SAME_UNITS",
    "is_open",
    "nest",
    "same_units",
]

_F = FailureMode
_AFTERMATH = frozenset(
    {
        _F.DYING_RELU,
        _F.SATURATION,
        _F.NONFINITE,
        _F.VANISHING_GRADIENT,
        _F.STALLED,
        _F.EXPLODING_GRADIENT,
        _F.DIVERGED_PLATEAU,
    }
)

#: root kind -> the kinds it explains (rule 2).
EFFECTS: dict[Any, frozenset[Any]] = {
    _F.EXPLODING_GRADIENT: _AFTERMATH,
    _F.DIVERGED_PLATEAU: _AFTERMATH,
    _F.DYING_RELU: frozenset({_F.VANISHING_GRADIENT, _F.STALLED}),
    _F.SATURATION: frozenset({_F.VANISHING_GRADIENT, _F.STALLED}),
}

#: Within one window, roots are taken in this order (lower first): the instability
#: before what it leaves behind. Kinds not listed rank last.
ROOT_RANK: dict[Any, int] = {
    _F.EXPLODING_GRADIENT: 0,
    _F.DIVERGED_PLATEAU: 1,
    _F.NONFINITE: 2,
    _F.DYING_RELU: 3,
    _F.SATURATION: 3,
    _F.VANISHING_GRADIENT: 4,
    _F.STALLED: 4,
}

#: A root stays open this many windows after its latest step (rule 3): dead units
#: need ``dead_patience`` (2) windows to be reported after the step that killed them.
GAP = 3

#: Two dead-unit sets are the same units at this Jaccard overlap or more (rule 1).
SAME_UNITS = 0.9

_RECOVERED = 1.1  # the loss is back when it is within 10% of its level before the root

#: Causes with an origin of their own (the data, the loop, the loss, the init, the
#: output layer): a finding with one of them is a root even during an open episode.
OWN_ORIGIN = frozenset(
    {
        Cause.NONFINITE_INPUT,
        Cause.NONFINITE_TARGET,
        Cause.UNSTABLE_LOSS,
        Cause.MISSING_ZERO_GRAD,
        Cause.UNSCALED_DATA,
        Cause.BAD_INIT,
        Cause.OUTPUT_ACTIVATION,
    }
)
_REFERENCES = ("loss_before", "loss_median", "first_loss")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not (math.isnan(x) or math.isinf(x))


def _walk(f: Finding) -> Iterator[Finding]:
    yield f
    for c in f.consequences:
        yield from _walk(c)


def _latest_step(root: Finding) -> int:
    return max(f.step for f in _walk(root))


def _window_loss(record: WindowRecord) -> float:
    loss = record.loss
    if loss is None or not loss.count:
        return math.nan
    if loss.n_nonfinite:
        return math.inf
    return loss.mean


def is_open(root: Finding, record: WindowRecord, gap: int = GAP) -> bool:
    """Rule 3: the root's damage lasts in ``record``'s window.

    >>> from gradvitals.stats import LossStats, WindowRecord
    >>> root = Finding(FailureMode.EXPLODING_GRADIENT, None, 10, "", {"loss_median": 2.0})
    >>> is_open(root, WindowRecord(9, 191, 200, loss=LossStats(sum=5.0, count=1)))
    True
    >>> is_open(root, WindowRecord(9, 191, 200, loss=LossStats(sum=2.1, count=1)))
    False
    >>> is_open(root, WindowRecord(2, 21, 30, loss=LossStats(sum=2.1, count=1)))
    True
    """
    length = max(1, record.step_end - record.step_start + 1)
    if record.step - _latest_step(root) <= gap * length:
        return True
    loss = _window_loss(record)
    if math.isinf(loss):
        return True
    ref = next((root.evidence[k] for k in _REFERENCES if _finite(root.evidence.get(k))), None)
    return ref is not None and _finite(loss) and loss > ref + (_RECOVERED - 1.0) * abs(ref)


def _dead_units(f: Finding) -> tuple[int, frozenset[int]] | None:
    if f.kind is not _F.DYING_RELU:
        return None
    units, idx = f.evidence.get("units"), f.evidence.get("dead_unit_indices")
    if not isinstance(units, int) or not isinstance(idx, (list, tuple)) or not idx:
        return None
    return units, frozenset(int(i) for i in idx)


def same_units(a: Finding, b: Finding) -> bool:
    """Rule 1: two dying-ReLU findings over the same units (same count, Jaccard >= 0.9),
    one of them an input site: the activation's output and the next layer's input are
    one set of units under two names. Two activation outputs are two layers, even when
    both are entirely dead.

    >>> def dead(site, idx, role="output"):
    ...     ev = {"units": 8, "dead_unit_indices": idx, "site_role": role}
    ...     return Finding(FailureMode.DYING_RELU, site, 40, "", ev)
    >>> same_units(dead("layer4.1.relu", [0, 2, 3, 5, 6]), dead("fc", [0, 2, 3, 5, 6], "input"))
    True
    >>> same_units(dead("layer4.1.relu", [0, 2, 3, 5, 6]), dead("fc", [1, 4, 7], "input"))
    False
    >>> same_units(dead("net.1", list(range(8))), dead("net.3", list(range(8))))
    False
    """
    da, db = _dead_units(a), _dead_units(b)
    if da is None or db is None or da[0] != db[0] or a is b:
        return False
    if _is_output_site(a) == _is_output_site(b):
        return False
    inter, union = len(da[1] & db[1]), len(da[1] | db[1])
    return union > 0 and inter / union >= SAME_UNITS


def _site_order(record: WindowRecord, f: Finding) -> int:
    site = f.evidence.get("site", f.layer)
    names = list(record.sites)
    for key in (site, f.layer):
        if key in names:
            return names.index(key)
    return len(names)


def _is_output_site(f: Finding) -> bool:
    return f.evidence.get("site_role", "output") == "output"


def _attach(root: Finding, f: Finding, rule: str) -> None:
    f.evidence.setdefault(
        "root", {"kind": str(root.kind.value), "step": root.step, "layer": root.layer}
    )
    f.evidence.setdefault("cascade_rule", rule)
    if f.cause is Cause.UNKNOWN and rule == "aftermath":
        f.cause = root.cause
    root.consequences.append(f)


def nest(
    new: list[Finding], earlier: Sequence[Finding], record: WindowRecord, *, gap: int = GAP
) -> list[Finding]:
    """Nest the window's new findings under the roots that explain them.

    Args:
        new: the findings of the window just closed (the detector suite's output).
        earlier: the findings reported before this window, roots with their
            consequences (``session.findings``); they are never removed, only
            extended.
        record: the window just closed (its loss and length decide whether a root is
            still open; its site order decides which of two names is kept).
        gap: windows a root stays open after its latest step (:data:`GAP`).

    Returns:
        The new findings that remain roots, in their original order. Every other new
        finding was appended (in place) to some root's ``consequences``, at any
        depth of ``earlier`` or the returned roots.
    """
    roots: list[Finding] = [f for f in earlier if not f.final]
    everything = [g for r in roots for g in _walk(r)]
    order = sorted(
        range(len(new)),
        key=lambda i: (
            ROOT_RANK.get(new[i].kind, 9),
            not _is_output_site(new[i]),
            _site_order(record, new[i]),
            i,
        ),
    )
    kept: list[Finding] = []
    for i in order:
        f = new[i]
        twin = next(
            (
                g
                for g in everything
                if same_units(g, f) and (g.step == f.step or is_open(g, record, gap))
            ),
            None,
        )
        if twin is not None:
            f.evidence.setdefault("same_units_as", twin.evidence.get("site", twin.layer))
            _attach(twin, f, "same_units")
            everything.append(f)
            continue
        root = next(
            (
                r
                for r in roots + kept
                if f.kind in EFFECTS.get(r.kind, ())
                and r.step <= f.step
                and (f.cause is r.cause or f.cause not in OWN_ORIGIN)
                and is_open(r, record, gap)
            ),
            None,
        )
        if root is not None:
            _attach(root, f, "aftermath")
            everything.append(f)
            continue
        kept.append(f)
        everything.append(f)
    return [f for f in new if any(f is k for k in kept)]
