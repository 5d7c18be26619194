"""The HTTP application: LibreTranslate's API, ours under ``/v1``, and the web page.

Glue only: a request is read and checked (:mod:`.schemas`, :mod:`.limits`), its
sentences are encoded by the model's hub and queued in the model's batcher
(:mod:`.batching`), and the hub's results are shaped into the answer. Errors are JSON
with the field at fault; nothing the client sends produces a traceback.

* ``POST /translate``, ``GET /languages``: LibreTranslate's API
  (https://docs.libretranslate.com), so that its clients work unchanged.
* ``POST /v1/translate``, ``GET /v1/models``, ``GET /health``: ours (beam, n-best with
  scores, per-token gates, hard gates, model choice by id).
* ``GET /``: the page (``static/``).
"""
import asyncio
import contextlib
import hmac
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import DynamicBatcher, QueueFull, TooLarge
from .limits import ApiError, Limits, check_range, check_texts, overloaded
from .schemas import LibreTranslateRequest, TranslateRequest, as_list, parse, read_body
from .translator import GenerationKey, SentenceResult, Translator

logger = logging.getLogger("fairseq_g2lstm.serve")

# Names for /languages (LibreTranslate lists a name per code); other codes are named by their code.
LANGUAGE_NAMES = {"ar": "Arabic", "cs": "Czech", "de": "German", "en": "English", "es": "Spanish", "fr": "French",
                  "it": "Italian", "ja": "Japanese", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese",
                  "ro": "Romanian", "ru": "Russian", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese",
                  "zh": "Chinese"}
AUTO = "auto"


@dataclass(frozen=True)
class ServerSettings:
    """Everything but the models (``g2lstm-serve``'s flags)."""

    limits: Limits = Limits()
    beam: int = 5  # LibreTranslate requests, and /v1 requests that give none
    max_batch_sentences: int = 32
    max_batch_tokens: int = 4096
    batch_wait_s: float = 0.005
    api_keys: Optional[FrozenSet[str]] = None  # None: no key needed
    cors_origins: Tuple[str, ...] = ()


class Models:
    """The served models by id, the default model of each language pair (the first given),
    and one batcher per model."""

    def __init__(self, translators: Sequence[Translator], settings: ServerSettings):
        ids = [t.id for t in translators]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:  # one id would reach two models: encoded with one dictionary, run on the other
            raise ValueError(f"model id {', '.join(repeated)} given twice")
        self.by_id: Dict[str, Translator] = {t.id: t for t in translators}
        self.by_pair: Dict[Tuple[str, str], Translator] = {}
        for translator in translators:
            self.by_pair.setdefault((translator.source, translator.target), translator)
        self.batchers = {t.id: DynamicBatcher(t.run_batch, max_sentences=settings.max_batch_sentences,
                                              max_tokens=settings.max_batch_tokens, max_wait_s=settings.batch_wait_s,
                                              max_queue=settings.limits.max_queue, name=t.id)
                         for t in translators}

    def languages(self) -> List[Dict[str, Any]]:
        targets: Dict[str, List[str]] = {}
        for source, target in self.by_pair:
            targets.setdefault(source, []).append(target)
        return [{"code": code, "name": LANGUAGE_NAMES.get(code, code), "targets": sorted(found)}
                for code, found in sorted(targets.items())]

    def for_pair(self, source: str, target: str) -> Tuple[Translator, bool]:
        """The model for ``source`` -> ``target`` and whether ``source`` was ``auto``.
        ``auto`` is accepted only where one source language translates into ``target``:
        no language is detected, there is simply no other choice."""
        if source == AUTO:
            sources = sorted({s for s, t in self.by_pair if t == target})
            if len(sources) != 1:
                choice = f"give one of {', '.join(sources)}" if sources else f"no model translates into '{target}'"
                raise ApiError(400, f"source 'auto': this server does not detect languages; {choice}",
                               "source" if sources else "target")
            source = sources[0]
            return self.by_pair[(source, target)], True
        if (source, target) not in self.by_pair:
            pairs = ", ".join(f"{s}->{t}" for s, t in self.by_pair)
            field = "source" if all(s != source for s, _ in self.by_pair) else "target"
            raise ApiError(400, f"no model for {source}->{target}; this server translates {pairs}", field)
        return self.by_pair[(source, target)], False

    def for_request(self, request: TranslateRequest) -> Translator:
        if request.model is not None:
            if request.model not in self.by_id:
                raise ApiError(400, f"unknown model '{request.model}'; known: {', '.join(self.by_id)}", "model")
            return self.by_id[request.model]
        if request.source is None and request.target is None:
            return next(iter(self.by_id.values()))  # the server's first model
        if request.source is None or request.target is None:
            raise ApiError(400, "give both 'source' and 'target', or a 'model' (see /v1/models)",
                           "target" if request.target is None else "source")
        return self.for_pair(request.source, request.target)[0]


