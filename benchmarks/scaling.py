"""How the G2 layer's cost grows with size: ``G2LSTM`` (gumbel gates) against ``nn.LSTM``.

One layer, unidirectional, input size = hidden size H, over a grid of H, sequence
length T and batch B (full: H 256/512/1024, T 10/30/100, B 16/64). For every point and
both layers, two modes:

* ``train``: forward and backward of ``out.sum()`` (G2 in training: noise on);
* ``eval``: forward under ``torch.no_grad()`` in eval mode (G2's soft gates).

Time: the median of ``--repeats`` runs after one warm-up run, the two layers alternating
(so a machine that gets busier slows both). Peak memory: the peak RSS above the RSS just
before the run, sampled every 2 ms in a thread. The script re-executes itself with
glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB, so every tensor above that size is
its own mapping, returned to the system when freed: each run's activations then show
up in the RSS instead of being served from memory an earlier run left behind.

    python benchmarks/scaling.py --threads 2                  # the full grid
    python benchmarks/scaling.py --quick                      # seconds; what the test runs
"""
import argparse
import itertools
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import publish  # noqa: E402
from benchmarks.throughput import PeakSampler, current_rss_mb, git_commit  # noqa: E402

FULL_GRID = {"hidden": (256, 512, 1024), "steps": (10, 30, 100), "batch": (16, 64)}
QUICK_GRID = {"hidden": (16, 32), "steps": (4, 8), "batch": (2,)}
LAYERS = ("g2lstm", "nn.LSTM")
MODES = ("train", "eval")
MMAP_THRESHOLD = "131072"
FIGURE_SIZE, FIGURE_DPI = (9, 3.4), 100


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tiny grid, one repeat (CI); no meaningful timings")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, help="timed runs per layer and mode (default 3; quick 1)")
    p.add_argument("--json", type=Path, help="where to write the results (default benchmarks/results/)")
    p.add_argument("--figure", type=Path, help="also save the figure here (PNG)")
    return p


def layers_for(hidden: int):
    """(G2LSTM in gumbel mode, nn.LSTM) with the same weights."""
    from torch import nn

    from fairseq_g2lstm.gates import GateConfig
    from fairseq_g2lstm.rnn import G2LSTM

    native = nn.LSTM(hidden, hidden, 1)
    return {"g2lstm": G2LSTM.from_native(native, gate=GateConfig(mode="gumbel")), "nn.LSTM": native}


def run_once(layer, x, mode: str) -> None:
    import torch

    if mode == "train":
        layer.train()
        out, _ = layer(x)
        out.sum().backward()
    else:
        layer.eval()
        with torch.no_grad():
            layer(x)


def measure_point(hidden: int, steps: int, batch: int, repeats: int) -> List[dict]:
    import torch

    torch.manual_seed(0)
    layers = layers_for(hidden)
    x = torch.randn(steps, batch, hidden)
    rows = []
    for mode in MODES:
        seconds: Dict[str, List[float]] = {name: [] for name in LAYERS}
        peaks: Dict[str, List[float]] = {name: [] for name in LAYERS}
        for r in range(repeats + 1):  # run 0 warms up
            for name in (LAYERS if r % 2 else LAYERS[::-1]):
                layer = layers[name]
                layer.zero_grad(set_to_none=True)
                base = current_rss_mb()
                with PeakSampler() as sampler:
                    start = time.perf_counter()
                    run_once(layer, x, mode)
                    elapsed = time.perf_counter() - start
                layer.zero_grad(set_to_none=True)
                if r:
                    seconds[name].append(elapsed)
                    peaks[name].append(max(0.0, sampler.peak - base))
        row = {"hidden": hidden, "steps": steps, "batch": batch, "mode": mode}
        for name in LAYERS:
            row[name] = {"ms": statistics.median(seconds[name]) * 1e3, "peak_mb": statistics.median(peaks[name]),
                         "ms_runs": [s * 1e3 for s in seconds[name]]}
        row["time_ratio"] = row["g2lstm"]["ms"] / row["nn.LSTM"]["ms"]
        lstm_peak = row["nn.LSTM"]["peak_mb"]
        row["memory_ratio"] = row["g2lstm"]["peak_mb"] / lstm_peak if lstm_peak > 0 else None
        rows.append(row)
    return rows


