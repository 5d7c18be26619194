"""Sentences of the XML (IWSLT) and SGML (WMT) evaluation files: the ``<seg>`` lines.

As in fairseq's recipes, only lines holding a ``<seg ...>`` element count, the tags and the
surrounding whitespace are removed, and the typographic apostrophe becomes ``'``. Unlike
them, character entities (``&amp;`` ...) are decoded, since no tokenizer follows that would.
"""
import html
import re
from pathlib import Path
from typing import Iterator

from .textio import NumberedText, read_lines

_SEGMENT = re.compile(r"<seg\b[^>]*>(.*?)(?:</seg>)?\s*$", re.IGNORECASE)


def read_segments(path: Path) -> Iterator[NumberedText]:
    """Yield (line number, segment text) for every ``<seg>`` line of ``path``."""
    for number, line in read_lines(path):
        match = _SEGMENT.search(line)
        if match:
            yield number, html.unescape(match.group(1)).replace("\u2019", "'").strip()
