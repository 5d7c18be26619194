"""The server's pieces without a model: the batcher, the request checks, and the
application's error mapping and access rules (in-process, with a stand-in translator that
reverses words, so that every answer can be checked)."""
import asyncio
import threading
import time

import pytest
from fastapi.testclient import TestClient

from fairseq_g2lstm.serve.app import ServerSettings, create_app
from fairseq_g2lstm.serve.batching import DynamicBatcher, QueueFull
from fairseq_g2lstm.serve.limits import ApiError, Limits, check_texts
from fairseq_g2lstm.serve.schemas import LibreTranslateRequest, TranslateRequest, parse
from fairseq_g2lstm.serve.translator import Hypothesis, SentenceResult


# --- the batcher ------------------------------------------------------------------------------------
class Recorder:
    """A run function that records its batches and returns each payload doubled."""

    def __init__(self, delay=0.0, fail_on=None):
        self.batches, self.delay, self.fail_on, self.threads = [], delay, fail_on, set()

    def __call__(self, key, payloads):
        self.threads.add(threading.current_thread().name)
        self.batches.append((key, list(payloads)))
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in payloads:
            raise RuntimeError("bad sentence")
        return [2 * p for p in payloads]


def run(coroutine):
    return asyncio.run(coroutine)


async def with_batcher(recorder, body, **options):
    batcher = DynamicBatcher(recorder, **options)
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.stop()


def test_concurrent_requests_share_a_batch_and_get_their_own_results_in_order():
    recorder = Recorder()

    async def body(batcher):
        return await asyncio.gather(batcher.submit("k", [1, 2], [3, 3]), batcher.submit("k", [3], [3]),
                                    batcher.submit("k", [4, 5, 6], [3, 3, 3]))

    results = run(with_batcher(recorder, body, max_sentences=32, max_wait_s=0.05))
    assert results == [[2, 4], [6], [8, 10, 12]]
    assert recorder.batches == [("k", [1, 2, 3, 4, 5, 6])]
    assert all(name.startswith("batch-") for name in recorder.threads)  # off the event loop


def test_batches_are_bounded_by_sentences_and_tokens_and_never_mix_keys():
    recorder = Recorder()

    async def body(batcher):
        return await asyncio.gather(batcher.submit("a", [1, 2, 3], [4, 4, 4]), batcher.submit("b", [7], [1]),
                                    batcher.submit("a", [4, 5], [4, 30]))

    results = run(with_batcher(recorder, body, max_sentences=2, max_tokens=10, max_wait_s=0.05))
    assert results == [[2, 4, 6], [14], [8, 10]]
    assert recorder.batches == [("a", [1, 2]), ("a", [3, 4]), ("b", [7]), ("a", [5])]  # 5 alone: 30 tokens


def test_one_sentence_at_a_time_when_batching_is_off():
    recorder = Recorder()

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit("k", [i], [1]) for i in range(4)))

    assert run(with_batcher(recorder, body, max_sentences=1, max_wait_s=0)) == [[0], [2], [4], [6]]
    assert recorder.batches == [("k", [i]) for i in range(4)]


