"""IWSLT14 German->English from the official ``de-en.tgz``, split as fairseq's recipe does.

Usage::

    python -m fairseq_g2lstm.data.prepare_iwslt14 de-en.tgz --destdir data-bin/iwslt14.de-en

Following ``examples/translation/prepare-iwslt14.sh``:

- train and valid come from ``train.tags.de-en.{de,en}``: the ``<url>``, ``<talkid>`` and
  ``<keywords>`` lines are dropped, ``<title>``/``<description>`` tags stripped (their text
  kept), pairs cleaned (length 1-175 words, ratio 1.5), and then every 23rd pair is valid;
- test is the ``<seg>`` lines of dev2010, TEDX.dev2012 and tst2010-2012, in that order;
- everything is lowercased (the paper's BLEU is on lowercased text).

Then the shared path of :mod:`prepare_parallel`: joint sentencepiece BPE (the recipe has
10K merges, the paper a 25K vocabulary: ``--vocab-size 25000``), the paper's 64-subword
training filter when ``--max-subwords 64`` is given, and fairseq-preprocess.
"""
import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from .archives import locate_files
from .atomic_dir import check_destination, scratch_dir
from .download import download
from ..cli_args import OneLineParser
from .errors import reports_errors
from .filters import LengthFilter, clean_pair
from .next_commands import PAPER_IWSLT14
from .prepare_parallel import FilePairs, add_preparation_arguments, command_line, log, options_from_args, prepare
from .segments import read_segments
from .textio import PairWriter, pair_up, read_pairs

SOURCE_LANG, TARGET_LANG = "de", "en"
URL = "https://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"
ARCHIVE = "de-en.tgz"
TRAIN_TAGS = "train.tags.de-en"
TEST_SETS = (
    "IWSLT14.TED.dev2010.de-en",
    "IWSLT14.TEDX.dev2012.de-en",
    "IWSLT14.TED.tst2010.de-en",
    "IWSLT14.TED.tst2011.de-en",
    "IWSLT14.TED.tst2012.de-en",
)
VALID_EVERY = 23
LAYOUT = f"the IWSLT14 {ARCHIVE} layout: {TRAIN_TAGS}.{{de,en}} and {{{','.join(TEST_SETS)}}}.{{de,en}}.xml"

_METADATA_LINE = re.compile(r"<(url|talkid|keywords)>")
_KEPT_TAGS = re.compile(r"</?(title|description)>")
METADATA = "metadata"


def required_files() -> Sequence[str]:
    langs = (SOURCE_LANG, TARGET_LANG)
    return [f"{TRAIN_TAGS}.{lang}" for lang in langs] + [
        f"{test_set}.{lang}.xml" for test_set in TEST_SETS for lang in langs
    ]


def split_training_tags(
    files: Dict[str, Path], train: PairWriter, valid: PairWriter, length_filter: LengthFilter, dropped: Counter
) -> int:
    """The recipe's train/valid: metadata out, tags stripped, cleaned, every 23rd to valid.

    Returns the number of tag-file line pairs read.
    """
    read = 0
    pairs = read_pairs(files[f"{TRAIN_TAGS}.{SOURCE_LANG}"], files[f"{TRAIN_TAGS}.{TARGET_LANG}"])
    for source, target in pairs:
        read += 1
        if _METADATA_LINE.search(source) or _METADATA_LINE.search(target):
            dropped[METADATA] += 1
            continue
        source, target = _KEPT_TAGS.sub("", source), _KEPT_TAGS.sub("", target)
        cleaned = clean_pair(source, target, False, length_filter, dropped)
        if cleaned is None:
            continue
        kept = train.count + valid.count + 1
        (valid if kept % VALID_EVERY == 0 else train).write(*cleaned)
    return read


def write_test_sets(files: Dict[str, Path], test: PairWriter) -> None:
    """The ``<seg>`` lines of the five evaluation sets, concatenated in the recipe's order."""
    for test_set in TEST_SETS:
        source_path = files[f"{test_set}.{SOURCE_LANG}.xml"]
        target_path = files[f"{test_set}.{TARGET_LANG}.xml"]
        segments = pair_up(read_segments(source_path), read_segments(target_path),
                           str(source_path), str(target_path), unit="segments")  # fmt: skip
        for source, target in segments:
            test.write(source, target)


def extract_splits(
    files: Dict[str, Path], scratch: Path, length_filter: LengthFilter
) -> Tuple[Dict[str, FilePairs], dict]:
    """Write train/valid/test text into ``scratch``; return (sources, extraction report)."""
    langs = (SOURCE_LANG, TARGET_LANG)
    dropped = Counter()
    with PairWriter(scratch / "train", *langs) as train, PairWriter(scratch / "valid", *langs) as valid:
        read = split_training_tags(files, train, valid, length_filter, dropped)
    with PairWriter(scratch / "test", *langs) as test:
        write_test_sets(files, test)
    writers = {"train": train, "valid": valid, "test": test}
    log(f"extract: {read} tag-file pairs read, dropped {dict(dropped)}; "
        + ", ".join(f"{split} {writer.count}" for split, writer in writers.items()))  # fmt: skip
    sources: Dict[str, FilePairs] = {
        split: [(writer.source_path, writer.target_path)] for split, writer in writers.items()
    }
    report = {
        "train_tags_pairs_read": read,
        "dropped": dict(sorted(dropped.items())),
        "valid_every": VALID_EVERY,
        **{split: writer.count for split, writer in writers.items()},
    }
    return sources, report


PROG = "g2lstm-prepare-iwslt14"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="IWSLT14 de-en.tgz (or its folder) -> sentencepiece BPE -> fairseq data-bin, De->En.",
    )
    parser.add_argument("input", type=Path, help=f"the official {ARCHIVE}, or the folder it unpacks to")
    parser.add_argument("--download", action="store_true",
                        help=f"first fetch {URL} to INPUT when INPUT does not exist")  # fmt: skip
    add_preparation_arguments(parser, vocab_size=10000, lowercase=True,
                              max_len=175, max_ratio=1.5, max_subwords=None)  # fmt: skip
    return parser


@reports_errors(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    options = options_from_args(args, SOURCE_LANG, TARGET_LANG, PAPER_IWSLT14)
    check_destination(options.destdir, options.force)
    if args.download and not args.input.exists():
        download(URL, args.input)
    with scratch_dir(options.destdir) as scratch:
        files = locate_files(args.input, required_files(), scratch, archive_names=[ARCHIVE], layout=LAYOUT)
        sources, report = extract_splits(files, scratch, options.train_length_filter)
        prepare(sources, options, command_line(parser.prog, argv), {"extraction": report})
    return 0


if __name__ == "__main__":
    sys.exit(main())
