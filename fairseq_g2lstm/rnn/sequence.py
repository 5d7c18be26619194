"""One LSTM direction over a whole (padded) sequence, after its input projection.

Shapes: T steps, B batch, H hidden. Inputs are right-padded: row ``b`` holds
``lengths[b]`` real steps, then padding. At padding steps a row's state stays as it was
(so its final state is the state after its last real step) and its output is zero.

Every runner returns ``(out, h_n, c_n, gates)``; ``gates`` [T,B,4H] are the activated
gates of every step (zero at padding, no gradient), for gate statistics.

* :func:`sequence_reference` - a plain autograd loop over :func:`cell_step` with masks;
  simple, any length order, the path every faster one is tested against.
* :class:`SequenceFunction` - the fast CPU path: rows sorted by decreasing length,
  so step t works on the first ``batch_sizes[t]`` rows only; preallocated buffers;
  everything that does not depend on the previous step done for all steps at once;
  a hand-written backward with a short reverse loop and the recurrent weight gradient
  as one matrix product afterwards.
* :func:`sequence_native` - inference only: torch's own fused LSTM kernel (oneDNN on
  the CPU, cuDNN on CUDA) on the raw input. It has no gates output and no noise, so it
  serves soft gates without noise: plain gates, and sharpened ones once the temperature
  is folded into the weights.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, _VF
from torch.autograd.function import once_differentiable

from ..gates import GateSpec, prescale_preact, prescale_weight, zeros_for_missing
from .cell import backward_factors, cell_backward, cell_forward, cell_step


def batch_sizes_for(lengths: Tensor, steps: int) -> List[int]:
    """Rows active at each step, for lengths [B] sorted in decreasing order."""
    steps_range = torch.arange(steps, device=lengths.device)
    return (lengths.unsqueeze(0) > steps_range.unsqueeze(1)).sum(1).tolist()


def sequence_reference(
    x_proj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, lengths: Tensor,
    spec: GateSpec, noise: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Reference loop.

    x_proj: [T,B,4H] input projection with biases;  w_hh: [4H,H];
    h0, c0: [B,H];  lengths: [B];  noise: [T,B,2H] or None.
    Returns out [T,B,H] (zero at padding), h_n [B,H], c_n [B,H] and gates [T,B,4H]
    (zero at padding).
    """
    h, c = h0, c0
    outs, all_gates = [], []
    for t in range(x_proj.shape[0]):
        preact = x_proj[t] + h @ w_hh.t()
        h_new, c_new, gates = cell_step(preact, c, spec, None if noise is None else noise[t])
        active = (lengths > t).to(x_proj.device).unsqueeze(1)
        h = torch.where(active, h_new, h)
        c = torch.where(active, c_new, c)
        outs.append(torch.where(active, h_new, torch.zeros_like(h_new)))
        all_gates.append(torch.where(active, gates, torch.zeros_like(gates)))
    return torch.stack(outs), h, c, torch.stack(all_gates)


class SequenceFunction(torch.autograd.Function):
    """(x_proj [T,B,4H], w_hh [4H,H], h0 [B,H], c0 [B,H], noise [T,B,2H] or None,
    lengths [B] sorted decreasing, spec) -> (out [T,B,H], h_n [B,H], c_n [B,H],
    gates [T,B,4H], no gradient).

    Forward: the noise and temperature are applied to all input projections at once
    and the temperature is folded into the recurrent weights (:func:`prescale_preact`),
    so a step is one in-place ``addmm`` and the plain pointwise cell.
    Backward: the gradient-independent factors of every step are computed at once
    (:func:`backward_factors`), leaving a handful of ops per step in the reverse loop;
    ``dW_hh`` is one product after it. Saved: the activated gates [T,B,4H], c and
    tanh(c) [T,B,H] and the output; never the noise.
    """

    @staticmethod
    def forward(ctx, x_proj, w_hh, h0, c0, noise, lengths, spec: GateSpec):
        steps, batch, h4 = x_proj.shape
        hidden = h4 // 4
        batch_sizes = batch_sizes_for(lengths, steps)
        gates = prescale_preact(x_proj, spec, noise, out=torch.empty_like(x_proj))  # pre-activations, then gates
        w_rec_t = prescale_weight(w_hh, spec).t().contiguous()  # [H,4H]; contiguous GEMMs are faster
        cell_spec = spec.after_prescaling()
        cells, tanh_cells, out = (x_proj.new_zeros(steps, batch, hidden) for _ in range(3))
        h_prev, c_prev = h0, c0
        for gate, c, tanh_c, h, n in zip(gates.unbind(0), cells.unbind(0), tanh_cells.unbind(0),
                                         out.unbind(0), batch_sizes):
            if n < batch:
                gate[n:].zero_()  # padding rows: no pre-activations left behind
            if n == 0:
                continue
            gate = gate[:n].addmm_(h_prev[:n], w_rec_t)
            cell_forward(gate, c_prev[:n], cell_spec, None, gate, c[:n], tanh_c[:n], h[:n])
            h_prev, c_prev = h, c
        last = (lengths.to(x_proj.device) - 1).clamp_(min=0)
        rows = torch.arange(batch, device=x_proj.device)
        h_n, c_n = out[last, rows], cells[last, rows]
        if bool((lengths == 0).any()):
            empty = (lengths == 0).to(x_proj.device).unsqueeze(1)
            h_n = torch.where(empty, h0, h_n)
            c_n = torch.where(empty, c0, c_n)
        ctx.spec = spec
        ctx.batch_sizes = batch_sizes
        ctx.intermediates = (gates, cells, tanh_cells)
        ctx.save_for_backward(w_hh, h0, c0, out)
        ctx.mark_non_differentiable(gates)
        ctx.set_materialize_grads(False)  # see zeros_for_missing
        return out, h_n, c_n, gates

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n, grad_c_n, _grad_gates):
        w_hh, h0, c0, out = ctx.saved_tensors
        grad_out = zeros_for_missing(grad_out, out)
        grad_h_n, grad_c_n = zeros_for_missing(grad_h_n, h0), zeros_for_missing(grad_c_n, c0)
        gates, cells, tanh_cells = ctx.intermediates
        spec = ctx.spec
        steps, _, hidden = out.shape
        c_prev = torch.cat([c0.unsqueeze(0), cells[:-1]])
        dc_dh, factors = backward_factors(gates, c_prev, tanh_cells, spec.after_prescaling())
        forget = gates[..., hidden : 2 * hidden]
        w_rec = prescale_weight(w_hh, spec)
        grad_preact = torch.empty_like(gates)
        grad_h, grad_c = grad_h_n.clone(), grad_c_n.clone()
        for t in range(steps - 1, -1, -1):
            n = ctx.batch_sizes[t]
            grad_preact[t, n:].zero_()  # padding
            if n == 0:
                continue
            gh, gc, gp = grad_h[:n], grad_c[:n], grad_preact[t, :n]
            gh += grad_out[t, :n]
            cell_backward(gh, gc, dc_dh[t, :n], factors[t, :n], forget[t, :n], gp, gc)
            torch.mm(gp, w_rec, out=gh)
        # Undo the prescaling: these were gradients w.r.t. the prescaled pre-activations.
        prescale_preact(grad_preact, spec)
        # Rows inactive at a step have zero grad_preact there, so padded h rows add nothing.
        grad_w_hh = grad_preact[0].t() @ h0
        if steps > 1:
            grad_w_hh.addmm_(grad_preact[1:].reshape(-1, 4 * hidden).t(), out[:-1].reshape(-1, hidden))
        return grad_preact, grad_w_hh, grad_h, grad_c, None, None, None


