"""One LSTM time step after the matrix products: the pointwise part of the cell.

Shapes: N rows (batch), H hidden units; pre-activations and gates are [N, 4H] in the
block order of :mod:`fairseq_g2lstm.gates` (i, f, g, o).

Three faces of the same step:

* :func:`cell_step` - differentiable, built from :func:`activate_gates`; the reference.
* :func:`cell_forward` / :func:`backward_factors` + :func:`cell_backward` - the same
  step written into preallocated buffers, with a hand-written backward that needs only
  the saved gates, ``c_{t-1}`` and ``tanh(c_t)``. The backward is split so that what
  does not depend on the incoming gradient (the factors) is computed apart, for all
  steps at once in a sequence. The fused sequence loop and :class:`CellFunction` both
  use them, so the step's forward and backward math lives here once.
* :class:`CellFunction` - an autograd Function around them, for step-by-step decoding.

Every face returns ``(h, c, gates)``: the activated gates [N,4H] are what gate statistics
and training metrics read (they are computed anyway; they carry no gradient).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..gates import GateSpec, activate_gates, gate_derivative, zeros_for_missing


def _blocks(t: Tensor):
    return t.chunk(4, dim=-1)


def cell_step(preact: Tensor, c_prev: Tensor, spec: GateSpec, noise: Optional[Tensor] = None):
    """Reference step. preact [N,4H], c_prev [N,H], noise [N,2H] or None (no noise)
    -> (h [N,H], c [N,H], gates [N,4H])."""
    gates = activate_gates(preact, spec, noise)
    i, f, g, o = _blocks(gates)
    c = f * c_prev + i * g
    return o * torch.tanh(c), c, gates.detach()


def cell_forward(
    preact: Tensor, c_prev: Tensor, spec: GateSpec, noise: Optional[Tensor],
    gates_out: Tensor, c_out: Tensor, tanh_c_out: Tensor, h_out: Tensor,
) -> None:
    """Fused step into preallocated buffers.

    preact: [N,4H];  c_prev: [N,H];  noise: [N,2H] or None.
    gates_out: [N,4H] receives the activated gates (it may be ``preact`` itself).
    c_out, tanh_c_out, h_out: [N,H] receive c_t, tanh(c_t) and h_t.
    """
    activate_gates(preact, spec, noise, out=gates_out)
    i, f, g, o = _blocks(gates_out)
    torch.mul(f, c_prev, out=c_out).addcmul_(i, g)
    torch.tanh(c_out, out=tanh_c_out)
    torch.mul(o, tanh_c_out, out=h_out)


def backward_factors(gates: Tensor, c_prev: Tensor, tanh_c: Tensor, spec: GateSpec) -> Tuple[Tensor, Tensor]:
    """The parts of a step's backward that do not depend on the incoming gradient.

    gates [..., 4H] (activated), c_prev and tanh_c [..., H] -> (A [..., H], F [..., 4H]) with
    ``A = o (1 - tanh(c)^2)`` (dc/dh through the output gate) and
    ``F = gate_derivative * [g, c_prev, i, tanh(c)]`` (d pre-activation per unit of
    dL/dc for i, f, g, and per unit of dL/dh for o). Any leading shape works, so a
    sequence computes them for all steps at once.
    """
    i, _, g, o = _blocks(gates)
    factors = gate_derivative(gates, spec)
    f_i, f_f, f_g, f_o = _blocks(factors)
    f_i.mul_(g)
    f_f.mul_(c_prev)
    f_g.mul_(i)
    f_o.mul_(tanh_c)
    dc_dh = torch.addcmul(o, o * tanh_c, tanh_c, value=-1.0)
    return dc_dh, factors


def cell_backward(
    grad_h: Tensor, grad_c: Tensor, dc_dh: Tensor, factors: Tensor, forget: Tensor,
    grad_preact_out: Tensor, grad_c_prev_out: Tensor,
) -> None:
    """Backward of one step, given :func:`backward_factors`.

    grad_h: [N,H] dL/dh_t;  grad_c: [N,H] dL/dc_t from step t+1 (not through h_t).
    dc_dh: [N,H];  factors: [N,4H];  forget: [N,H] the forget gate.
    grad_preact_out: [N,4H] receives dL/d(pre-activations).
    grad_c_prev_out: [N,H] receives dL/dc_{t-1}; it may alias ``grad_c``.
    """
    n, hidden = grad_h.shape
    grad_c_total = torch.addcmul(grad_c, grad_h, dc_dh)
    torch.mul(grad_c_total.unsqueeze(1), factors[:, : 3 * hidden].view(n, 3, hidden),
              out=grad_preact_out[:, : 3 * hidden].view(n, 3, hidden))
    torch.mul(grad_h, factors[:, 3 * hidden:], out=grad_preact_out[:, 3 * hidden:])
    torch.mul(grad_c_total, forget, out=grad_c_prev_out)


class CellFunction(torch.autograd.Function):
    """(preact [N,4H], c_prev [N,H], noise [N,2H] or None, spec)
    -> (h [N,H], c [N,H], gates [N,4H], no gradient).

    One autograd node per step instead of a dozen, and no noise kept for backward.
    """

    @staticmethod
    def forward(ctx, preact: Tensor, c_prev: Tensor, noise: Optional[Tensor], spec: GateSpec):
        gates = torch.empty_like(preact)
        c, tanh_c, h = (torch.empty_like(c_prev) for _ in range(3))
        cell_forward(preact, c_prev, spec, noise, gates, c, tanh_c, h)
        ctx.spec = spec
        ctx.save_for_backward(gates, c_prev, tanh_c)
        ctx.mark_non_differentiable(gates)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for the gates at every step
        return h, c, gates

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: Optional[Tensor], grad_c: Optional[Tensor], _grad_gates: Optional[Tensor]):
        gates, c_prev, tanh_c = ctx.saved_tensors
        grad_h, grad_c = zeros_for_missing(grad_h, c_prev), zeros_for_missing(grad_c, c_prev)
        dc_dh, factors = backward_factors(gates, c_prev, tanh_c, ctx.spec)
        grad_preact = torch.empty_like(gates)
        grad_c_prev = torch.empty_like(c_prev)
        cell_backward(grad_h, grad_c, dc_dh, factors, _blocks(gates)[1], grad_preact, grad_c_prev)
        return grad_preact, grad_c_prev, None, None


def fused_cell_step(
    preact: Tensor, c_prev: Tensor, spec: GateSpec, noise: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor, Tensor]:
    """Fused step with the same contract as :func:`cell_step`."""
    return CellFunction.apply(preact, c_prev, noise, spec)