def test_a_full_queue_refuses_the_whole_request_at_once():
    recorder = Recorder(delay=0.2)

    async def body(batcher):
        first = asyncio.ensure_future(batcher.submit("k", [1, 2], [1, 1]))
        await asyncio.sleep(0.05)  # the first batch is running; its queue is empty again
        second = asyncio.ensure_future(batcher.submit("k", [3, 4, 5], [1, 1, 1]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit("k", [6], [1])  # 3 waiting + 1 > 3
        return await first, await second

    assert run(with_batcher(recorder, body, max_queue=3, max_wait_s=0)) == ([2, 4], [6, 8, 10])
    assert [6] not in [payloads for _, payloads in recorder.batches]


def test_a_failing_sentence_fails_only_its_own_request():
    recorder = Recorder(fail_on=13)

    async def body(batcher):
        return await asyncio.gather(batcher.submit("k", [1], [1]), batcher.submit("k", [13], [1]),
                                    batcher.submit("k", [2], [1]), return_exceptions=True)

    good, bad, other = run(with_batcher(recorder, body, max_wait_s=0.05))
    assert good == [2] and other == [4] and isinstance(bad, RuntimeError)
    assert recorder.batches[0] == ("k", [1, 13, 2])  # tried together, then one by one
    assert [payloads for _, payloads in recorder.batches[1:]] == [[1], [13], [2]]


def test_a_request_that_gives_up_leaves_no_work_behind():
    recorder = Recorder(delay=0.1)

    async def body(batcher):
        running = asyncio.ensure_future(batcher.submit("k", [1], [1]))
        await asyncio.sleep(0.02)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit("k", [2, 3], [1, 1]), 0.01)
        later = await batcher.submit("k", [4], [1])
        return await running, later

    assert run(with_batcher(recorder, body, max_wait_s=0)) == ([2], [8])
    assert [payloads for _, payloads in recorder.batches] == [[1], [4]]


# --- request checks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("texts, field, message", [
    ([], "q", "no text"),
    (["  "], "q", "empty text"),
    (["ok", ""], "q[1]", "empty text"),
    (["x" * 11], "q", "11 characters; at most 10"),
    (["a", "b", "c", "d"], "q", "4 texts in one request; at most 3"),
])
def test_texts_are_checked_with_the_field_named(texts, field, message):
    with pytest.raises(ApiError) as caught:
        check_texts(texts, Limits(max_chars=10, max_texts=3))
    assert caught.value.status == 400 and caught.value.field == field and message in caught.value.message


@pytest.mark.parametrize("model, data, field, message", [
    (LibreTranslateRequest, {"source": "de", "target": "en"}, "q", "missing field 'q'"),
    (LibreTranslateRequest, {"q": 5, "source": "de", "target": "en"}, "q", "q: "),
    (LibreTranslateRequest, {"q": "x", "source": "de", "target": "en", "alternatives": "many"}, "alternatives", ""),
    (TranslateRequest, {"q": "x", "beem": 3}, "beem", "unknown field 'beem'"),
    (TranslateRequest, {"q": "x", "gates": "perhaps"}, "gates", "gates: "),
])
def test_parse_names_the_field(model, data, field, message):
    with pytest.raises(ApiError) as caught:
        parse(model, data)
    assert caught.value.status == 400 and caught.value.field == field and message in caught.value.message


def test_form_strings_are_read_as_numbers_and_booleans():
    request = parse(TranslateRequest, {"q": "x", "beam": "3", "gates": "true"})
    assert request.beam == 3 and request.gates is True
    assert parse(LibreTranslateRequest, {"q": ["a", "b"], "source": "de", "target": "en"}).q == ["a", "b"]


# --- the application, with a stand-in model ---------------------------------------------------------
class ReversingTranslator:
    """What the app needs of a Translator: reverses the words; 'explode' raises inside the model."""

    source, target, num_layers, max_source_tokens = "de", "en", 1, 8

    def __init__(self, model_id="rev", source="de", target="en"):
        self.id, self.source, self.target = model_id, source, target

    def encode(self, text):
        return text.split() + ["</s>"]

    def run_batch(self, key, sources):
        if any("explode" in words for words in sources):
            raise RuntimeError("the model broke")
        return [SentenceResult([Hypothesis(" ".join(reversed(words[:-1])) + "!" * k, -0.5 * (k + 1), [])
                                for k in range(key.nbest)]) for words in sources]

    def describe(self):
        return {"id": self.id, "source": self.source, "target": self.target}


def client_for(translators=None, **settings):
    app = create_app(translators or [ReversingTranslator()], ServerSettings(**settings))
    return TestClient(app, raise_server_exceptions=False)


