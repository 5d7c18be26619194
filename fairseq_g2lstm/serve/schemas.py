"""Request bodies: read (JSON or form), then validated by pydantic into the two APIs'
request types. Every failure becomes an :class:`~.limits.ApiError` naming the field.

LibreTranslate's clients send either JSON or form bodies (its own web page and the
``libretranslate`` Python package use both), so both are read the same way.
"""
import json
from typing import Any, Dict, List, Optional, Type, TypeVar, Union

from pydantic import BaseModel, ConfigDict, ValidationError

from .limits import ApiError, Limits

JSON = "application/json"
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")

Model = TypeVar("Model", bound=BaseModel)


class LibreTranslateRequest(BaseModel):
    """``POST /translate``, as LibreTranslate documents it."""

    model_config = ConfigDict(extra="ignore")
    q: Union[str, List[str]]
    source: str
    target: str
    format: str = "text"
    alternatives: int = 0
    api_key: Optional[str] = None


class TranslateRequest(BaseModel):
    """``POST /v1/translate``: our own API. ``model`` (an id from ``/v1/models``) or a
    ``source`` and ``target`` pair chooses the model; neither: the server's first model."""

    model_config = ConfigDict(extra="forbid")
    q: Union[str, List[str]]
    model: Optional[str] = None
    source: Optional[str] = None
    target: Optional[str] = None
    beam: Optional[int] = None  # default: the server's --beam
    nbest: int = 1
    gates: bool = False  # per-token input and forget gates of the best translation
    gate_layer: int = 0
    hard_gates: bool = False  # translate with the gates rounded to 0/1 (--gate-eval hard)
    api_key: Optional[str] = None


def as_list(q: Union[str, List[str]]) -> List[str]:
    return [q] if isinstance(q, str) else list(q)


async def read_body(request, limits: Limits) -> Dict[str, Any]:
    """The body of ``request`` as a dict: a JSON object, or the form's fields (``q``
    given several times becomes a list). 415 for another content type, 413 for a body
    over the limits, 400 for malformed JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != JSON and content_type not in FORMS:
        raise ApiError(415, f"content type {content_type or '(none)'} is not accepted; send {JSON} or a form "
                            f"({', '.join(FORMS)})", "content-type")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ApiError(413, f"body of {int(declared):,} bytes; at most {limits.max_body_bytes:,}", "body")
    if content_type == JSON:
        raw = await request.body()
        if len(raw) > limits.max_body_bytes:
            raise ApiError(413, f"body of {len(raw):,} bytes; at most {limits.max_body_bytes:,}", "body")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, f"malformed JSON ({error})", "body") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"the JSON body must be an object, not {type(data).__name__}", "body")
        return data
    form = await request.form()
    data = {}
    for key in form.keys():
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        if values:
            data[key] = values if key == "q" and len(values) > 1 else values[0]
    return data


def parse(model: Type[Model], data: Dict[str, Any]) -> Model:
    """``data`` validated as ``model``; the first problem as a 400 naming its field."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"][:1]) or "body"
        if first["type"] == "missing":
            raise ApiError(400, f"missing field '{field}'", field) from None
        if first["type"] == "extra_forbidden":
            raise ApiError(400, f"unknown field '{field}'", field) from None
        raise ApiError(400, f"{field}: {first['msg']}", field) from None
