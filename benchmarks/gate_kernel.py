"""Speed of one G2 layer: the fused CUDA kernel, the unfused torch path and cuDNN.

For each size (B in {32, 64, 128}, H in {256, 512, 1024}, T = 50 by default) it prints
a Markdown table: forward and forward+backward time of one unidirectional G2 layer
(G2LSTM, input size H, gumbel gates in training mode) with ``--gate-kernel cuda`` and
with ``--gate-kernel torch``, and of cuDNN's ``nn.LSTM`` of the same size (plain gates:
cuDNN cannot put noise in the cell). Then the pointwise kernels' achieved bandwidth
(bytes they must move / their device time, from the profiler) against a measured
device-to-device copy of the same number of bytes. A summary closes with the goals:
the kernel's forward+backward within 1.3x cuDNN, the forward pointwise kernel at
>= 80% of copy bandwidth.

    python benchmarks/gate_kernel.py [--out bench.md] [--dtype bfloat16]

It needs a CUDA device: without one it says so and exits with status 2.
``--device cpu`` is a dry run of the same table on the CPU (the torch path and
nn.LSTM; the kernel's columns read n/a), for checking the script itself.
"""
import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo, uninstalled

GOAL_VS_CUDNN = 1.3
GOAL_COPY_SHARE = 0.8


@dataclass
class Row:
    path: str
    fwd_ms: Optional[float]
    fwd_bwd_ms: Optional[float]


@dataclass
class SizeResult:
    batch: int
    hidden: int
    steps: int
    rows: List[Row] = field(default_factory=list)
    bandwidth: Dict[str, Optional[float]] = field(default_factory=dict)
    note: str = ""

    def row(self, path: str) -> Optional[Row]:
        return next((r for r in self.rows if r.path == path), None)


def timed(fn: Callable[[], None], device: torch.device, iters: int, warmup: int) -> float:
    """Mean milliseconds of ``fn`` over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / iters
    begin = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - begin) * 1000.0 / iters


def layer_passes(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """(forward, forward+backward) closures for a sequence-first LSTM-like module."""
    params = [p for p in module.parameters() if p.requires_grad]

    def forward():
        module(x)

    def forward_backward():
        out = module(x)[0]
        torch.autograd.grad(out, [x] + params, grad)

    return forward, forward_backward


def _device_time_us(event) -> float:
    """Device time of a profiler event that ran on the GPU (a kernel or a copy), else 0."""
    if getattr(event, "device_type", None) != torch.autograd.DeviceType.CUDA:
        return 0.0
    for name in ("device_time_total", "cuda_time_total"):
        value = getattr(event, name, None)
        if value:
            return float(value)
    return 0.0


def profiled_kernel_time_us(fn: Callable[[], None], names) -> Dict[str, float]:
    """Device time (us) of the kernels whose names contain each of ``names``, over one run."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    totals = {n: 0.0 for n in names}
    for event in prof.events():
        for n in names:
            if n in event.name:
                totals[n] += _device_time_us(event)
    return totals


