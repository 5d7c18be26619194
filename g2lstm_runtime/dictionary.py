"""fairseq's dictionary files (``dict.<lang>.txt``) without fairseq: the same indices,
the same unknown-word and EOS handling, for the runtime's input and output."""
import re
from pathlib import Path
from typing import Dict, Iterable, List, Union

from .folder import ModelFolderError

OVERWRITE = "#fairseq:overwrite"
_SPACES = re.compile(r"\s+")


class DictionaryError(ModelFolderError):
    """A dictionary file fairseq would not load; ``str()`` is one line."""


class Dictionary:
    """The symbols of a fairseq ``Dictionary``: the specials ``<s>`` 0, ``<pad>`` 1,
    ``</s>`` 2, ``<unk>`` 3, then one symbol a line of the file in its order. A line is
    ``symbol count`` or ``symbol count #fairseq:overwrite``; a repeated symbol without
    the flag is an error, with it the line adds a new index and the symbol reads as that
    one from then on (as fairseq's ``add_symbol(..., overwrite=True)``)."""

    bos, pad, eos, unk = 0, 1, 2, 3

    def __init__(self, symbols: List[str]):
        self.symbols = symbols
        self.indices: Dict[str, int] = {}
        for index, symbol in enumerate(symbols):
            self.indices[symbol] = index

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Dictionary":
        symbols = ["<s>", "<pad>", "</s>", "<unk>"]
        seen = set(symbols)
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeError) as error:
            raise DictionaryError(f"{path}: unreadable ({error})") from None
        for number, line in enumerate(lines, 1):
            try:
                word, field = line.rstrip().rsplit(" ", 1)
                overwrite = field == OVERWRITE
                if overwrite:
                    word, field = word.rsplit(" ", 1)
                int(field)
            except ValueError:
                raise DictionaryError(f"{path}:{number}: expected '<token> <count> [flags]', got {line!r}") from None
            if word in seen and not overwrite:
                raise DictionaryError(f"{path}:{number}: duplicate symbol {word!r} without {OVERWRITE}")
            seen.add(word)
            symbols.append(word)
        return cls(symbols)

    def __len__(self) -> int:
        return len(self.symbols)

    def index(self, symbol: str) -> int:
        return self.indices.get(symbol, self.unk)

    def encode(self, pieces: Iterable[str]) -> List[int]:
        """Indices of ``pieces`` (unknown ones: ``<unk>``), then EOS: fairseq's ``encode_line``."""
        return [self.index(piece) for piece in pieces] + [self.eos]

    def encode_line(self, line: str) -> List[int]:
        return self.encode(_SPACES.sub(" ", line).strip().split())

    def pieces(self, indices: Iterable[int]) -> List[str]:
        """The symbols of ``indices`` without EOS and BOS (fairseq's ``Dictionary.string``)."""
        return [self.symbols[i] for i in indices if i not in (self.eos, self.bos)]
