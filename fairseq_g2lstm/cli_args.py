"""What the plugin's analysis tools share on their command lines.

Every ``g2lstm-*`` tool (the checkpoint, compression and gate tools, and the data
preparation tools) reports bad input the same way: one ``PROG: error: ...`` line and
exit status 2 (argparse's status for usage errors); numbers are checked by the same
flag types, and the analysis tools log in fairseq's format. Needs only the standard
library, so that the data tools can use it without importing torch.
"""
import argparse
import logging
import os
from typing import Optional, TextIO

# The parser and the number types the torch-free runtime's command lines share with these.
from g2lstm_runtime.cli_args import (  # noqa: F401,E402
    EXIT_INPUT_ERROR, OneLineParser, _number, _whole_number, non_negative_int, positive_int)


def positive_float(text: str) -> float:
    """A flag type: a finite number above 0."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text}")
    return value


def share(text: str) -> float:
    """A flag type: a share of a whole, above 0 and at most 1 (e.g. a character coverage)."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1; got {text}")
    return value


def split_fraction(text: str) -> float:
    """A flag type: the fraction of a corpus held out for a split, at least 0 and below 1."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1; got {text}")
    return value


def ratio_or_zero(text: str) -> float:
    """A flag type: a ratio of lengths, at least 1, or 0 for none."""
    value = _number(text)
    if value != 0 and value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (or 0 for no limit); got {text}")
    return value


def _nearest_folder_problem(path: str, start: str, flag: str) -> Optional[str]:
    """Whether the nearest existing folder at or above ``start`` can take new entries."""
    existing = start
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{flag} {path}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{flag} {path}: cannot write in {existing}"
    return None


def output_file_problem(path: "os.PathLike | str", flag: str) -> Optional[str]:
    """Why a tool could not write the file ``path`` given by ``flag``, or None: checked
    before the work, so that a bad path costs no time and leaves nothing half done."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return f"{flag} {path} is a folder; give a file name"
    return _nearest_folder_problem(path, os.path.dirname(path), flag)


def output_dir_problem(path: "os.PathLike | str", flag: str) -> Optional[str]:
    """Why a tool could not create or write in the folder ``path`` given by ``flag``, or
    None; checked before the work (see :func:`output_file_problem`)."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{flag} {path} is a file, not a folder"
    return _nearest_folder_problem(path, path, flag)


def configure_logging(stream: Optional[TextIO] = None) -> None:
    """Log in fairseq's format at ``$LOGLEVEL`` (default INFO) to ``stream`` (default
    stderr). ``force``: importing fairseq has already configured the root logger at
    DEBUG (``fairseq/models/wav2vec/wav2vec2_classification.py`` calls
    ``logging.basicConfig`` on import), which would let other libraries' DEBUG lines,
    matplotlib's among them, flood the output."""
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
                        level=os.environ.get("LOGLEVEL", "INFO").upper(), stream=stream, force=True)
