"""Text preparation: the one function that cleans a sentence before it is split into
subwords, for the training data (the ``g2lstm-prepare-*`` tools) and for every way of
translating with a trained model, so that a model sees its input as it saw its data.
"""
import re
from dataclasses import dataclass
from typing import Any, Mapping

_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ufeff]")
"""Unicode category Cc plus the byte-order mark: never text, and \\r or \\x1c would split a
line in readers that use Python's universal newlines (fairseq's included)."""


def normalize(text: str, lowercase: bool = False) -> str:
    """Remove control characters and collapse every run of whitespace into one space."""
    text = " ".join(_CONTROL_CHARACTERS.sub(" ", text).split())
    return text.lower() if lowercase else text


@dataclass(frozen=True)
class TextPreparation:
    """How a model's training text was prepared, as its folder's ``model.json`` records it
    (``data.lowercase``); calling it prepares one input sentence the same way."""

    lowercase: bool = False

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "TextPreparation":
        data = manifest.get("data") or {}
        return cls(lowercase=bool(data.get("lowercase")))

    def __call__(self, text: str) -> str:
        return normalize(text, self.lowercase)
