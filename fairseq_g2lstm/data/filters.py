"""The pair filters, each drop counted under a named reason, and the sentence
normalisation they apply (:func:`g2lstm_runtime.text.normalize`, shared with every
translation path).

The reason names are the keys of the manifest's ``dropped`` counts.
"""
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Tuple

from g2lstm_runtime.text import normalize  # noqa: F401  (the prepare tools import it from here)

EMPTY = "empty"
OVER_MAX_LEN = "over_max_len"
OVER_MAX_RATIO = "over_max_ratio"
OVER_MAX_SUBWORDS = "over_max_subwords"


@dataclass(frozen=True)
class LengthFilter:
    """Moses ``clean-corpus-n`` on whitespace words: at most ``max_len`` words per side and
    a longer/shorter word-count ratio of at most ``max_ratio``; ``None`` turns a check off.

    fairseq's recipes count Moses-tokenised words; counting whitespace words (the input is
    not tokenised here) gives slightly smaller counts, so the same limits drop a little less.
    """

    max_len: Optional[int] = None
    max_ratio: Optional[float] = None

    def reason_to_drop(self, source: str, target: str) -> Optional[str]:
        """The reason this (non-empty) pair fails, or ``None`` when it passes."""
        source_words, target_words = len(source.split()), len(target.split())
        if self.max_len is not None and max(source_words, target_words) > self.max_len:
            return OVER_MAX_LEN
        if self.max_ratio is not None and (
            source_words > self.max_ratio * target_words
            or target_words > self.max_ratio * source_words
        ):
            return OVER_MAX_RATIO
        return None


NO_LENGTH_FILTER = LengthFilter()


def clean_pair(
    source: str,
    target: str,
    lowercase: bool,
    length_filter: LengthFilter,
    dropped: Counter,
) -> Optional[Tuple[str, str]]:
    """Normalise a pair, or count why it is dropped and return ``None``."""
    source, target = normalize(source, lowercase), normalize(target, lowercase)
    reason = EMPTY if not source or not target else length_filter.reason_to_drop(source, target)
    if reason is not None:
        dropped[reason] += 1
        return None
    return source, target
