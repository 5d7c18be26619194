"""WMT14 English->German from the official archives, streamed (4.5M training pairs).

Usage::

    python -m fairseq_g2lstm.data.prepare_wmt14 wmt14-orig/ --destdir data-bin/wmt14.en-de

``INPUT`` is a folder with the archives of fairseq's ``prepare-wmt14en2de.sh --icml17``
and/or what they unpack to:

- train: Europarl v7, CommonCrawl and News Commentary v9 (``europarl-v7.de-en.{en,de}``,
  ``commoncrawl.de-en.{en,de}``, ``news-commentary-v9.de-en.{en,de}``);
- valid: newstest2013 (``newstest2013-src.en.sgm``, ``newstest2013-ref.de.sgm``);
- test: newstest2014 (``newstest2014-deen-src.en.sgm``, ``newstest2014-deen-ref.de.sgm``).

Defaults follow the paper: a joint sentencepiece vocabulary of 32K, training pairs over
64 subwords dropped, case kept (its WMT BLEU is case-sensitive); the recipe's length
ratio 1.5 is kept too. Training text is never held in memory: files are streamed, the
cleaned text goes to disk, sentencepiece trains on a sample, and encoding runs in
``--workers`` processes, chunk by chunk.
"""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from .archives import find_in_folder, locate_files
from .atomic_dir import check_destination, scratch_dir
from .download import download
from ..cli_args import OneLineParser
from .errors import reports_errors
from .next_commands import PAPER_WMT14
from .prepare_parallel import FilePairs, add_preparation_arguments, command_line, log, options_from_args, prepare
from .segments import read_segments
from .textio import PairWriter, pair_up

SOURCE_LANG, TARGET_LANG = "en", "de"


@dataclass(frozen=True)
class OfficialArchive:
    """An archive of the recipe, where to get it, and the files this script takes from it."""

    name: str
    url: str
    files: Tuple[str, ...]


def _pair(stem: str) -> Tuple[str, str]:
    return f"{stem}.{SOURCE_LANG}", f"{stem}.{TARGET_LANG}"


TRAIN_CORPORA = ("europarl-v7.de-en", "commoncrawl.de-en", "news-commentary-v9.de-en")
VALID = ("newstest2013-src.en.sgm", "newstest2013-ref.de.sgm")
TEST = ("newstest2014-deen-src.en.sgm", "newstest2014-deen-ref.de.sgm")
ARCHIVES = (
    OfficialArchive("training-parallel-europarl-v7.tgz",
                    "http://statmt.org/wmt13/training-parallel-europarl-v7.tgz", _pair(TRAIN_CORPORA[0])),
    OfficialArchive("training-parallel-commoncrawl.tgz",
                    "http://statmt.org/wmt13/training-parallel-commoncrawl.tgz", _pair(TRAIN_CORPORA[1])),
    OfficialArchive("training-parallel-nc-v9.tgz",
                    "http://statmt.org/wmt14/training-parallel-nc-v9.tgz", _pair(TRAIN_CORPORA[2])),
    OfficialArchive("dev.tgz", "http://data.statmt.org/wmt17/translation-task/dev.tgz", VALID),
    OfficialArchive("test-full.tgz", "http://statmt.org/wmt14/test-full.tgz", TEST),
)  # fmt: skip
LAYOUT = "the WMT14 archives " + ", ".join(archive.name for archive in ARCHIVES) + " or their files"


def download_missing(folder: Path) -> None:
    """Fetch each archive whose files are neither unpacked in ``folder`` nor archived there."""
    for archive in ARCHIVES:
        unpacked = find_in_folder(folder, archive.files) if folder.is_dir() else {}
        if len(unpacked) < len(archive.files):
            download(archive.url, folder / archive.name)


def sgml_to_text(source_sgml: Path, target_sgml: Path, writer: PairWriter) -> None:
    """The aligned ``<seg>`` sentences of an SGML source/reference pair."""
    segments = pair_up(read_segments(source_sgml), read_segments(target_sgml),
                       str(source_sgml), str(target_sgml), unit="segments")  # fmt: skip
    for source, target in segments:
        writer.write(source, target)


def collect_sources(files: Dict[str, Path], scratch: Path) -> Dict[str, FilePairs]:
    """Training files as they are (streamed later); valid and test converted from SGML."""
    sources: Dict[str, FilePairs] = {
        "train": [tuple(files[name] for name in _pair(stem)) for stem in TRAIN_CORPORA]
    }
    for split, (source_sgml, target_sgml) in (("valid", VALID), ("test", TEST)):
        with PairWriter(scratch / split, SOURCE_LANG, TARGET_LANG) as writer:
            sgml_to_text(files[source_sgml], files[target_sgml], writer)
        log(f"{split}: {writer.count} segments from {source_sgml}, {target_sgml}")
        sources[split] = [(writer.source_path, writer.target_path)]
    return sources


PROG = "g2lstm-prepare-wmt14"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="WMT14 archives (or their files) -> sentencepiece BPE -> fairseq data-bin, En->De.",
    )
    parser.add_argument("input", type=Path, help="folder with the official archives and/or their files")
    parser.add_argument("--download", action="store_true",
                        help="first fetch the archives whose files INPUT lacks")  # fmt: skip
    add_preparation_arguments(parser, vocab_size=32000, lowercase=False, max_len=None,
                              max_ratio=1.5, max_subwords=64, character_coverage=0.9995)  # fmt: skip
    return parser


@reports_errors(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    options = options_from_args(args, SOURCE_LANG, TARGET_LANG, PAPER_WMT14)
    check_destination(options.destdir, options.force)
    if args.download:
        download_missing(args.input)
    wanted = [name for archive in ARCHIVES for name in archive.files]
    with scratch_dir(options.destdir) as scratch:
        files = locate_files(args.input, wanted, scratch, [a.name for a in ARCHIVES], LAYOUT)
        prepare(collect_sources(files, scratch), options, command_line(parser.prog, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
