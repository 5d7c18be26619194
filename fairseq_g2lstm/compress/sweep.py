"""The paper's Table 4 on your own checkpoints: BLEU after each compression.

Usage (``scripts/compression_sweep.py`` is the front end; also
``python -m fairseq_g2lstm.compress.sweep``)::

    python scripts/compression_sweep.py data-bin/iwslt14.de-en \\
        checkpoints/plain/checkpoint_best.pt checkpoints/sharpened/checkpoint_best.pt \\
        checkpoints/g2lstm/checkpoint_best.pt --labels plain sharpened g2 \\
        --gen-args "--remove-bpe sentencepiece --max-tokens 8000" --json table4.json

For every checkpoint it scores the rows of the grid (default: the original, round
r 0.5, round-clip r 0.5 c 1.0, SVD k 32 and k 16, scope recurrent) with
``fairseq-generate --beam 5 --scoring sacrebleu`` in a subprocess, and prints a Markdown
table: one row per setting, one column group (BLEU, change from the original) per
checkpoint. The JSON holds the same numbers with, per cell, the compression signature,
the compression summary, the generate command and its full BLEU line. Compressed
checkpoints go to a work folder (a temporary one by default) and are removed unless
``--keep``. Progress (one line per model, with an ETA) goes to stderr.

Language models (``g2lstm_lm`` checkpoints) are scored by test perplexity instead, with
``fairseq-eval-lm`` (``--gen-args`` then takes its flags, e.g. ``--context-window``); the
cells hold ``ppl`` where translation cells hold ``bleu``. The paper's language-model grid
is ``--step 0.2 --clip 0.4 --ranks 128 64 --scope all``. One sweep takes checkpoints of
one kind.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..atomic_file import write_text_atomic
from ..cli_args import EXIT_INPUT_ERROR, OneLineParser, output_file_problem
from .methods import PAPER_CLIP, PAPER_RANKS, PAPER_STEP, SCOPES, CompressionConfig, CompressionError

PROG = "g2lstm-compression-sweep"
EXIT_RUN_ERROR = 1
USER_DIR = str(Path(__file__).resolve().parents[1])  # the fairseq_g2lstm package, for --user-dir
# Flags the sweep sets itself; passing them through --gen-args would make the table lie.
RESERVED_GEN_ARGS = ("--path", "--beam", "--scoring", "--gen-subset", "--results-path", "--user-dir")
PPL_LINE = re.compile(r"(?P<score>Loss \(base 2\): [\d.]+, Perplexity: (?P<ppl>[\d.]+|inf|nan))")
METRIC_NAMES = {"bleu": "BLEU", "ppl": "ppl"}
BLEU_LINE = re.compile(r"^Generate (?P<subset>\S+) with beam=(?P<beam>\d+): (?P<score>BLEU\d* = (?P<bleu>[\d.]+).*)$",
                       re.MULTILINE)


class SweepError(Exception):
    """A sweep that cannot run or failed; ``str()`` is the message without ``error:``."""


@dataclass(frozen=True)
class Row:
    """One row of the table: ``config`` None is the original checkpoint."""

    name: str
    config: Optional[CompressionConfig] = None

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.name).strip("-")


def table4_rows(step: float = PAPER_STEP, clip: float = PAPER_CLIP, ranks: Sequence[int] = PAPER_RANKS,
                scope: str = "recurrent") -> List[Row]:
    """The paper's grid: original, round, round-clip, then one SVD row per rank."""
    if len(set(ranks)) != len(ranks):
        raise CompressionError(f"--ranks must be distinct; got {' '.join(map(str, ranks))}")
    configs = [CompressionConfig("round", step=step, scope=scope),
               CompressionConfig("round-clip", step=step, clip=clip, scope=scope)]
    configs += [CompressionConfig("svd", rank=k, scope=scope) for k in ranks]
    return [Row("original")] + [Row(c.describe(), c) for c in configs]


@dataclass
class Model:
    """One checkpoint of the sweep (a column group)."""

    label: str
    path: Path
    sha256: str
    metric: str = "bleu"  # bleu (fairseq-generate) or ppl (fairseq-eval-lm)


@dataclass
class GenerateResult:
    score: float  # BLEU, or perplexity for a language model
    score_line: str  # e.g. "BLEU = 31.95 63.2/38.5/25.4/17.1 (BP = ...)"
    seconds: float
    hypotheses: Optional[List[str]] = None  # fairseq-generate's detokenized D- lines, in sentence order
    references: Optional[List[str]] = None  # its T- lines, in the same order


