"""The catalog entries, in display order (bounded/saturating first, then the ReLU family).

Sources: PyTorch ``torch/nn/modules/activation.py`` and ``torch/nn/init.py``; Keras 3
``keras/src/activations/activations.py``, ``layers/activations/`` and ``ops/nn.py``
(each entry cites its source).

>>> [a.name for a in ENTRIES][:4]
['identity', 'sigmoid', 'tanh', 'hardsigmoid']
"""

from __future__ import annotations

import math

from numpy.typing import ArrayLike

from gradvitals.activations import _functions as fn
from gradvitals.activations._entry import Activation
from gradvitals.activations._entry import Saturation as S

__all__ = ["ENTRIES", "LEAKY_SLOPE", "PRELU_INIT", "RRELU_EVAL_SLOPE"]

INF = math.inf
SQRT2 = math.sqrt(2.0)

#: PyTorch defaults for the negative-side slopes.
LEAKY_SLOPE = 0.01
PRELU_INIT = 0.25
RRELU_LOWER, RRELU_UPPER = 1.0 / 8.0, 1.0 / 3.0
RRELU_EVAL_SLOPE = (RRELU_LOWER + RRELU_UPPER) / 2.0  # 0.2292 = 11/48

_HE = "He/Kaiming: nn.init.kaiming_normal_(w, nonlinearity='relu')"
_NO_GAIN = "convention: calculate_gain has no entry; ReLU-like, so He's sqrt(2)"


def _he_leaky_gain(a: float) -> float:
    """He et al. 2015: (1 + a^2) n Var(w) / 2 = 1, i.e. gain sqrt(2 / (1 + a^2))."""
    return math.sqrt(2.0 / (1.0 + a * a))


def _leaky(x: ArrayLike) -> fn.F64:
    return fn.leaky(x, LEAKY_SLOPE)


def _dleaky(x: ArrayLike) -> fn.F64:
    return fn.dleaky(x, LEAKY_SLOPE)


def _prelu(x: ArrayLike) -> fn.F64:
    return fn.leaky(x, PRELU_INIT)


def _dprelu(x: ArrayLike) -> fn.F64:
    return fn.dleaky(x, PRELU_INIT)


def _rrelu(x: ArrayLike) -> fn.F64:
    return fn.leaky(x, RRELU_EVAL_SLOPE)


def _drrelu(x: ArrayLike) -> fn.F64:
    return fn.dleaky(x, RRELU_EVAL_SLOPE)


_GELU_TRAPS = (
    "keras.activations.gelu defaults to the exact erf form (approximate=False) but "
    "keras.ops.gelu defaults to the tanh approximation (approximate=True); PyTorch's "
    "nn.GELU() is exact unless approximate='tanh'.",
    "The exact and tanh forms differ by at most 4.7e-4, enough to break bit-exact "
    "weight ports between frameworks (Hugging Face calls the tanh form 'gelu_new' or "
    "'gelu_pytorch_tanh').",
    "No torch.nn.init.calculate_gain entry: He init is the usual choice for MLPs; "
    "transformers often use N(0, 0.02) instead.",
)