def sequence_fused(
    x_proj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, lengths: Tensor,
    spec: GateSpec, noise: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fast path with the contract of :func:`sequence_reference`; lengths sorted decreasing."""
    return SequenceFunction.apply(x_proj, w_hh, h0, c0, noise, lengths, spec)


def native_kernel_accepts(weights: Sequence[Tensor]) -> bool:
    """Whether torch's fused LSTM kernels can read these weights: dense tensors only. A
    tensor subclass (a quantized weight, say) has its products dispatched through
    ``F.linear``-style ops, which only the fused torch loop calls."""
    return all(type(w) in (Tensor, torch.nn.Parameter) for w in weights)


def native_kernel_applies(module: torch.nn.Module, spec: GateSpec, gates_unobserved: bool) -> bool:
    """Whether a forward of ``module`` (a G2 layer or cell stack, with its ``kernel``
    setting) may run through torch's fused LSTM kernels: eval mode, soft gates without
    noise, the ``auto`` or ``torch`` kernel, dense weights, and no one reading the gates
    (``gates_unobserved``: no gate recorder, no explicit noise)."""
    return (gates_unobserved and not module.training and not spec.hard and not spec.noisy
            and module.kernel in ("auto", "torch") and native_kernel_accepts(list(module.parameters())))


def sequence_native(
    x: Tensor, weights: Sequence[Tensor], h0: Tensor, c0: Tensor, lengths: Tensor, spec: GateSpec,
) -> Tuple[Tensor, Tensor, Tensor]:
    """One direction through torch's fused LSTM kernel; lengths sorted decreasing.

    x: [T,B,I] the raw input (the kernel does the input projection);
    weights: ``(w_ih [4H,I], w_hh [4H,H], b_ih [4H], b_hh [4H])``;  h0, c0: [B,H].
    spec: soft gates without noise; its temperature is folded into the i/f rows of every
    weight and bias (:func:`prescale_weight`), which is exact: ``sigmoid(a / tau)`` with
    ``a`` affine in the weights.
    Returns out [T,B,H] (zero at padding), h_n and c_n [B,H]: the contract of
    :func:`sequence_reference` without the gates.

    The kernel returns the cell state of its last step only, so the time axis is cut at
    every distinct length: each segment runs the rows still active (a prefix, as the
    rows are sorted) from the previous segment's state, and the rows that end with the
    segment take its final state. A batch without padding is one call.
    """
    if spec.hard or spec.noisy:
        raise ValueError("the fused LSTM kernel computes soft gates without noise")
    weights = [prescale_weight(w, spec) for w in weights]
    steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[1]
    lengths = lengths.tolist()
    ends = sorted({n for n in lengths if n > 0})
    if ends == [steps] and lengths[-1] == steps:  # no padding: one call
        out, h_n, c_n = _VF.lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)), weights, True, 1, 0.0, False, False, False)
        return out, h_n[0], c_n[0]
    out = x.new_zeros(steps, batch, hidden)
    # Final states, filled from the last rows upward: rows of length 0 keep h0/c0.
    active = sum(n > 0 for n in lengths)
    final_h, final_c = [h0[active:]], [c0[active:]]
    h, c, start = h0[:active], c0[:active], 0
    for end in ends:
        seg_out, h_seg, c_seg = _VF.lstm(x[start:end, :active], (h.unsqueeze(0), c.unsqueeze(0)), weights,
                                         True, 1, 0.0, False, False, False)
        out[start:end, :active] = seg_out
        still = sum(n > end for n in lengths)  # rows that go on past this segment
        final_h.append(h_seg[0, still:])
        final_c.append(c_seg[0, still:])
        h, c, start, active = h_seg[0, :still], c_seg[0, :still], end, still
    return out, torch.cat(final_h[::-1]), torch.cat(final_c[::-1])
