"""Training and decoding throughput of g2lstm against fairseq's own ``lstm``.

Same data, same machine, same sizes, one model at a time, each in a fresh process (so
that its peak memory is its own), rounds interleaved so that a machine that gets busier
halfway through slows every model alike. Everything goes through fairseq's own code:
``options`` parses the flags, ``tasks.setup_task`` loads the data-bin, ``Trainer`` runs
the updates and ``SequenceGenerator`` the beam search.

What is measured, per model:

* training: target tokens per second of ``Trainer.train_step`` (forward, backward,
  gradient norm, Adam step) over a fixed list of batches, the same batches for every
  model (``--max-tokens`` batching, seeded order), after ``--warmup`` untimed updates;
* generation: sentences per second of beam-5 search over the test split in batches of
  ``--gen-batch-size`` sentences. The output length is pinned (``min_len = max_len = L``,
  L = the test set's mean target length, plus EOS), so that every model, trained or not,
  runs the same number of decoder steps;
* peak memory: on CPU the process's peak RSS (``ru_maxrss``), and that peak minus the
  RSS just before the model was built (imports, data and batches are in the base); on
  CUDA ``torch.cuda.max_memory_allocated``.

Each process times ``--repeats`` passes; ``--rounds`` processes per model. The table
shows the median over all passes with the min-max spread, and the ratio of the medians
to the baseline (fairseq ``lstm``).

    python benchmarks/throughput.py                 # synthetic corpus, all cores
    python benchmarks/throughput.py --quick         # seconds; what CI runs
    python benchmarks/throughput.py --data DATA_BIN --src de --tgt en --threads 2
"""
import argparse
import hashlib
import json
import logging
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "fairseq_g2lstm"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import QUICK_CORPUS, SRC, TGT, CorpusSpec, publish, synthetic_data_bin  # noqa: E402

BASELINE = "lstm"
BEAM = 5
LAYERS = 2  # the default; --layers 3 --dim 1024 --embed-dim 512 gives the g2lstm_wmt sizes
DROPOUT = 0.2
OPTIMIZER = ["--optimizer", "adam", "--lr", "5e-4", "--clip-norm", "0"]


@dataclass(frozen=True)
class ModelSpec:
    """One row of the table: fairseq flags on top of the shared sizes and training flags."""

    name: str
    args: Tuple[str, ...]
    what: str


MODELS: Dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("lstm", ("--arch", "lstm", "--encoder-bidirectional"),
              "fairseq's lstm: both encoder layers bidirectional (nn.LSTM, oneDNN), final states "
              "projected 2H->H by one shared Linear; Luong 'general' attention; input feeding"),
    ModelSpec("g2lstm-gumbel", ("--arch", "g2lstm_iwslt", "--gate-mode", "gumbel"),
              "the paper's model: G2 gates (tau 0.9, p 0.2); first encoder layer bidirectional, "
              "second unidirectional; Bahdanau (additive) attention; input feeding"),
    ModelSpec("g2lstm-gumbel-no-metrics", ("--arch", "g2lstm_iwslt", "--gate-mode", "gumbel", "--no-gate-metrics"),
              "as g2lstm-gumbel without the gate saturation metrics: their cost is the difference"),
    ModelSpec("g2lstm-plain", ("--arch", "g2lstm_iwslt", "--gate-mode", "plain"),
              "as g2lstm-gumbel with plain sigmoid gates (a standard LSTM through our loop)"),
    ModelSpec("g2lstm-gumbel-luong", ("--arch", "g2lstm_iwslt", "--gate-mode", "gumbel",
                                      "--attention-type", "luong"),
              "as g2lstm-gumbel with fairseq's Luong 'general' attention"),
    ModelSpec("g2lstm-plain-luong-bidir-all", ("--arch", "g2lstm_iwslt", "--gate-mode", "plain",
                                               "--attention-type", "luong", "--encoder-bidirectional", "all"),
              "the same network as fairseq's lstm (both encoder layers bidirectional, Luong, plain "
              "gates) through our code: isolates our LSTM loop from the architecture differences"),
)}