def generated_lines(stdout: str, tag: str) -> List[str]:
    """fairseq-generate's ``TAG-ID\t...\tTEXT`` lines (``D`` hypotheses, ``T`` references)
    as texts in sentence-id order; kept so that two systems can be compared sentence by
    sentence (paired bootstrap) without running them again."""
    found = {}
    for line in stdout.splitlines():
        head, _, rest = line.partition("\t")
        if head.startswith(f"{tag}-") and head[len(tag) + 1:].isdigit():
            found[int(head[len(tag) + 1:])] = rest.split("\t")[-1] if tag == "D" else rest
    return [found[k] for k in sorted(found)]


def parse_bleu(stdout: str) -> Tuple[float, str]:
    """(BLEU, the score part of the line) from fairseq-generate's final
    ``Generate SUBSET with beam=N: BLEU = ...`` line."""
    matches = list(BLEU_LINE.finditer(stdout))
    if not matches:
        raise SweepError("fairseq-generate printed no 'Generate ... with beam=N: BLEU = ...' line")
    return float(matches[-1]["bleu"]), matches[-1]["score"].strip()


def parse_perplexity(output: str) -> Tuple[float, str]:
    """(perplexity, the score part) from fairseq-eval-lm's final
    ``Loss (base 2): L, Perplexity: P`` line."""
    matches = list(PPL_LINE.finditer(output))
    if not matches:
        raise SweepError("fairseq-eval-lm printed no 'Loss (base 2): ..., Perplexity: ...' line")
    return float(matches[-1]["ppl"]), matches[-1]["score"]


def generate_executable(tool: str = "generate") -> List[str]:
    """fairseq-``tool`` of this Python environment (else the one on PATH, else ``-m``)."""
    beside = Path(sys.executable).parent / f"fairseq-{tool}"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(f"fairseq-{tool}")
    return [found] if found else [sys.executable, "-m", f"fairseq_cli.{tool.replace('-', '_')}"]


def generate_command(data: str, checkpoint: str, beam: int = 5, subset: str = "test",
                     gen_args: Sequence[str] = ()) -> List[str]:
    """The fairseq-generate command that scores ``checkpoint`` with sacreBLEU."""
    return [*generate_executable(), str(data), "--user-dir", USER_DIR, "--path", str(checkpoint),
            "--gen-subset", subset, "--beam", str(beam), "--scoring", "sacrebleu", *gen_args]


def eval_lm_command(data: str, checkpoint: str, subset: str = "test", gen_args: Sequence[str] = ()) -> List[str]:
    """The fairseq-eval-lm command that scores a language model's perplexity."""
    return [*generate_executable("eval-lm"), str(data), "--user-dir", USER_DIR, "--path", str(checkpoint),
            "--gen-subset", subset, *gen_args]


def checkpoint_metric(state) -> str:
    """``ppl`` for a language model's checkpoint, ``bleu`` for a translation model's."""
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY, FairseqLanguageModel

    from ..checkpoints.io import checkpoint_arch

    arch = checkpoint_arch(state)
    model_class = ARCH_MODEL_REGISTRY.get(arch) or MODEL_REGISTRY.get(arch)
    return "ppl" if isinstance(model_class, type) and issubclass(model_class, FairseqLanguageModel) else "bleu"