def test_libretranslate_shapes_for_a_string_a_list_and_alternatives():
    with client_for() as client:
        assert client.post("/translate", json={"q": "a b", "source": "de", "target": "en"}).json() == {
            "translatedText": "b a"}
        assert client.post("/translate", data={"q": "a b", "source": "de", "target": "en"}).json() == {
            "translatedText": "b a"}  # form body
        assert client.post("/translate", json={"q": ["a b", "c d e"], "source": "de", "target": "en",
                                               "alternatives": 2}).json() == {
            "translatedText": ["b a", "e d c"], "alternatives": [["b a!", "b a!!"], ["e d c!", "e d c!!"]]}
        assert client.post("/translate", json={"q": "a b", "source": "auto", "target": "en", "alternatives": 1}).json() == {
            "translatedText": "b a", "alternatives": ["b a!"], "detectedLanguage": {"confidence": 100.0, "language": "de"}}
        assert client.get("/languages").json() == [{"code": "de", "name": "German", "targets": ["en"]}]


@pytest.mark.parametrize("request_kwargs, status, field", [
    ({"content": b'{"q": "a",', "headers": {"content-type": "application/json"}}, 400, "body"),
    ({"content": b"q=a", "headers": {"content-type": "text/plain"}}, 415, "content-type"),
    ({"json": {"source": "de", "target": "en"}}, 400, "q"),
    ({"json": {"q": "a", "target": "en"}}, 400, "source"),
    ({"json": {"q": "", "source": "de", "target": "en"}}, 400, "q"),
    ({"json": {"q": "a " * 1500, "source": "de", "target": "en"}}, 400, "q"),
    ({"json": {"q": ["a"] * 65, "source": "de", "target": "en"}}, 400, "q"),
    ({"json": {"q": "a b c d e f g h i", "source": "de", "target": "en"}}, 400, "q"),  # 10 tokens > 8
    ({"json": {"q": "a", "source": "fr", "target": "en"}}, 400, "source"),
    ({"json": {"q": "a", "source": "de", "target": "fr"}}, 400, "target"),
    ({"json": {"q": "a", "source": "auto", "target": "fr"}}, 400, "target"),
    ({"json": {"q": "a", "source": "de", "target": "en", "format": "html"}}, 400, "format"),
    ({"json": {"q": "a", "source": "de", "target": "en", "alternatives": 99}}, 400, "alternatives"),
    ({"content": b"x" * 2_000_000, "headers": {"content-type": "application/json"}}, 413, "body"),
])
def test_bad_libretranslate_requests_get_a_4xx_naming_the_field(request_kwargs, status, field):
    with client_for() as client:
        response = client.post("/translate", **request_kwargs)
    assert response.status_code == status and response.json()["field"] == field, response.json()
    assert response.json()["error"]


@pytest.mark.parametrize("body, field", [
    ({"q": "a", "model": "nope"}, "model"),
    ({"q": "a", "beam": 0}, "beam"),
    ({"q": "a", "beam": 99}, "beam"),
    ({"q": "a", "beam": 2, "nbest": 3}, "nbest"),
    ({"q": "a", "gates": True, "gate_layer": 1}, "gate_layer"),
    ({"q": "a", "nbest": "two"}, "nbest"),
])
def test_bad_v1_requests_get_a_400_naming_the_field(body, field):
    with client_for() as client:
        response = client.post("/v1/translate", json=body)
    assert response.status_code == 400 and response.json()["field"] == field, response.json()


def test_v1_gives_the_nbest_with_scores():
    with client_for() as client:
        answer = client.post("/v1/translate", json={"q": ["a b"], "beam": 3, "nbest": 2}).json()
    assert answer["model"] == "rev" and answer["beam"] == 3
    assert answer["translations"] == [{"text": "b a", "truncated": False, "hypotheses": [
        {"text": "b a", "score": -0.5, "tokens": [], "truncated": False},
        {"text": "b a!", "score": -1.0, "tokens": [], "truncated": False}]}]


