"""The served model in-process (the Translator over the tiny model folder, behind the
app): the output bound, the text preparation of model.json on every path, the hard-gates
model loaded once, and the gates the page draws."""
import json
import logging
import shutil

import pytest
from fastapi.testclient import TestClient

from served_model import SENTENCES, interactive, served_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return served_model(tmp_path_factory)


@pytest.fixture(scope="module")
def translator(model):
    from fairseq_g2lstm.serve.translator import Translator

    return Translator(model["folder"])


@pytest.fixture(scope="module")
def lowercased(model, tmp_path_factory):
    """The same model folder, its model.json saying that the training text was lowercased
    (as the IWSLT14 recipe's is); model.json carries no checksum of itself."""
    folder = tmp_path_factory.mktemp("lower") / "lower-de-en"
    shutil.copytree(model["folder"], folder)
    manifest = json.loads((folder / "model.json").read_text())
    manifest["data"]["lowercase"] = True
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder


def client_for(*translators):
    from fairseq_g2lstm.serve.app import create_app

    return TestClient(create_app(list(translators)), raise_server_exceptions=False)


def test_a_translation_cut_at_the_output_bound_is_marked_and_logged(model, translator, caplog):
    from fairseq_g2lstm.serve.translator import Translator

    short = Translator(model["folder"], "short", max_len_a=0, max_len_b=3)
    sentence = SENTENCES[-1]  # 6 words: its reversal has 6 pieces
    with caplog.at_level(logging.WARNING), client_for(translator, short) as client:
        full = client.post("/v1/translate", json={"q": sentence, "model": translator.id}).json()["translations"][0]
        cut = client.post("/v1/translate", json={"q": sentence, "model": "short"}).json()["translations"][0]
    assert full["truncated"] is False and full["text"] == interactive(model["folder"], [sentence])[0]
    assert cut["truncated"] is True and len(cut["hypotheses"][0]["tokens"]) == 4  # 3 and the forced </s>
    assert full["text"].startswith(cut["text"])
    assert any("cut at 3 tokens" in record.getMessage() for record in caplog.records)
    assert sentence not in caplog.text


def test_the_default_output_bound_grows_with_the_source(translator):
    generator = translator.engine.generator(5)
    assert translator.output_bound(10) == 25 == min(int(generator.max_len_a * 10 + generator.max_len_b),
                                                    generator.max_len - 1)
    assert translator.output_bound(400) >= 1.5 * 400  # fairseq-interactive's default stops at 200


def test_a_400_piece_paragraph_is_not_cut_at_200(model):
    """The tiny model ends its translations after about 10 words; with its end-of-sentence
    logit pushed down it never ends by itself, so the output shows the bound it ran to."""
    import torch

    from fairseq_g2lstm.serve.translator import GenerationKey, Translator

    endless = Translator(model["folder"])
    decoder, eos = endless.hub.models[0].decoder, endless.hub.tgt_dict.eos()
    output_layer = decoder.output_layer

    def never_eos(x):  # [B,T,V]
        return output_layer(x).index_fill(-1, torch.tensor([eos]), -1e4)

    decoder.output_layer = never_eos
    paragraph = " ".join(f"w{k % 10}" for k in range(400))
    source = endless.encode(paragraph)
    assert len(source) == 401
    result, = endless.run_batch(GenerationKey(beam=1, nbest=1), [source])
    best = result.hypotheses[0]
    assert best.truncated and len(best.tokens) == int(1.5 * 401 + 10) + 1  # the bound, then the forced </s>
    short, = endless.run_batch(GenerationKey(beam=1, nbest=1), [endless.encode("w1 w2")])
    assert short.hypotheses[0].truncated and len(short.hypotheses[0].tokens) == int(1.5 * 3 + 10) + 1


def test_a_lowercased_model_reads_cased_input_as_its_data_on_every_path(model, lowercased):
    from fairseq_g2lstm.models import G2LSTMModel
    from fairseq_g2lstm.serve.translator import Translator

    cased, lower = "W1 W2\tW7  W3\x00", "w1 w2 w7 w3"
    hub = G2LSTMModel.from_pretrained(str(lowercased))
    assert hub.translate(cased) == hub.translate(lower) == interactive(model["folder"], [lower])[0]
    raw = hub.binarize(hub.apply_bpe(hub.tokenize(cased)))  # what the model saw before: unknown pieces
    assert raw.tolist() != hub.encode(cased).tolist() and hub.src_dict.unk() in raw.tolist()
    assert hub.encode(cased).tolist() == hub.encode(lower).tolist()
    served = Translator(lowercased)
    assert served.describe()["text_preparation"]["lowercase"] is True
    with client_for(served) as client:
        for text in (cased, lower):
            libre = client.post("/translate", json={"q": text, "source": "de", "target": "en"}).json()
            form = client.post("/translate", params={"q": text, "source": "de", "target": "en"}).json()
            ours = client.post("/v1/translate", json={"q": text}).json()["translations"][0]["text"]
            assert libre["translatedText"] == form["translatedText"] == ours == hub.translate(lower)


def test_control_characters_and_spacing_are_normalised_for_any_model(translator):
    assert translator.encode("w1\u00a0 w2\r\nw3\x1c").tolist() == translator.encode("w1 w2 w3").tolist()


def test_the_hard_gates_model_is_loaded_once_with_the_same_weights(model, monkeypatch):
    from fairseq_g2lstm.serve import translator as module
    from fairseq_g2lstm.serve.translator import GenerationKey, Translator

    loads = []
    real = module.hub_from_folder
    monkeypatch.setattr(module, "hub_from_folder", lambda *a, **k: loads.append(k) or real(*a, **k))
    served = Translator(model["folder"])
    assert len(loads) == 2  # at start, not in the worker thread on the first hard request
    sources = [served.encode(s) for s in SENTENCES]
    hard = served.run_batch(GenerationKey(5, 1, hard_gates=True), sources)
    assert len(loads) == 2
    soft_model, hard_model = served.hub_for(False).models[0], served.hub_for(True).models[0]
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(soft_model.parameters(), hard_model.parameters()))
    from fairseq_g2lstm.models import G2LSTMModel

    assert [r.hypotheses[0].text for r in hard] == G2LSTMModel.from_pretrained(
        str(model["folder"]), gate_eval="hard").translate(SENTENCES)


def test_the_page_gets_per_token_saturation_and_the_units(translator):
    from fairseq_g2lstm.rnn.gate_tallies import HIGH, LOW

    with client_for(translator) as client:
        answer = client.post("/v1/translate", json={"q": SENTENCES[2], "gates": True}).json()
    layer = answer["translations"][0]["gates"]["target"]["layers"]["decoder.0"]
    steps = len(layer["input"])
    for gate in ("input", "forget"):
        units = layer[f"{gate}_units"]  # [U][T]
        assert len(units) == 64 and all(len(row) == steps for row in units)  # H 64: every unit
        assert sorted(layer[f"{gate}_unit_ids"]) == list(range(64))
        means = [sum(row) / steps for row in units]
        assert means == sorted(means)
        for t in range(steps):
            column = [row[t] for row in units]
            assert layer[f"{gate}_below"][t] == pytest.approx(sum(v < LOW for v in column) / 64, abs=1 / 64)
            assert layer[f"{gate}_above"][t] == pytest.approx(sum(v > HIGH for v in column) / 64, abs=1 / 64)
            assert layer[gate][t] == pytest.approx(sum(column) / 64, abs=1e-3)
