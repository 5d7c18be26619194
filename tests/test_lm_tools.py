"""The plugin's tools on a language-model checkpoint: g2lstm-compress (which gate blocks),
the compression sweep (perplexity through fairseq-eval-lm) and g2lstm-gates (teacher-forced
over a language_modeling split, per-token view of a text)."""
import json
import re

import pytest
import torch

from conftest import USER_DIR, cli

import fairseq_g2lstm  # noqa: F401  (registers the models; lets torch.load read fairseq checkpoints)
from fairseq_g2lstm.checkpoints.io import load_checkpoint
from fairseq_g2lstm.compress.apply import compress_checkpoint
from fairseq_g2lstm.compress.blocks import find_gate_blocks
from fairseq_g2lstm.compress.methods import CompressionConfig
from fairseq_g2lstm.compress.sweep import main as sweep_main
from fairseq_g2lstm.gate_stats import cli as gates_cli
from fairseq_g2lstm.gate_stats import collect
from fairseq_g2lstm.gates import gate_slice

HIDDEN, LAYERS = 24, 2  # lm_fixtures.LM_DIMS


@pytest.fixture
def lm(trained_lm):
    """(data-bin, checkpoint) of a tiny g2lstm_lm trained 200 updates on the PTB-format corpus."""
    data, _, checkpoint, _ = trained_lm
    return data, checkpoint


@pytest.mark.parametrize("scope, kinds", [("recurrent", ["hh"]), ("all", ["ih", "hh"])])
def test_compression_takes_the_input_and_forget_rows_of_the_lstm_weights(lm, scope, kinds):
    state = load_checkpoint(lm[1])["model"]
    found = [(b.param, b.gate, b.kind, b.rows, b.cols) for b in find_gate_blocks(state, scope)]
    expected = []
    for layer in range(LAYERS):
        for kind in kinds:
            name = f"decoder.lstm.weight_{kind}_l{layer}"
            for gate in ("i", "f"):
                expected.append((name, gate, {"ih": "input", "hh": "recurrent"}[kind], gate_slice(gate, HIDDEN),
                                 slice(0, state[name].shape[1])))
    assert sorted(found, key=str) == sorted(expected, key=str)


def test_packed_compressed_lm_loads_in_eval_lm_with_the_compressed_weights(lm, tmp_path):
    data, checkpoint = lm
    config = CompressionConfig("round-clip", step=0.05, clip=0.2, scope="all")
    summary = compress_checkpoint(checkpoint, tmp_path / "packed.pt", config, pack=True)
    compress_checkpoint(checkpoint, tmp_path / "float.pt", config)
    assert summary.packed and len(summary.blocks) == 2 * 2 * LAYERS
    from fairseq import checkpoint_utils

    (packed,), _, _ = checkpoint_utils.load_model_ensemble_and_task([str(tmp_path / "packed.pt")])
    plain = load_checkpoint(tmp_path / "float.pt")["model"]
    for name, value in packed.state_dict().items():
        assert torch.equal(value, plain[name]), name
    proc = cli("fairseq-eval-lm", data, "--user-dir", USER_DIR, "--path", tmp_path / "packed.pt", "--cpu")
    assert re.search(r"Perplexity: [\d.]+", proc.stdout + proc.stderr)


def test_an_int8_exported_language_model_is_quantized_when_its_folder_loads(lm, tmp_path):
    """g2lstm-export --quantize int8 on a language model: recorded in model.json, and
    applied when the folder loads (the projection's weights are int8, the LSTM's rounded),
    with scores close to the float folder's."""
    from torchao.quantization import Int8Tensor

    from fairseq_g2lstm.export.writer import ExportOptions, export_model
    from fairseq_g2lstm.models import G2LSTMLanguageModel

    data, checkpoint = lm
    assert export_model(checkpoint, data, tmp_path / "int8", ExportOptions(quantize="int8"))["quantize"] == "int8"
    export_model(checkpoint, data, tmp_path / "fp32", ExportOptions())
    int8, fp32 = (G2LSTMLanguageModel.from_pretrained(str(tmp_path / name)) for name in ("int8", "fp32"))
    decoders = int8.models[0].decoder, fp32.models[0].decoder
    assert isinstance(decoders[0].additional_fc.weight, Int8Tensor)
    assert not isinstance(decoders[1].additional_fc.weight, Int8Tensor)
    assert not torch.equal(decoders[0].lstm.weight_hh_l0, decoders[1].lstm.weight_hh_l0)
    text = "the company said N shares"
    scores = [hub.score(text)["positional_scores"] for hub in (int8, fp32)]
    assert scores[0].shape == scores[1].shape and not torch.equal(*scores)
    assert (scores[0] - scores[1]).abs().max() < 0.1


