"""Speed of one G2 layer: the fused CUDA kernel, the unfused torch path and nn.LSTM.

For each size (B in {32, 64, 128}, H in {256, 512, 1024}, T = 50 by default) it prints
a Markdown table: forward and forward+backward time of one unidirectional G2 layer
(G2LSTM, input size H, gumbel gates in training mode) through the kernel and through
the torch path, and of ``nn.LSTM`` of the same size (plain gates: cuDNN cannot put
noise in the cell). Then the pointwise kernels' achieved bandwidth (bytes they must
move / their device time, from the profiler) against a measured device-to-device copy
of the same number of bytes. A summary closes with the goals: the kernel's
forward+backward within 1.3x cuDNN, the forward pointwise kernel at >= 80% of copy
bandwidth.

    python benchmarks/gate_kernel.py [--dtype float32|bfloat16|float16] [--tf32 off|on|both]
                                     [--out bench.md] [--budget-s S]

Fairness (float32): the kernel's products (the input projection, the per-step
recurrent product ``at::mm_out`` and dW_hh) go through torch's matmul, so they follow
``torch.backends.cuda.matmul.allow_tf32``; cuDNN's LSTM follows
``torch.backends.cudnn.allow_tf32``, which torch turns on by default. Every float32 row
runs with both flags off ("TF32 off": IEEE float32 products) or both on ("TF32 on"),
and is compared with cuDNN under the same setting. In 16-bit dtypes the products take
16-bit inputs and accumulate in float32 (TF32 does not apply), and ``nn.LSTM`` uses
cuDNN only where ``torch.backends.cudnn.is_acceptable`` says so (not for bfloat16:
then it is ATen's own CUDA LSTM, and its row says so).

The kernel row runs the kernel's sequence runner on the loaded ops and counts its
calls: if the kernel does not build or load, or the layer did not call it, the script
raises (no row labelled as the kernel ever times the torch path).

It needs a CUDA device: without one it says so and exits with status 2. ``--device
cpu`` is a dry run of the same tables on the CPU (the TF32 flags then change nothing),
for checking the script itself; add ``--kernel host`` to time the host emulation in
the kernel row there (the GPU check's ``--fake-gpu`` mode does).
"""
import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo, uninstalled

from fairseq_g2lstm.atomic_file import write_text_atomic  # noqa: E402

GOAL_VS_CUDNN = 1.3
GOAL_COPY_SHARE = 0.8
KERNEL_LABELS = {"cuda": "G2 kernel (cuda)", "host": "G2 kernel (host emulation)", "none": "G2 kernel (cuda)"}


@dataclass
class Row:
    path: str
    tf32: Optional[bool]  # None: not float32
    fwd_ms: Optional[float]
    fwd_bwd_ms: Optional[float]
    kernel: bool = False
    baseline: bool = False  # nn.LSTM: the row the ratios divide by

    @property
    def label(self) -> str:
        return self.path if self.tf32 is None else f"{self.path}, TF32 {'on' if self.tf32 else 'off'}"


@dataclass
class SizeResult:
    batch: int
    hidden: int
    steps: int
    rows: List[Row] = field(default_factory=list)
    bandwidth: Dict[str, Optional[float]] = field(default_factory=dict)

    def baseline(self, tf32: Optional[bool]) -> Optional[Row]:
        return next((r for r in self.rows if r.baseline and r.tf32 == tf32), None)

    def kernel(self, tf32: Optional[bool]) -> Optional[Row]:
        return next((r for r in self.rows if r.kernel and r.tf32 == tf32), None)


class KernelNotUsed(RuntimeError):
    """A row labelled as the kernel would not have timed the kernel."""


