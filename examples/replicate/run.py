"""Replicate the paper's three claims at CPU scale: plain, sharpened and G2 LSTMs, several seeds.

    python examples/replicate/run.py                      # everything, resumable
    python examples/replicate/run.py --stage train        # only train what is missing
    python examples/replicate/run.py --data-bin DIR -s de -t en   # another corpus

Every arm (``--gate-mode plain``, ``sharpened``, ``gumbel``) trains ``g2lstm_iwslt`` with
the same flags (:data:`TRAIN_FLAGS`) and seed list; only the gate mode differs. Each run
trains until its validation loss stops improving (the learning rate halves on every
validation without improvement, and training stops after ``--patience`` of them, or at
the epoch cap), and is then judged by its ``checkpoint_best.pt``.

Resumable at every level: a killed fairseq-train resumes from its ``checkpoint_last.pt``
(fairseq restores it from the save dir); a finished training leaves ``trained.json``
beside its checkpoints and is never retrained; a model whose results file
``results/<arm>-seed<S>.json`` exists is skipped entirely. The results files are small
and committed; checkpoints stay under ``--work`` (git-ignored).

Default data: the demo's offline corpus (German->English gettext catalogs), built into
``--work`` with the demo's preparation commands.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import evaluation  # this folder's modules: run.py runs as a script
import report  # puts this checkout's fairseq_g2lstm first on sys.path, before another install's
from fairseq_g2lstm.atomic_file import write_text_atomic
from fairseq_g2lstm.cli_args import configure_logging

HERE = Path(__file__).resolve().parent
REPO = report.CHECKOUT
USER_DIR = str(REPO / "fairseq_g2lstm")
BIN = Path(sys.executable).parent

ARMS = ("plain", "gumbel", "sharpened")  # plain and G2 first: the comparison that matters most
SEEDS = (1, 2, 3)
# Identical for every arm; only --gate-mode and --seed differ between runs.
TRAIN_FLAGS = [
    "--arch", "g2lstm_iwslt",
    "--optimizer", "adam", "--lr", "0.002", "--clip-norm", "2.0",
    "--lr-scheduler", "reduce_lr_on_plateau", "--lr-shrink", "0.5", "--lr-patience", "0",
    "--criterion", "cross_entropy", "--max-tokens", "2000",
    "--patience", "4", "--max-epoch", "30",
    "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "100",
]
CORPUS_VOCAB = "4000"
CORPUS_MAX_SUBWORDS = "64"


@dataclass(frozen=True)
class Run:
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm}-seed{self.seed}"


def runs_in_order(arms: Sequence[str], seeds: Sequence[int]) -> List[Run]:
    """Seed by seed, every arm of a seed before the next seed: partial results compare."""
    return [Run(arm, seed) for seed in seeds for arm in arms]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def tool(name: str) -> str:
    return str(BIN / name)


def subprocess_env(threads: int) -> Dict[str, str]:
    """Thread counts, and this checkout's package first on the path (not another install's)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": path}


# --- data ---------------------------------------------------------------------------------
def prepare_demo_corpus(work: Path) -> Path:
    """The demo's corpus and data-bin under ``work`` (skipped when already there)."""
    data_bin = work / "data-bin"
    if (data_bin / "manifest.json").exists():
        return data_bin
    corpus = work / "corpus"
    log(f"building the gettext corpus in {corpus}")
    subprocess.run([sys.executable, "-m", "fairseq_g2lstm.data.gettext_corpus", "--out", str(corpus), "--force"],
                   check=True, cwd=REPO, env=subprocess_env(2))
    log(f"preparing {data_bin}")
    subprocess.run([sys.executable, "-m", "fairseq_g2lstm.data.prepare_parallel", "-s", "de", "-t", "en",
                    "--trainpref", str(corpus / "train"), "--validpref", str(corpus / "valid"),
                    "--testpref", str(corpus / "test"), "--destdir", str(data_bin),
                    "--vocab-size", CORPUS_VOCAB, "--lowercase", "--max-subwords", CORPUS_MAX_SUBWORDS, "--force"],
                   check=True, cwd=REPO, env=subprocess_env(2))
    return data_bin


