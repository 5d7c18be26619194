"""A short fingerprint of a plain-text parallel corpus: pairs per split and a hash of the test split.

The demo's corpus is built from whatever gettext catalogs the machine has installed, so two
machines can score the demo on different test sets. Printing this fingerprint beside the BLEU
says which corpus a number belongs to, and docs/results.md lists the BLEU per fingerprint.
Standard library only (the demo calls it before anything else needs torch).
"""
import hashlib
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Sequence

from fairseq_g2lstm.cli_args import OneLineParser

SPLITS = ("train", "valid", "test")
HASH_CHARS = 12


class CorpusFingerprint(NamedTuple):
    pairs: Dict[str, int]  # split -> lines of its source file
    test_sha256: str  # first HASH_CHARS hex digits

    def format(self) -> str:
        counts = " / ".join(f"{split} {self.pairs[split]:,}" for split in SPLITS)
        return f"corpus: {counts} pairs, test sha256 {self.test_sha256}"


def count_lines(path: Path) -> int:
    with open(path, "rb") as stream:
        return sum(1 for _ in stream)


def corpus_fingerprint(corpus: Path, source: str = "de", target: str = "en") -> CorpusFingerprint:
    """Pairs per split of ``corpus/{split}.{source,target}``, and the sha256 of the test split.

    The hash covers the test source file's bytes, a NUL byte, then the test target file's
    bytes: a change to either side, or a line moved between them, changes it.
    """
    corpus = Path(corpus)
    digest = hashlib.sha256()
    for index, language in enumerate((source, target)):
        if index:
            digest.update(b"\0")
        with open(corpus / f"test.{language}", "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    pairs = {split: count_lines(corpus / f"{split}.{source}") for split in SPLITS}
    return CorpusFingerprint(pairs, digest.hexdigest()[:HASH_CHARS])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = OneLineParser(prog="python -m fairseq_g2lstm.data.fingerprint", description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="folder with {train,valid,test}.{SRC,TGT}")
    parser.add_argument("-s", "--source-lang", default="de")
    parser.add_argument("-t", "--target-lang", default="en")
    args = parser.parse_args(argv)
    missing = [f"{split}.{lang}" for split in SPLITS for lang in (args.source_lang, args.target_lang)
               if not (args.corpus / f"{split}.{lang}").is_file()]
    if missing:
        parser.error(f"{args.corpus}: missing {', '.join(missing)}")
    print(corpus_fingerprint(args.corpus, args.source_lang, args.target_lang).format())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
