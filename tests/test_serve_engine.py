"""The server on both engines: ``--engine onnx`` answers as ``--engine torch`` does (texts,
n-best, tokens, scores, truncation, gates) through both APIs, ``/v1/models`` names the
engine, onnx is the default where the folder has graphs, and ``--engine onnx`` on a folder
without them is refused in one line."""
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from conftest import REPO
from served_model import SENTENCES, running_server, served_model, served_model_with_graphs

pytest.importorskip("onnxruntime")

# a padded batch of different lengths, and text that the folder's preparation must clean
TEXTS = SENTENCES + ["  w1\u00a0 w2\tw3  ", "w8"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The served test model: its plain folder, and a copy with ONNX graphs (g2lstm-export --onnx DIR)."""
    return {"plain": served_model(tmp_path_factory)["folder"], "graphs": served_model_with_graphs(tmp_path_factory)}


@pytest.fixture(scope="module")
def translators(model):
    from fairseq_g2lstm.serve.translator import Translator

    return {engine: Translator(model["graphs"], engine=engine, threads=1) for engine in ("onnx", "torch")}


def client_for(*translators):
    from fairseq_g2lstm.serve.app import create_app

    return TestClient(create_app(list(translators)), raise_server_exceptions=False)


def answers(translator, path, body):
    with client_for(translator) as client:
        response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def assert_same_hypotheses(onnx, torch):
    assert len(onnx) == len(torch)
    for mine, theirs in zip(onnx, torch):
        assert mine["text"] == theirs["text"] and mine["truncated"] == theirs["truncated"]
        assert [h["text"] for h in mine["hypotheses"]] == [h["text"] for h in theirs["hypotheses"]]
        assert [h["tokens"] for h in mine["hypotheses"]] == [h["tokens"] for h in theirs["hypotheses"]]
        assert [h["score"] for h in mine["hypotheses"]] == pytest.approx([h["score"] for h in theirs["hypotheses"]],
                                                                         abs=1e-4)


def test_both_engines_encode_alike(translators):
    for text in TEXTS:
        assert list(translators["onnx"].encode(text)) == translators["torch"].encode(text).tolist()


@pytest.mark.parametrize("beam, nbest", [(5, 1), (4, 4), (1, 1)])
def test_the_onnx_engine_answers_v1_as_the_torch_engine(translators, beam, nbest):
    body = {"q": TEXTS, "beam": beam, "nbest": nbest}
    onnx, torch = (answers(translators[e], "/v1/translate", body)["translations"] for e in ("onnx", "torch"))
    assert_same_hypotheses(onnx, torch)
    assert all(len(t["hypotheses"]) == nbest for t in onnx)
    reversed_ = [" ".join(reversed(s.split())) for s in SENTENCES]
    assert sum(t["text"] == r for t, r in zip(onnx, reversed_)) >= 3  # real translations, not two empty ones


def test_the_onnx_engine_answers_libretranslate_as_the_torch_engine(translators):
    body = {"q": TEXTS, "source": "de", "target": "en", "alternatives": 2}
    onnx, torch = (answers(translators[e], "/translate", body) for e in ("onnx", "torch"))
    assert onnx == torch and len(onnx["translatedText"]) == len(TEXTS)
    assert all(len(alternatives) == 2 for alternatives in onnx["alternatives"])


@pytest.mark.parametrize("hard_gates", [False, True])
def test_gates_on_the_onnx_engine_come_from_torch(translators, hard_gates):
    body = {"q": SENTENCES[2], "gates": True, "hard_gates": hard_gates}
    onnx, torch = (answers(translators[e], "/v1/translate", body)["translations"] for e in ("onnx", "torch"))
    assert_same_hypotheses(onnx, torch)
    gates = onnx[0]["gates"]
    assert gates == torch[0]["gates"]
    assert gates["target"]["predicts"] == onnx[0]["hypotheses"][0]["tokens"]
    assert len(gates["target"]["layers"]["decoder.0"]["input"]) == len(onnx[0]["hypotheses"][0]["tokens"])


def test_truncation_is_marked_on_both_engines(model):
    from fairseq_g2lstm.serve.translator import Translator

    sentence = SENTENCES[-1]  # 6 words: its reversal has 6 pieces
    cut = {}
    for engine in ("onnx", "torch"):
        short = Translator(model["graphs"], engine=engine, max_len_a=0.5, max_len_b=1, threads=1)
        assert short.output_bound(7) == 4  # int(0.5 * 7 + 1): 6 pieces and eos
        cut[engine] = answers(short, "/v1/translate", {"q": [sentence, "w1"], "nbest": 2})["translations"]
    assert_same_hypotheses(cut["onnx"], cut["torch"])
    long, short = cut["onnx"]
    assert long["truncated"] is True and len(long["hypotheses"][0]["tokens"]) == 5  # 4 and the forced </s>
    assert short["truncated"] is False


def test_v1_models_names_the_engine_and_onnx_is_the_default_with_graphs(model):
    with running_server(model["graphs"], model["plain"], "--threads", "1") as server, server.client() as client:
        described = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
        translated = client.post("/v1/translate", json={"q": SENTENCES[0], "model": "reverse-de-en"}).json()
    assert described["reverse-de-en"]["engine"] == "onnx" and described["reverse-de-en"]["engine_precision"] == "none"
    assert described["reverse-de-en-2"]["engine"] == "torch" and described["reverse-de-en-2"]["engine_precision"] is None
    assert "reverse-de-en (de->en, onnx)" in server.log and "reverse-de-en-2 (de->en, torch)" in server.log
    assert translated["translations"][0]["text"] == " ".join(reversed(SENTENCES[0].split()))


def test_engine_onnx_on_a_folder_without_graphs_is_one_line_at_start(model):
    proc = subprocess.run([sys.executable, "-m", "fairseq_g2lstm.serve.cli", str(model["plain"]), "--engine", "onnx",
                           "--port", "0"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("g2lstm-serve: error: ") and "no ONNX graphs for --engine onnx" in proc.stderr
    assert "g2lstm-export --onnx" in proc.stderr


def test_generation_settings_only_fairseq_has_are_refused_on_onnx(model, translators):
    from omegaconf import OmegaConf

    from fairseq_g2lstm.serve.translator import OnnxSearch
    from g2lstm_runtime.folder import ModelFolderError

    settings = OmegaConf.to_container(translators["torch"].hub.cfg.generation)
    OnnxSearch(model["graphs"], OmegaConf.create(settings), 1024, 1.5, 10, 1)  # the folder's own: served
    with pytest.raises(ModelFolderError, match=r"\(no_repeat_ngram_size\) are fairseq's only"):
        OnnxSearch(model["graphs"], OmegaConf.create({**settings, "no_repeat_ngram_size": 2}), 1024, 1.5, 10, 1)
