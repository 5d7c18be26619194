"""Tiny calls of every variant of the fused kernel, to run under compute-sanitizer.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \\
        python -m fairseq_g2lstm.cuda.memcheck [--backend cuda]

``scripts/gpu_check.sh`` runs it so. For each dtype (float64, float32, float16,
bfloat16) and a vector-path and a scalar-path hidden size, it runs the sequence op
forward and backward (ragged lengths with an empty row) in every noise kind (Philox in
the kernel, an explicit tensor, none) and with hard gates, and the single-step op
forward and backward, with every buffer poisoned first. It checks no values (the tests
do): the sanitizer reports any access out of bounds or misaligned. With the caching
allocator off, every tensor is its own allocation, so a read or write past a tensor's
end falls outside any allocation, where memcheck sees it.

``--backend host`` makes the same calls on the host emulation, without a sanitizer:
the GPU check's ``--fake-gpu`` mode runs it so to check this script on a CPU.
The last line printed is :data:`DONE_MARKER` and the number of calls.
"""
import argparse
import sys
from typing import Optional, Sequence

import torch

from ..gates import LOGISTIC_EPS, GateSpec, sample_gate_noise
from . import validation
from .function import make_cell_step, make_sequence_runner

DONE_MARKER = "g2lstm memcheck cases: done"
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# H = 8 takes the 16-byte vector path in every dtype; H = 5 the scalar one.
HIDDENS = (8, 5)
MODES = {
    "philox": (GateSpec(inv_temperature=1 / 0.9, noise_prob=0.2), False),
    "explicit": (GateSpec(inv_temperature=1 / 0.9, noise_prob=0.2), True),
    "plain": (GateSpec(), False),
    "hard": (GateSpec(hard=True), False),
}


def run_cases(ops, device: torch.device) -> int:
    """Every case once, forward and backward; returns the number of op calls made."""
    run, step = make_sequence_runner(ops), make_cell_step(ops)
    steps, batch = 3, 3
    lengths = torch.tensor([3, 1, 0])
    calls = 0
    for dtype in DTYPES:
        for hidden in HIDDENS:
            for spec, explicit in MODES.values():
                torch.manual_seed(0)
                kw = dict(device=device, dtype=dtype)
                x_proj = torch.randn(steps, batch, 4 * hidden, **kw).requires_grad_()
                w_hh = (torch.randn(4 * hidden, hidden, **kw) * 0.3).requires_grad_()
                h0, c0 = (torch.randn(batch, hidden, **kw).requires_grad_() for _ in range(2))
                noise = (sample_gate_noise((steps, batch, 2 * hidden), spec.noise_prob, device=device, dtype=dtype)
                         if explicit else None)
                out, h_n, c_n, _ = run(x_proj, w_hh, h0, c0, lengths, spec, noise, poison=True)
                torch.autograd.grad((out.float().sum() + h_n.float().sum() + c_n.float().sum()),
                                    (x_proj, w_hh, h0, c0))
                cell_noise = None if noise is None else noise[0]
                h, c, _ = step(x_proj[0], c0, spec, cell_noise, poison=True)
                torch.autograd.grad(h.float().sum() + c.float().sum(), (x_proj, c0))
                calls += 4
                if not spec.hard:  # the single-step op drawing its own noise (the Python step never asks)
                    ops.cell_forward(x_proj[0].detach(), c0.detach(), 1.0, 0.5, LOGISTIC_EPS, False, None, None, True)
                    calls += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return calls


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=validation.BACKENDS, default="cuda")
    args = parser.parse_args(argv)
    ops, device = validation.kernel_backend(args.backend)
    calls = run_cases(ops, device)
    print(f"{DONE_MARKER} ({calls} op calls on the {args.backend} backend)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
