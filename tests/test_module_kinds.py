"""Module recognition across torch.nn, Hugging Face transformers and timm.

transformers is installed, so its classes are built for real; timm is not, so its
classes are stand-ins with timm's names and defining modules (what the lookup reads).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradvitals.activations import activation_name_for_module, from_module
from gradvitals.torch._modules import (
    affine_out_units,
    is_affine,
    is_conv_like,
    is_embedding,
    is_normalization,
    is_recurrent,
)

hf_act = pytest.importorskip("transformers.activations")


def fake(name: str, module: str, base: type = nn.Module) -> nn.Module:
    """An instance of a class called ``name`` that claims to live in ``module``."""
    return type(name, (base,), {"__module__": module})()  # type: ignore[no-any-return]


# --- activations ----------------------------------------------------------------------------

HF_CASES = {
    "GELUActivation": "gelu",
    "NewGELUActivation": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "AccurateGELUActivation": "gelu_tanh",
    "QuickGELUActivation": "gelu",
    "SiLUActivation": "silu",
    "MishActivation": "mish",
    "LinearActivation": "identity",
    "LaplaceActivation": "sigmoid",
    "ReLUSquaredActivation": "relu",
    "SqrtSoftplusActivation": "softplus",
}


@pytest.mark.parametrize(("cls_name", "expected"), list(HF_CASES.items()))
def test_transformers_activation_classes(cls_name: str, expected: str) -> None:
    cls = getattr(hf_act, cls_name, None)
    if cls is None:
        pytest.skip(f"this transformers has no {cls_name}")
    assert activation_name_for_module(cls()) == expected
    entry = from_module(cls())
    assert entry is not None and entry.name == expected


def test_transformers_factory_modules_and_clipped_gelu() -> None:
    assert activation_name_for_module(hf_act.ACT2FN["gelu_10"]) == "gelu"  # clipped GELU
    assert activation_name_for_module(hf_act.ACT2FN["gelu_new"]) == "gelu_tanh"
    assert activation_name_for_module(hf_act.ACT2FN["relu"]) == "relu"  # a torch.nn class
    assert activation_name_for_module(hf_act.ACT2FN["swish"]) == "silu"


def test_mapped_entries_are_close_to_what_the_module_computes() -> None:
    """The mapping claims "exact" or "closest": check the numbers behind each claim."""
    from gradvitals.activations import get

    x = torch.linspace(-6.0, 6.0, 2001, dtype=torch.float64)
    exact = {"GELUActivation", "NewGELUActivation", "FastGELUActivation", "SiLUActivation"}
    for cls_name in exact | {"QuickGELUActivation", "AccurateGELUActivation"}:
        mod = getattr(hf_act, cls_name)()
        ref = torch.as_tensor(get(HF_CASES[cls_name]).f(x.numpy()))
        err = float((mod(x) - ref).abs().max())
        bound = 0.021 if cls_name == "QuickGELUActivation" else 1e-3
        assert err < bound, (cls_name, err)
    assert float(hf_act.LinearActivation()(x).sub(x).abs().max()) == 0.0


TIMM_CASES = [
    ("Swish", "timm.layers.activations", "silu"),
    ("Mish", "timm.layers.activations", "mish"),
    ("GELU", "timm.layers.activations", "gelu"),
    ("GELUTanh", "timm.layers.activations", "gelu_tanh"),
    ("QuickGELU", "timm.layers.activations", "gelu"),
    ("HardSwish", "timm.layers.activations", "hardswish"),
    ("HardSigmoid", "timm.layers.activations", "hardsigmoid"),
    ("Sigmoid", "timm.layers.activations", "sigmoid"),
    ("Tanh", "timm.layers.activations", "tanh"),
    ("HardMish", "timm.layers.activations", "hardswish"),
    ("SwishMe", "timm.layers.activations_me", "silu"),
    ("HardSigmoidJit", "timm.models.layers.activations_jit", "hardsigmoid"),
]


@pytest.mark.parametrize(("cls_name", "module", "expected"), TIMM_CASES)
def test_timm_activation_classes_by_name(cls_name: str, module: str, expected: str) -> None:
    assert activation_name_for_module(fake(cls_name, module)) == expected


def test_timm_prelu_subclass_and_subclasses_of_known_classes() -> None:
    assert activation_name_for_module(fake("PReLU", "timm.layers.activations", nn.PReLU)) == "prelu"
    sub = type("MyGELU", (hf_act.NewGELUActivation,), {"__module__": "mypkg"})()
    assert activation_name_for_module(sub) == "gelu_tanh"


def test_names_from_other_packages_are_not_guessed() -> None:
    for cls_name, module in [
        ("GELU", "mypkg.layers"),  # a timm name outside timm
        ("NewGELUActivation", "not_transformers.acts"),
        ("Swish", "transformers.activations"),  # a timm name inside transformers
        ("XIELUActivation", "transformers.activations"),  # no close catalog entry
        ("Softmax", "timm.layers"),
    ]:
        assert activation_name_for_module(fake(cls_name, module)) is None, cls_name
    assert activation_name_for_module(nn.Identity()) is None
    assert activation_name_for_module(nn.GELU(approximate="tanh")) == "gelu_tanh"


# --- layer kinds ------------------------------------------------------------------------------


def test_affine_units_torch_and_gpt2_conv1d() -> None:
    from transformers.pytorch_utils import Conv1D

    proj = Conv1D(nf=12, nx=4)  # GPT-2: weight (in=4, out=12)
    assert tuple(proj.weight.shape) == (4, 12)
    assert affine_out_units(proj) == 12 and is_affine(proj) and not is_conv_like(proj)
    assert proj(torch.randn(2, 3, 4)).shape[-1] == affine_out_units(proj)
    cases: list[tuple[nn.Module, int | None]] = [
        (nn.Linear(4, 7), 7),
        (nn.Conv1d(2, 5, 3), 5),
        (nn.Conv3d(2, 6, 1), 6),
        (nn.ConvTranspose2d(3, 9, 2), 9),
        (nn.LazyLinear(4), 4),
        (nn.Embedding(10, 3), None),
        (nn.LayerNorm(3), None),
        (nn.ReLU(), None),
    ]
    for mod, units in cases:
        assert affine_out_units(mod) == units, type(mod).__name__
        assert is_affine(mod) is (units is not None), type(mod).__name__
    # a class named Conv1D outside transformers, or without nf, is not GPT-2's
    assert affine_out_units(fake("Conv1D", "mypkg")) is None
    assert not is_affine(fake("Conv1D", "transformers.pytorch_utils"))


def test_conv_like_means_channels_on_dim_1() -> None:
    conv = nn.Conv2d(3, 8, 3)
    assert is_conv_like(conv) and conv(torch.randn(2, 3, 5, 5)).shape[1] == 8
    assert not is_conv_like(nn.Linear(3, 8)) and not is_conv_like(nn.BatchNorm2d(3))


def test_normalization_layers() -> None:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norms: list[nn.Module] = [
        nn.BatchNorm1d(3),
        nn.BatchNorm2d(3),
        nn.SyncBatchNorm(3),
        nn.LayerNorm(3),
        nn.GroupNorm(1, 3),
        nn.InstanceNorm2d(3),
        nn.LocalResponseNorm(2),
        LlamaRMSNorm(3),
        fake("LayerNorm2d", "timm.layers.norm"),
        fake("RmsNorm", "timm.layers.norm"),
        fake("BatchNormAct2d", "timm.layers.norm_act"),
        fake("T5LayerNorm", "transformers.models.t5.modeling_t5"),
    ]
    if hasattr(nn, "RMSNorm"):
        norms.append(nn.RMSNorm(3))
    for m in norms:
        assert is_normalization(m), type(m).__name__
    for m in [
        nn.Linear(3, 3),
        nn.Dropout(),
        fake("LayerNorm2d", "mypkg"),  # only transformers/timm classes are read by name
        fake("NormalizedLinear", "timm.layers"),
    ]:
        assert not is_normalization(m), type(m).__name__


def test_recurrent_and_embedding() -> None:
    for m in (nn.RNN(2, 3), nn.LSTM(2, 3), nn.GRU(2, 3), nn.RNNCell(2, 3), nn.LSTMCell(2, 3)):
        assert is_recurrent(m) and not is_affine(m), type(m).__name__
    assert not is_recurrent(nn.Linear(2, 3))
    assert is_embedding(nn.Embedding(5, 2)) and is_embedding(nn.EmbeddingBag(5, 2))
    assert not is_embedding(nn.Linear(5, 2))


def test_gpt2_model_layers_are_classified() -> None:
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=16, vocab_size=11)
    model = GPT2Model(cfg)
    kinds = {
        name: (
            affine_out_units(m),
            is_normalization(m),
            is_embedding(m),
            activation_name_for_module(m),
        )
        for name, m in model.named_modules()
    }
    assert kinds["h.0.mlp.c_fc"][0] == 4 * 8 and kinds["h.0.attn.c_attn"][0] == 3 * 8
    assert kinds["h.0.ln_1"][1] and kinds["ln_f"][1]
    assert kinds["wte"][2] and kinds["wpe"][2]
    assert kinds["h.0.mlp.act"][3] == "gelu_tanh"  # GPT-2's default "gelu_new"
    assert sum(1 for k in kinds.values() if k[0] is not None) == 4  # c_attn, c_proj x2, c_fc
