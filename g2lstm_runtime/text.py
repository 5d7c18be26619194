"""Text preparation: the one function that cleans a sentence before it is split into
subwords, for the training data (the ``g2lstm-prepare-*`` tools) and for every way of
translating with a trained model (the hub of a model folder, the server, any engine),
so that a model sees its input as it saw its data.

A model folder's ``model.json`` records how its training text was prepared;
:meth:`TextPreparation.from_manifest` reads that record. The steps after this one, the
tokenizer and the subword model it names, are applied by whatever encodes the text
(fairseq's hub, or another engine): they need their own libraries.
"""
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ufeff]")
"""Unicode category Cc plus the byte-order mark: never text, and \\r or \\x1c would split a
line in readers that use Python's universal newlines (fairseq's included)."""


def normalize(text: str, lowercase: bool = False) -> str:
    """Remove control characters and collapse every run of whitespace into one space."""
    text = " ".join(_CONTROL_CHARACTERS.sub(" ", text).split())
    return text.lower() if lowercase else text


@dataclass(frozen=True)
class TextPreparation:
    """How a model's training text was prepared, as its folder's ``model.json`` records it;
    calling it prepares one input sentence the same way (:func:`normalize`, lowercased
    where the data was).

    ``tokenizer`` and ``bpe`` name the steps that follow (fairseq's names: ``moses``,
    ``sentencepiece``, ``subword_nmt``; None for none), for the engine that applies them.
    """

    lowercase: bool = False
    tokenizer: Optional[str] = None
    bpe: Optional[str] = None

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "TextPreparation":
        data = manifest.get("data") or {}
        bpe = manifest.get("bpe") or {}
        return cls(lowercase=bool(data.get("lowercase")), tokenizer=manifest.get("tokenizer") or None,
                   bpe=bpe.get("name"))

    def __call__(self, text: str) -> str:
        return normalize(text, self.lowercase)
