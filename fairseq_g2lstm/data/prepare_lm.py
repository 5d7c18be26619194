"""A plain-text corpus to a fairseq language-modeling data-bin (``--only-source``).

Usage::

    g2lstm-prepare-lm --train ptb/ptb.train.txt --valid ptb/ptb.valid.txt \\
        --test ptb/ptb.test.txt --destdir data-bin/ptb

Input: one sentence or paragraph per line, already tokenised into words separated by
spaces (Penn Treebank as Mikolov distributes it: lower case, ``<unk>``, ``N`` for
numbers, no punctuation). There is no BPE: PTB is a word-level benchmark. Each line
becomes its words plus an end-of-sentence symbol in fairseq's language_modeling task.

1. clean: remove control characters, collapse whitespace, optionally lowercase; drop
   empty lines (counted);
2. fairseq-preprocess ``--only-source``; with ``--vocab-size N`` the dictionary keeps
   the N most frequent training words and every other word reads as ``<unk>``;
3. the manifest counts lines, words and unknown words per split.

Like the other data tools: the data-bin appears whole or not at all, an existing one is
replaced only with ``--force``, and bad input (a missing file, invalid UTF-8, a split
with no text) stops with one ``error: FILE line N: ...`` line, before fairseq-preprocess.
"""
import argparse
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from .atomic_dir import atomic_output_dir, check_destination
from .binarize import FAIRSEQ_SPECIAL_SYMBOLS, run_fairseq_preprocess
from ..cli_args import OneLineParser, positive_int
from .errors import InputError, PrepareError, reports_errors
from .filters import EMPTY, normalize
from .next_commands import PLUGIN_DIR, TrainingRecipe, _command, _display_path
from .textio import read_lines, write_json

PROG = "g2lstm-prepare-lm"
SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"
UNK = "<unk>"

# The paper's PTB model (the paper's section 6) with AWD-LSTM's optimiser settings: SGD at lr 30,
# clip 0.25, weight decay 1.2e-6, 20 sequences of 70 tokens (batch-size multiple 1: fairseq's
# default of 8 would round 20 down to 16). AWD-LSTM switches to averaged
# SGD (NT-ASGD), which fairseq lacks; the learning rate is cut on plateaus instead (ours).
PAPER_PTB = TrainingRecipe(
    arch="g2lstm_lm_ptb",
    train_args=("--task", "language_modeling", "--sample-break-mode", "none", "--tokens-per-sample", "70",
                "--batch-size", "20", "--required-batch-size-multiple", "1",
                "--optimizer", "sgd", "--lr", "30", "--clip-norm", "0.25",
                "--weight-decay", "1.2e-6", "--lr-scheduler", "reduce_lr_on_plateau", "--lr-shrink", "0.25",
                "--lr-patience", "5", "--max-epoch", "500"),
)  # fmt: skip


@dataclass(frozen=True)
class LMOptions:
    destdir: Path
    lowercase: bool = False
    vocab_size: Optional[int] = None  # words besides fairseq's special symbols; None: all
    workers: int = 1
    force: bool = False


@dataclass
class SplitText:
    """What one split's cleaning saw."""

    path: str
    lines_read: int = 0
    lines_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    words: Counter = field(default_factory=Counter)

    def as_dict(self, vocabulary: Optional[set] = None) -> dict:
        total = sum(self.words.values())
        out = {"file": self.path, "lines_read": self.lines_read, "lines_kept": self.lines_kept,
               "dropped": dict(sorted(self.dropped.items())), "words": total,
               "tokens_with_eos": total + self.lines_kept}
        if vocabulary is not None:
            unknown = sum(n for word, n in self.words.items() if word not in vocabulary)
            out.update(unknown_words=unknown, unknown_rate=round(unknown / total, 6) if total else 0.0)
        return out


def log(message: str) -> None:
    print(f"| {message}", flush=True)


def clean_split(split: str, source: Path, output: Path, lowercase: bool) -> SplitText:
    """Stream ``source`` into ``output``: normalised lines, empty ones dropped."""
    text = SplitText(str(source))
    with open(output, "w", encoding="utf-8", newline="\n") as stream:
        for _, line in read_lines(source):
            text.lines_read += 1
            line = normalize(line, lowercase)
            if not line:
                text.dropped[EMPTY] += 1
                continue
            text.lines_kept += 1
            text.words.update(line.split(" "))
            stream.write(line + "\n")
    if text.lines_kept == 0:
        what = "is empty" if text.lines_read == 0 else f"has only empty lines ({text.lines_read})"
        raise InputError(source, f"the {split} split {what}; it needs at least one line of text")
    return text


def preprocess_command(split_files: Mapping[str, Path], destdir: Path, workers: int,
                       vocab_size: Optional[int]) -> List[str]:
    """fairseq-preprocess for a monolingual corpus: ``dict.txt`` and ``{split}.bin/.idx``."""
    command = [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
               "--trainpref", str(split_files["train"]), "--validpref", str(split_files["valid"]),
               "--testpref", str(split_files["test"]), "--destdir", str(destdir), "--workers", str(workers)]
    if vocab_size is not None:  # fairseq's count includes its special symbols
        command += ["--nwordssrc", str(vocab_size + FAIRSEQ_SPECIAL_SYMBOLS)]
    return command


