"""Speed of the G2 layer against torch's own fused ``nn.LSTM`` on the CPU.

For each hidden size H it times, side by side and interleaved (one round runs every
contender once, in turn, so a busy machine slows them alike):

* ``nn.LSTM`` (oneDNN on the CPU), the yardstick;
* the G2 layer (:class:`fairseq_g2lstm.rnn.G2LSTM`) in ``plain`` and ``gumbel`` mode;

each in training (forward + backward, ``.train()``: gumbel draws its noise) and in
evaluation (forward under ``torch.no_grad()``, ``.eval()``). All layers have L layers,
unidirectional, input size H, T steps, batch B, every row full length. It prints a
Markdown table of speed ratios (``nn.LSTM`` time / G2 time, medians over the rounds:
above 1 means the G2 layer is faster) and writes every median to a JSON file, atomically.

    OMP_NUM_THREADS=2 python benchmarks/layer_speed.py --threads 2 --rounds 5 --out layer_speed.json

The script imports the layer from whatever ``fairseq_g2lstm`` is on the path, so
``PYTHONPATH=<other checkout>`` times another version of the package with the same script.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from fairseq_g2lstm.atomic_file import write_text_atomic
from fairseq_g2lstm.gates import GateConfig
from fairseq_g2lstm.rnn import G2LSTM

MODES = ("plain", "gumbel")
PHASES = ("train", "eval")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="hidden sizes H")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=30, help="time steps T")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are taken over them")
    p.add_argument("--repeats", type=int, default=3, help="calls per contender per round (their mean is one sample)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("layer_speed.json"))
    return p.parse_args(argv)


def timed(fn, repeats: int) -> float:
    """Mean seconds of ``repeats`` calls of ``fn``."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def contenders(hidden: int, layers: int, steps: int, batch: int):
    """name -> a no-argument callable running one pass, for every (layer, mode, phase)."""
    native = torch.nn.LSTM(hidden, hidden, layers)
    layers_by_mode = {mode: G2LSTM.from_native(native, GateConfig(mode)) for mode in MODES}
    x = torch.randn(steps, batch, hidden)

    def train_pass(layer, run):
        def go():
            layer.train()
            x.requires_grad_(True)
            out = run(layer)
            out.sum().backward()
            x.grad = None
            layer.zero_grad(set_to_none=True)
        return go

    def eval_pass(layer, run):
        def go():
            layer.eval()
            with torch.no_grad():
                run(layer)
        return go

    def run(layer):
        return layer(x)[0]  # the same call for nn.LSTM and G2LSTM: outputs [T,B,H]

    layers_by_name = {"lstm": native, **layers_by_mode}
    return {(name, phase): (train_pass if phase == "train" else eval_pass)(layer, run)
            for name, layer in layers_by_name.items() for phase in PHASES}


def measure(hidden: int, args) -> dict:
    """Median seconds per pass of every contender at one size, interleaved over rounds."""
    calls = contenders(hidden, args.layers, args.steps, args.batch)
    for fn in calls.values():  # warm-up: allocator, oneDNN primitives
        fn()
    samples = {key: [] for key in calls}
    for _ in range(args.rounds):
        for key, fn in calls.items():
            samples[key].append(timed(fn, args.repeats))
    return {f"{name}/{phase}": statistics.median(times) for (name, phase), times in samples.items()}


def ratio_table(results: dict, sizes) -> str:
    """Markdown: nn.LSTM time / G2 time per (mode, phase) and size, plus the noise's cost."""
    header = "| H | " + " | ".join(f"{phase} {mode}" for phase in PHASES for mode in MODES) + " | gumbel/plain train |"
    lines = [header, "|" + "---|" * (2 + len(PHASES) * len(MODES))]
    for size in sizes:
        r = results[str(size)]
        cells = [f"{r[f'lstm/{phase}'] / r[f'{mode}/{phase}']:.2f}x" for phase in PHASES for mode in MODES]
        noise_cost = r["gumbel/train"] / r["plain/train"]
        lines.append(f"| {size} | " + " | ".join(cells) + f" | {noise_cost:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    for size in args.sizes:
        print(f"H {size}: {args.rounds} rounds ...", file=sys.stderr, flush=True)
        results[str(size)] = measure(size, args)
    print(f"Speed vs nn.LSTM (nn.LSTM time / G2 time; >1: G2 faster), {args.layers} layers, "
          f"T {args.steps}, B {args.batch}, {args.threads} threads, medians of {args.rounds} rounds")
    print()
    print(ratio_table(results, args.sizes))
    meta = {key: getattr(args, key) for key in ("layers", "steps", "batch", "rounds", "repeats", "threads")}
    meta["torch"] = torch.__version__
    write_text_atomic(args.out, json.dumps({"config": meta, "median_seconds": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
