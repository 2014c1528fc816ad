"""gradvitals.collapse: a stack of affine layers equals one nn.Linear."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gradvitals
from gradvitals.errors import UsageError
from gradvitals.torch._collapse import collapse


def _random_bn(width: int, gen: torch.Generator, affine: bool = True) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(width, affine=affine).double()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(width, generator=gen, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(width, generator=gen, dtype=torch.float64) + 0.1)
        if affine:
            bn.weight.copy_(torch.randn(width, generator=gen, dtype=torch.float64))
            bn.bias.copy_(torch.randn(width, generator=gen, dtype=torch.float64))
    return bn


@settings(max_examples=60, deadline=None)
@given(
    widths=st.lists(st.integers(1, 12), min_size=2, max_size=6),
    extras=st.lists(st.sampled_from(["none", "identity", "dropout", "bn", "flatten"]), max_size=6),
    biases=st.lists(st.booleans(), min_size=6, max_size=6),
    nest=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_collapse_matches_random_stacks(
    widths: list[int], extras: list[str], biases: list[bool], nest: bool, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        lin = nn.Linear(widths[i], widths[i + 1], bias=biases[i]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen, dtype=torch.float64))
            if lin.bias is not None:
                lin.bias.copy_(torch.randn(lin.bias.shape, generator=gen, dtype=torch.float64))
        layers.append(lin)
        extra = extras[i] if i < len(extras) else "none"
        if extra == "identity":
            layers.append(nn.Identity())
        elif extra == "dropout":
            layers.append(nn.Dropout(0.5))
        elif extra == "bn":
            layers.append(_random_bn(widths[i + 1], gen, affine=bool(seed % 2)))
        elif extra == "flatten":
            layers.append(nn.Flatten())
    model: nn.Module = nn.Sequential(*layers)
    if nest and len(layers) >= 2:
        model = nn.Sequential(nn.Sequential(*layers[:1]), nn.Sequential(*layers[1:]))
    model.eval()
    one = collapse(model)
    assert isinstance(one, nn.Linear)
    assert (one.in_features, one.out_features) == (widths[0], widths[-1])
    assert one.weight.dtype == torch.float64
    x = torch.randn(7, widths[0], generator=gen, dtype=torch.float64)
    torch.testing.assert_close(one(x), model(x), rtol=1e-9, atol=1e-9)


def test_float32_stack_within_float_tolerance() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 32), nn.Dropout(0.1), nn.Linear(32, 32), nn.BatchNorm1d(32), nn.Linear(32, 4)
    )
    model.train()
    model(torch.randn(64, 8))  # give batch norm non-trivial running statistics
    model.eval()
    one = collapse(model)
    assert one.weight.dtype == torch.float32
    x = torch.randn(10, 8)
    torch.testing.assert_close(one(x), model(x), rtol=1e-4, atol=1e-5)


def test_single_module_and_top_level_delegate() -> None:
    lin = nn.Linear(3, 2)
    one = gradvitals.collapse(lin)
    assert one is not lin
    torch.testing.assert_close(one.weight, lin.weight)
    torch.testing.assert_close(one.bias, lin.bias)


def test_no_bias_anywhere_gives_no_bias() -> None:
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    assert collapse(model).bias is None
    partly = nn.Sequential(nn.Linear(3, 4, bias=True), nn.Linear(4, 2, bias=False))
    one = collapse(partly)
    x = torch.randn(5, 3)
    assert one.bias is not None
    torch.testing.assert_close(one(x), partly(x))


def test_dropout_in_training_mode_with_p_zero_is_fine() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.0), nn.Linear(4, 2)).train()
    x = torch.randn(5, 3)
    torch.testing.assert_close(collapse(model)(x), model(x))


def test_nonlinearity_names_the_module() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    with pytest.raises(UsageError, match=r"module '1\.1' \(ReLU\).*nonlinearity \(relu\)"):
        collapse(model)


def test_unsupported_module_names_the_module() -> None:
    with pytest.raises(UsageError, match=r"'1' \(Conv1d\).*does not know it to be affine"):
        collapse(nn.Sequential(nn.Linear(3, 4), nn.Conv1d(1, 1, 1)))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    with pytest.raises(UsageError, match=r"'0' \(Block\).*container.*nn.Sequential"):
        collapse(nn.Sequential(Block()))


def test_training_mode_says_call_eval() -> None:
    with pytest.raises(UsageError, match=r"'1' \(Dropout\) is in training mode.*model\.eval\(\)"):
        collapse(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)))
    with pytest.raises(UsageError, match=r"'1' \(BatchNorm1d\).*model\.eval\(\)"):
        collapse(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))


def test_batchnorm_without_running_stats() -> None:
    bn = nn.BatchNorm1d(4, track_running_stats=False).eval()
    with pytest.raises(UsageError, match="track_running_stats=False"):
        collapse(nn.Sequential(nn.Linear(3, 4), bn))


def test_flatten_that_is_not_a_noop() -> None:
    with pytest.raises(UsageError, match=r"start_dim=0"):
        collapse(nn.Sequential(nn.Linear(3, 4), nn.Flatten(start_dim=0)))


def test_width_mismatch_and_empty() -> None:
    with pytest.raises(UsageError, match="expects 5 input features but '0' produces 4"):
        collapse(nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)))
    with pytest.raises(UsageError, match=r"no nn\.Linear or nn\.BatchNorm1d"):
        collapse(nn.Sequential(nn.Identity(), nn.Dropout(0.0)))
    with pytest.raises(UsageError, match=r"takes a torch\.nn\.Module"):
        collapse("not a model")  # type: ignore[arg-type]
