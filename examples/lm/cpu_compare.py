"""G2 against plain gates in a small language model on CPU: test perplexity over seeds.

    python examples/lm/cpu_compare.py                  # everything, resumable
    python examples/lm/cpu_compare.py --jobs 1         # one run at a time

Data: the English side of the demo's offline corpus (gettext catalogs; ``train.en``,
``valid.en``, ``test.en``), lowercased, the 10,000 most frequent training words, through
``g2lstm-prepare-lm``. Model: ``g2lstm_lm`` with 2 layers of 256, embeddings 256, tied.
Both arms use the same flags (:data:`TRAIN_FLAGS`) and seeds; only ``--gate-mode``
differs (``gumbel``: G2 gates, tau 0.9, p 0.2; ``plain``: a standard LSTM). Each run
trains a fixed number of epochs and is scored by fairseq-eval-lm on the test split with
its ``checkpoint_best.pt`` (best validation loss).

Every fairseq process runs single-threaded (``OMP_NUM_THREADS=1``); ``--jobs 2`` runs the
two arms of a seed side by side, so they share the machine's load alike. The plugin is
copied to ``WORK/snapshot`` first and every run uses that copy, so that edits to the
checkout while the runs go on change nothing. Resumable: a run whose
``results/<arm>-seed<S>.json`` exists for the same number of epochs is skipped; with
more epochs, fairseq-train resumes from the run's ``checkpoint_last.pt`` (the learning
rate is constant, so the longer run keeps one schedule). Writes per-run JSON files,
``results/summary.json`` and ``results/RESULTS.md`` (mean and standard deviation per arm).
"""
import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # this checkout's fairseq_g2lstm, not another install's

from fairseq_g2lstm.atomic_file import write_text_atomic  # noqa: E402

USER_DIR = str(REPO / "fairseq_g2lstm")  # main() points it at the snapshot
BIN = Path(sys.executable).parent

