"""Translation engines side by side: each way of translating a file with the same model,
on the same sentences, in interleaved rounds, each run in its own process.

The engines (:data:`ENGINES`, one line each): ``fairseq-generate`` on the data-bin with
the checkpoint (torch, the reference), and ``g2lstm-translate`` on a model folder that
``g2lstm-export`` writes for the engine (``torch``, ``ort-fp32``, ``ort-int8``,
``ort-int4-gates``, ``ort-int4``). An engine this checkout cannot run (its exporter flag or
its translator is missing) is skipped, with the reason under the table.

The sentences: the data-bin's test split (``test``), and the same split with every
``--join`` consecutive sentences made one (``long``). The translators read the test
sources as text (the data-bin's subwords decoded by its sentencepiece model, which is the
prepared text the model was trained on); fairseq-generate reads the same sentences
binarized. Hypotheses are scored with sacrebleu against the decoded test targets.

Per model, engine and set, over ``--rounds`` rounds:

* ``sent/s``: the translation rate once the engine is loaded: the sentences beyond the
  first over the run's wall time less that of the same round's one-sentence run (imports,
  loading and teardown are in both); rounds where the difference is not positive (a set
  too small for the noise) are left out; ``end-to-end``: sentences over the whole run's
  wall time, as a user translating a file sees it;
* ``x fairseq``: the ratio of ``sent/s`` to fairseq-generate's on the same model and set,
  with its range over the rounds, or "not established" (see ``benchmarks/record.py``);
* BLEU, and the share of hypotheses identical to fairseq-generate's;
* peak RSS of the process (``VmHWM``, see ``benchmarks/peak_rss.py``), and the size of the files the
  engine reads (the checkpoint and dictionaries; or the model folder, without the
  checkpoint for an ONNX engine and without the graphs for torch);
* ``start-up s``: from the process start to its first translation, translating one sentence.

With two ``--model``s (G2 and its plain twin, trained with identical flags but
``--gate-mode plain``) the two sit side by side under each engine.

    python benchmarks/engines.py --data demo/data-bin --model g2=demo/checkpoints/checkpoint_last.pt \\
        --model plain=demo-plain/checkpoints/checkpoint_last.pt --threads 2 --rounds 3
"""
import argparse
import contextlib
import functools
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import publish  # noqa: E402
from benchmarks.record import (format_machine, format_ratio, format_summary, git_label, load_1min,  # noqa: E402
                               machine_record, ratio, summarize)

PROG = "benchmarks/engines.py"
BIN = Path(sys.executable).parent
PLUGIN_DIR = REPO / "fairseq_g2lstm"
TRANSLATE_MODULE = "g2lstm_runtime.translate"
BEAM = 5
BASELINE = "fairseq-generate"
SPM_NAMES = ("spm.model", "sentencepiece.bpe.model")
LAUNCHER = [sys.executable, str(REPO / "benchmarks" / "peak_rss.py")]  # + OUT_FILE MODULE ARGS


@dataclass(frozen=True)
class Engine:
    """One way to translate: ``export`` are the ``g2lstm-export`` flags of the model folder
    it reads (None: it reads the data-bin and the checkpoint), ``translate`` the
    ``g2lstm-translate --engine`` it runs (None: fairseq-generate)."""

    name: str
    export: Optional[Tuple[str, ...]]
    translate: Optional[str]
    what: str


ENGINES: Dict[str, Engine] = {e.name: e for e in (
    Engine(BASELINE, None, None, "fairseq-generate on the data-bin with the checkpoint (torch)"),
    Engine("torch", (), "torch", "g2lstm-translate --engine torch on the model folder"),
    Engine("ort-fp32", ("--onnx",), "onnx", "g2lstm-translate --engine onnx, float32 graphs"),
    Engine("ort-int8", ("--onnx", "--onnx-quantize", "int8"), "onnx", "ONNX Runtime dynamic int8"),
    Engine("ort-int4-gates", ("--onnx", "--onnx-quantize", "int4-gates"), "onnx", "4-bit input/forget gate weights"),
    Engine("ort-int4", ("--onnx", "--onnx-quantize", "int4"), "onnx", "4-bit weights in every MatMul"),
)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the data-bin the models were trained on (its test split "
                   "is translated; its sentencepiece model decodes it to text)")
    p.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT",
                   help="a model to run on every engine; repeatable (G2 and its plain twin side by side)")
    p.add_argument("--engines", help=f"comma-separated, from {', '.join(ENGINES)} (default: every one this checkout "
                   "can run)")
    p.add_argument("--sets", default="test,long", help="test (the test split) and/or long (--join sentences as one)")
    p.add_argument("--join", type=int, default=3, help="test sentences per sentence of the long set (default 3)")
    p.add_argument("--limit", type=int, help="translate only the first N test sentences")
    p.add_argument("--threads", type=int, default=2, help="threads of every engine (default 2)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch (default 64)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each engine once per round (default 3)")
    p.add_argument("--workdir", type=Path, help="where the model folders and sets go (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "engines.json",
                   help="where to write the results (default benchmarks/results/engines.json)")
    return p


