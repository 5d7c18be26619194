"""Python use through fairseq's hub interface, with sentencepiece, as the README shows: the
session's reversal model with its sentencepiece model (served_model.py), loaded from its
training checkpoint and data-bin."""
import pytest

from conftest import USER_DIR, cli
from served_model import SENTENCES, served_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return served_model(tmp_path_factory)


def test_from_pretrained_translates_raw_text(model):
    from fairseq_g2lstm.models import G2LSTMModel

    checkpoint, data = model["checkpoint"], model["data"]
    spm_model = data / "spm.model"
    hub = G2LSTMModel.from_pretrained(
        str(checkpoint.parent), checkpoint_file=checkpoint.name, data_name_or_path=str(data),
        bpe="sentencepiece", sentencepiece_model=str(spm_model), beam=5)
    translations = hub.translate(SENTENCES)
    assert not hub.models[0].training
    # The hub decodes what fairseq-interactive decodes for the same raw text.
    proc = cli("fairseq-interactive", data, "--user-dir", USER_DIR, "--path", checkpoint,
               "--cpu", "--beam", "5", "--source-lang", "de", "--target-lang", "en", "--bpe", "sentencepiece",
               "--sentencepiece-model", spm_model, input="\n".join(SENTENCES) + "\n")
    interactive = [line.split("\t")[2] for line in proc.stdout.splitlines() if line.startswith("D-")]
    assert translations == interactive
    assert all("▁" not in t for t in translations)  # sentencepiece undone
    assert sum(t == " ".join(reversed(s.split())) for s, t in zip(SENTENCES, translations)) >= 3, translations

    hard = G2LSTMModel.from_pretrained(  # the README's override of --gate-eval on a trained model
        str(checkpoint.parent), checkpoint_file=checkpoint.name, data_name_or_path=str(data),
        bpe="sentencepiece", sentencepiece_model=str(spm_model), gate_eval="hard")
    model = hard.models[0]
    assert model.encoder.lstm.gate.eval_mode == model.decoder.layers.gate.eval_mode == "hard"
