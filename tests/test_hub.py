"""Python use through fairseq's hub interface, with sentencepiece, as the README shows."""
import sentencepiece as spm

from conftest import TINY_DIMS, USER_DIR, cli, write_toy_corpus


def test_from_pretrained_translates_raw_text(tmp_path):
    write_toy_corpus(tmp_path)
    spm.SentencePieceTrainer.train(
        input=[str(tmp_path / "train.de"), str(tmp_path / "train.en")], model_prefix=str(tmp_path / "spm"),
        vocab_size=80, hard_vocab_limit=False, model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spm.model"))
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            lines = (tmp_path / f"{split}.{lang}").read_text().splitlines()
            (tmp_path / f"{split}.spm.{lang}").write_text("\n".join(" ".join(sp.encode(x, out_type=str)) for x in lines) + "\n")
    cli("fairseq-preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref", tmp_path / "train.spm",
        "--validpref", tmp_path / "valid.spm", "--destdir", tmp_path / "bin", "--joined-dictionary", "--workers", "1")
    cli("fairseq-train", tmp_path / "bin", "--user-dir", USER_DIR, "--arch", "g2lstm_iwslt", *TINY_DIMS,
        "--max-update", "20", "--max-tokens", "800", "--optimizer", "adam", "--lr", "0.01", "--cpu",
        "--save-dir", tmp_path / "ckpt", "--no-epoch-checkpoints")

    from fairseq_g2lstm.models import G2LSTMModel

    hub = G2LSTMModel.from_pretrained(
        str(tmp_path / "ckpt"), checkpoint_file="checkpoint_last.pt", data_name_or_path=str(tmp_path / "bin"),
        bpe="sentencepiece", sentencepiece_model=str(tmp_path / "spm.model"), beam=5)
    sentences = ["w1 w2 w3", "w4 w5", "w7 w1 w9 w2"]
    translations = hub.translate(sentences)
    assert not hub.models[0].training
    # The hub decodes what fairseq-interactive decodes for the same raw text.
    proc = cli("fairseq-interactive", tmp_path / "bin", "--user-dir", USER_DIR,
               "--path", tmp_path / "ckpt/checkpoint_last.pt",
               "--cpu", "--beam", "5", "--source-lang", "de", "--target-lang", "en", "--bpe", "sentencepiece",
               "--sentencepiece-model", tmp_path / "spm.model", input="\n".join(sentences) + "\n")
    interactive = [line.split("\t")[2] for line in proc.stdout.splitlines() if line.startswith("D-")]
    assert translations == interactive
    assert all("▁" not in t for t in translations)  # sentencepiece undone

    hard = G2LSTMModel.from_pretrained(  # the README's override of --gate-eval on a trained model
        str(tmp_path / "ckpt"), checkpoint_file="checkpoint_last.pt", data_name_or_path=str(tmp_path / "bin"),
        bpe="sentencepiece", sentencepiece_model=str(tmp_path / "spm.model"), gate_eval="hard")
    model = hard.models[0]
    assert model.encoder.lstm.gate.eval_mode == model.decoder.layers.gate.eval_mode == "hard"