ENTRIES: tuple[Activation, ...] = (
    Activation(
        name="identity",
        title="Identity (linear)",
        formula="x",
        latex=r"f(x) = x",
        derivative="1",
        derivative_latex=r"f'(x) = 1",
        f=fn.identity,
        df=fn.didentity,
        output_range=(-INF, INF),
        range_text="(-inf, inf)",
        saturates_left=S.NONE,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=True,
        can_die=False,
        init="LeCun/Xavier: nn.init.xavier_uniform_(w)",
        gain=1.0,
        gain_source="torch.nn.init.calculate_gain('linear')",
        torch_name="Identity",
        torch_defaults={},
        keras_name="linear",
        keras_signature="keras.activations.linear(x)",
        traps=(
            "Keras calls it 'linear' (also what Dense(activation=None) means); "
            "PyTorch has nn.Identity.",
            "Stacked affine layers with identity between collapse into one affine map: "
            "see gradvitals.collapse().",
        ),
        paper="(none)",
        aliases=("linear",),
    ),
    Activation(
        name="sigmoid",
        title="Logistic sigmoid",
        formula="1 / (1 + exp(-x))",
        latex=r"\sigma(x) = \frac{1}{1 + e^{-x}}",
        derivative="sigmoid(x) * (1 - sigmoid(x)), at most 0.25 (at x = 0)",
        derivative_latex=r"\sigma'(x) = \sigma(x)\,(1 - \sigma(x)) \le \tfrac14",
        f=fn.sigmoid,
        df=fn.dsigmoid,
        output_range=(0.0, 1.0),
        range_text="(0, 1)",
        saturates_left=S.ASYMPTOTIC,
        saturates_right=S.ASYMPTOTIC,
        zero_centred=False,
        monotonic=True,
        can_die=False,
        init="Xavier/Glorot: nn.init.xavier_uniform_(w)",
        gain=1.0,
        gain_source="torch.nn.init.calculate_gain('sigmoid')",
        torch_name="Sigmoid",
        torch_defaults={},
        keras_name="sigmoid",
        keras_signature="keras.activations.sigmoid(x)",
        traps=(
            "f' <= 0.25: through a stack of sigmoid layers the backward signal shrinks "
            "at least 4x per layer (Glorot & Bengio 2010 saw the top layer saturate at 0).",
            "For a binary-classification output, feed logits to nn.BCEWithLogitsLoss "
            "(PyTorch) or use from_logits=True (Keras) instead of sigmoid + BCE: "
            "log(sigmoid) underflows.",
        ),
        paper="Rumelhart, Hinton & Williams 1986, 'Learning representations by "
        "back-propagating errors', Nature 323:533-536.",
        aliases=("logistic",),
    ),
    Activation(
        name="tanh",
        title="Hyperbolic tangent",
        formula="tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x))",
        latex=r"\tanh(x) = \frac{e^{x} - e^{-x}}{e^{x} + e^{-x}}",
        derivative="1 - tanh(x)^2 = sech(x)^2, at most 1 (at x = 0)",
        derivative_latex=r"\tanh'(x) = 1 - \tanh^2(x) = \operatorname{sech}^2(x)",
        f=fn.tanh,
        df=fn.dtanh,
        output_range=(-1.0, 1.0),
        range_text="(-1, 1)",
        saturates_left=S.ASYMPTOTIC,
        saturates_right=S.ASYMPTOTIC,
        zero_centred=True,
        monotonic=True,
        can_die=False,
        init="Xavier/Glorot: nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain('tanh'))",
        gain=5.0 / 3.0,
        gain_source="torch.nn.init.calculate_gain('tanh')",
        torch_name="Tanh",
        torch_defaults={},
        keras_name="tanh",
        keras_signature="keras.activations.tanh(x)",
        traps=(
            "Keras' Dense default init is glorot_uniform with gain 1, not PyTorch's tanh gain 5/3.",
            "With PyTorch's default Linear init (Var = 1/(3 fan_in)) the backward "
            "variance shrinks about 3x per tanh layer near the linear regime.",
        ),
        paper="LeCun, Bottou, Orr & Mueller 1998, 'Efficient BackProp', in Neural "
        "Networks: Tricks of the Trade, LNCS 1524.",
    ),
    Activation(
        name="hardsigmoid",
        title="Hard sigmoid",
        formula="clip(x / 6 + 1/2, 0, 1) = relu6(x + 3) / 6",
        latex=r"f(x) = \begin{cases} 0 & x \le -3 \\ x/6 + 1/2 & -3 < x < 3 \\ "
        r"1 & x \ge 3 \end{cases}",
        derivative="1/6 on (-3, 3), else 0",
        derivative_latex=r"f'(x) = \begin{cases} 1/6 & -3 < x < 3 \\ 0 & \text{otherwise} "
        r"\end{cases}",
        f=fn.hardsigmoid,
        df=fn.dhardsigmoid,
        output_range=(0.0, 1.0),
        range_text="[0, 1]",
        saturates_left=S.FLAT,
        saturates_right=S.FLAT,
        zero_centred=False,
        monotonic=True,
        can_die=True,
        init="Xavier/Glorot: nn.init.xavier_uniform_(w)",
        gain=1.0,
        gain_source="convention: as sigmoid (calculate_gain has no entry)",
        torch_name="Hardsigmoid",
        torch_defaults={"inplace": False},
        keras_name="hard_sigmoid",
        keras_signature="keras.activations.hard_sigmoid(x)",
        traps=(
            "Keras changed hard_sigmoid between versions: tf.keras 2 used "
            "clip(0.2 x + 0.5, 0, 1) (flat beyond +-2.5), Keras 3 uses x/6 + 1/2 "
            "(flat beyond +-3, as PyTorch): same name, different function.",
            "The gradient is exactly 0 beyond +-3: a gate stuck there never recovers.",
        ),
        paper="Howard et al. 2019, 'Searching for MobileNetV3', ICCV (arXiv:1905.02244).",
        aliases=("hard_sigmoid",),
        kinks=(-3.0, 3.0),
    ),
    Activation(
        name="hardtanh",
        title="Hard tanh",
        formula="clip(x, -1, 1)",
        latex=r"f(x) = \max(-1, \min(1, x))",
        derivative="1 on (-1, 1), else 0",
        derivative_latex=r"f'(x) = \mathbb{1}[-1 < x < 1]",
        f=fn.hardtanh,
        df=fn.dhardtanh,
        output_range=(-1.0, 1.0),
        range_text="[-1, 1]",
        saturates_left=S.FLAT,
        saturates_right=S.FLAT,
        zero_centred=True,
        monotonic=True,
        can_die=True,
        init="Xavier/Glorot: nn.init.xavier_uniform_(w)",
        gain=1.0,
        gain_source="convention: the identity on (-1, 1) (calculate_gain has no entry)",
        torch_name="Hardtanh",
        torch_defaults={"min_val": -1.0, "max_val": 1.0, "inplace": False},
        keras_name="hard_tanh",
        keras_signature="keras.activations.hard_tanh(x)",
        traps=(
            "In PyTorch nn.ReLU6 subclasses nn.Hardtanh, so isinstance(m, nn.Hardtanh) "
            "is also true for ReLU6: dispatch on the exact class.",
            "keras.activations.hard_tanh only exists in recent Keras 3 releases.",
        ),
        paper="Collobert et al. 2011, 'Natural Language Processing (Almost) from "
        "Scratch', JMLR 12:2493-2537 (HardTanh layers).",
        aliases=("hard_tanh",),
        kinks=(-1.0, 1.0),
    ),
    Activation(
        name="softsign",
        title="Softsign",
        formula="x / (1 + |x|)",
        latex=r"f(x) = \frac{x}{1 + |x|}",
        derivative="1 / (1 + |x|)^2",
        derivative_latex=r"f'(x) = \frac{1}{(1 + |x|)^2}",
        f=fn.softsign,
        df=fn.dsoftsign,
        output_range=(-1.0, 1.0),
        range_text="(-1, 1)",
        saturates_left=S.ASYMPTOTIC,
        saturates_right=S.ASYMPTOTIC,
        zero_centred=True,
        monotonic=True,
        can_die=False,
        init="Xavier/Glorot: nn.init.xavier_uniform_(w)",
        gain=1.0,
        gain_source="convention: Glorot & Bengio 2010 used normalized init (no "
        "calculate_gain entry)",
        torch_name="Softsign",
        torch_defaults={},
        keras_name="softsign",
        keras_signature="keras.activations.softsign(x)",
        traps=(
            "Saturates polynomially (f' ~ 1/x^2), far more slowly than tanh's "
            "exponential tails: 'saturated' thresholds tuned for tanh do not transfer.",
        ),
        paper="Bergstra et al. 2009 (softsign); studied in Glorot & Bengio 2010, "
        "'Understanding the difficulty of training deep feedforward neural networks', "
        "AISTATS.",
    ),
    Activation(
        name="relu",
        title="Rectified linear unit",
        formula="max(0, x)",
        latex=r"f(x) = \max(0, x)",
        derivative="1 if x > 0 else 0 (0 at x = 0 in PyTorch and Keras)",
        derivative_latex=r"f'(x) = \mathbb{1}[x > 0]",
        f=fn.relu,
        df=fn.drelu,
        output_range=(0.0, INF),
        range_text="[0, inf)",
        saturates_left=S.FLAT,
        saturates_right=S.NONE,
        zero_centred=False,
        monotonic=True,
        can_die=True,
        init=_HE,
        gain=SQRT2,
        gain_source="torch.nn.init.calculate_gain('relu')",
        torch_name="ReLU",
        torch_defaults={"inplace": False},
        keras_name="relu",
        keras_signature="keras.activations.relu(x, negative_slope=0.0, max_value=None, "
        "threshold=0.0)",
        traps=(
            "PyTorch's default nn.Linear init is U(+-1/sqrt(fan_in)), Var = 1/(3 fan_in): "
            "in a deep ReLU stack the signal's second moment shrinks 6x per layer; use He "
            "init (Var = 2/fan_in).",
            "nn.ReLU(inplace=True) overwrites its input: a forward hook sees the modified "
            "tensor, and full backward hooks on it raise.",
            "Keras' relu takes negative_slope, max_value and threshold, so one function "
            "covers Leaky ReLU, ReLU6 and thresholded ReLU.",
            "Zero outputs are normal (50-85% in healthy nets); a unit is dead only if it "
            "is zero on every input.",
        ),
        paper="Nair & Hinton 2010, 'Rectified Linear Units Improve Restricted Boltzmann "
        "Machines', ICML; Glorot, Bordes & Bengio 2011, 'Deep Sparse Rectifier Neural "
        "Networks', AISTATS.",
        kinks=(0.0,),
    ),
    Activation(
        name="relu6",
        title="ReLU6",
        formula="min(max(0, x), 6)",
        latex=r"f(x) = \min(\max(0, x), 6)",
        derivative="1 on (0, 6), else 0",
        derivative_latex=r"f'(x) = \mathbb{1}[0 < x < 6]",
        f=fn.relu6,
        df=fn.drelu6,
        output_range=(0.0, 6.0),
        range_text="[0, 6]",
        saturates_left=S.FLAT,
        saturates_right=S.FLAT,
        zero_centred=False,
        monotonic=True,
        can_die=True,
        init=_HE,
        gain=SQRT2,
        gain_source="convention: as relu (calculate_gain has no entry)",
        torch_name="ReLU6",
        torch_defaults={"inplace": False},
        keras_name="relu6",
        keras_signature="keras.activations.relu6(x)",
        traps=(
            "Zero gradient on both sides: a unit can die below 0 and also stick above 6.",
            "nn.ReLU6 is a subclass of nn.Hardtanh(0, 6) in PyTorch.",
        ),
        paper="Krizhevsky 2010, 'Convolutional Deep Belief Networks on CIFAR-10' "
        "(technical report); used in MobileNets (Howard et al. 2017).",
        kinks=(0.0, 6.0),
    ),
    Activation(
        name="leaky_relu",
        title="Leaky ReLU",
        formula="x if x > 0 else a * x  (PyTorch a = 0.01)",
        latex=r"f(x) = \begin{cases} x & x > 0 \\ a x & x \le 0 \end{cases}",
        derivative="1 if x > 0 else a",
        derivative_latex=r"f'(x) = \begin{cases} 1 & x > 0 \\ a & x \le 0 \end{cases}",
        f=_leaky,
        df=_dleaky,
        output_range=(-INF, INF),
        range_text="(-inf, inf)",
        saturates_left=S.NONE,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=True,
        can_die=False,
        init="He/Kaiming: nn.init.kaiming_normal_(w, a=0.01, nonlinearity='leaky_relu')",
        gain=_he_leaky_gain(LEAKY_SLOPE),
        gain_source="torch.nn.init.calculate_gain('leaky_relu') (slope 0.01)",
        torch_name="LeakyReLU",
        torch_defaults={"negative_slope": LEAKY_SLOPE, "inplace": False},
        keras_name="leaky_relu",
        keras_signature="keras.activations.leaky_relu(x, negative_slope=0.2); layer: "
        "keras.layers.LeakyReLU(negative_slope=0.3)",
        traps=(
            "The default slope is 0.01 in PyTorch, 0.2 in keras.activations.leaky_relu "
            "and keras.ops.leaky_relu, and 0.3 in the keras.layers.LeakyReLU layer: "
            "always pass it explicitly when porting.",
            "Keras 2 called the argument alpha; Keras 3 calls it negative_slope.",
            "calculate_gain('leaky_relu') assumes slope 0.01 unless you pass param=slope.",
        ),
        paper="Maas, Hannun & Ng 2013, 'Rectifier Nonlinearities Improve Neural "
        "Network Acoustic Models', ICML Workshop on Deep Learning for Audio, Speech "
        "and Language Processing.",
        aliases=("lrelu",),
        kinks=(0.0,),
    ),
    Activation(
        name="prelu",
        title="Parametric ReLU",
        formula="max(0, x) + a * min(0, x), a learned (PyTorch init a = 0.25)",
        latex=r"f(x) = \max(0, x) + a \min(0, x)",
        derivative="1 if x > 0 else a",
        derivative_latex=r"f'(x) = \begin{cases} 1 & x > 0 \\ a & x \le 0 \end{cases}",
        f=_prelu,
        df=_dprelu,
        output_range=(-INF, INF),
        range_text="(-inf, inf)",
        saturates_left=S.NONE,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=True,
        can_die=False,
        init="He/Kaiming for PReLU: nn.init.kaiming_normal_(w, a=0.25, nonlinearity='leaky_relu')",
        gain=_he_leaky_gain(PRELU_INIT),
        gain_source="He et al. 2015: sqrt(2 / (1 + a^2)) at a = 0.25",
        torch_name="PReLU",
        torch_defaults={"num_parameters": 1, "init": PRELU_INIT},
        keras_name="layers.PReLU",
        keras_signature="keras.layers.PReLU(alpha_initializer='Zeros', "
        "alpha_regularizer=None, alpha_constraint=None, shared_axes=None)",
        traps=(
            "PyTorch starts the slope at 0.25; Keras starts it at 0 "
            "(alpha_initializer='Zeros'), so a Keras PReLU begins as a plain ReLU.",
            "PyTorch shares one slope across all channels by default (num_parameters=1); "
            "Keras learns one slope per input element unless shared_axes is set.",
            "Do not apply weight decay to the slope a (PyTorch docs): decay pushes it "
            "toward 0, i.e. toward ReLU.",
            "The catalog's f and df use a = 0.25, PyTorch's initial value.",
        ),
        paper="He, Zhang, Ren & Sun 2015, 'Delving Deep into Rectifiers: Surpassing "
        "Human-Level Performance on ImageNet Classification', ICCV (arXiv:1502.01852).",
        kinks=(0.0,),
    ),
    Activation(
        name="rrelu",
        title="Randomized leaky ReLU",
        formula="x if x >= 0 else a * x, a ~ U(1/8, 1/3) in training, "
        "a = (1/8 + 1/3) / 2 = 0.229 in eval",
        latex=r"f(x) = \begin{cases} x & x \ge 0 \\ a x & x < 0 \end{cases}, \quad "
        r"a \sim \mathcal{U}(l, u)",
        derivative="1 if x > 0 else a",
        derivative_latex=r"f'(x) = \begin{cases} 1 & x > 0 \\ a & x \le 0 \end{cases}",
        f=_rrelu,
        df=_drrelu,
        output_range=(-INF, INF),
        range_text="(-inf, inf)",
        saturates_left=S.NONE,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=True,
        can_die=False,
        init="He/Kaiming: nn.init.kaiming_normal_(w, a=0.229, nonlinearity='leaky_relu')",
        gain=_he_leaky_gain(RRELU_EVAL_SLOPE),
        gain_source="He et al. 2015: sqrt(2 / (1 + a^2)) at the eval slope a = 0.229",
        torch_name="RReLU",
        torch_defaults={"lower": RRELU_LOWER, "upper": RRELU_UPPER, "inplace": False},
        keras_name=None,
        keras_signature=None,
        traps=(
            "In eval mode PyTorch uses the fixed slope (lower + upper)/2 = 0.229; in train "
            "mode a random slope per element, so train and eval outputs differ.",
            "Xu et al. write y = x / a with a ~ U(3, 8) and test with the mean a = 5.5 "
            "(slope 0.182), not PyTorch's mean slope 0.229.",
            "Keras has no RReLU.",
            "The catalog's f and df use the eval slope 0.229.",
        ),
        paper="Xu, Wang, Chen & Li 2015, 'Empirical Evaluation of Rectified Activations "
        "in Convolutional Network', arXiv:1505.00853.",
        kinks=(0.0,),
    ),
    Activation(
        name="elu",
        title="Exponential linear unit",
        formula="x if x > 0 else alpha * (exp(x) - 1)  (alpha = 1)",
        latex=r"f(x) = \begin{cases} x & x > 0 \\ \alpha (e^{x} - 1) & x \le 0 \end{cases}",
        derivative="1 if x > 0 else alpha * exp(x) = f(x) + alpha",
        derivative_latex=r"f'(x) = \begin{cases} 1 & x > 0 \\ \alpha e^{x} = f(x) + \alpha "
        r"& x \le 0 \end{cases}",
        f=fn.elu,
        df=fn.delu,
        output_range=(-1.0, INF),
        range_text="(-1, inf)",
        saturates_left=S.ASYMPTOTIC,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=True,
        can_die=False,
        init=_HE,
        gain=SQRT2,
        gain_source=_NO_GAIN,
        torch_name="ELU",
        torch_defaults={"alpha": 1.0, "inplace": False},
        keras_name="elu",
        keras_signature="keras.activations.elu(x, alpha=1.0)",
        traps=(
            "With alpha != 1 the derivative jumps at 0 (1 on the right, alpha on the "
            "left); CELU is the continuously differentiable variant.",
            "The left side saturates at -alpha: very negative inputs get almost no "
            "gradient, unlike Leaky ReLU.",
        ),
        paper="Clevert, Unterthiner & Hochreiter 2015, 'Fast and Accurate Deep Network "
        "Learning by Exponential Linear Units (ELUs)', arXiv:1511.07289 (ICLR 2016).",
    ),
    Activation(
        name="selu",
        title="Scaled exponential linear unit",
        formula="scale * (x if x > 0 else alpha * (exp(x) - 1)), alpha = 1.6733, scale = 1.0507",
        latex=r"f(x) = \lambda \begin{cases} x & x > 0 \\ \alpha (e^{x} - 1) & x \le 0 "
        r"\end{cases}",
        derivative="scale if x > 0 else scale * alpha * exp(x)",
        derivative_latex=r"f'(x) = \begin{cases} \lambda & x > 0 \\ \lambda \alpha e^{x} "
        r"& x \le 0 \end{cases}",
        f=fn.selu,
        df=fn.dselu,
        output_range=(-fn.SELU_SCALE * fn.SELU_ALPHA, INF),
        range_text="(-1.7581, inf)",
        saturates_left=S.ASYMPTOTIC,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=True,
        can_die=False,
        init="LeCun normal: nn.init.kaiming_normal_(w, nonlinearity='linear') (Keras: LecunNormal)",
        gain=0.75,
        gain_source="torch.nn.init.calculate_gain('selu')",
        torch_name="SELU",
        torch_defaults={"inplace": False},
        keras_name="selu",
        keras_signature="keras.activations.selu(x)",
        traps=(
            "calculate_gain('selu') = 3/4 was found empirically (PyTorch PR #50664); "
            "for a self-normalizing net nn.SELU's docs say to use "
            "kaiming_normal_(..., nonlinearity='linear'), i.e. LeCun normal with gain 1.",
            "Self-normalization needs LeCun-normal init and AlphaDropout (not Dropout); "
            "BatchNorm or residual connections break its fixed-point argument.",
            "The derivative jumps at 0 (scale on the right, scale * alpha = 1.758 on the left).",
        ),
        paper="Klambauer, Unterthiner, Mayr & Hochreiter 2017, 'Self-Normalizing Neural "
        "Networks', NeurIPS (arXiv:1706.02515).",
        kinks=(0.0,),
    ),
    Activation(
        name="celu",
        title="Continuously differentiable ELU",
        formula="max(0, x) + min(0, alpha * (exp(x / alpha) - 1))  (alpha = 1)",
        latex=r"f(x) = \max(0, x) + \min\!\left(0, \alpha (e^{x/\alpha} - 1)\right)",
        derivative="1 if x > 0 else exp(x / alpha)",
        derivative_latex=r"f'(x) = \begin{cases} 1 & x > 0 \\ e^{x/\alpha} & x \le 0 "
        r"\end{cases}",
        f=fn.celu,
        df=fn.dcelu,
        output_range=(-1.0, INF),
        range_text="(-1, inf)",
        saturates_left=S.ASYMPTOTIC,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=True,
        can_die=False,
        init=_HE,
        gain=SQRT2,
        gain_source=_NO_GAIN,
        torch_name="CELU",
        torch_defaults={"alpha": 1.0, "inplace": False},
        keras_name="celu",
        keras_signature="keras.activations.celu(x, alpha=1.0)",
        traps=(
            "With alpha = 1 (the default in both frameworks) CELU is identical to ELU; "
            "they differ only for alpha != 1.",
        ),
        paper="Barron 2017, 'Continuously Differentiable Exponential Linear Units', "
        "arXiv:1704.07483.",
    ),
    Activation(
        name="gelu",
        title="Gaussian error linear unit (exact)",
        formula="x * Phi(x), Phi the standard normal CDF = (1 + erf(x / sqrt(2))) / 2",
        latex=r"f(x) = x\,\Phi(x) = \frac{x}{2}\left(1 + "
        r"\operatorname{erf}\left(\frac{x}{\sqrt{2}}\right)\right)",
        derivative="Phi(x) + x * phi(x), phi the standard normal density",
        derivative_latex=r"f'(x) = \Phi(x) + x\,\varphi(x)",
        f=fn.gelu,
        df=fn.dgelu,
        output_range=(-0.16998, INF),
        range_text="[-0.16997, inf)",
        saturates_left=S.ASYMPTOTIC,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=False,
        can_die=False,
        init=_HE,
        gain=SQRT2,
        gain_source=_NO_GAIN,
        torch_name="GELU",
        torch_defaults={"approximate": "none"},
        keras_name="gelu",
        keras_signature="keras.activations.gelu(x, approximate=False)",
        traps=_GELU_TRAPS,
        paper="Hendrycks & Gimpel 2016, 'Gaussian Error Linear Units (GELUs)', arXiv:1606.08415.",
        aliases=("gelu_exact", "gelu_erf"),
    ),
    Activation(
        name="gelu_tanh",
        title="GELU, tanh approximation",
        formula="0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))",
        latex=r"f(x) = \frac{x}{2}\left(1 + \tanh\left(\sqrt{2/\pi}\,"
        r"(x + 0.044715\,x^{3})\right)\right)",
        derivative="0.5 * (1 + t) + 0.5 * x * (1 - t^2) * sqrt(2/pi) * "
        "(1 + 3 * 0.044715 * x^2), t the tanh term",
        derivative_latex=r"f'(x) = \tfrac12 (1 + t) + \tfrac12 x (1 - t^{2}) \sqrt{2/\pi}\,"
        r"(1 + 0.134145\,x^{2})",
        f=fn.gelu_tanh,
        df=fn.dgelu_tanh,
        output_range=(-0.17005, INF),
        range_text="[-0.17004, inf)",
        saturates_left=S.ASYMPTOTIC,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=False,
        can_die=False,
        init=_HE,
        gain=SQRT2,
        gain_source=_NO_GAIN,
        torch_name="GELU",
        torch_defaults={"approximate": "tanh"},
        keras_name="gelu",
        keras_signature="keras.activations.gelu(x, approximate=True); "
        "keras.ops.gelu(x) (approximate=True by default)",
        traps=_GELU_TRAPS,
        paper="Hendrycks & Gimpel 2016, 'Gaussian Error Linear Units (GELUs)', arXiv:1606.08415.",
        aliases=("gelu_approx", "gelu_approximate", "gelu_new", "gelu_pytorch_tanh"),
    ),
    Activation(
        name="silu",
        title="SiLU / Swish",
        formula="x * sigmoid(x)",
        latex=r"f(x) = x\,\sigma(x)",
        derivative="sigmoid(x) * (1 + x * (1 - sigmoid(x)))",
        derivative_latex=r"f'(x) = \sigma(x)\,\bigl(1 + x (1 - \sigma(x))\bigr)",
        f=fn.silu,
        df=fn.dsilu,
        output_range=(-0.27847, INF),
        range_text="[-0.27846, inf)",
        saturates_left=S.ASYMPTOTIC,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=False,
        can_die=False,
        init=_HE,
        gain=SQRT2,
        gain_source=_NO_GAIN,
        torch_name="SiLU",
        torch_defaults={"inplace": False},
        keras_name="silu",
        keras_signature="keras.activations.silu(x) (alias keras.activations.swish)",
        traps=(
            "Keras 'swish' is silu with beta = 1 fixed; the Swish paper's "
            "x * sigmoid(beta x) with a trainable beta exists in neither framework.",
        ),
        paper="Hendrycks & Gimpel 2016 (arXiv:1606.08415); Elfwing, Uchibe & Doya 2018 "
        "(arXiv:1702.03118); Ramachandran, Zoph & Le 2017, 'Searching for Activation "
        "Functions' (arXiv:1710.05941).",
        aliases=("swish",),
    ),
    Activation(
        name="mish",
        title="Mish",
        formula="x * tanh(softplus(x))",
        latex=r"f(x) = x \tanh\bigl(\ln(1 + e^{x})\bigr)",
        derivative="tanh(sp(x)) + x * sech(sp(x))^2 * sigmoid(x), sp = softplus",
        derivative_latex=r"f'(x) = \tanh(\mathrm{sp}(x)) + x\,"
        r"\operatorname{sech}^2(\mathrm{sp}(x))\,\sigma(x)",
        f=fn.mish,
        df=fn.dmish,
        output_range=(-0.30885, INF),
        range_text="[-0.30884, inf)",
        saturates_left=S.ASYMPTOTIC,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=False,
        can_die=False,
        init=_HE,
        gain=SQRT2,
        gain_source=_NO_GAIN,
        torch_name="Mish",
        torch_defaults={"inplace": False},
        keras_name="mish",
        keras_signature="keras.activations.mish(x)",
        traps=("About 2-3 transcendental evaluations per element: slower than ReLU/SiLU.",),
        paper="Misra 2019, 'Mish: A Self Regularized Non-Monotonic Activation Function', "
        "arXiv:1908.08681 (BMVC 2020).",
    ),
    Activation(
        name="softplus",
        title="Softplus",
        formula="log(1 + exp(x))  (PyTorch: (1/beta) log(1 + exp(beta x)), beta = 1)",
        latex=r"f(x) = \frac{1}{\beta}\ln\left(1 + e^{\beta x}\right)",
        derivative="sigmoid(beta * x)",
        derivative_latex=r"f'(x) = \sigma(\beta x)",
        f=fn.softplus,
        df=fn.dsoftplus,
        output_range=(0.0, INF),
        range_text="(0, inf)",
        saturates_left=S.ASYMPTOTIC,
        saturates_right=S.NONE,
        zero_centred=False,
        monotonic=True,
        can_die=False,
        init=_HE,
        gain=SQRT2,
        gain_source=_NO_GAIN,
        torch_name="Softplus",
        torch_defaults={"beta": 1.0, "threshold": 20.0},
        keras_name="softplus",
        keras_signature="keras.activations.softplus(x)",
        traps=(
            "PyTorch's Softplus returns x itself once beta * x > threshold (20): the "
            "derivative there is exactly 1 instead of sigmoid(x) = 1 - 2e-9.",
            "Keras' softplus has no beta.",
        ),
        paper="Dugas, Bengio, Belisle, Nadeau & Garcia 2001, 'Incorporating "
        "Second-Order Functional Knowledge for Better Option Pricing', NIPS 13.",
    ),
    Activation(
        name="hardswish",
        title="Hard swish",
        formula="x * relu6(x + 3) / 6",
        latex=r"f(x) = \begin{cases} 0 & x \le -3 \\ x (x + 3)/6 & -3 < x < 3 \\ "
        r"x & x \ge 3 \end{cases}",
        derivative="0 below -3, (2x + 3)/6 on [-3, 3], 1 above 3",
        derivative_latex=r"f'(x) = \begin{cases} 0 & x < -3 \\ (2x + 3)/6 & -3 \le x \le 3 "
        r"\\ 1 & x > 3 \end{cases}",
        f=fn.hardswish,
        df=fn.dhardswish,
        output_range=(-0.375, INF),
        range_text="[-0.375, inf)",
        saturates_left=S.FLAT,
        saturates_right=S.NONE,
        zero_centred=True,
        monotonic=False,
        can_die=True,
        init=_HE,
        gain=SQRT2,
        gain_source=_NO_GAIN,
        torch_name="Hardswish",
        torch_defaults={"inplace": False},
        keras_name="hard_silu",
        keras_signature="keras.activations.hard_silu(x) (alias keras.activations.hard_swish)",
        traps=(
            "Keras names it hard_silu (alias hard_swish); PyTorch names it Hardswish.",
            "f' jumps at x = 3 (from 1.5 to 1) and at x = -3 (from 0 to -0.5); PyTorch's "
            "backward uses the inner values at exactly +-3.",
            "The gradient is exactly 0 below -3, so units can die there like ReLU units.",
        ),
        paper="Howard et al. 2019, 'Searching for MobileNetV3', ICCV (arXiv:1905.02244).",
        aliases=("hard_swish", "hard_silu"),
        kinks=(-3.0, 3.0),
    ),
)
