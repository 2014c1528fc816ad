"""The remedy catalog: every remedy declared once, with code for each framework.

A :class:`RemedyTemplate` holds the action, the mechanism and a code snippet per
framework (``"torch"``, ``"keras"``) with ``{name}`` placeholders for its parameters
(a clip norm, a layer name). :func:`render` fills them and returns a
:class:`~gradvitals.findings.Remedy` whose ``params`` keep the numbers, so a repair
reads the clip norm from ``params``, never back out of the code string. Which
remedies a finding gets, and in which order, is the mode registry's business
(:mod:`gradvitals.remedies._modes`); lookup is by key, never by parsing text.

>>> r = render("clip_grad_norm", "torch", max_norm=2.5)
>>> r.code, r.params["max_norm"]
('torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=2.5)', 2.5)
>>> render("clip_grad_norm", "keras", max_norm=2.5).code
'keras.optimizers.Adam(learning_rate, global_clipnorm=2.5)  # or SGD(..., global_clipnorm=2.5)'
>>> render("nope", "torch")
Traceback (most recent call last):
...
KeyError: "no remedy 'nope'; known: ..."
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gradvitals.findings import Remedy

__all__ = ["TEMPLATES", "RemedyTemplate", "register_remedy", "render"]


@dataclass(frozen=True)
class RemedyTemplate:
    """One remedy, before its parameters are known.

    Attributes:
        key: the stable identifier (``"lower_lr"``); repair actions use the same keys.
        action: a short imperative; may hold ``{param}`` placeholders.
        why: the mechanism, in one or two sentences; may hold placeholders.
        code: per framework, a snippet to paste; may hold placeholders.
        defaults: parameter defaults (``{"max_norm": 1.0}``).
    """

    key: str
    action: str
    why: str
    code: Mapping[str, str]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def render(self, framework: str = "torch", **params: Any) -> Remedy:
        values = {**self.defaults, **{k: v for k, v in params.items() if v is not None}}
        shown = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in values.items()}
        code = self.code.get(framework, self.code.get("torch", ""))
        return Remedy(
            action=self.action.format(**shown),
            why=self.why.format(**shown),
            code=code.format(**shown),
            key=self.key,
            params=dict(values),
        )


TEMPLATES: dict[str, RemedyTemplate] = {}


def register_remedy(template: RemedyTemplate) -> RemedyTemplate:
    """Add a remedy to the catalog (a key may be registered once)."""
    if template.key in TEMPLATES:
        raise ValueError(f"remedy {template.key!r} is already registered")
    TEMPLATES[template.key] = template
    return template


def render(key: str, framework: str = "torch", **params: Any) -> Remedy:
    """The remedy ``key`` with code for ``framework`` and its parameters filled in."""
    try:
        template = TEMPLATES[key]
    except KeyError:
        raise KeyError(f"no remedy {key!r}; known: {', '.join(sorted(TEMPLATES))}") from None
    return template.render(framework, **params)


def _r(key: str, action: str, why: str, torch: str, keras: str = "", **defaults: Any) -> None:
    code = {"torch": torch, **({"keras": keras} if keras else {})}
    register_remedy(RemedyTemplate(key, action, why, code, defaults))


# -- learning rate, clipping, normalization ----------------------------------------------
_r(
    "lower_lr",
    "Lower the learning rate (try 10x lower)",
    "Steps that are too large push weights far past the region where the loss is "
    "well approximated; norms grow step after step.",
    "for g in optimizer.param_groups: g['lr'] *= 0.1",
    "model.optimizer.learning_rate = float(model.optimizer.learning_rate) * 0.1",
)
_r(
    "clip_grad_norm",
    "Clip the global gradient norm at {max_norm}",
    "Norm clipping rescales a too-long gradient and keeps its direction "
    "(Pascanu et al. 2013). {max_norm} is {source}.",
    "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={max_norm})",
    "keras.optimizers.Adam(learning_rate, global_clipnorm={max_norm})"
    "  # or SGD(..., global_clipnorm={max_norm})",
    max_norm=1.0,
    source="a threshold from your healthy gradient norms",
)
_r(
    "batchnorm",
    "Add batch normalization before each nonlinearity",
    "Normalizing pre-activations keeps their scale fixed from layer to layer, so "
    "signals and gradients neither shrink nor blow up with depth (Ioffe & Szegedy 2015).",
    "nn.Sequential(nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(), ...)",
    "keras.layers.Dense(h), keras.layers.BatchNormalization(), keras.layers.Activation('relu')",
)
# -- activations and initialisation -----------------------------------------------------
_r(
    "relu_he",
    "Replace {activation} with a ReLU-family activation and use He init",
    "Sigmoid's derivative is at most 0.25 and tanh's shrinks away from 0; "
    "the product over layers vanishes toward the input. ReLU passes gradient 1.",
    "nn.ReLU()  # and: nn.init.kaiming_normal_(layer.weight, nonlinearity='relu')",
    "keras.layers.Dense(h, activation='relu', kernel_initializer='he_normal')",
    activation="sigmoid/tanh",
)
_r(
    "residual",
    "Add residual connections",
    "A skip path carries the gradient around each block unchanged.",
    "x = x + block(x)",
    "x = keras.layers.Add()([x, block(x)])",
)
_r(
    "leaky_variant",
    "Use Leaky ReLU, ELU or GELU instead of ReLU",
    "A small negative-side slope keeps gradient flowing to a unit whose input is "
    "negative, so it can come back.",
    "nn.LeakyReLU(0.01)  # or nn.ELU(), nn.GELU()",
    "keras.layers.Dense(h, activation='leaky_relu')  # or 'elu', 'gelu'",
)
_r(
    "he_init",
    "Use He (Kaiming) initialization",
    "Var(w) = 2/fan_in keeps the pre-activation scale through ReLU layers.",
    "nn.init.kaiming_normal_(layer.weight, nonlinearity='relu'); nn.init.zeros_(layer.bias)",
    "keras.layers.Dense(h, activation='relu', kernel_initializer='he_normal', "
    "bias_initializer='zeros')",
)
_r(
    "check_bias",
    "Check for large negative biases",
    "A bias far below zero keeps the pre-activation negative for every input.",
    "print(model.get_submodule({layer!r}).bias.min())",
    "print(model.get_layer({layer!r}).bias.numpy().min())",
    layer="LAYER",
)
_r(
    "xavier_init",
    "Rescale the inputs and re-initialise with Xavier/Glorot init",
    "Large pre-activations push sigmoid/tanh onto their flat tails, where the "
    "derivative is near 0.",
    "nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain('tanh'))",
    "keras.layers.Dense(h, activation='tanh', kernel_initializer='glorot_uniform')"
    "  # and standardise the inputs",
)
# -- numerics -----------------------------------------------------------------------------
_r(
    "check_numerics",
    "Check the inputs and the loss for NaN/Inf and unsafe ops",
    "log(0), division by zero or an fp16 overflow turn one value into NaN, which then "
    "spreads to every weight.",
    "torch.autograd.set_detect_anomaly(True)  # while debugging only",
    "keras.callbacks.TerminateOnNaN()  # and, while debugging only: "
    "tf.debugging.enable_check_numerics()",
)
# -- structure ----------------------------------------------------------------------------
_r(
    "add_nonlinearity",
    "Put a nonlinearity between the affine layers (or merge them)",
    "W2(W1x+b1)+b2 = (W2W1)x + (W2b1+b2): stacked affine layers are one affine map and "
    "add no capacity.",
    "nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k))",
    "keras.layers.Dense(h, activation='relu'), keras.layers.Dense(k)",
)
_r(
    "widen",
    "Widen the layers or make the net shallower",
    "A width-N ReLU layer is all-zero at a given input with probability 2^-N; over L-1 "
    "layers the chance that one is grows quickly.",
    "nn.Linear(d, 64)  # wider hidden layers",
    "keras.layers.Dense(64, activation='relu')  # wider hidden layers",
)
# -- pre-flight: the loss, the output layer and the data ---------------------------------
_r(
    "remove_output_activation",
    "Remove the output activation and let the loss see raw logits",
    "nn.CrossEntropyLoss applies log_softmax and nn.BCEWithLogitsLoss applies logsigmoid themselves. A softmax/sigmoid before them is applied twice and caps the reachable probability; a ReLU/softplus forbids negative logits and can kill outputs. Apply softmax/sigmoid only when you need probabilities at inference.",
    "model = nn.Sequential(..., nn.Linear(h, n_classes))  # no nn.Softmax/nn.ReLU after\nloss = nn.CrossEntropyLoss()(model(x), y)\nprobs = model(x).softmax(dim=-1)  # at inference only",
    "keras.layers.Dense(n_classes)  # no activation\nmodel.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))",
)
_r(
    "match_loss",
    "Pair the output layer, the loss and the targets",
    "Each loss assumes an output range and a target form: class indices -> raw logits + CrossEntropyLoss; 0/1 (multi-)labels -> raw logits + BCEWithLogitsLoss; real values -> a linear output + MSELoss/L1Loss on scaled targets. A one-unit output cannot carry a softmax or a cross-entropy over classes.",
    "nn.Linear(h, n_classes) + nn.CrossEntropyLoss()       # y: int64 class ids, shape (N,)\nnn.Linear(h, 1) + nn.BCEWithLogitsLoss()              # y: float 0/1, shape (N, 1)\nnn.Linear(h, 1) + nn.MSELoss()                        # y: float, standardised",
    "Dense(n_classes) + SparseCategoricalCrossentropy(from_logits=True)  # y: int ids\nDense(1) + BinaryCrossentropy(from_logits=True)                    # y: 0/1\nDense(1) + 'mse'                                                   # y: standardised",
)
_r(
    "stable_loss",
    "Use the fused, stable log-probability ops",
    "In float32, softmax underflows to exactly 0 once two logits differ by 104 (the precision is gone from a gap of 88) and sigmoid rounds to exactly 1.0 above 16.7; log then gives -inf and the gradient NaN or 0. log_softmax and logsigmoid compute the same values from the logits without forming the probability.",
    "log_p = F.log_softmax(logits, dim=-1)      # not torch.log(F.softmax(logits, dim=-1))\nloss = F.nll_loss(log_p, y)                # or F.cross_entropy(logits, y)\nloss = F.binary_cross_entropy_with_logits(logits, y)  # not log(sigmoid(logits))",
    "",
)
_r(
    "normalize_data",
    "Standardise the inputs (and regression targets) to about unit scale",
    "Default initialisations assume inputs with mean ~0 and variance ~1 (LeCun et al. 1998). At input scale s the first layer's pre-activations are s times too large and its SGD step s^2 times; a target of scale s makes the initial loss ~s^2 and the output layer needs ~s/lr steps just to reach it. Invert the target scaling at prediction time.",
    "mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-8)\nx = (x - mean) / std                       # images: x = x.float() / 255\ny_mean, y_std = y_train.mean(), y_train.std()\ny = (y - y_mean) / y_std                   # predict: out * y_std + y_mean",
    "norm = keras.layers.Normalization(); norm.adapt(x_train)  # first layer: norm\nkeras.layers.Rescaling(1 / 255)                          # images\ny = (y - y_train.mean()) / y_train.std()                 # regression targets",
)
# -- causes: what the user changes ----------------------------------------------------------
_r(
    "clean_inputs",
    "Find and drop (or repair) the batches whose inputs hold NaN/Inf",
    "A single NaN in the input makes the loss NaN, and one optimizer step spreads it to "
    "every weight; the learning rate has nothing to do with it.",
    "assert torch.isfinite(x).all(), 'bad batch'  # or: x = torch.nan_to_num(x) / filter rows",
    "x = np.nan_to_num(x)  # or drop the rows: keep = np.isfinite(x).all(axis=1)",
)
_r(
    "clean_targets",
    "Find and drop (or repair) the targets/labels that hold NaN/Inf",
    "A NaN target makes the loss and every gradient NaN, whatever the model does.",
    "keep = torch.isfinite(y).all(dim=-1) if y.ndim > 1 else torch.isfinite(y)\n"
    "x, y = x[keep], y[keep]",
    "keep = np.isfinite(y).reshape(len(y), -1).all(axis=1); x, y = x[keep], y[keep]",
)
_r(
    "guard_op",
    "Make the op that produced the NaN safe at its edge case",
    "log(0), sqrt at 0 (infinite derivative), 0/0 and a softmax over a fully masked row "
    "are NaN/Inf for some inputs whatever the learning rate; guard the input range.",
    "torch.log(p.clamp_min(1e-12)); torch.sqrt(x + 1e-12); s / n.clamp_min(1)\n"
    "scores.masked_fill(mask, torch.finfo(scores.dtype).min)  # not -inf: no all-masked NaN",
    "keras.ops.log(keras.ops.maximum(p, 1e-7)); keras.ops.sqrt(x + 1e-12)",
)
_r(
    "fix_precision",
    "Keep the overflowing part in float32 (or use bfloat16, or a GradScaler)",
    "float16 overflows above 65504; activations, attention scores and sums of squares "
    "exceed it long before float32 would. bfloat16 has float32's range.",
    "with torch.autocast('cuda', dtype=torch.bfloat16): ...  # or: scaler = torch.amp.GradScaler()",
    "keras.mixed_precision.set_global_policy('mixed_bfloat16')  # or keep 'float32'",
)
_r(
    "zero_grad",
    "Zero the gradients at every step",
    "Without optimizer.zero_grad() each backward adds to the last step's gradients: the "
    "step grows with every iteration until the run diverges.",
    "optimizer.zero_grad(set_to_none=True)  # before loss.backward(), every step",
    "# Keras' fit() zeroes gradients itself; in a custom loop apply the tape's fresh gradients",
)
_r(
    "reinit",
    "Re-initialise with the init that matches the activation (and zero the biases)",
    "He init (Var(w) = 2/fan_in) for ReLU-family layers, Xavier/Glorot for tanh/sigmoid: "
    "the signal keeps its scale and about half the ReLUs are active from the start.",
    "nn.init.kaiming_normal_(layer.weight, nonlinearity='relu'); nn.init.zeros_(layer.bias)",
    "keras.layers.Dense(h, activation='relu', kernel_initializer='he_normal', "
    "bias_initializer='zeros')",
)
_r(
    "fix_graph",
    "Reconnect the computation graph and train the right parameters",
    "No gradient reaches the weights: the loss was computed from a detached value (.item(), "
    ".data, numpy), the parameters are frozen, or the optimizer holds another model's.",
    "loss = loss_fn(model(x), y)  # no .item()/.detach() before backward\n"
    "optimizer = torch.optim.SGD(model.parameters(), lr=...)  # after building this model",
    "model.trainable = True  # and compute the loss from model(x) inside the GradientTape",
)
# -- stalled and diverged_plateau (issue 12, item 3) ---------------------------------------
_r(
    "check_graph",
    "Connect the loss to the parameters",
    "No gradient reached any parameter: something between the parameters and the loss "
    "cut the autograd graph (.item(), .detach(), .numpy(), torch.no_grad(), a new tensor "
    "built from the loss value), or the output is constant (a softmax over one unit). "
    "loss.grad_fn is None, or every p.grad is None or 0, after backward().",
    "loss.backward()\n"
    "print(loss.grad_fn)  # None: the graph was cut before the loss\n"
    "print([n for n, p in model.named_parameters() if p.requires_grad "
    "and (p.grad is None or not p.grad.any())])",
    "with tf.GradientTape() as tape:\n"
    "    loss = loss_fn(y, model(x, training=True))\n"
    "grads = tape.gradient(loss, model.trainable_variables)\n"
    "print([v.path for v, g in zip(model.trainable_variables, grads) if g is None])",
)
_r(
    "unfreeze",
    "Make the parameters trainable and give them to the optimizer",
    "Frozen parameters (requires_grad=False, trainable=False) and parameters missing from "
    "the optimizer never change; an optimizer built before the model was replaced or "
    "moved updates the old tensors.",
    "for p in model.parameters():\n"
    "    p.requires_grad_(True)\n"
    "optimizer = torch.optim.AdamW(model.parameters(), lr=lr)  # after model.to(device)",
    "model.trainable = True  # then compile again: model.compile(...)\n"
    "print(len(model.trainable_variables))",
)
_r(
    "check_lr",
    "Check the learning rate the optimizer actually uses",
    "Gradients arrive but the weights do not move: the step size is about 0 (lr=0, a "
    "warm-up that starts at 0 and never rises, a scheduler stepped with the wrong unit, "
    "a factor applied twice).",
    "print([g['lr'] for g in optimizer.param_groups])  # at several steps",
    "print(float(model.optimizer.learning_rate))  # at several steps",
)
_r(
    "lr_warmup",
    "Warm the learning rate up over the first steps",
    "Adam's first steps move every weight by about the learning rate, whatever the "
    "gradient's scale; without a warm-up they can throw a transformer out of its basin "
    "for good (Liu et al. 2020; Xiong et al. 2020).",
    "scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / {warmup}))\n"
    "# call scheduler.step() after every optimizer.step()",
    "lr = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total_steps, "
    "warmup_target=peak_lr, warmup_steps={warmup})\n"
    "optimizer = keras.optimizers.Adam(learning_rate=lr)",
    warmup=1000,
)
_r(
    "restore_checkpoint",
    "Resume from a checkpoint saved before the jump",
    "A run knocked off its basin rarely finds its way back: the loss stays high without "
    "a NaN. Go back to weights from before the jump and continue with a lower learning "
    "rate (or a warm-up), rather than training on from the plateau.",
    "state = torch.load(path)\n"
    "model.load_state_dict(state['model']); optimizer.load_state_dict(state['optimizer'])\n"
    "for g in optimizer.param_groups: g['lr'] *= 0.1",
    "model.load_weights(path)\n"
    "model.optimizer.learning_rate = float(model.optimizer.learning_rate) * 0.1",
)
# -- end of stalled and diverged_plateau --------------------------------------------------
