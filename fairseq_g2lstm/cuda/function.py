"""The fused kernel's autograd Functions and runners, for any ops module with the
``g2lstm.h`` interface: the CUDA extension, or the host emulation in the CPU tests.

* :class:`SequenceKernelFunction` - one direction of a layer over a padded batch; the
  runner :func:`make_sequence_runner` wraps it in the contract of
  :func:`fairseq_g2lstm.rnn.sequence.sequence_reference`.
* :class:`CellKernelFunction` - one step after the matrix products, the contract of
  :func:`fairseq_g2lstm.rnn.cell.fused_cell_step`.

Noise: an explicit tensor (the debug hook) is used as it is. Without one, a noisy
:class:`GateSpec` makes the sequence kernel draw the noise itself (Philox, from the
device's default generator); the sequence runner carries ``draws_noise = True`` so that
:class:`fairseq_g2lstm.rnn.G2LSTM` does not sample noise for it. A single step, like
every single step of the torch path, takes ``noise=None`` as no noise.
"""
import functools
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..gates import LOGISTIC_EPS, GateSpec, zeros_for_missing


def batch_sizes_for(lengths: Tensor, steps: int) -> List[int]:
    """Rows real at each step, from lengths [B] sorted in decreasing order (CPU)."""
    lengths = lengths.cpu()
    if bool((lengths[:-1] < lengths[1:]).any()):
        raise ValueError("the fused kernel needs lengths sorted in decreasing order")
    if lengths.numel() and int(lengths.max()) > steps:
        raise ValueError(f"a length of {int(lengths.max())} exceeds the {steps} steps of the input")
    steps_range = torch.arange(steps)
    return (lengths.unsqueeze(0) > steps_range.unsqueeze(1)).sum(1).tolist()