@contextlib.contextmanager
def tf32_setting(enabled: Optional[bool]) -> Iterator[None]:
    """Both TF32 flags (torch matmul and cuDNN) set to ``enabled`` inside; None leaves them."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if enabled is not None:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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


def load_kernel_ops(kind: str):
    """The ops module the kernel row times: the CUDA extension (``load_ops(required=True)``:
    a failed build raises here instead of falling back to the torch path) or the host
    emulation."""
    if kind == "cuda":
        from fairseq_g2lstm.cuda import load_ops

        ops = load_ops(required=True)
    else:
        from fairseq_g2lstm.cuda import build

        ops = build.load_host_emulation()
    expected = "cuda" if kind == "cuda" else "host-emulation"
    if getattr(ops, "backend", None) != expected:
        raise KernelNotUsed(f"the loaded ops are {getattr(ops, 'backend', None)!r}, not {expected!r}")
    return ops


def use_kernel(layer: nn.Module, ops) -> List[int]:
    """Make ``layer`` run ``ops``' sequence runner; returns a one-element call counter."""
    from fairseq_g2lstm.cuda.function import make_sequence_runner

    runner = make_sequence_runner(ops)
    calls = [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return runner(*args, **kwargs)

    counted.draws_noise = runner.draws_noise
    layer._sequence_runner = lambda x: counted
    return calls


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


def lstm_label(x: torch.Tensor) -> str:
    if x.device.type != "cuda":
        return "nn.LSTM (CPU)"
    if torch.backends.cudnn.is_acceptable(x):
        return "cuDNN nn.LSTM"
    return f"nn.LSTM (ATen's CUDA LSTM: cuDNN does not take {str(x.dtype).replace('torch.', '')})"


def tf32_settings(args, dtype: torch.dtype) -> List[Optional[bool]]:
    if dtype != torch.float32:
        return [None]
    return {"off": [False], "on": [True], "both": [False, True]}[args.tf32]


def bench_size(batch: int, hidden: int, args, device: torch.device, dtype: torch.dtype, ops) -> SizeResult:
    from fairseq_g2lstm.gates import GateConfig
    from fairseq_g2lstm.rnn import G2LSTM

    result = SizeResult(batch, hidden, args.steps)
    x = torch.randn(args.steps, batch, hidden, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(args.steps, batch, hidden, device=device, dtype=dtype)
    kernel_label = KERNEL_LABELS[args.kernel]
    for tf32 in tf32_settings(args, dtype):
        with tf32_setting(tf32):
            if ops is None:
                result.rows.append(Row(kernel_label, tf32, None, None, kernel=True))
            else:
                layer = G2LSTM(hidden, hidden, 1, gate=GateConfig(mode="gumbel"), kernel="torch").to(device, dtype)
                calls = use_kernel(layer.train(), ops)
                fwd, fwd_bwd = layer_passes(layer, x, grad)
                row = Row(kernel_label, tf32, timed(fwd, device, args.iters, args.warmup),
                          timed(fwd_bwd, device, args.iters, args.warmup), kernel=True)
                if calls[0] < 2 * (args.iters + args.warmup):
                    raise KernelNotUsed(f"the kernel row ran the kernel {calls[0]} times")
                result.rows.append(row)
                if device.type == "cuda" and not result.bandwidth:
                    result.bandwidth.update(kernel_bandwidth(fwd_bwd, batch, hidden, args.steps, dtype, device))
            if tf32 is not True:  # the torch path once, with IEEE float32 products
                layer = G2LSTM(hidden, hidden, 1, gate=GateConfig(mode="gumbel"), kernel="torch").to(device, dtype)
                fwd, fwd_bwd = layer_passes(layer.train(), x, grad)
                result.rows.append(Row("G2 torch path", tf32, timed(fwd, device, args.iters, args.warmup),
                                       timed(fwd_bwd, device, args.iters, args.warmup)))
            lstm = nn.LSTM(hidden, hidden, 1).to(device, dtype).train()
            fwd, fwd_bwd = layer_passes(lstm, x, grad)
            result.rows.append(Row(lstm_label(x), tf32, timed(fwd, device, args.iters, args.warmup),
                                   timed(fwd_bwd, device, args.iters, args.warmup), baseline=True))
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


def _ratio(row: Optional[Row], base: Optional[Row]) -> Optional[float]:
    if row is None or base is None or row.fwd_bwd_ms is None or not base.fwd_bwd_ms:
        return None
    return row.fwd_bwd_ms / base.fwd_bwd_ms


def size_table(r: SizeResult, dtype: torch.dtype) -> str:
    lines = [f"### B={r.batch} H={r.hidden} T={r.steps} {str(dtype).replace('torch.', '')}", "",
             "| path | fwd ms | fwd+bwd ms | fwd+bwd vs nn.LSTM (same TF32) |", "|---|---:|---:|---:|"]
    for row in r.rows:
        lines.append(f"| {row.label} | {fmt(row.fwd_ms)} | {fmt(row.fwd_bwd_ms)} | "
                     f"{fmt(_ratio(row, r.baseline(row.tf32)), '.2f')} |")
    if r.bandwidth:
        fwd, bwd, copy = (r.bandwidth.get(k) for k in ("forward", "backward", "copy"))
        share = None if fwd is None or not copy else fwd / copy
        lines += ["", f"Pointwise kernels: forward {fmt(fwd, '.0f')} GB/s, backward {fmt(bwd, '.0f')} GB/s; "
                      f"a device-to-device copy of one forward step's bytes: {fmt(copy, '.0f')} GB/s "
                      f"(forward at {fmt(None if share is None else 100 * share, '.0f', '%')} of copy)."]
    return "\n".join(lines)


def summary_table(results: List[SizeResult], settings: List[Optional[bool]], judged: bool = True) -> str:
    """The goals table; ``judged=False`` (a CPU dry run) gives the ratios without ok/MISSED."""
    def name(tf32):
        return "" if tf32 is None else f", TF32 {'on' if tf32 else 'off'}"

    head = " | ".join(f"kernel fwd+bwd / nn.LSTM{name(t)} (goal <= {GOAL_VS_CUDNN})" for t in settings)
    lines = ["### Goals", "", f"| B | H | {head} | fwd kernel / copy bandwidth (goal >= {GOAL_COPY_SHARE:.0%}) |",
             "|---:|---:|" + "---:|" * (len(settings) + 1)]
    if not judged:
        lines[1:1] = ["", "(A dry run off the GPU: the goals are not judged.)"]

    def mark(ok):
        return "" if ok is None or not judged else (" ok" if ok else " MISSED")

    for r in results:
        cells = []
        for tf32 in settings:
            ratio = _ratio(r.kernel(tf32), r.baseline(tf32))
            cells.append(f"{fmt(ratio, '.2f')}{mark(None if ratio is None else ratio <= GOAL_VS_CUDNN)}")
        fwd, copy = r.bandwidth.get("forward"), r.bandwidth.get("copy")
        share = None if fwd is None or not copy else fwd / copy
        cells.append(f"{fmt(None if share is None else 100 * share, '.0f', '%')}"
                     f"{mark(None if share is None else share >= GOAL_COPY_SHARE)}")
        lines.append(f"| {r.batch} | {r.hidden} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def precision_note(device: torch.device, dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        note = ("Precision: float32 rows marked TF32 off ran with `torch.backends.cuda.matmul.allow_tf32` and "
                "`torch.backends.cudnn.allow_tf32` both False (the kernel's and the torch path's products, "
                "through torch's matmul, and cuDNN's in IEEE float32); rows marked TF32 on, with both True "
                "(the products in TF32, the pointwise math still float32). Each ratio compares with nn.LSTM "
                "under the same setting.")
    else:
        note = (f"Precision: the products take {str(dtype).replace('torch.', '')} inputs and accumulate in "
                "float32 (torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = "
                f"{torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction}); the kernel's pointwise "
                "math runs in float32; TF32 does not apply.")
    if device.type != "cuda":
        note += " (CPU dry run: the TF32 flags change nothing here.)"
    return note


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--hiddens", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--steps", type=int, default=50, help="T")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--tf32", choices=["off", "on", "both"], default="both",
                        help="float32 only: TF32 setting(s) for the products of every path")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: a dry run of the tables (the kernel row n/a, or --kernel host)")
    parser.add_argument("--kernel", choices=["cuda", "host", "none"], default=None,
                        help="the kernel row's ops: cuda (default on cuda), host (the host emulation, CPU "
                             "dry run), none (the row reads n/a; default on cpu)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no size that would end past this many seconds (sizes measured so far "
                             "tell how long one takes); the tables say where it stopped")
    parser.add_argument("--out", help="also write the Markdown here (rewritten after every size)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gate_kernel.py needs a CUDA device (torch.cuda.is_available() is False); "
              "nothing measured. `--device cpu` dry-runs the table without the kernel.", file=sys.stderr)
        return 2
    if args.kernel is None:
        args.kernel = "cuda" if args.device == "cuda" else "none"
    if (args.kernel == "cuda") != (args.device == "cuda") and args.kernel != "none":
        print(f"--kernel {args.kernel} does not run on --device {args.device}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    ops = None if args.kernel == "none" else load_kernel_ops(args.kernel)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    command = "python benchmarks/gate_kernel.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = [f"# G2 layer: fused kernel vs torch path vs nn.LSTM ({where}, torch {torch.__version__}, "
              f"{args.dtype})", "", f"Generated by `{command.strip()}`.", "", precision_note(device, dtype), ""]
    print("\n".join(header), flush=True)
    settings = tf32_settings(args, dtype)
    judged = device.type == "cuda"
    results: List[SizeResult] = []
    sections = list(header)
    sizes = [(b, h) for b in args.batches for h in args.hiddens]
    longest = 0.0
    stopped = ""

    def write():
        if args.out:
            text = sections + ([stopped, ""] if stopped else []) + [summary_table(results, settings, judged)]
            write_text_atomic(args.out, "\n".join(text) + "\n")

    for k, (batch, hidden) in enumerate(sizes):
        elapsed = time.monotonic() - start
        if args.budget_s is not None and k > 0 and elapsed + longest > args.budget_s:
            stopped = (f"Stopped after {k} of {len(sizes)} sizes: the next would end past the "
                       f"{args.budget_s:.0f} s budget ({elapsed:.0f} s spent, {longest:.0f} s per size).")
            print(stopped, flush=True)
            break
        size_start = time.monotonic()
        result = bench_size(batch, hidden, args, device, dtype, ops)
        longest = max(longest, time.monotonic() - size_start)
        results.append(result)
        text = size_table(result, dtype)
        print(text + "\n", flush=True)
        sections += [text, ""]
        write()
    print(summary_table(results, settings, judged), flush=True)
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
