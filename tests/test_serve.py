"""g2lstm-serve in a subprocess on a free loopback port, with a real (tiny) model: the same
translations as fairseq-interactive through both APIs and a LibreTranslate client, the
gates of the gate tools, load from 32 concurrent clients, overload answers and draining
on SIGTERM."""
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import cli
from served_model import SENTENCES, interactive, running_server, served_model, start_server, wait_for

MORE = ["w3 w3 w1", "w0 w9 w8 w7 w6", "w6 w2", "w1 w1 w1 w2", "w8 w4 w2 w0", "w7 w5 w3 w1 w9 w0"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    built = served_model(tmp_path_factory)
    second = tmp_path_factory.mktemp("second") / "second-de-en"
    shutil.copytree(built["folder"], second)
    expected = dict(zip(SENTENCES + MORE, interactive(built["folder"], SENTENCES + MORE)))
    return {**built, "second": second, "expected": expected}


@pytest.fixture(scope="module")
def server(model):
    with running_server(model["folder"], model["second"], "--batch-wait-ms", "10") as running:
        yield running


def test_translations_equal_fairseq_interactive_through_both_apis(model, server):
    expected = [model["expected"][s] for s in SENTENCES]
    with server.client() as client:
        libre = client.post("/translate", json={"q": SENTENCES, "source": "de", "target": "en"})
        assert libre.status_code == 200 and libre.json() == {"translatedText": expected}
        for sentence, translation in zip(SENTENCES, expected):
            one = client.post("/translate", data={"q": sentence, "source": "de", "target": "en"})
            assert one.json() == {"translatedText": translation}
        ours = client.post("/v1/translate", json={"q": SENTENCES, "model": "reverse-de-en", "beam": 5}).json()
        assert [t["text"] for t in ours["translations"]] == expected
        beam2 = client.post("/v1/translate", json={"q": SENTENCES, "model": "second-de-en", "beam": 2}).json()
        assert [t["text"] for t in beam2["translations"]] == interactive(model["folder"], SENTENCES, beam=2)


def test_a_libretranslate_client_works_unchanged(model, server):
    libretranslatepy = pytest.importorskip("libretranslatepy", reason="the LibreTranslate Python client "
                                                                      "(pip install libretranslatepy) is not installed")
    client = libretranslatepy.LibreTranslateAPI(server.url + "/")
    assert client.languages() == [{"code": "de", "name": "German", "targets": ["en"]}]
    for sentence in SENTENCES[:3]:
        assert client.translate(sentence, source="de", target="en") == model["expected"][sentence]


def test_deep_translators_libretranslate_client_works_unchanged(model, server):
    """deep-translator's LibreTranslator POSTs its fields in the query string, with no body."""
    from deep_translator import LibreTranslator

    client = LibreTranslator(source="de", target="en", api_key="unused", custom_url=server.url + "/")
    for sentence in SENTENCES[:3]:
        assert client.translate(sentence) == model["expected"][sentence]


def test_nbest_scores_and_alternatives(model, server):
    sentence = SENTENCES[1]
    with server.client() as client:
        ours = client.post("/v1/translate", json={"q": sentence, "beam": 4, "nbest": 3}).json()
        libre = client.post("/translate", json={"q": sentence, "source": "de", "target": "en", "alternatives": 2,
                                                "format": "text"}).json()
    # /v1 without a model or a pair: the server's first model
    assert ours["model"] == "reverse-de-en"
    hypotheses = ours["translations"][0]["hypotheses"]
    assert len(hypotheses) == 3 and len({h["text"] for h in hypotheses}) == 3
    assert [h["score"] for h in hypotheses] == sorted((h["score"] for h in hypotheses), reverse=True)
    assert hypotheses[0]["text"] == model["expected"][sentence] == libre["translatedText"]
    assert hypotheses[0]["tokens"][-1] == "</s>"
    assert len(libre["alternatives"]) == 2 and all(isinstance(a, str) for a in libre["alternatives"])


def test_gates_are_the_gate_tools_per_token_view(model, server):
    from fairseq_g2lstm.gate_stats.collect import load_g2lstm, token_gates

    sentence = SENTENCES[2]
    with server.client() as client:
        answer = client.post("/v1/translate", json={"q": sentence, "gates": True, "gate_layer": 0}).json()
    gates = answer["translations"][0]["gates"]
    folder = model["folder"]
    loaded = load_g2lstm(folder / "model.pt", folder, overrides={
        "bpe": "sentencepiece", "sentencepiece_model": str(folder / "sentencepiece.bpe.model"),
        "source_lang": "de", "target_lang": "en"})
    reference = token_gates(loaded, sentence, layer="decoder.0", beam=5)  # what g2lstm-gates --heatmap draws
    target = gates["target"]
    assert target["reads"] == reference["steps"]["reads"] and target["predicts"] == reference["steps"]["predicts"]
    for gate in ("input", "forget"):
        assert target["layers"]["decoder.0"][gate] == pytest.approx(reference["steps"][gate], abs=1e-6)
    source = gates["source"]
    assert source["tokens"] == ["▁" + w for w in sentence.split()] + ["</s>"]
    assert sorted(source["layers"]) == ["encoder.0", "encoder.0.reverse"]  # the first layer is bidirectional
    for values in source["layers"].values():
        assert len(values["input"]) == len(values["forget"]) == len(source["tokens"])
        assert all(0 < v < 1 for v in values["input"] + values["forget"])


def test_hard_gates_translate_as_the_hub_with_gate_eval_hard(model, server):
    from fairseq_g2lstm.models import G2LSTMModel

    hard = G2LSTMModel.from_pretrained(str(model["folder"]), gate_eval="hard")
    with server.client() as client:
        answer = client.post("/v1/translate", json={"q": SENTENCES, "hard_gates": True}).json()
    assert answer["hard_gates"] is True
    assert [t["text"] for t in answer["translations"]] == hard.translate(SENTENCES)


def test_models_are_listed_with_their_ids(server):
    with server.client() as client:
        models = client.get("/v1/models").json()["models"]
    assert [(m["id"], m["source"], m["target"], m["default_for_pair"]) for m in models] == [
        ("reverse-de-en", "de", "en", True), ("second-de-en", "de", "en", False)]
    assert models[0]["layers"] == 1 and models[0]["gates"]["mode"] == "gumbel"


def test_32_concurrent_clients_lose_nothing_and_get_the_right_answers(model, server):
    sentences = SENTENCES + MORE
    with server.client() as client:
        before = {m["id"]: m["sentences_run"] for m in client.get("/v1/models").json()["models"]}

    def one_client(k):
        answers = []
        with server.client() as client:
            for r in range(4):
                sentence = sentences[(k + r) % len(sentences)]
                if (k + r) % 2:
                    response = client.post("/translate", json={"q": sentence, "source": "de", "target": "en"})
                    answers.append((sentence, response.status_code, response.json().get("translatedText")))
                else:
                    response = client.post("/v1/translate", json={"q": [sentence], "model": "reverse-de-en"})
                    answers.append((sentence, response.status_code, response.json()["translations"][0]["text"]))
        return answers

    with ThreadPoolExecutor(32) as pool:
        answers = [a for client_answers in pool.map(one_client, range(32)) for a in client_answers]
    assert len(answers) == 128
    assert [status for _, status, _ in answers] == [200] * 128
    assert all(text == model["expected"][sentence] for sentence, _, text in answers)
    with server.client() as client:
        assert client.get("/health").json()["status"] == "ok"
        after = client.get("/v1/models").json()["models"][0]
    assert after["sentences_run"] - before["reverse-de-en"] == 128  # every sentence went through the model once
    assert after["batches_run"] < after["sentences_run"]  # and they were batched
    assert server.proc.poll() is None


def test_one_log_line_per_request_without_the_text(server):
    secret = "w0 w0 w9 w9 w0 w0"
    with server.client() as client:
        client.post("/translate", json={"q": secret, "source": "de", "target": "en"})
        client.post("/translate", json={"q": "", "source": "de", "target": "en"})
    time.sleep(0.2)
    lines = [line for line in server.lines if "| fairseq_g2lstm.serve |" in line and "POST /translate" in line]
    assert lines[-2].endswith(" sentences=1 tokens=7") and " 200 " in lines[-2] and " ms " in lines[-2]
    assert " 400 " in lines[-1] and lines[-1].endswith("sentences=0 tokens=0")
    assert secret not in server.log


def test_a_full_queue_is_503_with_retry_after_and_a_slow_request_times_out(model):
    with running_server(model["folder"], "--max-queue", "2", "--batch-wait-ms", "1500",
                        "--request-timeout", "0.5") as server:
        with server.client() as client:
            def slow():
                return client.post("/translate", json={"q": ["w1 w2", "w3 w4"], "source": "de", "target": "en"})

            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(slow)
                time.sleep(0.2)  # its two sentences fill the queue for 1.5 s
                full = client.post("/translate", json={"q": "w5 w6", "source": "de", "target": "en"})
                timed_out = waiting.result()
            assert full.status_code == 503 and full.headers["retry-after"] == "1" and "queue" in full.json()["error"]
            assert timed_out.status_code == 503 and "not translated within 0.5 s" in timed_out.json()["error"]
            assert client.get("/health").status_code == 200


def test_a_sentence_longer_than_the_token_budget_still_goes_alone(model):
    sentence = SENTENCES[-1]  # 7 tokens with </s>
    with running_server(model["folder"], "--max-batch-tokens", "4") as server, server.client() as client:
        answer = client.post("/translate", json={"q": [sentence, SENTENCES[0]], "source": "de", "target": "en"})
    assert answer.status_code == 200
    assert answer.json() == {"translatedText": [model["expected"][sentence], model["expected"][SENTENCES[0]]]}


def test_sigterm_drains_the_requests_in_flight(model):
    server = start_server(model["folder"], "--batch-wait-ms", "3000")
    results = []

    def request(sentence):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            response = client.post("/translate", json={"q": sentence, "source": "de", "target": "en"})
            results.append((sentence, response.status_code, response.json()))

    threads = [threading.Thread(target=request, args=(s,)) for s in SENTENCES]
    for thread in threads:
        thread.start()
    with server.client() as client:  # until all are waiting in the batcher
        assert wait_for(lambda: client.get("/health").json()["waiting"] == len(SENTENCES))
    # uvicorn finishes them, then ends the process by the signal it caught (status -SIGTERM)
    assert server.stop() == -signal.SIGTERM
    assert "Waiting for connections to close" in server.log
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted((s, 200, {"translatedText": model["expected"][s]}) for s in SENTENCES)


def test_bad_folders_and_flags_are_one_line_and_exit_2(tmp_path, model):
    for args, message in [([tmp_path], "not a model folder"),
                          ([model["folder"], "--api-keys", tmp_path / "none.txt"], "--api-keys"),
                          ([model["folder"], "--beam", "20"], "above --max-beam")]:
        proc = cli("g2lstm-serve", *args, "--port", "0", check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("g2lstm-serve: error:")


def test_api_keys_from_a_file(model, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# clients\nalpha\n\nbeta\n")
    with running_server(model["folder"], "--api-keys", keys) as server, server.client() as client:
        request = {"q": SENTENCES[0], "source": "de", "target": "en"}
        assert client.post("/translate", json=request).status_code == 403
        assert client.post("/translate", json={**request, "api_key": "gamma"}).status_code == 403
        assert client.post("/translate", json={**request, "api_key": "beta"}).json() == {
            "translatedText": model["expected"][SENTENCES[0]]}
