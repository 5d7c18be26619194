"""The last step: fairseq-preprocess with one joined dictionary for both languages.

It runs as a child process (``python -m fairseq_cli.preprocess``) so that this package
never imports fairseq or torch itself, and so that the manifest can record exactly what
ran.
"""
import contextlib
import os
import signal
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
    dictionary: Path,
) -> List[str]:
    """The fairseq-preprocess argument list for subword files ``PREFIX.{src,tgt}``, with
    ``dictionary`` as the joined dictionary of both languages."""
    return [
        sys.executable, "-m", "fairseq_cli.preprocess",
        "--source-lang", source_lang,
        "--target-lang", target_lang,
        "--trainpref", str(split_prefixes["train"]),
        "--validpref", str(split_prefixes["valid"]),
        "--testpref", str(split_prefixes["test"]),
        "--destdir", str(destdir),
        "--joined-dictionary",
        "--srcdict", str(dictionary),
        "--workers", str(workers),
    ]  # fmt: skip


def run_fairseq_preprocess(command: List[str]) -> None:
    """Run it, its log going to ours; a failure becomes one error line.

    The child runs in its own process group, so that Ctrl-C reaches only us (no second
    traceback from the child) and we can stop the child *and* its worker processes
    together when we are interrupted or terminated: otherwise it would go on writing
    into a folder that is being removed.
    """
    child = subprocess.Popen(command, start_new_session=True)
    try:
        status = child.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        raise
    if status != 0:
        raise PrepareError(f"fairseq-preprocess failed with exit status {status}")


def dictionary_size(destdir: Path, lang: str) -> int:
    """Entries of the binarized dictionary, fairseq's special symbols included."""
    with open(destdir / f"dict.{lang}.txt", encoding="utf-8") as dictionary:
        return FAIRSEQ_SPECIAL_SYMBOLS + sum(1 for _ in dictionary)
