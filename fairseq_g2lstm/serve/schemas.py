"""Request bodies: read (JSON, form or query string), then validated by pydantic into the two APIs'
request types. Every failure becomes an :class:`~.limits.ApiError` naming the field.

LibreTranslate's clients send JSON or form bodies (its own web page and the
``libretranslate`` Python package use both), or the fields in the query string with no
body (deep-translator's ``LibreTranslator``); LibreTranslate's server reads all three, and
so does this one, within the same limits.
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


MAX_FORM_FIELDS = 64  # the request types have 11 fields; a form repeats only q, up to --max-texts


async def read_body(request, limits: Limits) -> Dict[str, Any]:
    """The request's fields as a dict: a JSON object, or (as LibreTranslate's
    ``request.values``) the query string and the form together, where ``q`` given several
    times becomes a list. A request without a body reads the query string alone: that is
    how some LibreTranslate clients send their parameters.

    The body is read in chunks up to the limit, whatever ``Content-Length`` says (a
    chunked body has none): 413 as soon as it is over. 415 for another content type,
    400 for malformed or too deeply nested JSON and for file uploads."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != JSON and content_type not in FORMS:
        raise ApiError(415, f"content type {content_type} is not accepted; send {JSON}, a form "
                            f"({', '.join(FORMS)}) or the fields in the query string", "content-type")
    raw = await read_limited(request, limits.max_body_bytes)
    if content_type == JSON:
        try:
            data = json.loads(raw)
        except RecursionError:
            raise ApiError(400, "malformed JSON (nested too deeply)", "body") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, f"malformed JSON ({error})", "body") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"the JSON body must be an object, not {type(data).__name__}", "body")
        return data
    if len(request.url.query) > limits.max_body_bytes:
        raise ApiError(413, f"query string of {len(request.url.query):,} bytes; at most {limits.max_body_bytes:,}",
                       "query")
    fields = list(request.query_params.multi_items())
    if content_type and raw:
        request._body = raw  # parsed from memory: the form never reads the socket again, nor spools to disk
        try:
            form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=limits.max_body_bytes)
        except Exception as error:  # starlette's multipart and form errors have no common base
            raise ApiError(400, f"unreadable form ({getattr(error, 'detail', error)})", "body") from None
        fields += [(key, value) for key, value in form.multi_items() if isinstance(value, str)]
    if len(fields) > MAX_FORM_FIELDS:
        raise ApiError(400, f"{len(fields)} fields; at most {MAX_FORM_FIELDS}", "body")
    data: Dict[str, Any] = {}
    for key, value in fields:
        if key == "q" and key in data:
            data[key] = (data[key] if isinstance(data[key], list) else [data[key]]) + [value]
        else:
            data[key] = value
    return data


async def read_limited(request, max_bytes: int) -> bytes:
    """The body, read chunk by chunk; 413 as soon as it passes ``max_bytes`` (a declared
    ``Content-Length`` over it is refused before any chunk)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"body of {int(declared):,} bytes; at most {max_bytes:,}", "body")
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, f"body of more than {max_bytes:,} bytes; at most {max_bytes:,}", "body")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody reads the answer; the log line says 400, not an unexpected error
        raise ApiError(400, "the client closed the connection before the end of its body", "body") from None
    return b"".join(chunks)


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
