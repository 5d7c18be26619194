"""The server's limits and its client errors.

Every refusal is an :class:`ApiError`: an HTTP status, a one-line message and the
request field at fault, answered as ``{"error": MESSAGE, "field": FIELD}``.
LibreTranslate answers ``{"error": ...}`` too, so its clients show our messages; the
``field`` is ours, for programs.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Sequence


# The output bound, A * S + B target tokens for a source of S (--max-len-a, --max-len-b).
# The IWSLT14 recipe drops pairs whose word counts differ by more than 1.5x, so a
# translation is at most about 1.5x its source; subword splits vary, hence the + 10.
MAX_LEN_A, MAX_LEN_B = 1.5, 10


@dataclass(frozen=True)
class Limits:
    """What one request may ask, and how much work may wait (the flags of ``g2lstm-serve``)."""

    max_chars: int = 2000  # characters per text (--max-chars)
    max_texts: int = 64  # texts per request (--max-texts)
    max_beam: int = 16  # beam size and n-best (--max-beam)
    request_timeout_s: float = 30.0  # from arrival to answer (--request-timeout)
    max_queue: int = 1024  # sentences waiting for the model, all requests together (--max-queue)

    @property
    def max_body_bytes(self) -> int:
        """A body that cannot hold valid texts within the limits is refused unread:
        4 bytes per character (UTF-8's most), twice for JSON escapes, plus room for the
        other fields."""
        return self.max_texts * (8 * self.max_chars + 16) + 4096


class ApiError(Exception):
    """A request the client must change (4xx) or retry later (503)."""

    def __init__(self, status: int, message: str, field: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}

    def body(self) -> Dict[str, str]:
        body = {"error": self.message}
        if self.field:
            body["field"] = self.field
        return body


def overloaded(message: str, retry_after_s: int = 1) -> ApiError:
    """503 with Retry-After: the client did nothing wrong and may send the same again."""
    return ApiError(503, message, headers={"Retry-After": str(retry_after_s)})


def check_texts(texts: Sequence[str], limits: Limits, field: str = "q") -> None:
    """At least one text and at most ``max_texts``; none empty (after whitespace) or
    longer than ``max_chars``."""
    if not texts:
        raise ApiError(400, "no text to translate: give a string or a non-empty list of strings", field)
    if len(texts) > limits.max_texts:
        raise ApiError(400, f"{len(texts)} texts in one request; at most {limits.max_texts} (--max-texts)", field)
    for k, text in enumerate(texts):
        where = field if len(texts) == 1 else f"{field}[{k}]"
        if not text.strip():
            raise ApiError(400, "empty text: nothing to translate", where)
        if len(text) > limits.max_chars:
            raise ApiError(400, f"text of {len(text)} characters; at most {limits.max_chars} (--max-chars)", where)


def check_range(value: int, low: int, high: int, field: str, what: str) -> None:
    if not low <= value <= high:
        raise ApiError(400, f"{what} must be between {low} and {high}; got {value}", field)