def create_app(translators: Sequence[Translator], settings: ServerSettings = ServerSettings()) -> FastAPI:
    """The ASGI application serving ``translators`` (already loaded)."""
    models = Models(translators, settings)
    limits = settings.limits

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for batcher in models.batchers.values():
            batcher.start()
        yield
        for batcher in models.batchers.values():  # uvicorn has drained the requests by now
            await batcher.stop()

    app = FastAPI(title="fairseq-g2lstm translation server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/v1/openapi.json")
    app.state.models = models
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization"])

    @app.middleware("http")
    async def log_request(request: Request, call_next):
        """One line per request: status, latency, sentences and tokens; never the text."""
        start = time.perf_counter()
        request.state.sentences = request.state.tokens = 0
        response = await call_next(request)
        logger.info("%s %s %d %.1f ms sentences=%d tokens=%d", request.method, request.url.path,
                    response.status_code, 1000 * (time.perf_counter() - start), request.state.sentences,
                    request.state.tokens)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error; the server log has the details"}, status_code=500)

    def check_key(api_key: Any) -> None:
        """403 unless ``api_key`` is one of the keys; every key is compared in constant time."""
        if settings.api_keys is None:
            return
        given = api_key.encode("utf-8", "replace") if isinstance(api_key, str) else b""
        matches = [hmac.compare_digest(given, key.encode("utf-8")) for key in settings.api_keys]
        if not any(matches):
            raise ApiError(403, "Invalid API key" if api_key else "an API key is required (api_key, or the header "
                                                                 "Authorization: Bearer KEY)", "api_key")

    async def read_authorized(request: Request) -> Dict[str, Any]:
        """The request's fields, once its key is good. A key in ``Authorization: Bearer``
        is checked before the body is read; otherwise the body's ``api_key`` is."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, key = header.partition(" ")
            check_key(key.strip() if scheme.lower() == "bearer" else None)
        data = await read_body(request, limits)
        if header is None:
            check_key(data.get("api_key"))
        return data

    async def translate(request: Request, translator: Translator, texts: List[str],
                        key: GenerationKey) -> List[SentenceResult]:
        """Encode ``texts``, check their length in tokens, and await the batcher."""
        sources = [translator.encode(text) for text in texts]  # [S] each, ending in eos
        for k, ids in enumerate(sources):
            if len(ids) > translator.max_source_tokens:
                raise ApiError(400, f"text of {len(ids)} tokens; the model reads at most {translator.max_source_tokens}",
                               "q" if len(texts) == 1 else f"q[{k}]")
        request.state.sentences = len(texts)
        request.state.tokens = sum(len(ids) for ids in sources)
        try:
            return await asyncio.wait_for(models.batchers[translator.id].submit(key, sources, [len(s) for s in sources]),
                                          limits.request_timeout_s)
        except TooLarge as error:
            raise ApiError(400, str(error), "q") from None
        except QueueFull:
            raise overloaded(f"the server is busy ({translator.id}'s queue is full); retry shortly") from None
        except asyncio.TimeoutError:
            raise overloaded(f"not translated within {limits.request_timeout_s:g} s (--request-timeout); "
                             "the server is busy") from None
        except ApiError:
            raise
        except Exception:
            logger.exception("translation failed in %s", translator.id)
            raise ApiError(500, "the model failed on this request; the server log has the details") from None

    # --- LibreTranslate ---------------------------------------------------------------------------
    @app.post("/translate")
    async def libre_translate(request: Request):
        body = parse(LibreTranslateRequest, await read_authorized(request))
        if body.format == "html":
            raise ApiError(400, "format 'html' is not supported: this server translates plain text (format 'text')",
                           "format")
        if body.format != "text":
            raise ApiError(400, f"unknown format '{body.format}'; use 'text'", "format")
        texts = as_list(body.q)
        check_texts(texts, limits)
        check_range(body.alternatives, 0, limits.max_beam - 1, "alternatives", "alternatives")
        translator, auto = models.for_pair(body.source, body.target)
        nbest = body.alternatives + 1
        results = await translate(request, translator, texts, GenerationKey(max(settings.beam, nbest), nbest))
        best = [r.hypotheses[0].text for r in results]
        others = [[h.text for h in r.hypotheses[1:]] for r in results]
        single = isinstance(body.q, str)
        answer: Dict[str, Any] = {"translatedText": best[0] if single else best}
        if body.alternatives > 0:
            answer["alternatives"] = others[0] if single else others
        if auto:  # LibreTranslate's shape; confidence 100: the only language this server translates from
            detected = {"confidence": 100.0, "language": translator.source}
            answer["detectedLanguage"] = detected if single else [detected] * len(texts)
        return answer

    @app.get("/languages")
    async def languages():
        return models.languages()

    # --- ours -------------------------------------------------------------------------------------
    @app.post("/v1/translate")
    async def v1_translate(request: Request):
        body = parse(TranslateRequest, await read_authorized(request))
        texts = as_list(body.q)
        check_texts(texts, limits)
        translator = models.for_request(body)
        beam = settings.beam if body.beam is None else body.beam
        check_range(beam, 1, limits.max_beam, "beam", "beam")
        check_range(body.nbest, 1, beam, "nbest", "nbest (at most the beam)")
        if body.gates:
            check_range(body.gate_layer, 0, translator.num_layers - 1, "gate_layer", "gate_layer")
        key = GenerationKey(beam, body.nbest, body.hard_gates, body.gate_layer if body.gates else None)
        results = await translate(request, translator, texts, key)
        return {
            "model": translator.id, "source": translator.source, "target": translator.target, "beam": beam,
            "hard_gates": body.hard_gates,
            "translations": [_sentence(r) for r in results],
        }

    @app.get("/v1/models")
    async def v1_models():
        out = []
        for translator in models.by_id.values():
            batcher = models.batchers[translator.id]
            out.append({**translator.describe(),
                        "default_for_pair": models.by_pair[(translator.source, translator.target)] is translator,
                        "batches_run": batcher.batches_run, "sentences_run": batcher.sentences_run,
                        "waiting": batcher.waiting})
        return {"models": out}

    @app.get("/health")
    async def health():
        stopped = [name for name, batcher in models.batchers.items() if not batcher.healthy]
        if stopped:  # its requests would only time out: tell the load balancer
            return JSONResponse({"status": "failed", "error": f"the batcher of {', '.join(stopped)} stopped; "
                                                              "the server log has the details"}, status_code=503)
        return {"status": "ok", "models": list(models.by_id), "waiting": sum(b.waiting for b in models.batchers.values()),
                "api_key_required": settings.api_keys is not None,
                "limits": {"max_chars": limits.max_chars, "max_texts": limits.max_texts, "max_beam": limits.max_beam}}

    # --- the page ---------------------------------------------------------------------------------
    static = resources.files("fairseq_g2lstm.serve") / "static"

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(static / "index.html"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


def _sentence(result: SentenceResult) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "text": result.hypotheses[0].text,
        "truncated": result.hypotheses[0].truncated,
        "hypotheses": [{"text": h.text, "score": h.score, "tokens": h.tokens, "truncated": h.truncated}
                       for h in result.hypotheses],
    }
    if result.gates is not None:
        out["gates"] = result.gates
    return out