def parse_options(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    opts = parser.parse_args(argv)
    opts.models = {}
    for item in opts.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--model {item}: expected NAME=CHECKPOINT")
        if name in opts.models:
            parser.error(f"--model {item}: the name {name} is given twice")
        if not Path(path).is_file():
            parser.error(f"--model {item}: no such checkpoint")
        opts.models[name] = Path(path).resolve()
    opts.engine_names = opts.engines.split(",") if opts.engines else list(ENGINES)
    unknown = [e for e in opts.engine_names if e not in ENGINES]
    if unknown:
        parser.error(f"--engines: unknown {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    opts.set_names = opts.sets.split(",")
    if not set(opts.set_names) <= {"test", "long"} or not opts.set_names:
        parser.error(f"--sets {opts.sets}: choose from test, long")
    for key in ("join", "threads", "batch_size", "rounds"):
        if getattr(opts, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if not opts.data.is_dir():
        parser.error(f"--data {opts.data}: no such folder")
    opts.data = opts.data.resolve()
    return opts


def fail(message: str):
    """A bad input: one line, exit 2."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


# --- the sentences ------------------------------------------------------------------------
@dataclass
class SentenceSet:
    """Sentences to translate: ``sources`` as text for the translators, ``data_bin`` with
    a ``test`` split of the same sentences for fairseq-generate, and the ``references``."""

    name: str
    sources: List[str]
    references: List[str]
    data_bin: Path
    source_file: Path


def languages(data: Path) -> Tuple[str, str]:
    """(source, target) of a data-bin, from its test split's file names."""
    pairs = {m.groups() for f in data.glob("test.*.idx") if (m := re.fullmatch(r"test\.(\w+)-(\w+)\.\w+\.idx", f.name))}
    if len(pairs) != 1:
        fail(f"{data}: expected one test.SRC-TGT split, found {sorted(pairs)}")
    return pairs.pop()


def sentencepiece_model(data: Path) -> Optional[Path]:
    return next((data / n for n in SPM_NAMES if (data / n).is_file()), None)


def read_split(data: Path, src: str, tgt: str) -> Tuple[List[str], List[str]]:
    """The test split's source and target sentences as subword strings."""
    from fairseq.data import Dictionary, data_utils

    sides = []
    for lang in (src, tgt):
        dictionary = Dictionary.load(str(data / f"dict.{lang}.txt"))
        dataset = data_utils.load_indexed_dataset(str(data / f"test.{src}-{tgt}.{lang}"), dictionary)
        sides.append([dictionary.string(dataset[i]) for i in range(len(dataset))])
    return sides[0], sides[1]


def binarize_test(data: Path, src: str, tgt: str, src_lines: List[str], tgt_lines: List[str], dest: Path) -> Path:
    """A data-bin at ``dest`` whose test split holds these subword lines, with ``data``'s
    dictionaries (the same ids as ``data``'s own splits)."""
    from fairseq import options
    from fairseq_cli import preprocess

    dest.mkdir(parents=True, exist_ok=True)
    for lang, lines in ((src, src_lines), (tgt, tgt_lines)):
        (dest / f"raw.{lang}").write_text("".join(line + "\n" for line in lines))
    args = options.get_preprocessing_parser().parse_args([
        "--source-lang", src, "--target-lang", tgt, "--testpref", str(dest / "raw"), "--destdir", str(dest),
        "--srcdict", str(data / f"dict.{src}.txt"), "--tgtdict", str(data / f"dict.{tgt}.txt"), "--workers", "1"])
    preprocess.main(args)
    return dest


def sentence_sets(opts, root: Path) -> Tuple[Dict[str, SentenceSet], SentenceSet]:
    """The sets of ``--sets``, and a one-sentence set for the start-up runs."""
    src, tgt = opts.src, opts.tgt
    src_pieces, tgt_pieces = read_split(opts.data, src, tgt)
    if opts.limit:
        src_pieces, tgt_pieces = src_pieces[: opts.limit], tgt_pieces[: opts.limit]
    spm = sentencepiece_model(opts.data)
    if spm is not None:
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor(model_file=str(spm))

        def decode(line):
            return processor.decode(line.split())
    else:
        def decode(line):
            return line

    def make(name, src_lines, tgt_lines, data_bin=None):
        folder = root / "sets" / name
        data_bin = data_bin or binarize_test(opts.data, src, tgt, src_lines, tgt_lines, folder / "data-bin")
        folder.mkdir(parents=True, exist_ok=True)
        sources = [decode(line) for line in src_lines]
        source_file = folder / f"source.{src}"
        source_file.write_text("".join(s + "\n" for s in sources))
        return SentenceSet(name, sources, [decode(line) for line in tgt_lines], data_bin, source_file)

    def joined(lines):
        return [" ".join(lines[i:i + opts.join]) for i in range(0, len(lines), opts.join)]

    sets = {}
    for name in opts.set_names:
        if name == "test":
            sets[name] = make(name, src_pieces, tgt_pieces, opts.data if not opts.limit else None)
        else:
            sets[name] = make(name, joined(src_pieces), joined(tgt_pieces))
    return sets, make("first", src_pieces[:1], tgt_pieces[:1])


# --- the engines' files -------------------------------------------------------------------
def export_folder(checkpoint: Path, engine: Engine, opts, dest: Path) -> Tuple[Optional[Path], Optional[str]]:
    """(the model folder ``engine`` reads, None) or (None, why it cannot be made here)."""
    if shutil.which("g2lstm-export", path=str(BIN)) is None:
        return None, "g2lstm-export is not installed"
    proc = subprocess.run([str(BIN / "g2lstm-export"), str(checkpoint), "--data", str(opts.data), "--out", str(dest),
                           "--force", *engine.export], capture_output=True, text=True, env=child_env(opts))
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return dest, None


def engine_files(engine: Engine, checkpoint: Path, folder: Optional[Path], opts) -> List[Path]:
    """The files ``engine`` reads to translate: the checkpoint and dictionaries for
    fairseq-generate; the model folder without the checkpoint for ONNX (it reads the
    graphs) and without the graphs for torch."""
    if folder is None:
        return [checkpoint, opts.data / f"dict.{opts.src}.txt", opts.data / f"dict.{opts.tgt}.txt"]
    skip = ".pt" if engine.translate == "onnx" else ".onnx"
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix != skip)


def translator_available() -> Optional[str]:
    """None when ``g2lstm-translate`` can run here, else why not."""
    return None if importlib.util.find_spec(TRANSLATE_MODULE) else f"{TRANSLATE_MODULE} is not in this checkout"


# --- one run, in its own process ------------------------------------------------------------
def child_env(opts) -> Dict[str, str]:
    """Every engine's threads (torch reads OMP_NUM_THREADS) and unbuffered output, so that
    a line's arrival time is when the engine wrote it."""
    return {**os.environ, "OMP_NUM_THREADS": str(opts.threads), "MKL_NUM_THREADS": str(opts.threads),
            "PYTHONUNBUFFERED": "1"}


def command(engine: Engine, checkpoint: Path, folder: Optional[Path], sentences: SentenceSet, opts) -> List[str]:
    """The engine's command line: its module (fairseq-generate's is fairseq_cli.generate)
    and arguments, run by :data:`LAUNCHER`, which reports the peak RSS."""
    if engine.translate is None:
        spm = ["--post-process", "sentencepiece"] if sentencepiece_model(opts.data) else []
        return ["fairseq_cli.generate", str(sentences.data_bin), "--user-dir", str(PLUGIN_DIR),
                "--path", str(checkpoint), "--gen-subset", "test", "--source-lang", opts.src,
                "--target-lang", opts.tgt, "--beam", str(BEAM), "--batch-size", str(opts.batch_size), "--cpu", *spm]
    usage = translator_usage()
    threads = ["--threads", str(opts.threads)] if "--threads" in usage else []  # ORT ignores OMP_NUM_THREADS
    quiet = ["--no-progress"] if "--no-progress" in usage else []
    return [TRANSLATE_MODULE, str(folder), "--engine", engine.translate,
            "--input", str(sentences.source_file), "--beam", str(BEAM), "--batch-size", str(opts.batch_size),
            *threads, *quiet]


@functools.lru_cache(maxsize=None)
def translator_usage() -> str:
    """``g2lstm-translate --help``: which of its optional flags this checkout has."""
    return subprocess.run([sys.executable, "-m", TRANSLATE_MODULE, "--help"], capture_output=True, text=True,
                          cwd=REPO).stdout


def hypotheses(engine: Engine, lines: List[str], count: int) -> Tuple[List[str], Optional[int]]:
    """The hypotheses in input order, and the index of the first output line that is a
    translation (fairseq-generate writes source, target and score lines too)."""
    if engine.translate is not None:
        return lines, 0 if lines else None
    found, first = {}, None
    for i, line in enumerate(lines):
        if line.startswith("H-"):
            first = i if first is None else first
            key, _score, text = line.split("\t", 2)  # H-<id> <score> <text>
            found[int(key[2:])] = text
    return [found.get(i, "") for i in range(count)], first


def run_once(cmd: List[str], engine: Engine, count: int, opts) -> dict:
    """Run module and arguments ``cmd`` in a new process; its wall time, when its first
    translation appeared, its peak RSS and its hypotheses."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file, stderr_file = Path(tmp) / "peak", Path(tmp) / "stderr"
        with open(stderr_file, "w") as stderr:
            start = time.perf_counter()
            proc = subprocess.Popen([*LAUNCHER, str(peak_file), *cmd], stdout=subprocess.PIPE, stderr=stderr,
                                    stdin=subprocess.DEVNULL, text=True, cwd=REPO, env=child_env(opts))
            lines, arrivals = [], []
            for line in proc.stdout:
                arrivals.append(time.perf_counter() - start)
                lines.append(line.rstrip("\n"))
            proc.wait()
            wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr_file.read_text()[-4000:]}")
        peak_mb = float(peak_file.read_text())
    hyps, first = hypotheses(engine, lines, count)
    if len(hyps) != count or first is None:
        raise RuntimeError(f"{' '.join(cmd)} wrote {len(lines)} lines for {count} sentences")
    return {"wall_s": wall, "first_translation_s": arrivals[first], "peak_rss_mb": peak_mb,
            "hypotheses": hyps}


# --- the rounds -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Contender:
    model: str
    engine: Engine
    checkpoint: Path
    folder: Optional[Path]


def prepare(opts, root: Path) -> Tuple[List[Contender], Dict[str, str]]:
    """Every (model, engine) that can run here, with its model folder; and the engines
    skipped, with why. An engine named in ``--engines`` that cannot run stops the run."""
    contenders, skipped, exported = [], {}, {}
    for engine in (ENGINES[n] for n in opts.engine_names):
        why = translator_available() if engine.translate else None
        folders = {}
        for model, checkpoint in opts.models.items():
            if why is None and engine.export is not None:
                key = (checkpoint, engine.export)  # the same folder is exported once
                if key not in exported:
                    exported[key] = export_folder(checkpoint, engine, opts, root / "folders" / model / engine.name)
                folders[model], why = exported[key]
        if why is not None:
            if opts.engines:
                fail(f"--engines {engine.name}: {why}")
            skipped[engine.name] = why
            continue
        contenders += [Contender(m, engine, c, folders.get(m)) for m, c in opts.models.items()]
    return contenders, skipped


def measure_rounds(contenders: List[Contender], sets: Dict[str, SentenceSet], first: SentenceSet, opts) -> dict:
    """``opts.rounds`` rounds, each contender once per round (the order rotated): its
    start-up run on one sentence, then each set. {(model, engine): {set: [runs]}}"""
    runs = {(c.model, c.engine.name): {name: [] for name in ["first", *sets]} for c in contenders}
    for r in range(opts.rounds):
        for c in contenders[r % len(contenders):] + contenders[: r % len(contenders)]:
            for s in [first, *sets.values()]:
                run = run_once(command(c.engine, c.checkpoint, c.folder, s, opts), c.engine, len(s.sources), opts)
                runs[(c.model, c.engine.name)][s.name].append(run)
                print(f"[round {r + 1}/{opts.rounds}] {c.model} {c.engine.name} {s.name}: {run['wall_s']:.1f} s",
                      file=sys.stderr)
    return runs


def bleu(hyps: List[str], refs: List[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(hyps, [refs]).score


def digest(hyps: List[str]) -> str:
    return hashlib.sha1("\n".join(hyps).encode()).hexdigest()[:12]


def summarize_row(c: Contender, s: SentenceSet, runs: List[dict], startups: List[dict], opts) -> dict:
    """One table row: (model, engine, set) over its rounds."""
    n = len(s.sources)
    # the cost of n - 1 more sentences: start-up and teardown are in both processes' walls
    net = [(n - 1) / (run["wall_s"] - up["wall_s"]) for run, up in zip(runs, startups)
           if n > 1 and run["wall_s"] > up["wall_s"]]
    files = engine_files(c.engine, c.checkpoint, c.folder, opts)
    hyps = runs[0]["hypotheses"]
    return {
        "model": c.model, "engine": c.engine.name, "set": s.name, "sentences": n,
        "sentences_per_s": summarize(net) if net else None,
        "end_to_end_sentences_per_s": summarize([n / run["wall_s"] for run in runs]),
        "startup_s": summarize([up["first_translation_s"] for up in startups]),
        "peak_rss_mb": summarize([run["peak_rss_mb"] for run in runs]),
        "files": [str(f) for f in files], "files_mb": sum(f.stat().st_size for f in files) / 2**20,
        "bleu": bleu(hyps, s.references),
        "hypotheses_sha1": digest(hyps), "same_every_round": len({digest(run["hypotheses"]) for run in runs}) == 1,
        "hypotheses": hyps,
    }


def compare_to_baseline(rows: List[dict]) -> None:
    """Each row's ``sent/s`` against fairseq-generate's on the same model and set, and the
    share of its hypotheses identical to fairseq-generate's."""
    base = {(r["model"], r["set"]): r for r in rows if r["engine"] == BASELINE}
    for r in rows:
        b = base.get((r["model"], r["set"]))
        r["x_baseline"] = (ratio(r["sentences_per_s"], b["sentences_per_s"])
                           if b and r is not b and r["sentences_per_s"] and b["sentences_per_s"] else None)
        r["same_as_baseline"] = (sum(x == y for x, y in zip(r["hypotheses"], b["hypotheses"])) / r["sentences"]
                                 if b else None)


def run_benchmark(opts, argv: Sequence[str]) -> dict:
    load_before, commit = load_1min(), git_label(REPO)  # the code that runs, before anything can change it
    opts.src, opts.tgt = languages(opts.data)
    with contextlib.ExitStack() as stack:
        root = opts.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="g2lstm-engines-")))
        sets, first = sentence_sets(opts, root)
        contenders, skipped = prepare(opts, root)
        runs = measure_rounds(contenders, sets, first, opts)
        rows = [summarize_row(c, s, runs[(c.model, c.engine.name)][s.name],
                              runs[(c.model, c.engine.name)]["first"], opts)
                for s in sets.values() for c in sorted(contenders, key=lambda c: list(ENGINES).index(c.engine.name))]
    compare_to_baseline(rows)
    for r in rows:
        del r["hypotheses"]  # compared above; the digest stays
    return {
        "setup": {
            "command": "python benchmarks/engines.py " + " ".join(argv), "data": str(opts.data),
            "source_lang": opts.src, "target_lang": opts.tgt,
            "models": {m: str(c) for m, c in opts.models.items()},
            "sets": {name: len(s.sources) for name, s in sets.items()}, "join": opts.join, "beam": BEAM,
            "batch_size": opts.batch_size, "threads": opts.threads, "rounds": opts.rounds,
            "engines": {c.engine.name: c.engine.what for c in contenders}, "skipped": skipped,
            "machine": machine_record(opts.threads, commit, load_before),
        },
        "rows": rows,
    }


