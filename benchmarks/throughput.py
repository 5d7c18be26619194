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
shows the median over all passes with how far the slowest and fastest lie from it, and
the ratio of the medians to the baseline (fairseq ``lstm``) with its range over the rounds;
a ratio whose range includes 1 reads "not established" (see ``benchmarks/record.py``).
Under the table: the CPU (``lscpu``), threads, commit, date and the load before and after.

``--compare REF`` (repeatable) adds another version's g2lstm rows to the same rounds: REF
is a checkout folder or a commit of this repository (checked out with ``git worktree add``
into a temporary folder, removed at the end). Its rows, named ``MODEL@COMMIT`` (``+dirty``
for uncommitted changes), run this harness with REF's plugin: REF first on ``PYTHONPATH``
and ``--user-dir REF/fairseq_g2lstm``; each child records the ``fairseq_g2lstm`` it imported,
and a row whose child imported another one stops the run. A second table compares each
model with its REF rows by the same rule.

``--contention`` runs the same rounds a second time, each child beside one competing
CPU-bound process (a Python busy loop started before it and stopped after it), and shows
each row's slowdown (speed under contention / speed alone) and that slowdown against the
baseline's: which code suffers most on a busy host.

    python benchmarks/throughput.py                 # synthetic corpus, all cores
    python benchmarks/throughput.py --quick         # seconds; what CI runs
    python benchmarks/throughput.py --data DATA_BIN --src de --tgt en --threads 2
    python benchmarks/throughput.py --data DATA_BIN --threads 2 --compare 498039a --contention
