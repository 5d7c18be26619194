"""Any parallel plain text to a fairseq data-bin: clean, joint sentencepiece BPE, binarize.

Usage::

    python -m fairseq_g2lstm.data.prepare_parallel --source-lang de --target-lang en \\
        --trainpref corpus/train --validpref corpus/valid --testpref corpus/test \\
        --destdir data-bin/corpus.de-en --vocab-size 10000

The stages stream, so memory stays flat whatever the corpus size:

1. clean: normalise whitespace (optionally lowercase), drop empty pairs, and on the
   training split only the word-length and length-ratio filters;
2. train one sentencepiece BPE model on a sample of both cleaned training sides;
3. encode every split in worker processes; on the training split drop pairs over
   ``--max-subwords`` pieces (the paper's filter is 64);
4. fairseq-preprocess with a joined dictionary of every sentencepiece piece (so that
   a piece the training text happens not to contain is still known in valid and test).

The data-bin also holds ``spm.model``/``spm.vocab`` and ``manifest.json`` (counts kept and
dropped per reason and split, the share of ``<unk>`` tokens per split, vocabulary sizes,
the command line). More than :data:`UNK_WARNING_RATE` unknown tokens in a split is
warned about on stderr. The IWSLT14 and WMT14
scripts are front ends that turn the official archives into file pairs for :func:`prepare`.
"""
import argparse
import contextlib
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional, Sequence, Tuple

from ..cli_args import OneLineParser, non_negative_int, positive_int, ratio_or_zero, share
from . import binarize, sentencepiece_bpe
from .atomic_dir import atomic_output_dir, check_destination
from .errors import InputError, reports_errors
from .filters import NO_LENGTH_FILTER, LengthFilter, clean_pair
from .next_commands import PAPER_IWSLT14, TrainingRecipe, next_commands
from .textio import PairWriter, read_pairs, write_json

SPLITS = ("train", "valid", "test")
SPM_PREFIX = "spm"
MANIFEST = "manifest.json"
UNK_WARNING_RATE = 0.01
"""A split with more ``<unk>`` tokens than this is warned about: the model cannot read or
produce those words, and BLEU on such a test set is not comparable."""

FilePairs = Sequence[Tuple[Path, Path]]
"""(source file, target file) pairs whose lines are read one after the other."""


@dataclass(frozen=True)
class PrepareOptions:
    """Everything :func:`prepare` needs besides the input files."""

    source_lang: str
    target_lang: str
    destdir: Path
    vocab_size: int
    lowercase: bool
    train_length_filter: LengthFilter
    train_max_subwords: Optional[int]
    spm_input_sentence_size: int
    character_coverage: float
    workers: int
    seed: int
    force: bool
    recipe: TrainingRecipe


def log(message: str) -> None:
    """One progress line per stage, flushed at once so that it interleaves with fairseq's."""
    print(f"| {message}", flush=True)