def read_dictionary(destdir: Path) -> List[str]:
    """The words of ``destdir/dict.txt`` (fairseq's special symbols are not in it)."""
    with open(destdir / "dict.txt", encoding="utf-8") as stream:
        return [line.rsplit(" ", 1)[0] for line in stream if line.strip()]


def prepare_lm(sources: Mapping[str, Path], options: LMOptions, command_line: str) -> dict:
    """Build ``options.destdir`` from the text files ``sources`` (keys train, valid, test);
    return the manifest, which is also written to ``destdir/manifest.json``."""
    check_destination(options.destdir, options.force)
    for split in SPLITS:
        path = Path(sources[split])
        if path.is_dir():
            raise InputError(path, "is a folder, not a text file")
        if not path.is_file():
            raise InputError(path, "no such file")
    if options.vocab_size is not None and options.vocab_size < 1:
        raise PrepareError(f"--vocab-size must be at least 1; got {options.vocab_size}")
    started = time.monotonic()
    with atomic_output_dir(options.destdir, options.force) as staging:
        work = staging / "work"
        work.mkdir()
        texts: Dict[str, SplitText] = {}
        files: Dict[str, Path] = {}
        for split in SPLITS:
            files[split] = work / f"{split}.txt"
            texts[split] = clean_split(split, Path(sources[split]), files[split], options.lowercase)
            log(f"clean {split}: {texts[split].lines_read} lines read, {texts[split].lines_kept} kept, "
                f"{sum(texts[split].words.values())} words")
        command = preprocess_command(files, staging, options.workers, options.vocab_size)
        log("fairseq-preprocess: " + shlex.join(command))
        run_fairseq_preprocess(command)
        shutil.rmtree(work)
        dictionary = read_dictionary(staging)
        vocabulary = set(dictionary) - {UNK}
        manifest = {
            "command": command_line,
            "task": "language_modeling",
            "lowercase": options.lowercase,
            "requested_vocab_size": options.vocab_size,
            "training_word_types": len(texts["train"].words),
            "dictionary_size": FAIRSEQ_SPECIAL_SYMBOLS + len(dictionary),
            "unknown_note": f"words outside the dictionary, {UNK} in the text included, read as {UNK}",
            "splits": {split: texts[split].as_dict(vocabulary) for split in SPLITS},
            "fairseq_preprocess": command,
            "seconds": round(time.monotonic() - started, 2),
        }
        write_json(staging / MANIFEST, manifest)
    log(f"wrote {options.destdir} ({manifest['dictionary_size']} dictionary entries) in {manifest['seconds']} s")
    print(next_commands(options.destdir), flush=True)
    return manifest


def next_commands(destdir: Path, recipe: TrainingRecipe = PAPER_PTB) -> str:
    """fairseq-train, fairseq-eval-lm and sampling with fairseq-interactive, ready to paste."""
    data, plugin = _display_path(destdir), _display_path(PLUGIN_DIR)
    checkpoints = f"checkpoints/{Path(destdir).name}_{recipe.arch}"
    train = ["fairseq-train", data, "--user-dir", plugin, "--arch", recipe.arch, *recipe.train_args,
             "--save-dir", checkpoints]
    evaluate = ["fairseq-eval-lm", data, "--user-dir", plugin, "--path", f"{checkpoints}/checkpoint_best.pt",
                "--gen-subset", "test", "--tokens-per-sample", "350", "--context-window", "280"]
    sample = ["fairseq-interactive", data, "--user-dir", plugin, "--task", "language_modeling", "--path",
              f"{checkpoints}/checkpoint_best.pt", "--sampling", "--beam", "1", "--max-len-b", "30"]
    return "\n".join(["# train (the paper's PTB model; examples/lm/README.md)", _command(train),
                      "# test perplexity", _command(evaluate),
                      "# continue typed prompts", _command(sample)])


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Plain text, one sentence or paragraph per line (train/valid/test files) -> a fairseq "
                    "language-modeling data-bin (word level, no BPE).")
    for split in SPLITS:
        parser.add_argument(f"--{split}", type=Path, required=True, metavar="FILE",
                            help=f"the {split} text, e.g. ptb.{split}.txt")
    parser.add_argument("--destdir", type=Path, required=True, help="the data-bin folder to create")
    parser.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=False,
                        help="lowercase every split (default %(default)s; PTB is lower case already)")
    parser.add_argument("--vocab-size", type=positive_int, metavar="N",
                        help="keep the N most frequent training words; the rest read as <unk> (default: all)")
    parser.add_argument("--workers", type=positive_int, default=min(4, os.cpu_count() or 1),
                        help="fairseq-preprocess processes (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace an existing --destdir")
    return parser


@reports_errors(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    options = LMOptions(args.destdir, args.lowercase, args.vocab_size, args.workers, args.force)
    prepare_lm({split: getattr(args, split) for split in SPLITS}, options, shlex.join([PROG, *argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