def run_scorer(command: Sequence[str], tool: str, parse: Callable[[str], Tuple[float, str]],
               env: Optional[Dict[str, str]] = None) -> GenerateResult:
    """Run ``tool``'s ``command`` and ``parse`` its output; :class:`SweepError` on failure."""
    start = time.perf_counter()
    proc = subprocess.run(list(command), capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise SweepError(f"{tool} failed (exit {proc.returncode}): {shlex.join(command)}\n{tail}")
    try:
        score, line = parse(proc.stdout + "\n" + proc.stderr)  # fairseq-eval-lm logs its score
    except SweepError as error:
        raise SweepError(f"{error}: {shlex.join(command)}") from None
    if tool == "fairseq-generate":
        return GenerateResult(score, line, seconds, generated_lines(proc.stdout, "D"), generated_lines(proc.stdout, "T"))
    return GenerateResult(score, line, seconds)


def run_generate(command: Sequence[str], env: Optional[Dict[str, str]] = None) -> GenerateResult:
    """Run a fairseq-generate command and parse its BLEU."""
    return run_scorer(command, "fairseq-generate", parse_bleu, env)


def run_eval_lm(command: Sequence[str], env: Optional[Dict[str, str]] = None) -> GenerateResult:
    """Run a fairseq-eval-lm command and parse its perplexity."""
    return run_scorer(command, "fairseq-eval-lm", parse_perplexity, env)


def check_gen_args(gen_args: Sequence[str]) -> None:
    for arg in gen_args:
        name = arg.split("=", 1)[0]
        if name in RESERVED_GEN_ARGS:
            raise SweepError(f"--gen-args must not contain {name}: "
                             f"the sweep sets {', '.join(RESERVED_GEN_ARGS)} itself")


def prepare_models(checkpoints: Sequence[str], labels: Optional[Sequence[str]], rows: Sequence[Row]) -> List[Model]:
    """Check every checkpoint (a g2lstm model whose gate blocks admit every SVD rank of
    ``rows``; all translation models or all language models) before anything runs;
    return them with their labels, sha256 and metric."""
    from g2lstm_runtime.folder import file_sha256

    from ..checkpoints.io import CheckpointError, load_checkpoint
    from .blocks import check_rank, find_gate_blocks
    from .packing import expanded

    if labels is None:
        labels = [Path(c).parent.name or Path(c).stem for c in checkpoints]
        if len(set(labels)) < len(labels):
            labels = [f"{label}#{i + 1}" for i, label in enumerate(labels)]
    if len(labels) != len(checkpoints):
        raise SweepError(f"--labels gives {len(labels)} labels for {len(checkpoints)} checkpoints")
    if len(set(labels)) != len(labels):
        raise SweepError(f"--labels must be distinct; got {' '.join(labels)}")
    models = []
    for label, path in zip(labels, checkpoints):
        try:
            state = load_checkpoint(path)
            metric = checkpoint_metric(state)
            if models and metric != models[0].metric:
                kinds = {"bleu": "a translation model", "ppl": "a language model"}
                raise SweepError(f"{label} is {kinds[metric]} but {models[0].label} is {kinds[models[0].metric]}; "
                                 f"sweep one kind at a time")
            for row in rows:
                if row.config is not None:
                    blocks = find_gate_blocks(expanded(state["model"]), row.config.scope)
                    if row.config.method == "svd":
                        check_rank(blocks, row.config.rank)
        except (CheckpointError, CompressionError) as error:
            raise SweepError(f"{label}: {error}") from None
        del state
        models.append(Model(label, Path(path), file_sha256(path), metric))
    return models


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def run_sweep(
    data: str,
    checkpoints: Sequence[str],
    labels: Optional[Sequence[str]] = None,
    rows: Optional[Sequence[Row]] = None,
    *,
    beam: int = 5,
    subset: str = "test",
    gen_args: Sequence[str] = (),
    work_dir: Optional[str] = None,
    keep: bool = False,
    pack: bool = False,
    jobs: int = 1,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    generate: Optional[Callable[..., GenerateResult]] = None,
) -> Dict[str, Any]:
    """Score every (checkpoint, row) pair; return the results as a JSON-ready dict.

    ``generate(command, env)`` runs one fairseq-generate (fairseq-eval-lm for language
    models) command; None: :func:`run_generate` (:func:`run_eval_lm`). A test can replace it.
    Compressed checkpoints are written to ``work_dir`` (a new temporary folder when
    None) and deleted after scoring unless ``keep``. ``jobs`` runs that many
    fairseq-generate processes at once (each then gets ``OMP_NUM_THREADS`` = cores /
    jobs unless it is set). Raises :class:`SweepError`.
    """
    from .apply import compress_checkpoint, source_tag

    rows = list(rows) if rows is not None else table4_rows()
    if not Path(data).is_dir():
        raise SweepError(f"{data}: no such data-bin folder")
    if jobs < 1:
        raise SweepError(f"--jobs must be at least 1; got {jobs}")
    check_gen_args(gen_args)
    models = prepare_models(checkpoints, labels, rows)
    metric = models[0].metric
    name = METRIC_NAMES[metric]
    tool = "fairseq-eval-lm" if metric == "ppl" else "fairseq-generate"
    if generate is None:
        generate = run_eval_lm if metric == "ppl" else run_generate
    own_dir = work_dir is None
    folder = Path(tempfile.mkdtemp(prefix="g2lstm-sweep-") if own_dir else work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))

    # Scoring is deterministic, so a checkpoint listed twice (the same bytes) is scored once.
    first_of = {}
    for model in models:
        first_of.setdefault(model.sha256, model)
    tasks = [(m, r) for m in models if first_of[m.sha256] is m for r in rows]
    cells: Dict[Tuple[str, str], Dict[str, Any]] = {}
    lock, start, done = threading.Lock(), time.perf_counter(), [0]
    written: List[Path] = []

    def score(model: Model, row: Row) -> None:
        cell: Dict[str, Any] = {"label": model.label, "row": row.name, "checkpoint": str(model.path)}
        target = model.path
        if row.config is None:
            cell["signature"] = f"original|src={source_tag(model.path, model.sha256)}"
        else:
            target = folder / f"{model.label}.{row.slug}.pt"
            with lock:
                written.append(target)
            summary = compress_checkpoint(model.path, target, row.config, pack=pack, force=True)
            cell.update(signature=summary.signature, compressed_checkpoint=str(target),
                        compression=summary.to_dict())
        if metric == "ppl":
            command = eval_lm_command(data, str(target), subset, gen_args)
        else:
            command = generate_command(data, str(target), beam, subset, gen_args)
        result = generate(command, env)
        if row.config is not None and not keep:
            target.unlink(missing_ok=True)
        cell.update({metric: result.score}, score_line=result.score_line, seconds=round(result.seconds, 2),
                    command=shlex.join(command))
        if result.hypotheses is not None:
            cell.update(hypotheses=result.hypotheses, references=result.references)
        with lock:
            cells[(model.label, row.name)] = cell
            done[0] += 1
            elapsed = time.perf_counter() - start
            eta = elapsed / done[0] * (len(tasks) - done[0])
            log(f"[{done[0]:>{len(str(len(tasks)))}}/{len(tasks)}] {model.label} | {row.name}: {name} {result.score:.2f} "
                f"({format_seconds(result.seconds)}); ETA {format_seconds(eta)}")

    log(f"{PROG}: {len(models)} checkpoint(s) x {len(rows)} settings = {len(tasks)} {tool} runs"
        f"{f', {jobs} at a time' if jobs > 1 else ''}; compressed checkpoints in {folder}")
    for model in models:
        if first_of[model.sha256] is not model:
            log(f"{model.label}: the same file as {first_of[model.sha256].label} (sha256 {model.sha256[:8]}); "
                f"scored once")
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(score, m, r) for m, r in tasks]
            for future in as_completed(futures):
                if future.exception() is not None:
                    pool.shutdown(wait=True, cancel_futures=True)  # stop at the first failure
                    raise future.exception()
    finally:
        if not keep:
            for path in written:
                path.unlink(missing_ok=True)
            if own_dir:
                shutil.rmtree(folder, ignore_errors=True)

    for model in models:
        first = first_of[model.sha256]
        if first is not model:
            for row in rows:
                cells[(model.label, row.name)] = {**cells[(first.label, row.name)], "label": model.label,
                                                  "checkpoint": str(model.path), "same_as": first.label}
        original = cells[(model.label, rows[0].name)][metric] if rows[0].config is None else None
        for row in rows:
            cell = cells[(model.label, row.name)]
            cell["delta"] = None if original is None or row.config is None else round(cell[metric] - original, 2)
    return {
        "data": str(data),
        "subset": subset,
        "metric": metric,
        "beam": beam if metric == "bleu" else None,
        "gen_args": list(gen_args),
        "scoring": "sacrebleu" if metric == "bleu" else "fairseq-eval-lm perplexity",
        "work_dir": str(folder) if keep else None,
        "checkpoints": [{"label": m.label, "path": str(m.path), "sha256": m.sha256} for m in models],
        "rows": [{"name": r.name, **(r.config.to_dict() if r.config else {"method": None})} for r in rows],
        "cells": [cells[(m.label, r.name)] for m in models for r in rows],
        "seconds": round(time.perf_counter() - start, 1),
    }