# --- training -----------------------------------------------------------------------------
def train_command(run: Run, data_bin: Path, save_dir: Path, langs: Sequence[str], extra: Sequence[str]) -> List[str]:
    """``extra`` (``--train-args``) goes to every arm alike, after :data:`TRAIN_FLAGS`."""
    return [tool("fairseq-train"), str(data_bin), "--user-dir", USER_DIR, *langs, *TRAIN_FLAGS, *extra,
            "--gate-mode", run.arm, "--seed", str(run.seed), "--save-dir", str(save_dir), "--cpu"]


VALID_LINE = re.compile(r"\| valid \| epoch (\d+) .*?\| loss ([\d.]+) .*?\| num_updates (\d+)")
TRAIN_WALL = re.compile(r"\| train \| epoch \d+ .*\| wall (\d+)")  # fairseq's wall clock, reset by each attempt


def training_record(run: Run, command: Sequence[str], log_path: Path, threads: int) -> Dict:
    """What trained.json holds, read from the whole training log (every attempt: an
    epoch that a resumed attempt ran again counts once, as its last run). The training
    time is the sum over attempts of fairseq's wall clock at each one's last finished
    epoch (fairseq restarts that clock on resume; a part-epoch cut off by a kill is not
    counted)."""
    curve: Dict[int, Dict] = {}
    attempt_walls: List[int] = []  # the last epoch's wall clock of each attempt
    for line in log_path.read_text().splitlines():
        if line.startswith("$ "):  # train() writes the command at the start of every attempt
            attempt_walls.append(0)
        match = VALID_LINE.search(line)
        if match:
            curve[int(match[1])] = {"epoch": int(match[1]), "valid_loss": float(match[2]),
                                    "num_updates": int(match[3])}
        wall = TRAIN_WALL.search(line)
        if wall and attempt_walls:
            attempt_walls[-1] = int(wall[1])
    epochs = [curve[e] for e in sorted(curve)]
    best = min(epochs, key=lambda e: e["valid_loss"])
    return {
        "run": run.name, "arm": run.arm, "seed": run.seed,
        "command": report.checkout_relative(" ".join(["fairseq-train", *command[1:]])),
        "epochs": epochs[-1]["epoch"], "num_updates": epochs[-1]["num_updates"],
        "best_epoch": best["epoch"], "best_valid_loss": best["valid_loss"], "valid_curve": epochs,
        "train_wall_minutes": round(sum(attempt_walls) / 60, 1), "threads": threads,
    }


def train(run: Run, data_bin: Path, work: Path, langs: Sequence[str], threads: int, extra: Sequence[str] = ()) -> Dict:
    """Train one model to its early stop (resuming a killed run); returns trained.json."""
    save_dir = work / "checkpoints" / run.name
    marker = save_dir / "trained.json"
    if marker.exists():
        return json.loads(marker.read_text())
    save_dir.mkdir(parents=True, exist_ok=True)
    command = train_command(run, data_bin, save_dir, langs, extra)
    log_path = work / "logs" / f"{run.name}.train.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    resumed = (save_dir / "checkpoint_last.pt").exists()
    log(f"{run.name}: training{' (resuming)' if resumed else ''}; log {log_path}")
    start = time.monotonic()
    with open(log_path, "a") as log_file, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=subprocess_env(threads)
    ) as proc:
        log_file.write(f"$ {' '.join(command)}\n")
        for line in proc.stdout:
            log_file.write(line)
            log_file.flush()
            match = VALID_LINE.search(line)
            if match:
                log(f"{run.name}: epoch {match[1]} valid loss {float(match[2]):.3f} ({match[3]} updates, "
                    f"{(time.monotonic() - start) / 60:.0f} min in this attempt)")
    if proc.returncode != 0:
        raise SystemExit(f"{run.name}: fairseq-train failed ({proc.returncode}); see {log_path}")
    trained = training_record(run, command, log_path, threads)
    write_text_atomic(marker, json.dumps(trained, indent=1) + "\n")
    return trained


