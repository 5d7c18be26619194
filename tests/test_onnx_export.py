"""ONNX export: the graphs compute what the torch model computes (encoder outputs and
incremental decoder steps, float32, 1e-4), and g2lstm-export writes and records them."""
import json

import numpy as np
import pytest
import torch

from conftest import ToyTask, cli
from served_model import served_model

ort = pytest.importorskip("onnxruntime")

PAD, EOS = 1, 2
TINY = {"encoder_embed_dim": 16, "decoder_embed_dim": 16, "encoder_hidden_size": 16, "decoder_hidden_size": 16,
        "decoder_out_embed_dim": 16}


def tiny_model(**overrides):
    """conftest.build_model, with the dimensions overridable too."""
    import argparse

    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY

    import fairseq_g2lstm  # noqa: F401  (registers the model)

    torch.manual_seed(0)
    args = argparse.Namespace(**{**TINY, **overrides})
    ARCH_CONFIG_REGISTRY["g2lstm_iwslt"](args)
    return ARCH_MODEL_REGISTRY["g2lstm_iwslt"].build_model(args, ToyTask()).eval()


def padded_batch():
    """Left-padded sources of lengths 4, 7 and 2 (fairseq's layout)."""
    return torch.tensor([[PAD, PAD, PAD, 7, 8, 9, 2], [5, 6, 7, 8, 9, 10, 2], [PAD, PAD, PAD, PAD, PAD, 11, 2]])


