"""g2lstm-export: the model folder, and loading it alone through the hub and fairseq-interactive."""
import json
import shutil

import pytest
import torch

from conftest import cli
from served_model import SENTENCES, interactive, served_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return served_model(tmp_path_factory)


def test_the_folder_holds_an_inference_checkpoint_the_vocabularies_and_checksums(model):
    from fairseq.data import Dictionary

    from g2lstm_runtime.folder import file_sha256

    folder = model["folder"]
    manifest = json.loads((folder / "model.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == [
        "MODEL.md", "dict.de.txt", "dict.en.txt", "model.json", "model.pt", "sentencepiece.bpe.model"]
    assert manifest["files"] == {name: file_sha256(folder / name) for name in manifest["files"]}
    assert set(manifest["files"]) == {p.name for p in folder.iterdir()} - {"model.json"}
    assert (folder / "sentencepiece.bpe.model").read_bytes() == (model["data"] / "spm.model").read_bytes()
    assert manifest["kind"] == "translation" and manifest["arch"] == "g2lstm"
    assert manifest["languages"] == {"source": "de", "target": "en"}
    assert manifest["vocabulary"] == {"source": len(Dictionary.load(str(folder / "dict.de.txt"))),
                                      "target": len(Dictionary.load(str(folder / "dict.en.txt")))}
    assert manifest["gates"]["mode"] == "gumbel" and manifest["bpe"] == {"name": "sentencepiece",
                                                                        "file": "sentencepiece.bpe.model"}
    assert manifest["training"]["updates"] == 150 and manifest["compression"] is None
    assert manifest["architecture"]["encoder_hidden_size"] == 64
    state = torch.load(folder / "model.pt", map_location="cpu")
    trained = torch.load(model["checkpoint"], map_location="cpu")
    assert state["last_optimizer_state"] is None and trained["last_optimizer_state"] is not None
    assert state["model"].keys() == trained["model"].keys()
    assert all(torch.equal(state["model"][k], trained["model"][k]) for k in trained["model"])
    assert state["cfg"]["model"].quantize == "none"
    card = (folder / "MODEL.md").read_text()
    assert "de -> en" in card and "fairseq-interactive THIS_FOLDER" in card


def test_from_pretrained_of_the_folder_translates_as_the_checkpoint_and_fairseq_interactive(model):
    from fairseq_g2lstm.models import G2LSTMModel

    hub = G2LSTMModel.from_pretrained(str(model["folder"]))  # nothing else: no data-bin, no flags
    from_checkpoint = G2LSTMModel.from_pretrained(
        str(model["checkpoint"].parent), checkpoint_file="checkpoint_last.pt", data_name_or_path=str(model["data"]),
        bpe="sentencepiece", sentencepiece_model=str(model["data"] / "spm.model"))
    translations = hub.translate(SENTENCES)
    assert translations == from_checkpoint.translate(SENTENCES)
    assert translations == interactive(model["folder"], SENTENCES)
    # the model has learned its task: most sentences come out reversed
    reversed_ok = sum(t == " ".join(reversed(s.split())) for s, t in zip(SENTENCES, translations))
    assert reversed_ok >= 3, translations


def test_an_existing_folder_is_replaced_only_with_force(model, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep").write_text("x")
    proc = cli("g2lstm-export", model["checkpoint"], "--data", model["data"], "--out", out, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("g2lstm-export: error:") and "--force" in proc.stderr
    assert (out / "keep").exists()
    cli("g2lstm-export", model["checkpoint"], "--data", model["data"], "--out", out, "--force",
        "--bleu", "99.9 (toy test)", "--notes", "reverses sentences", "--quantize", "int8")
    assert not (out / "keep").exists() and (out / "model.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging folder left behind
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["quantize"] == "int8" and manifest["bleu"] == "99.9 (toy test)"
    assert torch.load(out / "model.pt", map_location="cpu")["cfg"]["model"].quantize == "int8"
    card = (out / "MODEL.md").read_text()
    assert "BLEU: 99.9 (toy test)" in card and "- reverses sentences" in card
    # loading the folder quantizes (the model's --quantize, applied on load), with nothing passed
    from torchao.quantization import Int8Tensor

    from fairseq_g2lstm.models import G2LSTMModel

    def int8_linears(hub):
        return sum(isinstance(m.weight, Int8Tensor) for m in hub.models[0].modules() if isinstance(m, torch.nn.Linear))

    quantized = G2LSTMModel.from_pretrained(str(out))
    assert int8_linears(quantized) > 0 and int8_linears(G2LSTMModel.from_pretrained(str(model["folder"]))) == 0
    assert len(quantized.translate(SENTENCES)) == len(SENTENCES)


@pytest.mark.parametrize("args, message", [
    (["missing.pt"], "missing.pt: no such file"),
    (["CKPT", "--sentencepiece-model", "nope.model"], "--sentencepiece-model nope.model: no such file"),
    (["CKPT", "--source-lang", "fr"], "no dict.fr.txt"),
])
def test_bad_input_is_one_line_and_exit_2(model, tmp_path, args, message):
    args = [str(model["checkpoint"]) if a == "CKPT" else a for a in args]
    proc = cli("g2lstm-export", *args, "--data", model["data"], "--out", tmp_path / "out", check=False, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_changed_file_fails_verification(model, tmp_path):
    from fairseq_g2lstm.export import ModelFolderError, verify_folder

    copy = tmp_path / "copy"
    shutil.copytree(model["folder"], copy)
    assert verify_folder(copy)["languages"]["source"] == "de"
    with open(copy / "dict.en.txt", "a") as stream:
        stream.write("extra 1\n")
    with pytest.raises(ModelFolderError, match="dict.en.txt does not match its sha256"):
        verify_folder(copy)


def test_packed_compressed_and_averaged_checkpoints_export(model, tmp_path):
    from fairseq_g2lstm.checkpoints import save_checkpoint
    from fairseq_g2lstm.checkpoints.average import average_checkpoints
    from fairseq_g2lstm.compress.apply import compress_checkpoint
    from fairseq_g2lstm.compress.methods import CompressionConfig
    from fairseq_g2lstm.models import G2LSTMModel

    packed = tmp_path / "packed.pt"
    summary = compress_checkpoint(model["checkpoint"], packed, CompressionConfig(method="round-clip", step=0.5, clip=1.0),
                                  pack=True)
    cli("g2lstm-export", packed, "--data", model["data"], "--out", tmp_path / "packed")
    manifest = json.loads((tmp_path / "packed" / "model.json").read_text())
    assert manifest["compression"] == summary.signature
    assert any(".g2pack." in key for key in torch.load(tmp_path / "packed" / "model.pt")["model"])  # stays packed
    from_folder = G2LSTMModel.from_pretrained(str(tmp_path / "packed")).translate(SENTENCES)
    from_checkpoint = G2LSTMModel.from_pretrained(
        str(tmp_path), checkpoint_file="packed.pt", data_name_or_path=str(model["data"]),
        bpe="sentencepiece", sentencepiece_model=str(model["data"] / "spm.model")).translate(SENTENCES)
    assert from_folder == from_checkpoint

    averaged = tmp_path / "avg.pt"
    save_checkpoint(average_checkpoints([model["checkpoint"], model["checkpoint"]]), averaged)
    cli("g2lstm-export", averaged, "--data", model["data"], "--out", tmp_path / "avg")
    assert json.loads((tmp_path / "avg" / "model.json").read_text())["averaged_from"] == [str(model["checkpoint"])] * 2
    assert G2LSTMModel.from_pretrained(str(tmp_path / "avg")).translate(SENTENCES) == \
        G2LSTMModel.from_pretrained(str(model["folder"])).translate(SENTENCES)


def test_a_language_model_folder_samples_through_its_hub(tmp_path):
    from lm_fixtures import prepare_ptb, train_lm

    from fairseq_g2lstm.models import G2LSTMLanguageModel

    data = prepare_ptb(tmp_path)
    train_lm(data, tmp_path / "ckpt", updates=20)
    cli("g2lstm-export", tmp_path / "ckpt" / "checkpoint_last.pt", "--data", data, "--out", tmp_path / "lm")
    manifest = json.loads((tmp_path / "lm" / "model.json").read_text())
    assert manifest["kind"] == "language_model" and manifest["bpe"] is None and manifest["languages"] == {}
    assert sorted(manifest["files"]) == ["MODEL.md", "dict.txt", "model.pt"]
    hub = G2LSTMLanguageModel.from_pretrained(str(tmp_path / "lm"))
    reference = G2LSTMLanguageModel.from_pretrained(str(tmp_path / "ckpt"), checkpoint_file="checkpoint_last.pt",
                                                    data_name_or_path=str(data))
    prompt = "the company said"
    assert hub.sample(prompt, beam=1, max_len_b=5) == reference.sample(prompt, beam=1, max_len_b=5)
    assert hub.sample(prompt, beam=1, max_len_b=5).startswith(prompt)


@pytest.mark.parametrize("where", ["data", "inside data", "checkpoints", "holds checkpoints", "the checkpoint"])
def test_out_may_not_be_or_hold_an_input_nor_sit_inside_the_data(model, tmp_path, where):
    data, checkpoints = tmp_path / "bin", tmp_path / "run" / "ckpt"
    shutil.copytree(model["data"], data)
    checkpoints.mkdir(parents=True)
    shutil.copyfile(model["checkpoint"], checkpoints / "checkpoint_last.pt")
    out = {"data": data, "inside data": data / "model", "checkpoints": checkpoints,
           "holds checkpoints": tmp_path / "run", "the checkpoint": checkpoints / "checkpoint_last.pt"}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = cli("g2lstm-export", checkpoints / "checkpoint_last.pt", "--data", data, "--out", out, "--force",
               check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--out" in proc.stderr, proc.stderr
    assert proc.stderr.startswith("g2lstm-export: error:") and "elsewhere" in proc.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing deleted


def test_a_folder_with_bpe_codes_records_its_tokenizer(model, tmp_path):
    from fairseq_g2lstm.export.folder import hub_overrides, interactive_command
    from g2lstm_runtime.text import TextPreparation

    codes = tmp_path / "codes"
    codes.write_text("w 1</w>\n")
    cli("g2lstm-export", model["checkpoint"], "--data", model["data"], "--out", tmp_path / "m", "--bpe-codes", codes,
        "--tokenizer", "moses")
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    assert manifest["tokenizer"] == "moses" and manifest["bpe"]["name"] == "subword_nmt"
    assert hub_overrides(tmp_path / "m", manifest)["tokenizer"] == "moses"
    assert "--tokenizer moses" in " ".join(interactive_command("DIR", manifest))
    assert TextPreparation.from_manifest(manifest) == TextPreparation(lowercase=False, tokenizer="moses",
                                                                      bpe="subword_nmt")
    plain = json.loads((model["folder"] / "model.json").read_text())
    assert plain["tokenizer"] is None and "tokenizer" not in hub_overrides(model["folder"], plain)
