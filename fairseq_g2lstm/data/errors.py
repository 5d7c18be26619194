"""User-facing errors of the data scripts: one line that names the file and the line.

A bad input file is the user's problem to fix, not a bug, so the command-line front ends
print these as ``error: FILE line N: WHAT`` and exit non-zero without a traceback. Any
other exception is a bug and keeps its traceback.
"""
import functools
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

EXIT_INPUT_ERROR = 2


class PrepareError(Exception):
    """An error the user can fix; ``str()`` is the whole message, without ``error:``."""


class InputError(PrepareError):
    """A problem in one input file, optionally at one line (1-based)."""

    def __init__(self, path: Union[str, Path], message: str, line: Optional[int] = None):
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


def reports_errors(main: Callable[[Optional[Sequence[str]]], int]):
    """Wrap a ``main(argv)`` so that a :class:`PrepareError` becomes one line on stderr."""

    @functools.wraps(main)
    def wrapper(argv: Optional[Sequence[str]] = None) -> int:
        try:
            return main(argv)
        except PrepareError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_INPUT_ERROR

    return wrapper
