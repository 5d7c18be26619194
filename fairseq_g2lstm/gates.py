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


def sample_gate_noise(
    shape,
    noise_prob: float,
    *,
    device=None,
    dtype=torch.float32,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Draw ``B * L`` for the i/f gates: fresh for every element of ``shape``.

    ``shape`` is usually ``[T, B, 2H]`` (every step of a sequence) or ``[B, 2H]``.
    Draws come from torch's generator, so ``torch.manual_seed`` fixes them.

    One uniform ``v`` per element gives both draws: ``B = 1[v < p]``, and given ``B = 1``,
    ``v / p`` is again Uniform(0, 1) and independent of ``B``, so ``L(v / p)`` has the
    exact law of ``B * L`` where it matters (``L`` is multiplied by 0 elsewhere).
    """
    v = torch.rand(shape, device=device, dtype=dtype, generator=generator)
    if noise_prob <= 0.0:
        return v.zero_()
    keep = v >= noise_prob
    noise = logistic_noise(v.div_(noise_prob))
    return noise.masked_fill_(keep, 0.0)


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


def gate_preact_grad(
    grad_gates: Tensor, gates: Tensor, spec: GateSpec, out: Optional[Tensor] = None
) -> Tensor:
    """Gradient w.r.t. the pre-activations, from the activated gates alone.

    grad_gates: [..., 4H] gradient w.r.t. the activated gates.
    gates:      [..., 4H] the activated gates that :func:`activate_gates` returned.
    out:        [..., 4H] buffer for the result (may be ``grad_gates`` itself).
    Returns [..., 4H].

    The noise never has to be stored: ``d sigmoid((a + n) * k) / da = s (1 - s) k`` with
    ``s`` the saved gate and ``k`` the inverse temperature. Hard gates pass no gradient.
    """
    if out is None:
        out = grad_gates.clone()
    elif out is not grad_gates:
        out.copy_(grad_gates)
    s_if, s_g, s_o = _split(gates)
    d_if, d_g, d_o = _split(out)
    if spec.hard:
        d_if.zero_()
    else:
        d_if.mul_(s_if * (1.0 - s_if))
        if spec.inv_temperature != 1.0:
            d_if.mul_(spec.inv_temperature)
    d_g.mul_(1.0 - s_g * s_g)
    d_o.mul_(s_o * (1.0 - s_o))
    return out
