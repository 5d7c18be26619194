"""User-facing errors of the data scripts: one line that names the file and the line.

A bad input file is the user's problem to fix, not a bug, so the command-line front ends
print these as ``PROG: error: FILE line N: WHAT`` and exit 2 without a traceback, as
every ``g2lstm-*`` tool does (:class:`fairseq_g2lstm.cli_args.OneLineParser`). Any other
exception is a bug and keeps its traceback.

An interruption (Ctrl-C, or SIGTERM from a job scheduler) unwinds the same way: the
output folders are context managers (:mod:`.atomic_dir`) that remove their partial
contents on the way out, child processes are stopped (:mod:`.binarize`), and the user
sees one line instead of a traceback from every process.
"""
import contextlib
import functools
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

from ..cli_args import EXIT_INPUT_ERROR

EXIT_INTERRUPTED = 128 + signal.SIGINT  # what a shell reports for a process ended by Ctrl-C


class PrepareError(Exception):
    """An error the user can fix; ``str()`` is the whole message, without ``error:``."""


class InputError(PrepareError):
    """A problem in one input file, optionally at one line (1-based)."""

    def __init__(self, path: Union[str, Path], message: str, line: Optional[int] = None):
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C's KeyboardInterrupt
    (a BaseException, so that no ``except Exception`` swallows it)."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While inside: SIGTERM raises :class:`Terminated` (only the main thread can set a
    handler; elsewhere SIGTERM keeps its default)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def reports_errors(prog: str) -> Callable:
    """Wrap a ``main(argv)`` so that a :class:`PrepareError` becomes one ``PROG: error:``
    line on stderr (exit 2) and an interruption one ``PROG: interrupted`` line (exit 130)."""

    def decorate(main: Callable[[Optional[Sequence[str]]], int]) -> Callable[[Optional[Sequence[str]]], int]:
        @functools.wraps(main)
        def wrapper(argv: Optional[Sequence[str]] = None) -> int:
            try:
                with sigterm_unwinds():
                    return main(argv)
            except PrepareError as error:
                print(f"{prog}: error: {error}", file=sys.stderr)
                return EXIT_INPUT_ERROR
            except (KeyboardInterrupt, Terminated) as stop:
                what = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
                print(f"{prog}: interrupted ({what}); the partial output was removed", file=sys.stderr)
                return EXIT_INTERRUPTED

        return wrapper

    return decorate