def test_sweep_scores_perplexity_through_eval_lm(lm, tmp_path, capsys):
    data, checkpoint = lm
    status = sweep_main([str(data), str(checkpoint), "--labels", "g2", "--step", "0.05", "--clip", "0.2",
                         "--ranks", "8", "2", "--scope", "all", "--gen-args", "--cpu --max-tokens 2000",
                         "--json", str(tmp_path / "sweep.json"), "--jobs", "2", "--pack"])
    out, err = capsys.readouterr()
    assert status == 0, err
    table = out.split("\n\n")[0].splitlines()
    assert table[0] == "| setting | g2 ppl | Δ |"
    assert [line.split(" | ")[0].lstrip("| ") for line in table[2:]] == [
        "original", "round (r=0.05)", "round-clip (r=0.05, c=0.2)", "svd (k=8)", "svd (k=2)"]
    assert "perplexity (lower is better), fairseq-eval-lm" in out
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert result["metric"] == "ppl" and result["beam"] is None
    cells = result["cells"]
    assert all(c["command"].split()[0].endswith("fairseq-eval-lm") for c in cells)
    assert all("bleu" not in c and c["ppl"] > 1 for c in cells)
    for cell in cells[1:]:
        assert cell["delta"] == pytest.approx(cell["ppl"] - cells[0]["ppl"], abs=0.006)
        assert cell["signature"].startswith("method=") and "|scope=all|" in cell["signature"]
    assert cells[-1]["ppl"] != cells[0]["ppl"]  # rank 2 of 16-24-wide blocks changes the model
    # the original's perplexity is fairseq-eval-lm's own
    direct = cli("fairseq-eval-lm", data, "--user-dir", USER_DIR, "--path", checkpoint, "--cpu", "--max-tokens", "2000")
    assert f"Perplexity: {cells[0]['ppl']:.2f}" in direct.stdout + direct.stderr


def test_sweep_refuses_to_mix_language_and_translation_models(lm, tmp_path, capsys):
    state = torch.load(lm[1], map_location="cpu")
    state["cfg"]["model"].arch = "g2lstm_iwslt"  # read as a translation model
    torch.save(state, tmp_path / "mt.pt")
    status = sweep_main([str(lm[0]), str(lm[1]), str(tmp_path / "mt.pt"), "--labels", "lm", "mt", "--ranks", "4",
                         "--json", str(tmp_path / "s.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert "mt is a translation model but lm is a language model; sweep one kind at a time" in err[0]


def test_gates_of_a_language_model(lm, tmp_path, capsys):
    data, checkpoint = lm
    out = tmp_path / "gates"
    assert gates_cli.main([str(data), "--path", str(checkpoint), "--labels", "g2", "--cpu", "--layer", "all",
                           "--out-dir", str(out), "--no-progress-bar", "--heatmap", "the company said N shares"]) == 0
    record = json.loads((out / "gates.g2.json").read_text())
    assert list(record["layers"]) == [f"decoder.{k}" for k in range(LAYERS)]
    assert record["checkpoint"]["arch"] == "g2lstm_lm" and record["source_tokens"] == 0
    assert record["sentences"] == record["sentences_in_split"]  # the whole (small) split
    for gates in record["layers"].values():
        for entry in gates.values():
            assert entry["count"] == record["target_tokens"] * HIDDEN  # every token of the split, once
    assert (out / "hist.decoder.0.png").is_file() and (out / "hist.decoder.1.png").is_file()
    # the first layer's shares and means, run by hand from the weights with the reference cell
    # over fairseq's own items of the split (eval gates: sigmoid(a))
    from fairseq import checkpoint_utils

    from fairseq_g2lstm.gates import GateSpec
    from fairseq_g2lstm.rnn.cell import cell_step

    _, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides={"data": str(data)})
    task.load_dataset("train")
    state = load_checkpoint(checkpoint)["model"]
    embed, w_ih, w_hh = (state[f"decoder.{k}"] for k in ("embed_tokens.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0"))
    bias = state["decoder.lstm.bias_ih_l0"] + state["decoder.lstm.bias_hh_l0"]
    values = {"input": [], "forget": []}
    with torch.no_grad():
        for item in task.dataset("train"):
            h, c = torch.zeros(1, HIDDEN), torch.zeros(1, HIDDEN)
            for x in embed[item["source"]]:
                h, c, gates = cell_step(x @ w_ih.T + h @ w_hh.T + bias, c, GateSpec())
                values["input"].append(gates[0, gate_slice("i", HIDDEN)])
                values["forget"].append(gates[0, gate_slice("f", HIDDEN)])
    for gate, entry in record["layers"]["decoder.0"].items():
        v = torch.cat(values[gate]).double()
        assert entry["count"] == v.numel()
        assert entry["share_below"] == pytest.approx((v < 0.1).double().mean().item(), abs=2 / v.numel())
        assert entry["share_above"] == pytest.approx((v > 0.9).double().mean().item(), abs=2 / v.numel())
        assert entry["mean"] == pytest.approx(v.mean().item(), rel=1e-5)

    heatmap = json.loads((out / "heatmap.1.json").read_text())["checkpoints"][0]
    assert heatmap["columns"] == ["<s>", "the", "company", "said", "N", "shares"]
    assert heatmap["steps"]["predicts"] == ["the", "company", "said", "N", "shares", "</s>"]
    # the means are those of the model's own gates on that text
    loaded = collect.load_g2lstm(checkpoint, data, device=torch.device("cpu"))
    d = loaded.task.dictionary
    ids = d.encode_line("the company said N shares", add_if_not_exist=False).long()
    capture = collect.LayerCapture("decoder.0")
    with torch.no_grad():
        loaded.model(torch.cat([torch.tensor([d.eos()]), ids[:-1]]).unsqueeze(0), gate_stats=capture)
    gates = capture.gates[:, 0]
    for gate, letter in (("input", "i"), ("forget", "f")):
        assert heatmap[gate] == pytest.approx(gates[:, gate_slice(letter, HIDDEN)].double().mean(-1).tolist())


def test_gates_refuse_a_target_for_a_language_model(lm, tmp_path, capsys):
    data, checkpoint = lm
    status = gates_cli.main([str(data), "--path", str(checkpoint), "--cpu", "--out-dir", str(tmp_path),
                             "--heatmap-only", "--heatmap", "the company", "--heatmap-target", "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == ["g2lstm-gates: error: a language model reads the --heatmap text itself; "
                                   "give no --heatmap-target"]