def markdown_table(result: Dict[str, Any]) -> str:
    """Rows: the settings; per checkpoint a column group: BLEU (or perplexity) and its change
    from the original."""
    labels = [c["label"] for c in result["checkpoints"]]
    cells = {(c["label"], c["row"]): c for c in result["cells"]}
    metric = result.get("metric", "bleu")
    head = ["setting"] + [h for label in labels for h in (f"{label} {METRIC_NAMES[metric]}", "Δ")]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (2 * len(labels))]
    for row in result["rows"]:
        out = [row["name"]]
        for label in labels:
            cell = cells[(label, row["name"])]
            out += [f"{cell[metric]:.2f}", "" if cell.get("delta") is None else f"{cell['delta']:+.2f}"]
        lines.append("| " + " | ".join(out) + " |")
    scope = next((r["scope"] for r in result["rows"] if r.get("method")), None)
    lines.append("")
    tool = (f"sacreBLEU, fairseq-generate --beam {result['beam']}" if metric == "bleu"
            else "perplexity (lower is better), fairseq-eval-lm")
    lines.append(f"{tool} on {result['data']} ({result['subset']})"
                 + (f" {' '.join(result['gen_args'])}" if result["gen_args"] else "")
                 + (f"; input/forget-gate blocks, scope {scope}" if scope else "") + ".")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="BLEU of g2lstm checkpoints before and after compressing their input/forget-gate weights "
                    "(the G2-LSTM paper's Table 4), through fairseq-generate and sacreBLEU; for g2lstm_lm "
                    "checkpoints test perplexity through fairseq-eval-lm (the paper's LM grid: --step 0.2 "
                    "--clip 0.4 --ranks 128 64 --scope all).")
    add = parser.add_argument
    add("data", metavar="DATA_BIN", help="the fairseq data-bin to score on (as for fairseq-generate)")
    add("checkpoints", nargs="+", metavar="CHECKPOINT", help="g2lstm checkpoints, one column group each")
    add("--labels", nargs="+", metavar="LABEL", help="a name per checkpoint (default: its folder's name)")
    add("--step", type=float, default=PAPER_STEP, metavar="R", help=f"r of round and round-clip (default {PAPER_STEP})")
    add("--clip", type=float, default=PAPER_CLIP, metavar="C", help=f"c of round-clip (default {PAPER_CLIP})")
    add("--ranks", type=int, nargs="+", default=list(PAPER_RANKS), metavar="K",
        help=f"the SVD ranks, one row each (default {' '.join(map(str, PAPER_RANKS))})")
    add("--scope", choices=SCOPES, default="recurrent",
        help="which gate weights (see g2lstm-compress; default recurrent)")
    add("--beam", type=int, default=5, help="beam size (default 5)")
    add("--gen-subset", default="test", metavar="SPLIT", help="the split to score (default test)")
    add("--gen-args", default="", metavar="'ARGS'",
        help="more fairseq-generate (fairseq-eval-lm) flags, one quoted string, "
             "e.g. '--remove-bpe sentencepiece --max-tokens 8000 --cpu'")
    add("--json", default="compression_sweep.json", metavar="FILE", help="the results (default compression_sweep.json)")
    add("--markdown", metavar="FILE", help="also write the table to FILE")
    add("--work-dir", metavar="DIR", help="where compressed checkpoints go (default: a temporary folder)")
    add("--keep", action="store_true", help="keep the compressed checkpoints")
    add("--pack", action="store_true", help="write the compressed checkpoints packed (same BLEU, smaller files)")
    add("--jobs", type=int, default=1, metavar="N", help="fairseq-generate processes at once (default 1)")
    return parser