def copy_bandwidth(nbytes: int, device: torch.device, reps: int = 50) -> Optional[float]:
    """GB/s of device-to-device copies of ``nbytes`` (bytes read + written / device time)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)

    def copies():
        for _ in range(reps):
            dst.copy_(src)

    copies()
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        copies()
        torch.cuda.synchronize()
    total_us = sum(_device_time_us(e) for e in prof.events())
    return 2 * nbytes * reps / (total_us * 1e3) if total_us > 0 else None


def pointwise_bytes(batch: int, hidden: int, dtype: torch.dtype) -> Dict[str, int]:
    """Bytes one step's pointwise kernel must move (noise drawn in the kernel).

    forward: reads x_proj and h W_hh^T (4H each) and c_{t-1} (H); writes the gates (4H),
    c and h (H each). backward: reads dL/dout, dL/dh, c_{t-1}, c (H each) and the gates
    (4H), and dL/dc (H, float32); writes dL/dpreact (4H) and dL/dc (H, float32).
    """
    size = torch.tensor([], dtype=dtype).element_size()
    acc = 8 if dtype == torch.float64 else 4
    units = batch * hidden
    return {"forward": units * 15 * size, "backward": units * (12 * size + 2 * acc)}


def bench_size(batch: int, hidden: int, args, device: torch.device, dtype: torch.dtype) -> SizeResult:
    from fairseq_g2lstm.gates import GateConfig
    from fairseq_g2lstm.rnn import G2LSTM

    result = SizeResult(batch, hidden, args.steps)
    x = torch.randn(args.steps, batch, hidden, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(args.steps, batch, hidden, device=device, dtype=dtype)
    paths = {"G2 kernel (cuda)": "cuda", "G2 torch path": "torch"}
    for label, kernel in paths.items():
        if kernel == "cuda" and device.type != "cuda":
            result.rows.append(Row(label, None, None))
            continue
        layer = G2LSTM(hidden, hidden, 1, gate=GateConfig(mode="gumbel"), kernel=kernel).to(device, dtype).train()
        fwd, fwd_bwd = layer_passes(layer, x, grad)
        result.rows.append(Row(label, timed(fwd, device, args.iters, args.warmup),
                               timed(fwd_bwd, device, args.iters, args.warmup)))
        if kernel == "cuda":
            result.bandwidth.update(kernel_bandwidth(fwd_bwd, batch, hidden, args.steps, dtype, device))
    lstm = nn.LSTM(hidden, hidden, 1).to(device, dtype).train()
    fwd, fwd_bwd = layer_passes(lstm, x, grad)
    label = "cuDNN nn.LSTM" if device.type == "cuda" else "nn.LSTM (CPU)"
    result.rows.append(Row(label, timed(fwd, device, args.iters, args.warmup),
                           timed(fwd_bwd, device, args.iters, args.warmup)))
    return result


def kernel_bandwidth(fwd_bwd, batch, hidden, steps, dtype, device) -> Dict[str, Optional[float]]:
    try:
        times = profiled_kernel_time_us(fwd_bwd, ("forward_step_kernel", "backward_step_kernel"))
        moved = pointwise_bytes(batch, hidden, dtype)
        out = {}
        for key, name in (("forward", "forward_step_kernel"), ("backward", "backward_step_kernel")):
            out[key] = steps * moved[key] / (times[name] * 1e3) if times[name] > 0 else None
        out["copy"] = copy_bandwidth(moved["forward"], device)
        return out
    except Exception as err:  # the profiler is a nicety: the timings stand without it
        print(f"(bandwidth not measured: {type(err).__name__}: {err})", file=sys.stderr)
        return {"forward": None, "backward": None, "copy": None}


def fmt(value: Optional[float], spec: str = ".3f", unit: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + unit


def size_table(r: SizeResult, dtype: torch.dtype) -> str:
    base = r.rows[-1].fwd_bwd_ms
    lines = [f"### B={r.batch} H={r.hidden} T={r.steps} {str(dtype).replace('torch.', '')}", "",
             "| path | fwd ms | fwd+bwd ms | fwd+bwd vs last row |", "|---|---:|---:|---:|"]
    for row in r.rows:
        ratio = None if row.fwd_bwd_ms is None or not base else row.fwd_bwd_ms / base
        lines.append(f"| {row.path} | {fmt(row.fwd_ms)} | {fmt(row.fwd_bwd_ms)} | {fmt(ratio, '.2f')} |")
    if r.bandwidth:
        fwd, bwd, copy = (r.bandwidth.get(k) for k in ("forward", "backward", "copy"))
        share = None if fwd is None or not copy else fwd / copy
        lines += ["", f"Pointwise kernels: forward {fmt(fwd, '.0f')} GB/s, backward {fmt(bwd, '.0f')} GB/s; "
                      f"a device-to-device copy of one forward step's bytes: {fmt(copy, '.0f')} GB/s "
                      f"(forward at {fmt(None if share is None else 100 * share, '.0f', '%')} of copy)."]
    return "\n".join(lines)


def summary_table(results: List[SizeResult]) -> str:
    lines = ["### Goals", "",
             f"| B | H | kernel fwd+bwd / cuDNN (goal <= {GOAL_VS_CUDNN}) | fwd kernel / copy bandwidth "
             f"(goal >= {GOAL_COPY_SHARE:.0%}) |", "|---:|---:|---:|---:|"]
    for r in results:
        kernel, cudnn = r.rows[0], r.rows[-1]
        ratio = None if kernel.fwd_bwd_ms is None else kernel.fwd_bwd_ms / cudnn.fwd_bwd_ms
        fwd, copy = r.bandwidth.get("forward"), r.bandwidth.get("copy")
        share = None if fwd is None or not copy else fwd / copy
        mark = lambda ok: "" if ok is None else (" ok" if ok else " MISSED")  # noqa: E731
        lines.append(f"| {r.batch} | {r.hidden} | {fmt(ratio, '.2f')}{mark(None if ratio is None else ratio <= GOAL_VS_CUDNN)}"
                     f" | {fmt(None if share is None else 100 * share, '.0f', '%')}"
                     f"{mark(None if share is None else share >= GOAL_COPY_SHARE)} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--hiddens", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--steps", type=int, default=50, help="T")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: a dry run of the table without the kernel")
    parser.add_argument("--out", help="also write the Markdown here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gate_kernel.py needs a CUDA device (torch.cuda.is_available() is False); "
              "nothing measured. `--device cpu` dry-runs the table without the kernel.", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    header = [f"# G2 layer: fused kernel vs torch path vs cuDNN ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
              f"torch {torch.__version__})", ""]
    print("\n".join(header), flush=True)
    sections, results = list(header), []
    for batch in args.batches:
        for hidden in args.hiddens:
            result = bench_size(batch, hidden, args, device, dtype)
            results.append(result)
            text = size_table(result, dtype)
            print(text + "\n", flush=True)
            sections += [text, ""]
    text = summary_table(results)
    print(text, flush=True)
    sections.append(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(sections) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