def run_grid(grid: dict, repeats: int) -> List[dict]:
    rows = []
    points = list(itertools.product(grid["hidden"], grid["steps"], grid["batch"]))
    for k, (hidden, steps, batch) in enumerate(points, 1):
        start = time.perf_counter()
        rows += measure_point(hidden, steps, batch, repeats)
        print(f"[{k}/{len(points)}] H {hidden} T {steps} B {batch}: {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)
    return rows


def _ratio(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}x"


def format_table(results: dict) -> str:
    """Markdown: one line per grid point and mode; ratios are G2 / nn.LSTM (time: lower is faster)."""
    lines = ["| mode | H | T | B | G2 ms | nn.LSTM ms | time x | G2 peak MB | nn.LSTM peak MB | memory x |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(results["rows"], key=lambda r: (MODES.index(r["mode"]), r["hidden"], r["steps"], r["batch"])):
        g2, native = r["g2lstm"], r["nn.LSTM"]
        lines.append(f"| {r['mode']} | {r['hidden']} | {r['steps']} | {r['batch']} | {g2['ms']:.2f} | "
                     f"{native['ms']:.2f} | {_ratio(r['time_ratio'])} | {g2['peak_mb']:.1f} | "
                     f"{native['peak_mb']:.1f} | {_ratio(r['memory_ratio'])} |")
    return "\n".join(lines)


def scaling_figure(results: dict):
    """Time ratio G2 / nn.LSTM against T, one panel per mode, one line per (H, B)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI)
    axes = fig.subplots(1, len(MODES), sharey=True)
    grid = results["setup"]["grid"]
    for ax, mode in zip(axes, MODES):
        for hidden, batch in itertools.product(grid["hidden"], grid["batch"]):
            points = sorted((r["steps"], r["time_ratio"]) for r in results["rows"]
                            if r["mode"] == mode and r["hidden"] == hidden and r["batch"] == batch)
            ax.plot(*zip(*points), marker="o", linestyle="-" if batch == max(grid["batch"]) else "--",
                    label=f"H {hidden}, B {batch}")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xticks(grid["steps"], [str(t) for t in grid["steps"]])
        ax.set_title({"train": "training (forward + backward)", "eval": "inference (no grad)"}[mode])
        ax.set_xlabel("sequence length T")
    axes[0].set_ylabel("time, G2 / nn.LSTM")
    axes[-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def main(argv: Optional[Sequence[str]] = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:  # see the module docstring
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv],
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD})
    opts = build_parser().parse_args(argv)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    repeats = opts.repeats or (1 if opts.quick else 3)
    import torch

    torch.set_num_threads(opts.threads)
    grid = QUICK_GRID if opts.quick else FULL_GRID
    results = {
        "setup": {"grid": grid, "repeats": repeats, "threads": opts.threads, "quick": opts.quick,
                  "torch": torch.__version__, "commit": git_commit(), "layers": 1, "gate_mode": "gumbel",
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "loadavg_1min": os.getloadavg()[0],
                  "command": "python benchmarks/scaling.py " + " ".join(argv)},
        "rows": run_grid(grid, repeats),
    }
    if opts.figure:
        opts.figure.parent.mkdir(parents=True, exist_ok=True)
        scaling_figure(results).savefig(opts.figure, dpi=FIGURE_DPI)
    path = opts.json or REPO / "benchmarks" / "results" / ("scaling-quick.json" if opts.quick else "scaling.json")
    publish(format_table(results), results, path, also=f" and {opts.figure}" if opts.figure else "")
    return results


if __name__ == "__main__":
    main()
