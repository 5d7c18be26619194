"""``--quantize int8`` against float32 on CPU: speed, memory, file size, and BLEU.

Three tables:

* ``speed`` (Table 1): for each size (``g2lstm_iwslt``: 2 x 256, the trained
  ``--checkpoint`` if given; ``g2lstm_wmt``: 3 x 1024, random weights, which are enough
  for speed and size), one float32 model and its int8 copy (built with
  ``quantize='int8'`` and loaded through ``load_state_dict``, the path fairseq-generate
  takes) in the same process. Beam-5 search (fairseq's ``SequenceGenerator``) over the
  first ``--sentences`` test sentences of ``--data``, with the output length pinned
  (``--gen-length``) so both models run the same number of decoder steps; the two
  models alternate over ``--rounds`` and the table shows medians. Memory is the bytes
  the model's weights hold (int8 data and scales counted as stored); file size is
  ``torch.save`` of the state dict.
* ``bleu`` (Table 2): ``fairseq-generate`` itself (beam 5, sacreBLEU, the demo's flags)
  on every ``--checkpoint``, once as trained and once with
  ``--model-overrides "{'quantize': 'int8'}"``.
* ``linear``: the pieces: one ``nn.Linear`` in float32 and in torchao's int8 at the
  shapes these models multiply, alternating, medians of ``5 x --rounds`` calls.

    python benchmarks/quantize.py speed --data demo/data-bin --checkpoint demo/checkpoints/checkpoint_last.pt
    python benchmarks/quantize.py bleu --data demo/data-bin --checkpoint demo/checkpoints/checkpoint_last.pt
    python benchmarks/quantize.py linear          # one nn.Linear at the models' shapes
"""
import argparse
import copy
import io
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "fairseq_g2lstm"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import publish  # noqa: E402
from benchmarks.throughput import git_commit  # noqa: E402