@contextlib.contextmanager
def timed(seconds: Dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall time of a stage, for the manifest."""
    started = time.monotonic()
    yield
    seconds[stage] = round(time.monotonic() - started, 2)


@dataclass
class SplitCounts:
    """Pairs read from the inputs, kept in the data-bin, and dropped per reason."""

    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "dropped": dict(sorted(self.dropped.items()))}


def check_inputs_exist(sources: Mapping[str, FilePairs]) -> None:
    """Fail before any work on a missing file, not after hours on the training split."""
    for file_pairs in sources.values():
        for path in (path for pair in file_pairs for path in pair):
            if Path(path).is_dir():
                raise InputError(path, "a folder, not a text file")
            if not Path(path).is_file():
                raise InputError(path, "no such file")


def clean_split(
    file_pairs: FilePairs, writer: PairWriter, lowercase: bool, length_filter: LengthFilter, counts: SplitCounts
) -> None:
    """Stream every file pair through :func:`clean_pair` into ``writer``."""
    for source_path, target_path in file_pairs:
        for source, target in read_pairs(source_path, target_path):
            counts.read += 1
            cleaned = clean_pair(source, target, lowercase, length_filter, counts.dropped)
            if cleaned is not None:
                writer.write(*cleaned)


def clean_splits(
    sources: Mapping[str, FilePairs], options: PrepareOptions, work: Path
) -> Tuple[Dict[str, PairWriter], Dict[str, SplitCounts]]:
    """Stage 1: cleaned text of every split in ``work``; the length filters on train only."""
    cleaned, counts = {}, {}
    for split in SPLITS:
        length_filter = options.train_length_filter if split == "train" else NO_LENGTH_FILTER
        counts[split] = SplitCounts()
        with PairWriter(work / f"clean.{split}", options.source_lang, options.target_lang) as writer:
            clean_split(sources[split], writer, options.lowercase, length_filter, counts[split])
        cleaned[split] = writer
        log(f"clean {split}: {counts[split].read} pairs read, {writer.count} kept, "
            f"dropped {dict(counts[split].dropped)}")  # fmt: skip
        if writer.count == 0:
            raise InputError(sources[split][0][0], f"no usable pairs in the {split} split")
    return cleaned, counts


def encode_splits(
    spm_model: Path, cleaned: Mapping[str, PairWriter], options: PrepareOptions, work: Path,
    counts: Mapping[str, SplitCounts],
) -> Dict[str, Path]:
    """Stage 3: sentencepiece pieces of every split; the subword filter on train only.

    Returns the file prefix of each split's encoded text.
    """
    prefixes = {}
    for split in SPLITS:
        max_subwords = options.train_max_subwords if split == "train" else None
        prefixes[split] = work / f"bpe.{split}"
        with PairWriter(prefixes[split], options.source_lang, options.target_lang) as writer:
            sentencepiece_bpe.encode_split(
                spm_model, cleaned[split].source_path, cleaned[split].target_path, writer,
                options.workers, max_subwords, counts[split].dropped,
            )
        counts[split].kept = writer.count
        log(f"encode {split}: {writer.count} pairs kept")
        if writer.count == 0:
            raise InputError(cleaned[split].source_path, f"no pairs left in the {split} split after encoding")
    return prefixes  # fmt: skip


def count_tokens(prefixes: Mapping[str, Path], langs: Sequence[str], known: set,
                 train_pieces: Counter) -> Dict[str, dict]:
    """Per split: tokens and ``<unk>`` tokens (pieces not in ``known``) of each side, and
    the split's ``unk_rate``; adds the training text's pieces to ``train_pieces``."""
    report = {}
    for split, prefix in prefixes.items():
        sides, total, unknown = {}, 0, 0
        for lang in langs:
            pieces = Counter()
            with open(f"{prefix}.{lang}", encoding="utf-8") as stream:
                for line in stream:
                    pieces.update(line.split())
            tokens = sum(pieces.values())
            missing = sum(n for piece, n in pieces.items() if piece not in known)
            sides[lang] = {"tokens": tokens, "unk": missing}
            total, unknown = total + tokens, unknown + missing
            if split == "train":
                train_pieces.update(pieces)
        report[split] = {**sides, "unk_rate": unknown / total if total else 0.0}
    return report


def report_unknown_tokens(tokens: Mapping[str, dict]) -> None:
    """One summary line; a loud warning for each split above :data:`UNK_WARNING_RATE`."""
    log("unknown tokens (<unk>): " + ", ".join(f"{split} {counts['unk_rate']:.2%}" for split, counts in tokens.items()))
    for split, counts in tokens.items():
        if counts["unk_rate"] > UNK_WARNING_RATE:
            print(f"WARNING: {counts['unk_rate']:.1%} of the {split} tokens are <unk>: characters the sentencepiece "
                  "model never saw in training; check the split's language and encoding, or raise "
                  "--character-coverage", file=sys.stderr, flush=True)


def prepare(
    sources: Mapping[str, FilePairs],
    options: PrepareOptions,
    command_line: str,
    extra_manifest: Optional[dict] = None,
) -> dict:
    """Build ``options.destdir`` from ``sources`` (keys ``train``, ``valid``, ``test``).

    ``extra_manifest`` (a front end's own counts) is merged into the manifest, which is
    returned and written to ``destdir/manifest.json``.
    """
    check_destination(options.destdir, options.force)
    check_inputs_exist(sources)
    seconds: Dict[str, float] = {}
    with atomic_output_dir(options.destdir, options.force) as staging:
        work = staging / "work"
        work.mkdir()
        with timed(seconds, "clean"):
            cleaned, counts = clean_splits(sources, options, work)
        with timed(seconds, "spm_train"):
            log(f"train sentencepiece BPE (vocab <= {options.vocab_size}) on {cleaned['train'].count} pairs")
            spm_model = sentencepiece_bpe.train_joint_bpe(
                [cleaned["train"].source_path, cleaned["train"].target_path],
                staging / SPM_PREFIX,
                vocab_size=options.vocab_size,
                input_sentence_size=options.spm_input_sentence_size,
                character_coverage=options.character_coverage,
                seed=options.seed,
                threads=options.workers,
            )
        with timed(seconds, "encode"):
            encoded = encode_splits(spm_model, cleaned, options, work, counts)
        with timed(seconds, "binarize"):
            train_pieces: Counter = Counter()
            known = set(sentencepiece_bpe.vocabulary(spm_model))
            tokens = count_tokens(encoded, (options.source_lang, options.target_lang), known, train_pieces)
            dictionary = sentencepiece_bpe.write_fairseq_dictionary(spm_model, train_pieces, work / "dict.txt")
            preprocess = binarize.preprocess_command(
                encoded, options.source_lang, options.target_lang, staging, options.workers, dictionary
            )
            log("fairseq-preprocess: " + shlex.join(preprocess))
            binarize.run_fairseq_preprocess(preprocess)
        shutil.rmtree(work)
        manifest = {
            "command": command_line,
            "source_lang": options.source_lang,
            "target_lang": options.target_lang,
            "lowercase": options.lowercase,
            "train_filters": {
                "max_len_words": options.train_length_filter.max_len,
                "max_ratio": options.train_length_filter.max_ratio,
                "max_subwords": options.train_max_subwords,
            },
            **(extra_manifest or {}),
            "splits": {split: split_counts.as_dict() for split, split_counts in counts.items()},
            "unk_rate": {split: counts["unk_rate"] for split, counts in tokens.items()},
            "tokens": tokens,
            "spm_model": str(options.destdir.resolve() / spm_model.name),
            "spm_vocab_size": sentencepiece_bpe.vocabulary_size(spm_model),
            "requested_vocab_size": options.vocab_size,
            "dictionary_size": binarize.dictionary_size(staging, options.source_lang),
            "fairseq_preprocess": preprocess,
            "seconds": seconds,
        }
        write_json(staging / MANIFEST, manifest)
    report_unknown_tokens(tokens)
    log(f"wrote {options.destdir} in {sum(seconds.values()):.1f} s")
    print(next_commands(options.destdir, options.destdir / spm_model.name, options.source_lang,
                        options.target_lang, options.recipe, options.lowercase), flush=True)  # fmt: skip
    return manifest


def add_preparation_arguments(
    parser: argparse.ArgumentParser,
    *,
    vocab_size: int,
    lowercase: bool,
    max_len: Optional[int],
    max_ratio: Optional[float],
    max_subwords: Optional[int],
    character_coverage: float = 1.0,
) -> None:
    """The flags every front end shares; each passes the defaults of its recipe."""
    group = parser.add_argument_group("preparation")
    group.add_argument("--destdir", type=Path, required=True, help="the data-bin folder to create")
    group.add_argument("--vocab-size", type=positive_int, default=vocab_size,
                       help="joint sentencepiece BPE vocabulary, an upper bound (default %(default)s)")
    group.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=lowercase,
                       help="lowercase every split (default %(default)s)")
    group.add_argument("--max-len", type=non_negative_int, default=max_len,
                       help="train only: drop pairs with more words on either side; 0 = off (default %(default)s)")
    group.add_argument("--max-ratio", type=ratio_or_zero, default=max_ratio,
                       help="train only: drop pairs whose word counts differ by more than this factor; "
                            "0 = off (default %(default)s)")
    group.add_argument("--max-subwords", type=non_negative_int, default=max_subwords,
                       help="train only: drop pairs with more sentencepiece pieces on either side; the paper "
                            "uses 64; 0 = off (default %(default)s)")
    group.add_argument("--spm-input-sentence-size", type=positive_int, default=1_000_000,
                       help="train sentencepiece on a seeded random sample of this many lines (default %(default)s)")
    group.add_argument("--character-coverage", type=share, default=character_coverage,
                       help="sentencepiece character coverage (default %(default)s)")
    group.add_argument("--workers", type=positive_int, default=min(4, os.cpu_count() or 1),
                       help="processes for encoding and binarizing (default %(default)s)")
    group.add_argument("--seed", type=int, default=1, help="seed of the sentencepiece sample")
    group.add_argument("--force", action="store_true", help="replace an existing --destdir")


def options_from_args(
    args: argparse.Namespace, source_lang: str, target_lang: str, recipe: TrainingRecipe
) -> PrepareOptions:
    """Turn the shared flags into options; 0 switches a filter off."""
    return PrepareOptions(
        source_lang=source_lang,
        target_lang=target_lang,
        destdir=args.destdir,
        vocab_size=args.vocab_size,
        lowercase=args.lowercase,
        train_length_filter=LengthFilter(args.max_len or None, args.max_ratio or None),
        train_max_subwords=args.max_subwords or None,
        spm_input_sentence_size=args.spm_input_sentence_size,
        character_coverage=args.character_coverage,
        workers=args.workers,
        seed=args.seed,
        force=args.force,
        recipe=recipe,
    )


def command_line(prog: str, argv: Sequence[str]) -> str:
    """The invocation as it would be typed, for the manifest."""
    return shlex.join([prog, *argv])


PROG = "g2lstm-prepare-parallel"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Plain-text parallel corpus -> sentencepiece BPE -> fairseq data-bin.",
    )
    parser.add_argument("--source-lang", "-s", required=True)
    parser.add_argument("--target-lang", "-t", required=True)
    for split in SPLITS:
        parser.add_argument(f"--{split}pref", type=Path, required=True,
                            help=f"{split} files are PREFIX.SRC and PREFIX.TGT")  # fmt: skip
    add_preparation_arguments(parser, vocab_size=10000, lowercase=False,
                              max_len=None, max_ratio=None, max_subwords=None)  # fmt: skip
    return parser


@reports_errors(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.source_lang == args.target_lang:
        parser.error("--source-lang and --target-lang must differ")
    sources = {
        split: [(Path(f"{prefix}.{args.source_lang}"), Path(f"{prefix}.{args.target_lang}"))]
        for split, prefix in ((split, getattr(args, f"{split}pref")) for split in SPLITS)
    }
    options = options_from_args(args, args.source_lang, args.target_lang, PAPER_IWSLT14)
    prepare(sources, options, command_line(parser.prog, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