ARMS = ("gumbel", "plain")
SEEDS = (1, 2, 3)
VOCAB = "10000"
EPOCHS = 6
# Identical for both arms; only --gate-mode and --seed differ between runs.
TRAIN_FLAGS = [
    "--task", "language_modeling", "--arch", "g2lstm_lm",
    "--decoder-layers", "2", "--decoder-embed-dim", "256", "--decoder-hidden-size", "256",
    "--share-decoder-input-output-embed", "--dropout", "0.2", "--weight-drop", "0.2",
    "--tokens-per-sample", "70", "--sample-break-mode", "none", "--batch-size", "20",
    "--required-batch-size-multiple", "1",
    "--optimizer", "adam", "--lr", "0.002", "--clip-norm", "0.25",
    "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "50", "--cpu",
]
EVAL_FLAGS = ["--gen-subset", "test", "--tokens-per-sample", "350", "--context-window", "280", "--cpu"]
GATE_METRIC = re.compile(r"(gate_[if]_(?:lo|hi|mean)) ([\d.]+)")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def snapshot(work: Path) -> Path:
    """A copy of the plugin package in ``work/snapshot`` (made once); returns the folder
    that holds it, for PYTHONPATH."""
    folder = work / "snapshot"
    if not (folder / "fairseq_g2lstm").is_dir():
        shutil.copytree(REPO / "fairseq_g2lstm", folder / "fairseq_g2lstm",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return folder


def shown(command: List[str]) -> str:
    """A command as recorded: paths inside the checkout relative to it."""
    return shlex.join(command).replace(str(REPO) + "/", "")


def run_logged(command: List[str], log_path: Path) -> Dict[str, float]:
    """Run ``command`` single-threaded with its output in ``log_path``; return its wall and
    CPU seconds (the child's own, from wait4). Raises on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(USER_DIR).parent)}
    start = time.monotonic()
    with open(log_path, "a") as stream:  # a resumed run adds to its log
        stream.write("$ " + shlex.join(command) + "\n")
        stream.flush()
        proc = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({proc.returncode}); see {log_path}")
    return {"wall_s": round(time.monotonic() - start, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}


def prepare_data(work: Path) -> Path:
    corpus, data = work / "corpus", work / "data-bin"
    if not (corpus / "test.en").is_file():
        log("building the demo corpus (gettext catalogs)")
        subprocess.run([sys.executable, "-m", "fairseq_g2lstm.data.gettext_corpus", "--out", str(corpus), "--force"],
                       check=True, cwd=REPO)
    if not (data / "manifest.json").is_file():
        log("g2lstm-prepare-lm on the English side")
        subprocess.run([sys.executable, "-m", "fairseq_g2lstm.data.prepare_lm", "--train", str(corpus / "train.en"),
                        "--valid", str(corpus / "valid.en"), "--test", str(corpus / "test.en"), "--destdir",
                        str(data), "--lowercase", "--vocab-size", VOCAB, "--workers", "1", "--force"],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return data


def train_command(data: Path, save_dir: Path, arm: str, seed: int, epochs: int) -> List[str]:
    return [str(BIN / "fairseq-train"), str(data), "--user-dir", USER_DIR, *TRAIN_FLAGS,
            "--max-epoch", str(epochs), "--gate-mode", arm, "--seed", str(seed), "--save-dir", str(save_dir)]


def eval_command(data: Path, checkpoint: Path) -> List[str]:
    return [str(BIN / "fairseq-eval-lm"), str(data), "--user-dir", USER_DIR, "--path", str(checkpoint), *EVAL_FLAGS]


def last_line(text: str, kind: str) -> str:
    lines = [line for line in text.splitlines() if kind in line]
    return lines[-1] if lines else ""


def one_run(data: Path, work: Path, results: Path, arm: str, seed: int, epochs: int) -> dict:
    name = f"{arm}-seed{seed}"
    target = results / f"{name}.json"
    if target.is_file():
        record = json.loads(target.read_text())
        if record["epochs"] == epochs:
            log(f"{name}: done before ({target})")
            return record
        log(f"{name}: {target} has {record['epochs']} epochs; training on to {epochs}")
        earlier = record["train"]  # the cost of the epochs trained before, counted in the new record
    else:
        earlier = {"wall_s": 0.0, "cpu_s": 0.0}
    save_dir, logs = work / "checkpoints" / name, work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log(f"{name}: training")
    train = train_command(data, save_dir, arm, seed, epochs)
    train_cost = run_logged(train, logs / f"{name}.train.log")
    train_cost = {key: round(train_cost[key] + earlier[key], 1) for key in ("wall_s", "cpu_s")}
    train_log = (logs / f"{name}.train.log").read_text()
    evaluate = eval_command(data, save_dir / "checkpoint_best.pt")
    eval_cost = run_logged(evaluate, logs / f"{name}.eval.log")
    eval_log = (logs / f"{name}.eval.log").read_text()
    loss, ppl = re.findall(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)", eval_log)[-1]
    valid = last_line(train_log, "| valid |")
    record = {
        "generated_by": "examples/lm/cpu_compare.py; rerun it to regenerate",
        "arm": arm, "seed": seed, "epochs": epochs,
        "test_ppl": float(ppl), "test_loss_base2": float(loss),
        "best_valid_loss_base2": min(map(float, re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", train_log))),
        "num_updates": int(re.search(r"num_updates (\d+)", valid).group(1)),
        "final_valid_gates": {k: float(v) for k, v in GATE_METRIC.findall(valid)},
        "train": {**train_cost, "command": shown(train)},
        "eval": {**eval_cost, "command": shown(evaluate)},
    }
    write_text_atomic(target, json.dumps(record, indent=2) + "\n")
    log(f"{name}: test ppl {ppl} ({train_cost['cpu_s']:.0f} s CPU to train)")
    return record


def mean_std(values: Sequence[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def summarize(records: List[dict], arms: Sequence[str], command: str) -> Dict:
    by_arm = {arm: sorted((r for r in records if r["arm"] == arm), key=lambda r: r["seed"]) for arm in arms}
    summary = {
        "generated_by": f"examples/lm/cpu_compare.py; command: {command}",
        "train_flags": TRAIN_FLAGS, "eval_flags": EVAL_FLAGS,
        "arms": {arm: {"seeds": [r["seed"] for r in rs], "test_ppl": [r["test_ppl"] for r in rs],
                       "mean": statistics.mean([r["test_ppl"] for r in rs]) if rs else None,
                       "std": statistics.stdev([r["test_ppl"] for r in rs]) if len(rs) > 1 else None}
                 for arm, rs in by_arm.items()},
        "cpu_seconds_total": round(sum(r["train"]["cpu_s"] + r["eval"]["cpu_s"] for r in records), 1),
    }
    lines = [f"<!-- generated by examples/lm/cpu_compare.py ({command}); do not edit -->", "",
             "| arm | test perplexity (mean ± std) | per seed | updates | final valid gates i lo/hi, f lo/hi |",
             "|---|---:|---|---:|---|"]
    for arm, rs in by_arm.items():
        per_seed = ", ".join(f"{r['test_ppl']:.2f} (seed {r['seed']})" for r in rs)
        gates = "; ".join("{:.2f}/{:.2f}, {:.2f}/{:.2f}".format(
            *(r["final_valid_gates"].get(k, float("nan")) for k in ("gate_i_lo", "gate_i_hi", "gate_f_lo", "gate_f_hi")))
            for r in rs)
        updates = ", ".join(str(r["num_updates"]) for r in rs)
        lines.append(f"| {arm} | {mean_std([r['test_ppl'] for r in rs])} | {per_seed} | {updates} | {gates} |")
    lines += ["", f"CPU time of all runs (training and evaluation): {summary['cpu_seconds_total'] / 60:.1f} min."]
    return summary, "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=HERE / "work", help="data and checkpoints (git-ignored)")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="the JSON and Markdown results")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=("gumbel", "plain", "sharpened"))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2: both arms of a seed)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "examples/lm/cpu_compare.py", *(sys.argv[1:] if argv is None else argv)])
    global USER_DIR
    args.results.mkdir(parents=True, exist_ok=True)
    data = prepare_data(args.work)
    USER_DIR = str(snapshot(args.work) / "fairseq_g2lstm")
    runs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        records = list(pool.map(lambda r: one_run(data, args.work, args.results, *r, args.epochs), runs))
    summary, table = summarize(records, args.arms, command)
    write_text_atomic(args.results / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(args.results / "RESULTS.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