def format_table(results: dict) -> str:
    s = results["setup"]
    header = ["model", "engine", "set", "sent/s", "x fairseq", "end-to-end sent/s", "BLEU", "same as fairseq",
              "peak RSS MB", "files MB", "start-up s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    for r in results["rows"]:
        lines.append("| " + " | ".join([
            r["model"], r["engine"], f"{r['set']} ({r['sentences']})",
            format_summary(r["sentences_per_s"], ".1f") if r["sentences_per_s"] else "-",
            "1.00x" if r["engine"] == BASELINE else format_ratio(r["x_baseline"]),
            format_summary(r["end_to_end_sentences_per_s"], ".1f"), f"{r['bleu']:.2f}",
            "-" if r["same_as_baseline"] is None else f"{100 * r['same_as_baseline']:.1f}%",
            format_summary(r["peak_rss_mb"], ".0f"), f"{r['files_mb']:.1f}", format_summary(r["startup_s"], ".2f"),
        ]) + " |")
    lines += ["", f"{format_machine(s['machine'])}. Beam {s['beam']}, batches of {s['batch_size']} sentences, "
              f"{s['rounds']} rounds, each engine in its own process; long = {s['join']} test sentences as one. "
              "sent/s: the sentences beyond the first over the run's wall time less that of the same round's "
              "one-sentence run; median (-below/+above it: "
              "the slowest and fastest round); x fairseq: against fairseq-generate on the same model and set, with "
              "its range over the rounds, not established where that range includes 1."]
    lines += [f"Skipped {name}: {why}." for name, why in s["skipped"].items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse_options(argv)
    results = run_benchmark(opts, argv)
    publish(format_table(results), results, opts.json)
    return results


if __name__ == "__main__":
    main()
