"""The last step: fairseq-preprocess with one joined dictionary for both languages.

It runs as a child process (``python -m fairseq_cli.preprocess``) so that this package
never imports fairseq or torch itself, and so that the manifest can record exactly what
ran.
"""
import subprocess
import sys
from pathlib import Path
from typing import List, Mapping

from .errors import PrepareError

FAIRSEQ_SPECIAL_SYMBOLS = 4
"""<s>, <pad>, </s>, <unk>: in fairseq's dictionary but not in dict.*.txt."""


def preprocess_command(
    split_prefixes: Mapping[str, Path],
    source_lang: str,
    target_lang: str,
    destdir: Path,
    workers: int,
) -> List[str]:
    """The fairseq-preprocess argument list for subword files ``PREFIX.{src,tgt}``."""
    return [
        sys.executable, "-m", "fairseq_cli.preprocess",
        "--source-lang", source_lang,
        "--target-lang", target_lang,
        "--trainpref", str(split_prefixes["train"]),
        "--validpref", str(split_prefixes["valid"]),
        "--testpref", str(split_prefixes["test"]),
        "--destdir", str(destdir),
        "--joined-dictionary",
        "--workers", str(workers),
    ]  # fmt: skip


def run_fairseq_preprocess(command: List[str]) -> None:
    """Run it, its log going to ours; a failure becomes one error line."""
    completed = subprocess.run(command)
    if completed.returncode != 0:
        raise PrepareError(f"fairseq-preprocess failed with exit status {completed.returncode}")


def dictionary_size(destdir: Path, lang: str) -> int:
    """Entries of the binarized dictionary, fairseq's special symbols included."""
    with open(destdir / f"dict.{lang}.txt", encoding="utf-8") as dictionary:
        return FAIRSEQ_SPECIAL_SYMBOLS + sum(1 for _ in dictionary)