def _join_gen_args(argv: Sequence[str]) -> List[str]:
    """``--gen-args '--cpu ...'`` as ``--gen-args=--cpu ...``: argparse would take a value
    that starts with ``-`` for a flag."""
    argv, out, i = list(argv), [], 0
    while i < len(argv):
        if argv[i] == "--gen-args" and i + 1 < len(argv):
            out.append(f"--gen-args={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_join_gen_args(argv))
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        problem = path and output_file_problem(path, flag)
        if problem:  # before the hours of fairseq-generate runs
            parser.error(problem)
    try:
        try:
            rows = table4_rows(args.step, args.clip, args.ranks, args.scope)
        except CompressionError as error:
            raise SweepError(str(error)) from None
        result = run_sweep(args.data, args.checkpoints, args.labels, rows, beam=args.beam, subset=args.gen_subset,
                           gen_args=shlex.split(args.gen_args), work_dir=args.work_dir, keep=args.keep,
                           pack=args.pack, jobs=args.jobs)
    except SweepError as error:
        first, _, rest = str(error).partition("\n")
        print(f"{PROG}: error: {first}", file=sys.stderr)
        if rest:
            print(rest, file=sys.stderr)
        return EXIT_RUN_ERROR if first.startswith(("fairseq-generate", "fairseq-eval-lm")) else EXIT_INPUT_ERROR
    command = shlex.join(["python", "scripts/compression_sweep.py", *argv])
    table = markdown_table(result)
    print(table)
    output = {"generated_by": f"{PROG} (fairseq_g2lstm.compress.sweep); do not edit", "command": command, **result}
    write_text_atomic(args.json, json.dumps(output, indent=2) + "\n")
    if args.markdown:
        write_text_atomic(args.markdown, f"<!-- generated by: {command} -->\n\n{table}\n")
    print(f"\nwrote {args.json}" + (f" and {args.markdown}" if args.markdown else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