def rank_noise_seed() -> Optional[int]:
    """The kernel's Philox seed: None (the device's default generator) in a single process.

    Under ``torch.distributed`` every rank is seeded alike, which would give every rank the
    same noise; as :func:`fairseq_g2lstm.gates.rank_noise_generator` does for the torch
    path, each draw then takes a seed from the default generator (the same on every rank,
    so ``torch.manual_seed`` still reproduces a run) plus the rank.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return int(torch.randint(2**62, (1,)).item()) + dist.get_rank()


def _gate_args(spec: GateSpec):
    return float(spec.inv_temperature), float(spec.noise_prob), float(LOGISTIC_EPS), bool(spec.hard)


class SequenceKernelFunction(torch.autograd.Function):
    """(ops, x_proj [T,B,4H], w_hh [4H,H], h0 [B,H], c0 [B,H], noise [T,B,2H] or None,
    batch_sizes [T], spec, poison) -> (out [T,B,H], h_n [B,H], c_n [B,H], gates [T,B,4H]).

    Computes in x_proj's dtype (w_hh, h0, c0 and noise are cast to it) and returns each
    gradient in its input's dtype. Saved for backward: the activated gates [T,B,4H] and
    the h and c of every step with the initial ones, [T+1,B,H] each; never the noise.
    """

    @staticmethod
    def forward(ctx, ops, x_proj, w_hh, h0, c0, noise, batch_sizes: Sequence[int], spec: GateSpec,
                poison: bool = False):
        dtype = x_proj.dtype
        inv_tau, noise_prob, eps, hard = _gate_args(spec)
        if noise is not None:
            noise = noise.to(dtype)
        seed = rank_noise_seed() if noise is None and spec.noisy else None
        out, h_n, c_n, gates, hs, cs = ops.sequence_forward(
            x_proj, w_hh.to(dtype), h0.to(dtype), c0.to(dtype), list(batch_sizes),
            inv_tau, noise_prob, eps, hard, noise, seed, poison,
        )
        ctx.ops, ctx.spec, ctx.poison = ops, spec, poison
        ctx.batch_sizes = list(batch_sizes)
        ctx.dtypes = (w_hh.dtype, h0.dtype, c0.dtype)
        ctx.save_for_backward(w_hh, gates, hs, cs)
        ctx.mark_non_differentiable(gates)
        ctx.set_materialize_grads(False)  # see gates.zeros_for_missing
        return out, h_n, c_n, gates

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n, grad_c_n, _grad_gates):
        w_hh, gates, hs, cs = ctx.saved_tensors
        grad_out = zeros_for_missing(grad_out, hs[1:])
        grad_h_n, grad_c_n = zeros_for_missing(grad_h_n, hs[0]), zeros_for_missing(grad_c_n, cs[0])
        dtype = gates.dtype
        inv_tau, _, _, hard = _gate_args(ctx.spec)
        grad_x, grad_w, grad_h0, grad_c0 = ctx.ops.sequence_backward(
            grad_out.to(dtype), grad_h_n.to(dtype), grad_c_n.to(dtype), w_hh.to(dtype), hs, cs, gates,
            ctx.batch_sizes, inv_tau, hard, ctx.poison,
        )
        w_dtype, h_dtype, c_dtype = ctx.dtypes
        return (None, grad_x, grad_w.to(w_dtype), grad_h0.to(h_dtype), grad_c0.to(c_dtype),
                None, None, None, None)


class CellKernelFunction(torch.autograd.Function):
    """(ops, preact [N,4H], c_prev [N,H], noise [N,2H] or None, spec, poison)
    -> (h [N,H], c [N,H], gates [N,4H]). Saved for backward: the gates, c_prev and c.

    As for every single step (``rnn.cell``), ``noise=None`` means no noise: the decoder
    (``CellStack``) samples its noise for all steps at once and passes it in.
    """

    @staticmethod
    def forward(ctx, ops, preact, c_prev, noise, spec: GateSpec, poison: bool = False):
        dtype = preact.dtype
        inv_tau, _, eps, hard = _gate_args(spec)
        if noise is not None:
            noise = noise.to(dtype)
        c_prev_cast = c_prev.to(dtype)
        h, c, gates = ops.cell_forward(preact, c_prev_cast, inv_tau, 0.0, eps, hard, noise, None, poison)
        ctx.ops, ctx.spec, ctx.poison, ctx.c_dtype = ops, spec, poison, c_prev.dtype
        ctx.save_for_backward(gates, c_prev_cast, c)
        ctx.mark_non_differentiable(gates)
        ctx.set_materialize_grads(False)  # see gates.zeros_for_missing
        return h, c, gates

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h, grad_c, _grad_gates):
        gates, c_prev, c = ctx.saved_tensors
        grad_h, grad_c = zeros_for_missing(grad_h, c), zeros_for_missing(grad_c, c)
        dtype = gates.dtype
        inv_tau, _, _, hard = _gate_args(ctx.spec)
        grad_preact, grad_c_prev = ctx.ops.cell_backward(
            grad_h.to(dtype), grad_c.to(dtype), gates, c_prev, c, inv_tau, hard, ctx.poison,
        )
        return None, grad_preact, grad_c_prev.to(ctx.c_dtype), None, None, None


def _check_device(ops, tensor: Tensor) -> None:
    wants_cuda = ops.backend == "cuda"
    if tensor.is_cuda != wants_cuda:
        where = "CUDA" if wants_cuda else "CPU"
        raise ValueError(
            f"--gate-kernel cuda: the fused kernel ({ops.backend}) needs {where} tensors; got {tensor.device}. "
            "Move the model to the GPU, or use --gate-kernel torch"
        )


@functools.lru_cache(maxsize=None)
def make_sequence_runner(ops) -> Callable:
    """A runner with the contract of ``sequence_reference`` that calls ``ops`` (one per ops)."""

    def sequence_kernel(
        x_proj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, lengths: Tensor,
        spec: GateSpec, noise: Optional[Tensor] = None, poison: bool = False,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """x_proj [T,B,4H], w_hh [4H,H], h0, c0 [B,H], lengths [B] sorted decreasing (CPU),
        noise [T,B,2H] or None (None and a noisy spec: drawn in the kernel)
        -> out [T,B,H] (zero at padding), h_n [B,H], c_n [B,H], gates [T,B,4H] (zero at
        padding, no gradient)."""
        _check_device(ops, x_proj)
        batch_sizes = batch_sizes_for(lengths, x_proj.shape[0])
        return SequenceKernelFunction.apply(ops, x_proj, w_hh, h0, c0, noise, batch_sizes, spec, poison)

    sequence_kernel.draws_noise = True
    sequence_kernel.ops = ops
    return sequence_kernel


@functools.lru_cache(maxsize=None)
def make_cell_step(ops) -> Callable:
    """A step with the contract of ``fused_cell_step`` that calls ``ops`` (one per ops)."""

    def cell_kernel(
        preact: Tensor, c_prev: Tensor, spec: GateSpec, noise: Optional[Tensor] = None, poison: bool = False,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """preact [N,4H], c_prev [N,H], noise [N,2H] or None (no noise)
        -> (h [N,H], c [N,H], gates [N,4H], no gradient)."""
        _check_device(ops, preact)
        return CellKernelFunction.apply(ops, preact, c_prev, noise, spec, poison)

    cell_kernel.ops = ops
    return cell_kernel