def test_an_exception_in_the_model_is_a_json_500_for_that_request_only():
    with client_for() as client:
        broken = client.post("/translate", json={"q": "explode now", "source": "de", "target": "en"})
        after = client.post("/translate", json={"q": "a b", "source": "de", "target": "en"})
    assert broken.status_code == 500 and "Traceback" not in broken.text
    assert set(broken.json()) == {"error"}
    assert after.status_code == 200 and after.json() == {"translatedText": "b a"}


def test_api_keys_are_required_when_configured():
    with client_for(api_keys=frozenset({"k1"})) as client:
        request = {"q": "a b", "source": "de", "target": "en"}
        assert client.post("/translate", json=request).status_code == 403
        wrong = client.post("/translate", json={**request, "api_key": "k2"})
        assert wrong.status_code == 403 and wrong.json() == {"error": "Invalid API key", "field": "api_key"}
        assert client.post("/translate", json={**request, "api_key": "k1"}).json() == {"translatedText": "b a"}
        assert client.post("/v1/translate", json={"q": "a", "api_key": "k2"}).status_code == 403
        assert client.get("/health").json()["api_key_required"] is True


def test_cors_is_off_unless_an_origin_is_given():
    preflight = {"Origin": "http://example.org", "Access-Control-Request-Method": "POST"}
    with client_for() as client:
        assert "access-control-allow-origin" not in client.options("/translate", headers=preflight).headers
    with client_for(cors_origins=("http://example.org",)) as client:
        response = client.options("/translate", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "http://example.org"
        other = client.options("/translate", headers={**preflight, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_models_by_pair_and_id_and_the_auto_source_rule():
    translators = [ReversingTranslator("g2", "de", "en"), ReversingTranslator("plain", "de", "en"),
                   ReversingTranslator("fr-en", "fr", "en")]
    with client_for(translators) as client:
        assert client.post("/v1/translate", json={"q": "a", "model": "plain"}).json()["model"] == "plain"
        assert client.post("/v1/translate", json={"q": "a", "source": "de", "target": "en"}).json()["model"] == "g2"
        assert client.post("/v1/translate", json={"q": "a"}).json()["model"] == "g2"  # the first given
        half = client.post("/v1/translate", json={"q": "a", "source": "fr"})
        assert half.status_code == 400 and half.json()["field"] == "target"
        auto = client.post("/translate", json={"q": "a", "source": "auto", "target": "en"})
        assert auto.status_code == 400 and auto.json()["field"] == "source" and "de, fr" in auto.json()["error"]
        assert client.get("/languages").json() == [{"code": "de", "name": "German", "targets": ["en"]},
                                                   {"code": "fr", "name": "French", "targets": ["en"]}]
        listed = client.get("/v1/models").json()["models"]
        assert [(m["id"], m["default_for_pair"]) for m in listed] == [("g2", True), ("plain", False), ("fr-en", True)]


def test_the_page_and_its_files_are_served():
    with client_for() as client:
        page = client.get("/")
        assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
        for name in ("app.js", "style.css"):
            assert client.get(f"/static/{name}").status_code == 200
        assert client.get("/nowhere").json() == {"error": "Not Found"}


# --- round 2: what a client or an operator could break ------------------------------------------------
def test_model_ids_are_unique_even_where_a_folder_is_named_like_a_numbered_id():
    from fairseq_g2lstm.serve.cli import model_ids

    ids = model_ids(["/m1/de-en", "/m2/de-en", "/m3/de-en-2"])
    assert len(set(ids)) == 3 and ids[0] == "de-en" and ids[2] == "de-en-2"
    with pytest.raises(ValueError, match="twice"):
        create_app([ReversingTranslator("same"), ReversingTranslator("same")])


def test_a_deeply_nested_body_is_a_400_not_a_500():
    with client_for() as client:
        for body in (b"[" * 200_000, b'{"q": ' + b"[" * 200_000):
            response = client.post("/translate", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400 and response.json()["field"] == "body", response.text


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read_whole():
    from fairseq_g2lstm.serve.schemas import read_body

    limits = Limits(max_chars=10, max_texts=2)
    sent = []

    class ChunkedRequest:  # what read_body uses of starlette's Request; no Content-Length
        headers = {"content-type": "application/json", "transfer-encoding": "chunked"}

        async def stream(self):
            for _ in range(1000):
                sent.append(1)
                yield b"x" * 1024

    with pytest.raises(ApiError) as caught:
        run(read_body(ChunkedRequest(), limits))
    assert caught.value.status == 413 and caught.value.field == "body"
    assert len(sent) <= limits.max_body_bytes // 1024 + 1  # stopped at the limit, not at the end
    with client_for(limits=limits) as client:  # and through the app, chunked (a generator body)
        response = client.post("/translate", content=(b"x" * 1024 for _ in range(100)),
                               headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413 and response.json()["field"] == "body"


def test_multipart_files_are_refused_and_fields_are_counted():
    with client_for() as client:
        upload = client.post("/translate", data={"source": "de", "target": "en"}, files={"q": ("a.txt", b"a b")})
        assert upload.status_code == 400 and upload.json()["error"]
        many = client.post("/translate", data={f"f{k}": "x" for k in range(500)} | {"q": "a", "source": "de",
                                                                                       "target": "en"})
        assert many.status_code == 400


def test_a_key_in_the_authorization_header_is_checked_before_the_body_is_read():
    with client_for(api_keys=frozenset({"k1"})) as client:
        request = {"q": "a b", "source": "de", "target": "en"}
        good = client.post("/translate", json=request, headers={"Authorization": "Bearer k1"})
        assert good.status_code == 200 and good.json() == {"translatedText": "b a"}
        assert client.post("/v1/translate", json={"q": "a"}, headers={"Authorization": "Bearer k1"}).status_code == 200
        # a wrong key fails before the body: even a malformed body gets 403, not 400
        bad = client.post("/translate", content=b"{not json", headers={"Authorization": "Bearer k2",
                                                                          "content-type": "application/json"})
        assert bad.status_code == 403 and bad.json()["field"] == "api_key"


def test_keys_are_compared_in_constant_time(monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    with client_for(api_keys=frozenset({"k1", "k2"})) as client:
        assert client.post("/v1/translate", json={"q": "a", "api_key": "k9"}).status_code == 403
    assert len(calls) == 2  # every key compared, none skipped by an early match


def test_the_keys_file_is_read_closed_and_refuses_a_key_that_looks_like_a_comment(tmp_path):
    import warnings

    from fairseq_g2lstm.serve.cli import read_api_keys

    keys = tmp_path / "keys.txt"
    keys.write_text("# clients\n\nalpha\n  beta  \n#\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # an unclosed file warns
        assert read_api_keys(str(keys)) == frozenset({"alpha", "beta"})
    keys.write_text("alpha\n#s3cret\n")
    with pytest.raises(ValueError, match="line 2"):
        read_api_keys(str(keys))


def test_libretranslate_parameters_in_the_query_string_with_no_body():
    with client_for() as client:
        answer = client.post("/translate", params={"q": "a b", "source": "de", "target": "en", "format": "text"})
        assert answer.status_code == 200 and answer.json() == {"translatedText": "b a"}
        # query string and form together, as LibreTranslate's request.values
        mixed = client.post("/translate?source=de", data={"q": "c d", "target": "en"})
        assert mixed.json() == {"translatedText": "d c"}
        long = client.post("/translate", params={"q": "a " * 1500, "source": "de", "target": "en"})
        assert long.status_code == 400 and long.json()["field"] == "q"


def test_a_batch_whose_run_returns_the_wrong_count_fails_its_requests_and_the_worker_goes_on():
    calls = []

    def short(key, payloads):
        calls.append(list(payloads))
        return [2 * p for p in payloads][: 1 if len(calls) == 1 else None]

    async def body(batcher):
        first = await asyncio.wait_for(asyncio.gather(batcher.submit("k", [1, 2], [1, 1]),
                                                      return_exceptions=True), 2)
        later = await asyncio.wait_for(batcher.submit("k", [5], [1]), 2)
        return first, later, batcher.healthy

    (first,), later, healthy = run(with_batcher(short, body, max_wait_s=0))
    assert first == [2, 4] and later == [10] and healthy  # the short batch was run again one by one
    assert calls == [[1, 2], [1], [2], [5]]


def test_the_worker_survives_an_error_outside_the_run():
    recorder = Recorder()

    async def body(batcher):
        real_take, failures = batcher._take, []

        def take_once_broken():
            if not failures:
                failures.append(1)
                raise RuntimeError("broken take")
            return real_take()

        batcher._take = take_once_broken
        first = await asyncio.wait_for(asyncio.gather(batcher.submit("k", [1], [1]), return_exceptions=True), 2)
        return first, await asyncio.wait_for(batcher.submit("k", [3], [1]), 2), batcher.healthy

    (first,), later, healthy = run(with_batcher(recorder, body, max_wait_s=0))
    assert isinstance(first, RuntimeError) and later == [6] and healthy


def test_health_is_503_when_a_batcher_worker_has_died():
    with client_for() as client:
        assert client.get("/health").status_code == 200
        batcher = next(iter(client.app.state.models.batchers.values()))
        batcher._worker.get_loop().call_soon_threadsafe(batcher._worker.cancel)  # the app's loop runs in a thread
        assert wait_until(lambda: batcher._worker.done())
        response = client.get("/health")
        assert response.status_code == 503 and response.json()["status"] != "ok"


def wait_until(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.01)
    return predicate()


def test_more_texts_than_the_queue_holds_is_a_4xx_not_a_retry():
    from fairseq_g2lstm.serve.batching import TooLarge

    async def body(batcher):
        with pytest.raises(TooLarge):
            await batcher.submit("k", [1, 2, 3, 4], [1] * 4)

    run(with_batcher(Recorder(), body, max_queue=3))
    with client_for(limits=Limits(max_queue=2)) as client:
        response = client.post("/translate", json={"q": ["a", "b", "c"], "source": "de", "target": "en"})
    assert response.status_code == 400 and "retry-after" not in response.headers and response.json()["field"] == "q"


def test_timed_out_sentences_stop_counting_against_the_queue():
    recorder = Recorder(delay=0.3)

    async def body(batcher):
        running = asyncio.ensure_future(batcher.submit("k", [1], [1]))
        await asyncio.sleep(0.05)  # the worker is busy for 0.3 s
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit("k", [2, 3], [1, 1]), 0.01)
        waiting = batcher.waiting
        accepted = await batcher.submit("k", [4, 5], [1, 1])  # would not fit beside the two given up
        return waiting, await running, accepted

    assert run(with_batcher(recorder, body, max_queue=2, max_wait_s=0)) == (0, [2], [8, 10])


def test_stop_does_not_block_the_event_loop():
    recorder = Recorder(delay=0.3)

    async def body():
        batcher = DynamicBatcher(recorder, max_wait_s=0)
        batcher.start()
        pending = asyncio.ensure_future(batcher.submit("k", [1], [1]))
        await asyncio.sleep(0.05)  # the batch is running in the worker thread
        ticks = []

        async def ticker():
            while True:
                ticks.append(1)
                await asyncio.sleep(0.01)

        ticking = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        before = len(ticks)
        await batcher.stop()
        during = len(ticks) - before
        ticking.cancel()
        pending.cancel()
        return during

    assert run(body()) >= 5  # the loop kept running while the thread finished its batch


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e9"])
def test_batch_wait_must_be_a_finite_bounded_number(value, capsys):
    from fairseq_g2lstm.serve.cli import build_parser

    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["DIR", "--batch-wait-ms", value])
    assert caught.value.code == 2 and "--batch-wait-ms" in capsys.readouterr().err
