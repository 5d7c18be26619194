"""Streaming readers for parallel text: strict UTF-8, equal line counts, line numbers kept.

Every reader yields ``(line_number, text)`` so that a later check can still name the
line it rejects; nothing reads a whole file into memory.
"""
import json
from pathlib import Path
from typing import Iterable, Iterator, Tuple

from .errors import InputError

NumberedText = Tuple[int, str]
"""(1-based line number in the file it came from, text without the line break)"""


def read_lines(path: Path) -> Iterator[NumberedText]:
    """Yield the lines of a UTF-8 file; an undecodable line raises :class:`InputError`.

    The file is read as bytes and split on ``\\n`` only, so a stray ``\\r`` or U+2028
    inside a line cannot shift the line count against the other language's file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                yield number, raw.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(path, "invalid UTF-8", line=number) from None


def pair_up(
    source: Iterable[NumberedText],
    target: Iterable[NumberedText],
    source_name: str,
    target_name: str,
    unit: str = "lines",
) -> Iterator[Tuple[str, str]]:
    """Zip two numbered streams, failing on the first item that has no counterpart."""
    source_iter, target_iter = iter(source), iter(target)
    count = 0
    while True:
        source_item = next(source_iter, None)
        target_item = next(target_iter, None)
        if source_item is None and target_item is None:
            return
        if source_item is None or target_item is None:
            longer, shorter = (
                (source_name, target_name) if target_item is None else (target_name, source_name)
            )
            line = (source_item or target_item)[0]
            raise InputError(
                longer,
                f"{shorter} has only {count} {unit}; "
                f"source and target must have the same number of {unit}",
                line=line,
            )
        count += 1
        yield source_item[1], target_item[1]


def read_pairs(source_path: Path, target_path: Path) -> Iterator[Tuple[str, str]]:
    """Yield aligned (source, target) lines of two files."""
    return pair_up(
        read_lines(source_path), read_lines(target_path), str(source_path), str(target_path)
    )


class PairWriter:
    """Writes aligned lines into ``PREFIX.SRC`` and ``PREFIX.TGT``; a context manager."""

    def __init__(self, prefix: Path, source_lang: str, target_lang: str):
        self.source_path = Path(f"{prefix}.{source_lang}")
        self.target_path = Path(f"{prefix}.{target_lang}")
        self.count = 0

    def __enter__(self) -> "PairWriter":
        self._source = open(self.source_path, "w", encoding="utf-8", newline="\n")
        self._target = open(self.target_path, "w", encoding="utf-8", newline="\n")
        return self

    def write(self, source: str, target: str) -> None:
        self._source.write(source + "\n")
        self._target.write(target + "\n")
        self.count += 1

    def __exit__(self, *exc_info) -> None:
        self._source.close()
        self._target.close()


def write_json(path: Path, data: dict) -> None:
    """A manifest: indented, UTF-8 kept readable, ending in a newline."""
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=2, ensure_ascii=False)
        stream.write("\n")
