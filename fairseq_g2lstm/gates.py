"""The G2-LSTM gate: the one home of the gate math.

Every LSTM in the project (the decoder cell, the encoder layer, the CUDA kernel's
reference and the compression tool) activates its gates with :func:`activate_gates`
and differentiates them with :func:`gate_preact_grad`, both driven by a
:class:`GateSpec` that :meth:`GateConfig.resolve` derives from the user's flags.

Pre-activations ``a = W_x x + W_h h + b`` are laid out in the block order of
``torch.nn.LSTM``: ``[i, f, g, o]``, each block ``H`` wide. The input gate ``i`` and the
forget gate ``f`` are the two G2 gates; ``g`` (candidate) and ``o`` (output) stay plain.

Gumbel mode, training (Li et al., ICML 2018, eq. 7), for the i and f blocks only::

    L = log(U + eps) - log(1 - U + eps),  U ~ Uniform(0, 1),  eps = 1e-3
    B ~ Bernoulli(p)
    gate = sigmoid((a + B * L) / tau)

Evaluation is the deterministic ``sigmoid(a)`` (or ``1[a >= 0]`` with hard eval).
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

GATE_MODES = ("gumbel", "plain", "sharpened")
GATE_EVAL_MODES = ("soft", "hard")

# Block order of the 4H pre-activation axis, the same as torch.nn.LSTM's.
GATE_ORDER = ("i", "f", "g", "o")
NUM_GATES = len(GATE_ORDER)
# The G2 gates (i, f) come first, so they are one contiguous [.., 2H] slice.
NUM_NOISY_GATES = 2

LOGISTIC_EPS = 1e-3
DEFAULT_TEMPERATURE = {"gumbel": 0.9, "sharpened": 0.2}
DEFAULT_NOISE_PROB = 0.2


def gate_slice(name: str, hidden_size: int) -> slice:
    """Columns of gate ``name`` ('i', 'f', 'g' or 'o') in a ``[.., 4H]`` tensor."""
    k = GATE_ORDER.index(name)
    return slice(k * hidden_size, (k + 1) * hidden_size)


@dataclass(frozen=True)
class GateSpec:
    """What the gates do in one forward pass (training or eval already decided).

    ``inv_temperature`` multiplies the i/f pre-activations (after noise), ``noise_prob``
    is the Bernoulli p of the logistic noise (0: no noise), and ``hard`` replaces the
    i/f sigmoid by the step function ``1[a >= 0]``.
    """

    inv_temperature: float = 1.0
    noise_prob: float = 0.0
    hard: bool = False

    @property
    def noisy(self) -> bool:
        return self.noise_prob > 0.0

    def after_prescaling(self) -> "GateSpec":
        """The spec left to apply once :func:`prescale_preact` has added the noise and
        applied the temperature to the pre-activations: plain sigmoids (or hard gates)."""
        return GateSpec(hard=self.hard)


PLAIN = GateSpec()


@dataclass(frozen=True)
class GateConfig:
    """The user's gate flags: ``--gate-mode``, ``--gate-temperature``,
    ``--gate-noise-prob`` and ``--gate-eval``.

    ``temperature=None`` takes the mode's default (0.9 for gumbel, 0.2 for sharpened;
    plain mode has no temperature).
    """

    mode: str = "gumbel"
    temperature: Optional[float] = None
    noise_prob: float = DEFAULT_NOISE_PROB
    eval_mode: str = "soft"

    def __post_init__(self):
        if self.mode not in GATE_MODES:
            raise ValueError(f"--gate-mode must be one of {', '.join(GATE_MODES)}; got {self.mode!r}")
        if self.eval_mode not in GATE_EVAL_MODES:
            raise ValueError(
                f"--gate-eval must be one of {', '.join(GATE_EVAL_MODES)}; got {self.eval_mode!r}"
            )
        check_temperature(self.tau)
        check_noise_prob(self.noise_prob)

    @property
    def tau(self) -> float:
        if self.temperature is not None:
            return float(self.temperature)
        return DEFAULT_TEMPERATURE.get(self.mode, 1.0)

    def resolve(self, training: bool) -> GateSpec:
        """The :class:`GateSpec` for a training (``True``) or eval forward pass."""
        if not training and self.eval_mode == "hard":
            return GateSpec(hard=True)
        if self.mode == "sharpened":
            return GateSpec(inv_temperature=1.0 / self.tau)
        if self.mode == "gumbel" and training:
            return GateSpec(inv_temperature=1.0 / self.tau, noise_prob=self.noise_prob)
        return PLAIN


def check_temperature(value: float) -> float:
    if not value > 0.0:
        raise ValueError(f"--gate-temperature must be > 0; got {value}")
    return value


def check_noise_prob(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--gate-noise-prob must be in [0, 1]; got {value}")
    return value


def logistic_noise(u: Tensor, eps: float = LOGISTIC_EPS) -> Tensor:
    """``L = log(u + eps) - log(1 - u + eps)`` for uniform ``u``: eps-clamped logistic noise."""
    return torch.log(u + eps) - torch.log1p(eps - u)


def rank_noise_generator(device=None) -> Optional[torch.Generator]:
    """The generator for G2 noise: None (torch's default) in a single process.

    Distributed trainers such as fairseq seed every rank alike, which would give every
    rank the same noise. So under ``torch.distributed`` each draw takes a seed from the
    default generator (the same on every rank, so ``torch.manual_seed`` still reproduces
    a run) and adds the rank to it.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    seed = int(torch.randint(2**62, (1,)).item())
    return torch.Generator(device=device or "cpu").manual_seed(seed + dist.get_rank())


def sample_gate_noise(
    shape,
    noise_prob: float,
    *,
    device=None,
    dtype=torch.float32,
    generator: Optional[torch.Generator] = None,
    eps: float = LOGISTIC_EPS,
) -> Tensor:
    """Draw ``B * L`` for the i/f gates: fresh for every element of ``shape``.

    ``shape`` is usually ``[T, B, 2H]`` (every step of a sequence) or ``[B, 2H]``.
    Draws come from ``generator``, by default torch's own (:func:`rank_noise_generator`),
    so ``torch.manual_seed`` fixes them.

    One uniform ``v`` per element gives both draws: ``B = 1[v < p]``, and given ``B = 1``,
    ``u = 1 - v / p`` is again Uniform(0, 1] and independent of ``B``, so ``L(u)`` has the
    exact law of ``B * L`` where it matters. :func:`logistic_noise` is a logit,
    ``L(u) = logit(x)`` with ``x = (u + eps) / (1 + 2 eps)``, and ``x`` is affine in ``v``;
    it falls to ``x_min = eps / (1 + 2 eps)`` exactly at ``v = p``. So after the draw the
    noise takes three passes over memory, each a single in-place op: ``x = lerp(x(0), x(1), v)``;
    ``x = 0.5`` wherever ``x <= x_min`` (``threshold``: that is ``v >= p``, and
    ``logit(0.5) = 0`` exactly); ``logit``. No boolean mask is ever built (boolean masking
    is several times slower on CPU than the arithmetic).

    The draw and the arithmetic run in float32 at least (float64 stays float64), and only
    the result is cast to ``dtype``: in bfloat16, ``x`` near 1 rounds to 1, so ``L(1)``
    would be ``inf``; in float16, ``v`` would take only a few thousand values. Low
    precision thus changes nothing but the final rounding.
    """
    if generator is None:
        generator = rank_noise_generator(device)
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    v = torch.rand(shape, device=device, dtype=draw_dtype, generator=generator)
    if noise_prob <= 0.0:
        return v.zero_().to(dtype)
    scale = 1.0 + 2.0 * eps
    x_first = (1.0 + eps) / scale  # x at v = 0, u = 1
    x_last = x_first - 1.0 / (noise_prob * scale)  # x at v = 1, on the same line
    ends = torch.tensor([x_first, x_last], device=device, dtype=draw_dtype)
    x = torch.lerp(ends[0], ends[1], v)
    F.threshold_(x, eps / scale, 0.5)  # v >= p: x = 0.5, so L = 0
    return x.logit_().to(dtype)


def _split(t: Tensor):
    """Views of the i|f, g and o blocks of a [..., 4H] tensor."""
    h = t.shape[-1] // NUM_GATES
    h2 = NUM_NOISY_GATES * h
    return t[..., :h2], t[..., h2 : h2 + h], t[..., h2 + h :]


def activate_gates(
    preact: Tensor, spec: GateSpec, noise: Optional[Tensor] = None, out: Optional[Tensor] = None
) -> Tensor:
    """Activated gates from pre-activations.

    preact: [..., 4H] in block order i, f, g, o.
    noise:  [..., 2H] the ``B * L`` draws for i and f, or None for no noise.
    out:    [..., 4H] buffer to write into (may be ``preact`` itself); no autograd.
    Returns [..., 4H]: sigmoid((a + noise) * inv_temperature) (or the step function) for
    i and f, tanh for g, sigmoid for o.

    Without ``out`` the result is a differentiable graph (the reference path); with it,
    every block is written in place (the fused paths).
    """
    a_if, a_g, a_o = _split(preact)
    if out is None:
        if noise is not None:
            a_if = a_if + noise
        if spec.hard:
            g_if = (a_if >= 0).to(preact.dtype)
        else:
            g_if = torch.sigmoid(a_if * spec.inv_temperature)
        return torch.cat([g_if, torch.tanh(a_g), torch.sigmoid(a_o)], dim=-1)
    o_if, o_g, o_o = _split(out)
    if noise is not None:
        a_if = torch.add(a_if, noise, out=o_if)
    if spec.hard:
        o_if.copy_(a_if >= 0)
    else:
        if spec.inv_temperature != 1.0:
            a_if = torch.mul(a_if, spec.inv_temperature, out=o_if)
        torch.sigmoid(a_if, out=o_if)
    torch.tanh(a_g, out=o_g)
    torch.sigmoid(a_o, out=o_o)
    return out


def prescale_preact(
    preact: Tensor, spec: GateSpec, noise: Optional[Tensor] = None, out: Optional[Tensor] = None
) -> Tensor:
    """``a_if <- (a_if + noise) * inv_temperature`` on the i/f blocks of ``preact``
    [..., 4H], the part of the gate that happens before the sigmoid; in place, or into
    ``out`` (same shape; the g and o blocks are copied), which saves a full copy first.
    Returns the result.

    Because the step is affine in the pre-activations, a sequence loop can apply it to
    all input projections at once and fold ``inv_temperature`` into the i/f rows of the
    recurrent weights (:func:`prescale_weight`); the loop then activates with
    :meth:`GateSpec.after_prescaling`.
    """
    h2 = preact.shape[-1] // NUM_GATES * NUM_NOISY_GATES
    if out is None:
        out = preact
    else:
        out[..., h2:].copy_(preact[..., h2:])
    a_if, o_if = preact[..., :h2], out[..., :h2]
    if noise is not None:
        a_if = torch.add(a_if, noise, out=o_if)
    if spec.inv_temperature != 1.0:
        a_if = torch.mul(a_if, spec.inv_temperature, out=o_if)
    if a_if is not o_if:  # neither noise nor temperature: a copy into out
        o_if.copy_(a_if)
    return out


def prescale_weight(weight: Tensor, spec: GateSpec) -> Tensor:
    """weight [4H, K] with its i/f rows times ``inv_temperature`` (a copy where it changes)."""
    if spec.inv_temperature == 1.0:
        return weight
    h2 = weight.shape[0] // NUM_GATES * NUM_NOISY_GATES
    scaled = weight.clone()
    scaled[:h2] *= spec.inv_temperature
    return scaled


def gate_derivative(gates: Tensor, spec: GateSpec) -> Tensor:
    """Elementwise d gate / d pre-activation, [..., 4H], from the activated gates alone.

    The noise never has to be stored: ``d sigmoid((a + n) * k) / da = s (1 - s) k`` with
    ``s`` the saved gate and ``k`` the inverse temperature; ``tanh' = 1 - g^2``; hard gates
    pass no gradient.
    """
    out = torch.addcmul(gates, gates, gates, value=-1.0)  # s - s^2 for the sigmoids
    d_if, d_g, _ = _split(out)
    torch.addcmul(torch.ones_like(d_g), _split(gates)[1], _split(gates)[1], value=-1.0, out=d_g)
    if spec.hard:
        d_if.zero_()
    elif spec.inv_temperature != 1.0:
        d_if.mul_(spec.inv_temperature)
    return out


def gate_preact_grad(grad_gates: Tensor, gates: Tensor, spec: GateSpec) -> Tensor:
    """Gradient w.r.t. the pre-activations [..., 4H] from the gradient w.r.t. the
    activated gates and the gates themselves (see :func:`gate_derivative`)."""
    return grad_gates * gate_derivative(gates, spec)


def zeros_for_missing(grad: Optional[Tensor], like: Tensor) -> Tensor:
    """An output's incoming gradient, zeros where autograd passes None (output unused).

    The recurrences' autograd Functions (:mod:`fairseq_g2lstm.rnn.cell`,
    :mod:`fairseq_g2lstm.rnn.sequence` and the CUDA kernel's) turn off autograd's own
    zero-filling (``ctx.set_materialize_grads(False)``) because their gates output never
    has a gradient, and filling it with zeros would cost a full-size write per call.
    """
    return torch.zeros_like(like) if grad is None else grad