# --- evaluation -----------------------------------------------------------------------------
def evaluate_run(run: Run, work: Path, results: Path, data_bin: Path, langs: Sequence[str],
                 pairs: Sequence) -> Optional[Dict]:
    """Evaluate a trained model into results/<run>.json (written last, atomically);
    None where it is not trained yet."""
    save_dir = work / "checkpoints" / run.name
    marker = save_dir / "trained.json"
    target = results / f"{run.name}.json"
    if target.exists():
        return json.loads(target.read_text())
    if not marker.exists():
        return None
    log(f"{run.name}: evaluating (BLEU, compression grid, gate statistics)")
    record = evaluation.evaluate(run.name, json.loads(marker.read_text()), save_dir / "checkpoint_best.pt",
                               data_bin, langs, pairs)
    write_text_atomic(target, json.dumps(record, indent=1) + "\n")
    log(f"{run.name}: BLEU {record['bleu']:.2f}; results in {target}")
    return record


# --- command line ---------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-bin", type=Path, help="a fairseq data-bin (default: the demo corpus, built here)")
    parser.add_argument("-s", "--source-lang", help="with --data-bin")
    parser.add_argument("-t", "--target-lang", help="with --data-bin")
    parser.add_argument("--work", type=Path, default=HERE / "work", help="checkpoints, logs, data (git-ignored)")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="per-model results (committed)")
    parser.add_argument("--report", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each fairseq process (1: two runs share 2 cores without "
                             "the slowdown of oversubscribed OpenMP threads)")
    parser.add_argument("--jobs", type=int, default=2, help="models trained at the same time")
    parser.add_argument("--train-args", default="", metavar="FLAGS",
                        help="more fairseq-train flags, the same for every arm (e.g. for another corpus)")
    parser.add_argument("--stage", choices=("all", "train", "evaluate", "report"), default="all",
                        help="all: train and evaluate each model, then write the report")
    return parser.parse_args(argv)


BUDGET_NOTE = ("Budget: every model trains to its early stop or the 30-epoch cap, whichever comes first, "
               "never to a time limit. On a 2-core CPU machine with two single-threaded runs side by side an "
               "epoch takes about 6 minutes, so a model that reaches the cap takes about 3 hours and the "
               "9-model grid about 14 hours of elapsed time, over several sessions (it was first sized for 5 "
               "hours, before the models were seen to keep improving past epoch 20). Some epochs ran beside "
               "other work, so wall times are upper bounds.")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    configure_logging()  # before anything logs: importing fairseq set the root logger to DEBUG
    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    runs = runs_in_order(args.arms, args.seeds)
    pending = [run for run in runs if not (args.results / f"{run.name}.json").exists()]
    for run in set(runs) - set(pending):
        log(f"{run.name}: results exist, skipped")
    data_bin = args.data_bin or (prepare_demo_corpus(args.work) if pending and args.stage != "report" else None)
    langs = ["--source-lang", args.source_lang, "--target-lang", args.target_lang] if args.source_lang else []
    if pending and args.stage in ("all", "evaluate"):
        pair = (args.source_lang, args.target_lang) if args.source_lang else evaluation.language_pair(data_bin)
        pairs = evaluation.heatmap_pairs(data_bin, *pair)

    def work_on(run: Run) -> None:
        if args.stage in ("all", "train"):
            trained = train(run, data_bin, args.work, langs, args.threads, shlex.split(args.train_args))
            log(f"{run.name}: trained, best valid loss {trained['best_valid_loss']} at epoch "
                f"{trained['best_epoch']} of {trained['epochs']}")
        if args.stage in ("all", "evaluate"):
            evaluate_run(run, args.work, args.results, data_bin, langs, pairs)

    if args.stage != "report":
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each job waits on its subprocesses
            list(pool.map(work_on, pending))
    if args.stage in ("all", "report") and any(args.results.glob("*.json")):
        command = "python examples/replicate/run.py" + ("" if args.stage == "all" else " --stage report")
        report.write_report(args.results, args.report, args.arms, command, BUDGET_NOTE, planned=len(runs))
        log(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