def size_args(dim: int, embed_dim: int, layers: int) -> List[str]:
    """Hidden = decoder output = ``dim``; embeddings ``embed_dim``; ``layers`` in each of
    the encoder and decoder."""
    return ["--encoder-layers", str(layers), "--decoder-layers", str(layers),
            "--encoder-embed-dim", str(embed_dim), "--encoder-hidden-size", str(dim),
            "--decoder-embed-dim", str(embed_dim), "--decoder-hidden-size", str(dim),
            "--decoder-out-embed-dim", str(dim)]


# --- options ----------------------------------------------------------------------------
ALL_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
QUICK = dict(dim=32, max_tokens=400, steps=2, warmup=1, repeats=2, rounds=1, gen_batch_size=12, gen_sentences=24,
             threads=1, isolation="none")
FULL = dict(dim=256, max_tokens=4000, steps=6, warmup=2, repeats=1, rounds=3, gen_batch_size=64, gen_sentences=128,
            threads=ALL_CORES, isolation="process")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and few steps (CI); no meaningful timings")
    p.add_argument("--data", type=Path, help="a fairseq data-bin with train and test splits "
                   "(default: a generated synthetic corpus)")
    p.add_argument("--src", default=SRC, help="source language of --data")
    p.add_argument("--tgt", default=TGT, help="target language of --data")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--g2lstm-args", default="", metavar="FLAGS",
                   help="extra fairseq flags for the g2lstm rows only, e.g. '--gate-kernel cuda'")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: all cores; quick 1)")
    p.add_argument("--isolation", choices=("process", "none"),
                   help="process: each model in fresh processes (default); none: all in this process, "
                   "memory from a sampler instead of the process peak (quick's default)")
    p.add_argument("--dim", type=int, help="hidden size (default 256; quick 32)")
    p.add_argument("--embed-dim", type=int, help="embedding size (default: --dim)")
    p.add_argument("--layers", type=int, default=LAYERS, help=f"encoder and decoder layers (default {LAYERS})")
    p.add_argument("--max-tokens", type=int, help="training batch size in tokens (default 4000)")
    p.add_argument("--steps", type=int, help="timed updates per pass (default 6)")
    p.add_argument("--warmup", type=int, help="untimed updates before timing (default 2)")
    p.add_argument("--repeats", type=int, help="timed passes per process (default 1)")
    p.add_argument("--rounds", type=int, help="fresh processes per model, interleaved (default 3)")
    p.add_argument("--gen-batch-size", type=int, help="generation batch, sentences (default 64)")
    p.add_argument("--gen-sentences", type=int, help="test sentences to translate per pass (default 128)")
    p.add_argument("--gen-length", type=int, help="pinned output length L (default: mean test target length)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="where to write the results (default benchmarks/results/)")
    p.add_argument("--workdir", type=Path, help="where the synthetic data-bin goes (default: a temp dir)")
    p.add_argument("--only", help=argparse.SUPPRESS)  # internal: measure one model in this process
    p.add_argument("--child-json", type=Path, help=argparse.SUPPRESS)
    return p


def parse_options(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    opts = build_parser().parse_args(argv)
    for key, value in (QUICK if opts.quick else FULL).items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    names = [m for m in opts.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    opts.model_names = names
    opts.embed_dim = opts.embed_dim or opts.dim
    for key in ("steps", "repeats", "rounds", "gen_batch_size", "gen_sentences", "threads", "dim", "embed_dim",
                "layers", "max_tokens"):
        if getattr(opts, key) < 1:
            raise SystemExit(f"--{key.replace('_', '-')} must be >= 1")
    return opts


def fairseq_argv(spec: ModelSpec, opts) -> List[str]:
    extra = shlex.split(opts.g2lstm_args) if spec.args[1].startswith("g2lstm") else []
    argv = [str(opts.data), "--user-dir", str(PLUGIN_DIR), "--task", "translation",
            "--source-lang", opts.src, "--target-lang", opts.tgt, *spec.args, *extra, *size_args(opts.dim, opts.embed_dim, opts.layers),
            "--dropout", str(DROPOUT), "--criterion", "cross_entropy", *OPTIMIZER,
            "--max-tokens", str(opts.max_tokens), "--seed", str(opts.seed), "--num-workers", "0"]
    return argv + (["--cpu"] if opts.device == "cpu" else [])


# --- memory -------------------------------------------------------------------------------
def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


class PeakSampler:
    """Samples the RSS every few ms in a thread: the peak of one phase (ru_maxrss is
    the whole process's peak and never goes down)."""

    def __init__(self, period_s=0.002):
        self.period_s, self.peak = period_s, 0.0
        self._stop = threading.Event()

    def __enter__(self):
        self.peak = current_rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.period_s):
            self.peak = max(self.peak, current_rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_mb())


# --- one model, in this process ---------------------------------------------------------
def batch_fingerprint(batches) -> str:
    h = hashlib.sha1()
    for b in batches:
        h.update(b["net_input"]["src_tokens"].numpy().tobytes())
        h.update(b["target"].numpy().tobytes())
    return h.hexdigest()[:12]


def measure_model(name: str, opts) -> dict:
    """Train and generate with model ``name``; timings, sizes and memory as a dict."""
    import torch
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.sequence_generator import SequenceGenerator
    from fairseq.trainer import Trainer

    torch.set_num_threads(opts.threads)
    cuda = opts.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    spec = MODELS[name]
    args = options.parse_args_and_arch(options.get_training_parser(), fairseq_argv(spec, opts))
    cfg = convert_namespace_to_omegaconf(args)
    utils.set_torch_seed(opts.seed)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    task.load_dataset("test")

    train_itr = task.get_batch_iterator(dataset=task.dataset("train"), max_tokens=opts.max_tokens,
                                        max_positions=task.max_positions(), ignore_invalid_inputs=True,
                                        seed=opts.seed, epoch=1).next_epoch_itr(shuffle=True)
    needed = opts.warmup + opts.steps
    batches = [b for _, b in zip(range(needed), train_itr)]
    batches = [batches[i % len(batches)] for i in range(needed)]  # a small corpus is cycled
    # generation: whole batches in seeded random order until --gen-sentences are covered
    gen_itr = task.get_batch_iterator(dataset=task.dataset("test"), max_sentences=opts.gen_batch_size,
                                      max_positions=task.max_positions(), ignore_invalid_inputs=True,
                                      seed=opts.seed).next_epoch_itr(shuffle=True)
    gen_batches = []
    for sample in gen_itr:
        if sum(int(b["nsentences"]) for b in gen_batches) >= opts.gen_sentences:
            break
        gen_batches.append(sample)
    sentences = sum(int(b["nsentences"]) for b in gen_batches)
    mean_target = sum(int(b["ntokens"]) for b in gen_batches) / sentences  # with EOS
    gen_length = opts.gen_length or max(1, round(mean_target) - 1)

    load_before = os.getloadavg()[0]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base_mb = torch.cuda.memory_allocated() / 2**20 if cuda else current_rss_mb()
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    params = sum(p.numel() for p in model.parameters())
    trainer = Trainer(cfg, task, model, criterion)

    # training
    with PeakSampler() as train_mem:
        for sample in batches[: opts.warmup]:
            trainer.train_step([sample])
        train_tps, timed = [], batches[opts.warmup:]
        tokens = sum(int(b["ntokens"]) for b in timed)
        for _ in range(opts.repeats):
            sync()
            start = time.perf_counter()
            for sample in timed:
                trainer.train_step([sample])
            sync()
            train_tps.append(tokens / (time.perf_counter() - start))
    train_peak_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else train_mem.peak

    # generation
    model = trainer.get_model()
    model.eval()
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=BEAM,
                                  max_len_a=0, max_len_b=gen_length, min_len=gen_length)

    def generate(sample):
        sample = utils.move_to_cuda(sample) if cuda else sample
        hypos = task.inference_step(generator, [model], sample)
        assert all(len(h[0]["tokens"]) == gen_length + 1 for h in hypos), "output length not pinned"

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with PeakSampler() as gen_mem:
        generate(gen_batches[0])  # warm-up
        gen_sps = []
        for _ in range(opts.repeats):
            sync()
            start = time.perf_counter()
            for sample in gen_batches:
                generate(sample)
            sync()
            gen_sps.append(sentences / (time.perf_counter() - start))
    gen_peak_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else gen_mem.peak

    return {
        "model": name, "params": params, "train_tokens_per_s": train_tps, "gen_sentences_per_s": gen_sps,
        "base_mb": base_mb, "train_peak_mb": train_peak_mb, "gen_peak_mb": gen_peak_mb,
        # CPU: the kernel's exact peak RSS of this process (meaningful in a fresh process only)
        "process_peak_mb": max(train_peak_mb, gen_peak_mb) if cuda else peak_rss_mb(),
        "train_batches": len(timed), "train_tokens_per_pass": tokens, "train_fingerprint": batch_fingerprint(batches),
        "gen_sentences": sentences, "gen_batches": len(gen_batches), "gen_length": gen_length,
        "loadavg_1min": [load_before, os.getloadavg()[0]],
        "plugin": str(Path(sys.modules["fairseq_g2lstm"].__file__).parent),
    }


# --- the parent: data, processes, summary --------------------------------------------------
def prepare_data(opts) -> Path:
    if opts.data is not None:
        return opts.data
    root = opts.workdir or Path(tempfile.gettempdir()) / "g2lstm-throughput"
    spec = QUICK_CORPUS if opts.quick else CorpusSpec()
    return synthetic_data_bin(root / ("quick" if opts.quick else "full"), spec)


def run_in_process(name: str, opts) -> dict:
    """Measure ``name`` here; memory from the phase samplers (the process peak is shared)."""
    import gc

    import torch

    result = measure_model(name, opts)
    gc.collect()
    if opts.device == "cuda":
        torch.cuda.empty_cache()
    result["peak_mb"] = max(result["train_peak_mb"], result["gen_peak_mb"])
    return result


def run_child(name: str, opts, argv: Sequence[str], out: Path) -> dict:
    """Measure ``name`` in a fresh process: its peak RSS is the model's own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--data", str(opts.data),
           "--only", name, "--child-json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(out.read_text())
    result["peak_mb"] = result["process_peak_mb"]
    return result


def summarize(values: List[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def combine(name: str, runs: List[dict]) -> dict:
    """One model's processes -> medians and spreads."""
    first = runs[0]
    return {
        "model": name, "what": MODELS[name].what, "args": list(MODELS[name].args), "params": first["params"],
        "train_tokens_per_s": summarize([v for r in runs for v in r["train_tokens_per_s"]]),
        "gen_sentences_per_s": summarize([v for r in runs for v in r["gen_sentences_per_s"]]),
        "peak_mb": summarize([r["peak_mb"] for r in runs]),
        "peak_above_base_mb": summarize([r["peak_mb"] - r["base_mb"] for r in runs]),
        "base_mb": summarize([r["base_mb"] for r in runs]),
        "runs": runs,
    }


def add_ratios(models: Dict[str, dict]) -> None:
    base = models.get(BASELINE)
    for m in models.values():
        m["ratio"] = {key: (m[key]["median"] / base[key]["median"] if base and base[key]["median"] else None)
                      for key in ("train_tokens_per_s", "gen_sentences_per_s", "peak_mb", "peak_above_base_mb")}


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except OSError:
        return None


def run_benchmark(opts, argv: Sequence[str]) -> dict:
    """Measure every model of ``opts.model_names`` in ``opts.rounds`` interleaved rounds."""
    import torch

    opts.data = prepare_data(opts)
    names = list(opts.model_names)
    runs: Dict[str, List[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(opts.rounds):
            order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
            for name in order:
                start = time.perf_counter()
                if opts.isolation == "process":
                    runs[name].append(run_child(name, opts, argv, Path(tmp) / f"{name}.{r}.json"))
                else:
                    runs[name].append(run_in_process(name, opts))
                print(f"[round {r + 1}/{opts.rounds}] {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    prints = {n: {x["train_fingerprint"] for x in rs} for n, rs in runs.items()}
    if len(set().union(*prints.values())) != 1:
        raise RuntimeError(f"the models did not see the same training batches: {prints}")
    models = {n: combine(n, rs) for n, rs in runs.items()}
    add_ratios(models)
    first = runs[names[0]][0]
    loads = [x for rs in runs.values() for r in rs for x in r["loadavg_1min"]]
    return {
        "setup": {
            "device": opts.device if opts.device == "cpu" else torch.cuda.get_device_name(),
            "cpu": platform.processor() or platform.machine(), "threads": opts.threads,
            "torch": torch.__version__, "python": platform.python_version(), "commit": git_commit(),
            "data": str(opts.data), "synthetic": opts.data_is_synthetic, "quick": opts.quick,
            "dim": opts.dim, "embed_dim": opts.embed_dim, "layers": opts.layers, "dropout": DROPOUT, "max_tokens": opts.max_tokens,
            "optimizer": " ".join(OPTIMIZER), "criterion": "cross_entropy", "g2lstm_args": opts.g2lstm_args,
            "train_batches_per_pass": first["train_batches"], "train_tokens_per_pass": first["train_tokens_per_pass"],
            "warmup": opts.warmup, "repeats": opts.repeats, "rounds": opts.rounds, "beam": BEAM,
            "gen_batch_size": opts.gen_batch_size, "gen_sentences": first["gen_sentences"],
            "gen_length": first["gen_length"], "loadavg_1min": [min(loads), max(loads)], "isolation": opts.isolation, "memory": memory_note(opts),
            "command": "python benchmarks/throughput.py " + " ".join(argv),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
        "baseline": BASELINE if BASELINE in models else None,
        "models": models,
    }


def memory_note(opts) -> str:
    if opts.device == "cuda":
        return "torch.cuda.max_memory_allocated"
    if opts.isolation == "process":
        return "peak RSS (ru_maxrss) of a fresh process per model"
    return "RSS sampled every 2 ms, all models in one process (not isolated)"


def _spread(s: dict, fmt: str) -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def _ratio(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}x"


def format_table(results: dict) -> str:
    """The results as a Markdown table (median (min-max); ratios of medians to the baseline)."""
    s = results["setup"]
    mem = "peak MB" if s["device"] == "cpu" else "peak CUDA MB"
    header = ["model", "params", "train tok/s", "x lstm", "gen sent/s", "x lstm", mem, "x lstm",
              "above base MB", "x lstm"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for m in results["models"].values():
        r = m["ratio"]
        lines.append("| " + " | ".join([
            m["model"], f"{m['params'] / 1e6:.2f}M",
            _spread(m["train_tokens_per_s"], ".0f"), _ratio(r["train_tokens_per_s"]),
            _spread(m["gen_sentences_per_s"], ".1f"), _ratio(r["gen_sentences_per_s"]),
            _spread(m["peak_mb"], ".0f"), _ratio(r["peak_mb"]),
            _spread(m["peak_above_base_mb"], ".0f"), _ratio(r["peak_above_base_mb"]),
        ]) + " |")
    n = s["repeats"] * s["rounds"]
    lines += ["", f"{s['device']}, {s['threads']} threads, torch {s['torch']}, commit {s['commit']}; "
              f"hidden {s['dim']}, embeddings {s['embed_dim']}, {s['layers']} layers, batches of {s['max_tokens']} tokens "
              f"({s['train_batches_per_pass']} timed updates, {s['train_tokens_per_pass']} target tokens a pass), "
              f"beam {s['beam']} over {s['gen_sentences']} sentences pinned to {s['gen_length']} tokens; "
              f"median (min-max) of {n} passes ({s['rounds']} processes x {s['repeats']}); "
              f"memory: {s['memory']}; 1-min load average {s['loadavg_1min'][0]:.1f}-{s['loadavg_1min'][1]:.1f}."]
    return "\n".join(lines)


def default_json_path(opts) -> Path:
    return REPO / "benchmarks" / "results" / ("throughput-quick.json" if opts.quick else "throughput.json")


def main(argv: Optional[Sequence[str]] = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse_options(argv)
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    logging.getLogger("fairseq_cli").setLevel(logging.WARNING)
    from fairseq_g2lstm.atomic_file import write_text_atomic  # imports fairseq and torch: not at module load

    if opts.only:  # a child: one model, results to --child-json
        result = measure_model(opts.only, opts)
        write_text_atomic(opts.child_json, json.dumps(result))
        return result
    opts.data_is_synthetic = opts.data is None
    results = run_benchmark(opts, argv)
    publish(format_table(results), results, opts.json or default_json_path(opts))
    return results


if __name__ == "__main__":
    main()