"""
import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import QUICK_CORPUS, SRC, TGT, CorpusSpec, publish, synthetic_data_bin  # noqa: E402
from benchmarks.peak_rss import peak_rss_mb  # noqa: E402
from benchmarks.record import (format_machine, format_ratio, format_summary, git_label, load_1min,  # noqa: E402
                               machine_record, ratio, summarize)

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


def is_g2lstm(model: str) -> bool:
    return MODELS[model].args[1].startswith("g2lstm")


def model_of(row: str) -> str:
    """The model of a row: ``g2lstm-gumbel@498039a`` runs ``g2lstm-gumbel``."""
    return row.split("@")[0]


@dataclass(frozen=True)
class Contender:
    """One row of the table: a model run with the plugin under ``plugin_root`` (this
    checkout, or a ``--compare`` REF whose ``label`` is its commit)."""

    row: str
    model: str
    plugin_root: Path
    label: Optional[str] = None


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
    p.add_argument("--compare", action="append", default=[], metavar="REF",
                   help="also run the g2lstm rows of REF (a checkout folder or a commit) in the same rounds; "
                   "repeatable")
    p.add_argument("--contention", action="store_true",
                   help="run the rounds a second time beside one competing CPU-bound process and show each "
                   "row's slowdown")
    p.add_argument("--json", type=Path, help="where to write the results (default benchmarks/results/)")
    p.add_argument("--workdir", type=Path, help="where the synthetic data-bin goes (default: a temp dir)")
    p.add_argument("--only", help=argparse.SUPPRESS)  # internal: measure one model in this process
    p.add_argument("--child-json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--plugin-root", type=Path, default=REPO, help=argparse.SUPPRESS)  # internal: whose plugin
    return p


def parse_options(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    opts = build_parser().parse_args(argv)
    if opts.compare and opts.isolation == "none":
        raise SystemExit("--compare runs other code in child processes: it needs --isolation process")
    if opts.compare:
        opts.isolation = "process"
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
    argv = [str(opts.data), "--user-dir", str(opts.plugin_root / "fairseq_g2lstm"), "--task", "translation",
            "--source-lang", opts.src, "--target-lang", opts.tgt, *spec.args, *extra, *size_args(opts.dim, opts.embed_dim, opts.layers),
            "--dropout", str(DROPOUT), "--criterion", "cross_entropy", *OPTIMIZER,
            "--max-tokens", str(opts.max_tokens), "--seed", str(opts.seed), "--num-workers", "0"]
    return argv + (["--cpu"] if opts.device == "cpu" else [])


# --- memory -------------------------------------------------------------------------------
def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


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
        # CPU: the peak RSS of this process image (meaningful in a fresh process only)
        "process_peak_mb": max(train_peak_mb, gen_peak_mb) if cuda else peak_rss_mb(),
        "train_batches": len(timed), "train_tokens_per_pass": tokens, "train_fingerprint": batch_fingerprint(batches),
        "gen_sentences": sentences, "gen_batches": len(gen_batches), "gen_length": gen_length,
        "loadavg_1min": [load_before, os.getloadavg()[0]],
        "plugin": str(Path(sys.modules["fairseq_g2lstm"].__file__).parent),
        "plugin_file": str(Path(sys.modules["fairseq_g2lstm"].__file__).resolve()),
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


def run_child(contender: Contender, opts, argv: Sequence[str], out: Path) -> dict:
    """Measure ``contender`` in a fresh process (its peak RSS is the model's own), with its
    plugin first on the path; stop if the child imported any other ``fairseq_g2lstm``."""
    root = contender.plugin_root
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--data", str(opts.data),
           "--only", contender.model, "--plugin-root", str(root), "--child-json", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{contender.row} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(out.read_text())
    if not Path(result["plugin_file"]).is_relative_to(root.resolve()):
        raise RuntimeError(f"{contender.row} imported {result['plugin_file']}, not the plugin under {root}")
    result["peak_mb"] = result["process_peak_mb"]
    return result


COMPETITOR = [sys.executable, "-c", "while True: pass"]


@contextlib.contextmanager
def competing_process():
    """One CPU-bound process beside the measured work, stopped (and reaped) on the way out.
    Yields a dict that receives its pid, whether it was still running when stopped, and
    the CPU seconds it burned: a record that the competition really ran."""
    record = {}
    proc = subprocess.Popen(COMPETITOR, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        yield record
    finally:
        record["pid"], record["running_at_stop"] = proc.pid, proc.poll() is None
        proc.kill()
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = -9  # reaped above: Popen must not wait for it again
        record["cpu_s"] = usage.ru_utime + usage.ru_stime


def combine(row: str, runs: List[dict]) -> dict:
    """One row's processes -> medians and spreads."""
    first, spec = runs[0], MODELS[model_of(row)]
    return {
        "model": row, "what": spec.what, "args": list(spec.args), "params": first["params"],
        "plugin": first.get("plugin"),
        "train_tokens_per_s": summarize([v for r in runs for v in r["train_tokens_per_s"]]),
        "gen_sentences_per_s": summarize([v for r in runs for v in r["gen_sentences_per_s"]]),
        "peak_mb": summarize([r["peak_mb"] for r in runs]),
        "peak_above_base_mb": summarize([r["peak_mb"] - r["base_mb"] for r in runs]),
        "base_mb": summarize([r["base_mb"] for r in runs]),
        "runs": runs,
    }


RATIO_KEYS = ("train_tokens_per_s", "gen_sentences_per_s", "peak_mb", "peak_above_base_mb")
SPEED_KEYS = ("train_tokens_per_s", "gen_sentences_per_s")


def add_ratios(models: Dict[str, dict]) -> None:
    """Each row's ratio of medians to the baseline (``ratio``) and the same with its range
    over the rounds and whether it is established (``ratio_range``; None for the baseline)."""
    base = models.get(BASELINE)
    for name, m in models.items():
        m["ratio"] = {key: (m[key]["median"] / base[key]["median"] if base and base[key]["median"] else None)
                      for key in RATIO_KEYS}
        m["ratio_range"] = {key: (ratio(m[key], base[key]) if base and name != BASELINE else None)
                            for key in RATIO_KEYS}


def version_ratios(models: Dict[str, dict], rows: Sequence[Contender]) -> List[dict]:
    """Each model of this checkout against the same model of every compared REF."""
    return [{"model": c.model, "ref": c.label, **{key: ratio(models[c.model][key], models[c.row][key])
                                                   for key in SPEED_KEYS}}
            for c in rows if c.label is not None and c.model in models]


def contention_summary(alone: Dict[str, dict], busy_runs: Dict[str, List[dict]]) -> Dict[str, dict]:
    """Per row: speeds beside the competitor, the slowdown (busy / alone, with its range)
    and that slowdown against the baseline row's."""
    out = {}
    for row, runs in busy_runs.items():
        busy = combine(row, runs)
        out[row] = {"slowdown": {key: ratio(busy[key], alone[row][key]) for key in SPEED_KEYS},
                    **{key: busy[key] for key in SPEED_KEYS},
                    "competitors": [r["competitor"] for r in runs]}
    base = out.get(BASELINE)
    for row, c in out.items():
        c["slowdown_x_baseline"] = {key: (ratio(c["slowdown"][key], base["slowdown"][key])
                                          if base and row != BASELINE else None) for key in SPEED_KEYS}
    return out


def git_commit() -> Optional[str]:
    """This checkout's commit, ``+dirty`` with uncommitted changes."""
    return git_label(REPO)


def checkout(ref: str, stack: contextlib.ExitStack) -> Tuple[str, Path]:
    """(label, folder) of a ``--compare`` REF: a folder holding a ``fairseq_g2lstm`` package,
    or a commit of this repository checked out into a temporary worktree that ``stack``
    removes."""
    folder = Path(ref)
    if folder.is_dir():
        if not (folder / "fairseq_g2lstm" / "__init__.py").is_file():
            raise SystemExit(f"--compare {ref}: the folder holds no fairseq_g2lstm package")
        return git_label(folder) or folder.resolve().name, folder.resolve()
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                         capture_output=True, text=True).stdout.strip()
    if not sha:
        raise SystemExit(f"--compare {ref}: neither a folder nor a commit of {REPO}")
    tmp = Path(tempfile.mkdtemp(prefix="g2lstm-compare-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    worktree = tmp / "checkout"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(worktree), sha],
                   check=True, capture_output=True)
    stack.callback(subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                   capture_output=True)
    return git_label(worktree), worktree


def checkouts(refs: Sequence[str], stack: contextlib.ExitStack) -> List[dict]:
    """Every ``--compare`` REF as {"ref", "label", "plugin_root"}; two REFs of the same code
    are refused (their rows would share a name)."""
    out = []
    for ref in refs:
        label, root = checkout(ref, stack)
        same = [c["ref"] for c in out if c["label"] == label]
        if same:
            raise SystemExit(f"--compare {ref}: the same code as --compare {same[0]} ({label})")
        out.append({"ref": ref, "label": label, "plugin_root": str(root)})
    return out


def contenders(model_names: Sequence[str], compared: Sequence[dict]) -> List[Contender]:
    """This checkout's rows, then each compared REF's g2lstm rows."""
    return [Contender(n, n, REPO) for n in model_names] + [
        Contender(f"{n}@{c['label']}", n, Path(c["plugin_root"]), c["label"])
        for c in compared for n in model_names if is_g2lstm(n)]


def measure_rounds(rows: Sequence[Contender], opts, argv: Sequence[str], tmp: Path, busy: bool) -> Dict[str, List[dict]]:
    """``opts.rounds`` rounds over ``rows``, each round starting one row later; with
    ``busy``, each measurement beside a competing process."""
    runs: Dict[str, List[dict]] = {c.row: [] for c in rows}
    for r in range(opts.rounds):
        for c in rows[r % len(rows):] + rows[: r % len(rows)]:  # rotate who goes first
            start = time.perf_counter()
            with competing_process() if busy else contextlib.nullcontext() as competitor:
                if opts.isolation == "process":
                    result = run_child(c, opts, argv, tmp / f"{c.row}.{r}.{'busy' if busy else 'alone'}.json")
                else:
                    result = run_in_process(c.model, opts)
            if busy:
                result["competitor"] = competitor
            runs[c.row].append(result)
            print(f"[{'contention ' if busy else ''}round {r + 1}/{opts.rounds}] {c.row}: "
                  f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return runs


def run_benchmark(opts, argv: Sequence[str]) -> dict:
    """Measure every row (``opts.model_names``, then the ``--compare`` rows) in ``opts.rounds``
    interleaved rounds, and again beside a competitor with ``--contention``."""
    import torch

    load_before, commit = load_1min(), git_commit()  # the code that runs, before anything can change it
    opts.data = prepare_data(opts)
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        compared = checkouts(opts.compare, stack)
        rows = contenders(opts.model_names, compared)
        runs = measure_rounds(rows, opts, argv, Path(tmp), busy=False)
        busy_runs = measure_rounds(rows, opts, argv, Path(tmp), busy=True) if opts.contention else None
    prints = {n: {x["train_fingerprint"] for x in rs} for n, rs in {**runs, **(busy_runs or {})}.items()}
    if len(set().union(*prints.values())) != 1:
        raise RuntimeError(f"the models did not see the same training batches: {prints}")
    models = {n: combine(n, rs) for n, rs in runs.items()}
    add_ratios(models)
    first = runs[rows[0].row][0]
    loads = [x for rs in runs.values() for r in rs for x in r["loadavg_1min"]]
    return {
        "setup": {
            "device": opts.device if opts.device == "cpu" else torch.cuda.get_device_name(),
            "cpu": platform.processor() or platform.machine(), "threads": opts.threads,
            "torch": torch.__version__, "python": platform.python_version(), "commit": commit,
            "data": str(opts.data), "synthetic": opts.data_is_synthetic, "quick": opts.quick,
            "dim": opts.dim, "embed_dim": opts.embed_dim, "layers": opts.layers, "dropout": DROPOUT, "max_tokens": opts.max_tokens,
            "optimizer": " ".join(OPTIMIZER), "criterion": "cross_entropy", "g2lstm_args": opts.g2lstm_args,
            "train_batches_per_pass": first["train_batches"], "train_tokens_per_pass": first["train_tokens_per_pass"],
            "warmup": opts.warmup, "repeats": opts.repeats, "rounds": opts.rounds, "beam": BEAM,
            "gen_batch_size": opts.gen_batch_size, "gen_sentences": first["gen_sentences"],
            "gen_length": first["gen_length"], "loadavg_1min": [min(loads), max(loads)], "isolation": opts.isolation, "memory": memory_note(opts),
            "compare": compared,
            "contention": opts.contention, "competitor": " ".join(COMPETITOR) if opts.contention else None,
            "command": "python benchmarks/throughput.py " + " ".join(argv),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine_record(opts.threads, commit, load_before),
        },
        "baseline": BASELINE if BASELINE in models else None,
        "models": models,
        "versions": version_ratios(models, rows),
        "contention": contention_summary(models, busy_runs) if busy_runs else None,
    }


def memory_note(opts) -> str:
    if opts.device == "cuda":
        return "torch.cuda.max_memory_allocated"
    if opts.isolation == "process":
        return "peak RSS (VmHWM) of a fresh process per model"
    return "RSS sampled every 2 ms, all models in one process (not isolated)"


def _markdown(header: List[str], rows: List[List[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _against_baseline(m: dict, key: str) -> str:
    return "1.00x" if m["model"] == BASELINE else format_ratio(m["ratio_range"][key])


def format_table(results: dict) -> str:
    """The results as Markdown: each row's median (how far its rounds lie below/above it)
    and its ratio to the baseline with that ratio's range, or "not established"; then the
    versions compared and the slowdowns under contention, when measured."""
    s = results["setup"]
    mem = "peak MB" if s["device"] == "cpu" else "peak CUDA MB"
    header = ["model", "params", "train tok/s", "x lstm", "gen sent/s", "x lstm", mem, "x lstm",
              "above base MB", "x lstm"]
    body = [[m["model"], f"{m['params'] / 1e6:.2f}M",
             format_summary(m["train_tokens_per_s"], ".0f"), _against_baseline(m, "train_tokens_per_s"),
             format_summary(m["gen_sentences_per_s"], ".1f"), _against_baseline(m, "gen_sentences_per_s"),
             format_summary(m["peak_mb"], ".0f"), _against_baseline(m, "peak_mb"),
             format_summary(m["peak_above_base_mb"], ".0f"), _against_baseline(m, "peak_above_base_mb")]
            for m in results["models"].values()]
    lines = _markdown(header, body)
    if results.get("versions"):
        lines += ["", *_markdown(["model", "against", "train tok/s ratio", "gen sent/s ratio"],
                                 [[v["model"], f"{v['model']}@{v['ref']}", format_ratio(v["train_tokens_per_s"]),
                                   format_ratio(v["gen_sentences_per_s"])] for v in results["versions"]])]
    if results.get("contention"):
        lines += ["", *_markdown(
            ["model (beside one busy process)", "train tok/s", "slowdown", "x lstm's", "gen sent/s", "slowdown",
             "x lstm's"],
            [[row, format_summary(c["train_tokens_per_s"], ".0f"), format_ratio(c["slowdown"]["train_tokens_per_s"]),
              format_ratio(c["slowdown_x_baseline"]["train_tokens_per_s"]),
              format_summary(c["gen_sentences_per_s"], ".1f"), format_ratio(c["slowdown"]["gen_sentences_per_s"]),
              format_ratio(c["slowdown_x_baseline"]["gen_sentences_per_s"])]
             for row, c in results["contention"].items()])]
    n = s["repeats"] * s["rounds"]
    lines += ["", f"{format_machine(s['machine'])}. {s['device']}, torch {s['torch']}; "
              f"hidden {s['dim']}, embeddings {s['embed_dim']}, {s['layers']} layers, batches of {s['max_tokens']} tokens "
              f"({s['train_batches_per_pass']} timed updates, {s['train_tokens_per_pass']} target tokens a pass), "
              f"beam {s['beam']} over {s['gen_sentences']} sentences pinned to {s['gen_length']} tokens; "
              f"median (-below/+above it: the slowest and fastest) of {n} passes "
              f"({s['rounds']} processes x {s['repeats']}); a ratio's range pairs one row's slowest pass with the "
              f"other's fastest, and a range that includes 1 (or a single pass) is not established; "
              f"memory: {s['memory']}; 1-minute load in the children {s['loadavg_1min'][0]:.1f}-{s['loadavg_1min'][1]:.1f}."]
    if s.get("compare"):
        lines.append("Compared: " + "; ".join(c["label"] + ("" if c["ref"] == c["label"] else f" ({c['ref']})")
                                              for c in s["compare"]) + ".")
    if s.get("contention"):
        lines.append(f"Contention: the same rounds again, each child beside `{s['competitor']}`; "
                     "slowdown = speed beside it / speed alone.")
    return "\n".join(lines)


def default_json_path(opts) -> Path:
    return REPO / "benchmarks" / "results" / ("throughput-quick.json" if opts.quick else "throughput.json")


def main(argv: Optional[Sequence[str]] = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse_options(argv)
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    logging.getLogger("fairseq_cli").setLevel(logging.WARNING)

    if opts.only:  # a child: one model, with the plugin of --plugin-root, results to --child-json
        sys.path.insert(0, str(opts.plugin_root))
        result = measure_model(opts.only, opts)
        # a plain write: the parent reads it after this process has ended, and the plugin
        # imported here (possibly another version's) is not asked for its file helpers
        opts.child_json.write_text(json.dumps(result))
        return result
    opts.data_is_synthetic = opts.data is None
    results = run_benchmark(opts, argv)
    publish(format_table(results), results, opts.json or default_json_path(opts))
    return results


if __name__ == "__main__":
    main()