BEAM = 5
SIZES = ("g2lstm_iwslt", "g2lstm_wmt")
METHODS = ("none", "int8")
BLEU_LINE = re.compile(r"BLEU = ([0-9.]+)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=("speed", "bleu", "linear"))
    p.add_argument("--data", type=Path, help="a fairseq data-bin with a test split (speed, bleu)")
    p.add_argument("--checkpoint", type=Path, action="append", default=[],
                   help="a trained g2lstm checkpoint (speed: the g2lstm_iwslt row's weights; bleu: repeatable)")
    p.add_argument("--sizes", default=",".join(SIZES), help=f"speed: comma-separated, from {', '.join(SIZES)}")
    p.add_argument("--sentences", type=int, default=64, help="speed: test sentences per pass")
    p.add_argument("--batch-size", type=int, default=16, help="speed: sentences per beam-search batch")
    p.add_argument("--gen-length", type=int, default=20, help="speed: pinned output length")
    p.add_argument("--rounds", type=int, default=3, help="speed: alternating passes per model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="where to write the results (default benchmarks/results/)")
    return p


# --- Table 1 ------------------------------------------------------------------------------
def weight_bytes(model) -> int:
    """Bytes the model's parameters and buffers hold; a torchao int8 weight counts its
    int8 data and scales."""
    total = 0
    for t in list(model.state_dict().values()):
        inner = [getattr(t, name) for name in getattr(t, "tensor_data_names", [])]
        inner += [getattr(t, name) for name in getattr(t, "optional_tensor_data_names", []) if getattr(t, name, None) is not None]
        total += sum(x.numel() * x.element_size() for x in inner) if inner else t.numel() * t.element_size()
    return total


def file_bytes(model) -> int:
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def load_models(size: str, task, checkpoint: Optional[Path]):
    """(float32 model, int8 copy) of ``size``, both in eval."""
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
    import torch

    def build(**extra):
        args = argparse.Namespace(**extra)
        ARCH_CONFIG_REGISTRY[size](args)
        return ARCH_MODEL_REGISTRY[size].build_model(args, task)

    torch.manual_seed(1)
    fp32 = build()
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        fp32.load_state_dict(state["model"])
    int8 = build(quantize="int8")
    int8.load_state_dict(copy.deepcopy(fp32.state_dict()))
    return fp32.eval(), int8.eval()


def measure_speed(opts) -> dict:
    import torch
    from fairseq import options, tasks
    from fairseq.sequence_generator import SequenceGenerator

    torch.set_num_threads(opts.threads)
    args = options.parse_args_and_arch(options.get_generation_parser(),
                                       [str(opts.data), "--user-dir", str(PLUGIN_DIR), "--task", "translation"])
    task = tasks.setup_task(args)
    task.load_dataset("test")
    itr = task.get_batch_iterator(dataset=task.dataset("test"), max_sentences=opts.batch_size,
                                  max_positions=(1024, 1024), ignore_invalid_inputs=True).next_epoch_itr(shuffle=False)
    batches, sentences = [], 0
    for sample in itr:
        if sentences >= opts.sentences:
            break
        batches.append(sample)
        sentences += int(sample["nsentences"])
    rows = []
    for size in opts.sizes:
        checkpoint = opts.checkpoint[0] if opts.checkpoint and size == "g2lstm_iwslt" else None
        models = dict(zip(METHODS, load_models(size, task, checkpoint)))
        generators = {m: SequenceGenerator([model], task.target_dictionary, beam_size=BEAM, max_len_a=0,
                                           max_len_b=opts.gen_length, min_len=opts.gen_length)
                      for m, model in models.items()}
        times = {m: [] for m in METHODS}
        with torch.no_grad():
            for r in range(opts.rounds + 1):  # round 0 warms up
                for method in (METHODS if r % 2 else METHODS[::-1]):
                    start = time.perf_counter()
                    for sample in batches:
                        generators[method].generate([models[method]], sample)
                    if r:
                        times[method].append(time.perf_counter() - start)
                print(f"[{size}] round {r}/{opts.rounds}", file=sys.stderr, flush=True)
        for method, model in models.items():
            rows.append({"size": size, "method": method, "trained": checkpoint is not None,
                         "params": sum(p.numel() for p in models["none"].parameters()),
                         "sentences_per_s": [sentences / t for t in times[method]],
                         "weight_mb": weight_bytes(model) / 2**20, "file_mb": file_bytes(model) / 2**20})
    for row in rows:
        base = next(r for r in rows if r["size"] == row["size"] and r["method"] == "none")
        row["median_sentences_per_s"] = statistics.median(row["sentences_per_s"])
        row["speed_ratio"] = row["median_sentences_per_s"] / statistics.median(base["sentences_per_s"])
        row["weight_ratio"] = row["weight_mb"] / base["weight_mb"]
        row["file_ratio"] = row["file_mb"] / base["file_mb"]
    return {"rows": rows, "sentences": sentences, "batches": len(batches)}


def format_speed(results: dict) -> str:
    lines = ["| model | quantize | sent/s (beam 5) | x fp32 | weights MB | x fp32 | file MB | x fp32 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        s = r["sentences_per_s"]
        lines.append(f"| {r['size']}{'' if r['trained'] else ' (random weights)'} | {r['method']} | "
                     f"{r['median_sentences_per_s']:.2f} ({min(s):.2f}-{max(s):.2f}) | {r['speed_ratio']:.2f}x | "
                     f"{r['weight_mb']:.1f} | {r['weight_ratio']:.2f}x | {r['file_mb']:.1f} | {r['file_ratio']:.2f}x |")
    return "\n".join(lines)


# --- the pieces: one nn.Linear at the models' shapes ----------------------------------------
LINEAR_SHAPES = (  # (rows, in, out): rows = sentences x beam at a decoder step, or steps x batch
    (10, 256, 1024), (80, 256, 1024), (640, 256, 1024), (80, 256, 4000),
    (80, 1024, 4096), (640, 512, 4096), (80, 1024, 32000),
)


def measure_linear(opts) -> dict:
    """Median time of float32 and int8 ``nn.Linear`` (torchao, as ``--quantize int8`` sets
    it up), alternating, at each of :data:`LINEAR_SHAPES`."""
    import torch
    from torch import nn

    from fairseq_g2lstm.quantize import quantize_model

    torch.set_num_threads(opts.threads)
    rows = []
    for batch, d_in, d_out in LINEAR_SHAPES:
        torch.manual_seed(0)
        fp32 = nn.Linear(d_in, d_out)
        models = {"none": fp32, "int8": quantize_model(copy.deepcopy(fp32), "int8")}
        x = torch.randn(batch, d_in)
        times = {m: [] for m in METHODS}
        with torch.no_grad():
            for r in range(opts.rounds * 5 + 1):  # run 0 warms up
                for method in (METHODS if r % 2 else METHODS[::-1]):
                    start = time.perf_counter()
                    models[method](x)
                    if r:
                        times[method].append(time.perf_counter() - start)
        ms = {m: statistics.median(t) * 1e3 for m, t in times.items()}
        rows.append({"rows": batch, "in": d_in, "out": d_out, "fp32_ms": ms["none"], "int8_ms": ms["int8"],
                     "speed_ratio": ms["none"] / ms["int8"]})
    return {"rows": rows}


def format_linear(results: dict) -> str:
    lines = ["| rows x in -> out | fp32 ms | int8 ms | int8 speed x fp32 |", "|---|---:|---:|---:|"]
    lines += [f"| {r['rows']} x {r['in']} -> {r['out']} | {r['fp32_ms']:.2f} | {r['int8_ms']:.2f} | "
              f"{r['speed_ratio']:.2f}x |" for r in results["rows"]]
    return "\n".join(lines)


# --- Table 2 ------------------------------------------------------------------------------
def generate_bleu(data: Path, checkpoint: Path, method: str, threads: int) -> dict:
    """fairseq-generate's corpus BLEU of ``checkpoint`` quantized with ``method``."""
    cmd = [str(Path(sys.executable).parent / "fairseq-generate"), str(data), "--user-dir", str(PLUGIN_DIR),
           "--path", str(checkpoint), "--cpu", "--beam", str(BEAM), "--max-tokens", "8000",
           "--remove-bpe", "sentencepiece", "--scoring", "sacrebleu",
           "--model-overrides", repr({"quantize": method})]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if proc.returncode != 0:
        raise RuntimeError(f"fairseq-generate failed:\n{proc.stderr[-3000:]}")
    match = BLEU_LINE.search(proc.stdout.strip().splitlines()[-1])
    return {"checkpoint": str(checkpoint), "method": method, "bleu": float(match.group(1)),
            "score_line": proc.stdout.strip().splitlines()[-1], "wall_s": time.perf_counter() - start}


def measure_bleu(opts) -> dict:
    rows = []
    for checkpoint in opts.checkpoint:
        for method in METHODS:
            rows.append(generate_bleu(opts.data, checkpoint, method, opts.threads))
            print(f"{checkpoint} {method}: BLEU {rows[-1]['bleu']}", file=sys.stderr, flush=True)
    for row in rows:
        base = next(r for r in rows if r["checkpoint"] == row["checkpoint"] and r["method"] == "none")
        row["delta"] = row["bleu"] - base["bleu"]
    return {"rows": rows}


def format_bleu(results: dict) -> str:
    lines = ["| checkpoint | quantize | BLEU | delta |", "|---|---|---:|---:|"]
    lines += [f"| {r['checkpoint']} | {r['method']} | {r['bleu']:.2f} | {r['delta']:+.2f} |" for r in results["rows"]]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(argv)
    opts.sizes = [s for s in opts.sizes.split(",") if s]
    if any(s not in SIZES for s in opts.sizes):
        build_parser().error(f"--sizes: choose from {', '.join(SIZES)}")
    if opts.table == "bleu" and not opts.checkpoint:
        build_parser().error("bleu needs at least one --checkpoint")
    import logging

    logging.getLogger("fairseq").setLevel(logging.WARNING)
    if opts.table != "linear" and opts.data is None:
        build_parser().error(f"{opts.table} needs --data")
    measure, fmt = {"speed": (measure_speed, format_speed), "bleu": (measure_bleu, format_bleu),
                    "linear": (measure_linear, format_linear)}[opts.table]
    results = measure(opts)
    results["setup"] = {"commit": git_commit(), "threads": opts.threads, "loadavg_1min": os.getloadavg()[0],
                        "command": "python benchmarks/quantize.py " + " ".join(argv),
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    publish(fmt(results), results, opts.json or REPO / "benchmarks" / "results" / f"quantize-{opts.table}.json")
    return results


if __name__ == "__main__":
    main()
