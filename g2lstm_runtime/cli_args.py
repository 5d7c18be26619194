"""Command-line conventions of every g2lstm tool, with the standard library only so that
the torch-free runtime's tools follow them too: bad input is one ``PROG: error: ...``
line and exit status 2 (argparse's status for usage errors), and numbers are checked by
the same flag types."""
import argparse
from typing import NoReturn

EXIT_INPUT_ERROR = 2  # as argparse's usage errors


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``PROG: error: ...`` line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def _whole_number(text: str, least: int, rule: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{rule}; got {value}")
    return value


def positive_int(text: str) -> int:
    """A flag type: a whole number of at least 1."""
    return _whole_number(text, 1, "must be at least 1")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text}")
    return value


def non_negative_int(text: str) -> int:
    """A flag type: a whole number of at least 0 (0 often switches a filter off)."""
    return _whole_number(text, 0, "must be 0 or more")