def sessions(folder):
    return (ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"]),
            ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"]))


@pytest.mark.parametrize("overrides", [
    {},  # g2lstm_iwslt: 2 layers, first bidirectional, bahdanau, gumbel gates
    {"encoder_bidirectional": "all", "attention_type": "luong"},
    {"encoder_bidirectional": "none", "gate_mode": "sharpened", "encoder_layers": 3, "decoder_layers": 3},
    {"gate_mode": "plain", "decoder_out_embed_dim": 8, "attention_type": "luong"},
    {"share_all_embeddings": True, "encoder_hidden_size": 12, "decoder_hidden_size": 20},
])
def test_onnx_graphs_equal_the_torch_model(tmp_path, overrides):
    from fairseq_g2lstm.export.onnx import export_graphs

    model = tiny_model(**overrides)
    export_graphs(model, tmp_path)
    encoder, decoder = sessions(tmp_path)
    src = padded_batch()
    with torch.no_grad():
        encoder_out = model.encoder(src, src.ne(PAD).sum(1))
    values, keys, mask, hiddens, cells = encoder.run(None, {"src_tokens": src.numpy()})
    np.testing.assert_allclose(values, encoder_out["encoder_out"][0].transpose(0, 1).numpy(), atol=1e-4)
    assert mask.tolist() == src.eq(PAD).tolist()
    assert np.abs(values).max() > 0.01  # not a graph of zeros
    # Several incremental steps, each fed the torch model's argmax, state carried by ORT.
    tokens = torch.full((3, 1), EOS)
    feed = np.zeros((3, model.decoder.hidden_size), np.float32)
    incremental = {}
    for _ in range(4):
        with torch.no_grad():
            expected = model.get_normalized_probs(model.decoder(tokens, encoder_out, incremental_state=incremental),
                                                  log_probs=True)[:, -1]
        lprobs, hiddens, cells, feed = decoder.run(None, {
            "prev_tokens": tokens[:, -1:].numpy(), "encoder_out": values, "keys": keys, "padding_mask": mask,
            "hiddens": hiddens, "cells": cells, "feed": feed})
        np.testing.assert_allclose(lprobs, expected.numpy(), atol=1e-4)
        tokens = torch.cat([tokens, expected.argmax(1, keepdim=True)], dim=1)
    # a batch of another size and source length runs through the same graphs
    longer = torch.cat([padded_batch(), padded_batch()])[:, 1:]
    assert encoder.run(None, {"src_tokens": longer.numpy()})[0].shape == (6, 6, values.shape[2])


def test_hard_gates_are_refused(tmp_path):
    from fairseq_g2lstm.export.onnx import OnnxExportError, export_graphs

    with pytest.raises(OnnxExportError, match="hard gates"):
        export_graphs(tiny_model(gate_eval="hard"), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return served_model(tmp_path_factory)


def test_g2lstm_export_onnx_writes_checked_graphs_and_records_them(exported, tmp_path):
    import onnx

    from g2lstm_runtime.folder import verify_folder

    out = tmp_path / "m"
    cli("g2lstm-export", exported["checkpoint"], "--data", exported["data"], "--out", out, "--onnx")
    manifest = verify_folder(out)
    assert {"encoder.onnx", "decoder.onnx"} <= set(manifest["files"])
    entry = manifest["onnx"]
    assert entry["opset"] >= 17 and entry["precision"] == "none" and entry["quantization"] is None
    assert set(entry["exported_by"]) == {"torch", "onnx", "onnxruntime"}
    for name in ("encoder.onnx", "decoder.onnx"):
        graph = onnx.load(str(out / name))
        onnx.checker.check_model(graph, full_check=True)
        assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) == entry["opset"]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary files left
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_onnx_added_to_an_existing_folder_and_quantized(exported, tmp_path):
    import onnx

    from g2lstm_runtime.folder import verify_folder

    folder = tmp_path / "m"
    cli("g2lstm-export", exported["checkpoint"], "--data", exported["data"], "--out", folder)
    sizes = {}
    for precision in ("none", "int8", "int4-gates", "int4"):
        proc = cli("g2lstm-export", "--onnx", folder, "--onnx-quantize", precision)
        assert "decoder.onnx" in proc.stdout
        manifest = verify_folder(folder)
        assert manifest["onnx"]["precision"] == precision
        graph = onnx.load(str(folder / "decoder.onnx")).graph
        ops = {n.op_type for n in graph.node}
        weights = {i.name for i in graph.initializer}
        float_products = [n.name for n in graph.node if n.op_type == "MatMul" and weights & set(n.input)]
        four_bit = sorted(n.input[1] for n in graph.node if n.op_type == "MatMulNBits")
        encoder_ops = {n.op_type for n in onnx.load(str(folder / "encoder.onnx")).graph.node}
        sizes[precision] = (folder / "decoder.onnx").stat().st_size
        if precision == "none":
            assert "MatMul" in ops and "Gemm" not in ops and "LSTM" in encoder_ops
        elif precision == "int8":
            assert "MatMulInteger" in ops and "DynamicQuantizeLSTM" in encoder_ops
            assert manifest["onnx"]["quantization"]["tool"].endswith("quantize_dynamic")
        elif precision == "int4-gates":
            assert four_bit == ["products.0.if_input_Q4", "products.0.if_recurrent_Q4"]  # the i/f products only
            assert len(float_products) == 6  # g/o products, 3 attention products, the output layer
            assert manifest["onnx"]["quantization"]["block_size"] == 32
        else:
            assert len(four_bit) == 8 and float_products == []  # left: the attention's activation products
    assert sizes["int4"] < sizes["int4-gates"] < sizes["none"] and sizes["int8"] < sizes["none"]


@pytest.mark.parametrize("args, message", [
    (["--onnx", "NOWHERE"], "not a model folder"),
    (["CKPT", "--data", "DATA", "--out", "NOWHERE", "--onnx-quantize", "int8"], "--onnx-quantize needs --onnx"),
    (["--onnx", "NOWHERE", "--out", "x"], "give no checkpoint, --data or --out"),
    (["CKPT", "--onnx"], "a checkpoint, --data and --out are required"),
])
def test_bad_onnx_arguments_are_one_line_and_exit_2(exported, tmp_path, args, message):
    replace = {"CKPT": str(exported["checkpoint"]), "DATA": str(exported["data"]), "NOWHERE": str(tmp_path / "no")}
    proc = cli("g2lstm-export", *[replace.get(a, a) for a in args], check=False, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == "[]"
