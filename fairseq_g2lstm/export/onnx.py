"""ONNX graphs of a g2lstm translation model, for the torch-free runtime
(:mod:`g2lstm_runtime`): the converter half of the split (train with torch, run anywhere).

Two graphs, traced from the model's own modules in eval mode:

* ``encoder.onnx``: ``src_tokens`` [B,S] (left-padded, as fairseq batches them) ->
  ``encoder_out`` [B,S,C], ``keys`` [B,S,K] (the attention keys, computed once per
  sentence), ``padding_mask`` [B,S] and the decoder's initial ``hiddens``/``cells``
  [B,L,H] (the encoder's final states through the decoder's bridges).
* ``decoder.onnx``: one incremental step. ``prev_tokens`` [B,1], the encoder's
  ``encoder_out``/``keys``/``padding_mask``, and the step state (``hiddens``, ``cells``
  [B,L,H], ``feed`` [B,H]) -> ``lprobs`` [B,V] (log-softmax, as fairseq's generator
  reads them) and the next ``hiddens``, ``cells``, ``feed``.

At eval, soft G2 gates are a standard LSTM (sharpened ones with the temperature folded
into the i/f rows, :func:`~fairseq_g2lstm.gates.prescale_weight`), so the encoder's
layers are ONNX ``LSTM`` ops with per-row ``sequence_lens`` (padding-aware, exact). The
decoder's cells are written as matrix products plus the model's own cell step
(:func:`~fairseq_g2lstm.rnn.cell.cell_step`), with the i/f gate rows and the g/o rows
as separate ``MatMul`` nodes: onnxruntime's 4-bit quantizer only rewrites ``MatMul``
(never ``Gemm`` or ``LSTM``), and ``int4-gates`` quantizes the i/f products alone, the
blocks the G2 gates are trained to make robust. Linear layers run on [B,1,*] inputs for
the same reason (torch exports a Linear on 2-D input as ``Gemm``).

Hard gates (``--gate-eval hard``) are not an LSTM op and are refused.
"""
import os
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from g2lstm_runtime.folder import ModelFolderError
from torch import Tensor, nn

from ..gates import NUM_GATES, NUM_NOISY_GATES, prescale_weight
from ..rnn.cell import cell_step

OPSET = 17
ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"
ENCODER_INPUTS = ("src_tokens",)
ENCODER_OUTPUTS = ("encoder_out", "keys", "padding_mask", "hiddens", "cells")
DECODER_INPUTS = ("prev_tokens", "encoder_out", "keys", "padding_mask", "hiddens", "cells", "feed")
DECODER_OUTPUTS = ("lprobs", "next_hiddens", "next_cells", "next_feed")
# onnxruntime's quantizations of the float graphs (see quantize_folder).
ONNX_QUANTIZE_CHOICES = ("none", "int8", "int4-gates", "int4")
INT4_BLOCK_SIZE = 32
# The decoder's MatMul weights that hold the i/f gate rows (named in GateProducts).
GATE_IF_MARK = ".if_"


class OnnxExportError(ModelFolderError):
    """A model the ONNX export cannot represent exactly; ``str()`` is one line."""


def check_exportable(model) -> None:
    from ..models.g2lstm import G2LSTMModel

    if not isinstance(model, G2LSTMModel):
        raise OnnxExportError(f"--onnx exports translation models (g2lstm); this is {type(model).__name__}")
    if model.encoder.lstm.gate.eval_mode == "hard":
        raise OnnxExportError("--onnx: hard gates (--gate-eval hard) are not an LSTM; export with soft gates")
    if getattr(model, "quantize", "none") != "none":
        raise OnnxExportError("--onnx exports a float model; use --onnx-quantize for a quantized graph")


class EncoderGraph(nn.Module):
    """The encoder as one graph: :class:`~fairseq_g2lstm.models.g2lstm.G2LSTMEncoder`'s
    embedding and padding moves, each G2 layer as torch's LSTM over packed rows (its
    fused-kernel path, with ``sequence_lens`` in ONNX), then what the decoder needs once
    per sentence: the bridges to its initial states and the attention keys."""

    def __init__(self, model):
        super().__init__()
        encoder, decoder = model.encoder, model.decoder
        self.encoder, self.decoder = encoder, decoder
        spec = encoder.lstm.gate.resolve(False)
        self.layers = nn.ModuleList()
        k, layer_input = 0, encoder.lstm.input_size
        for bidirectional in encoder.lstm.bidirectional:
            lstm = nn.LSTM(layer_input, encoder.lstm.hidden_size, bidirectional=bidirectional)
            for suffix in ("", "_reverse")[: 1 + bidirectional]:
                for name, weight in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                                        (getattr(encoder.lstm, n) for n in encoder.lstm._param_names[k])):
                    getattr(lstm, f"{name}_l0{suffix}").data.copy_(prescale_weight(weight.detach(), spec))
                k += 1
            self.layers.append(lstm)
            layer_input = encoder.lstm.hidden_size * (1 + bidirectional)

    def forward(self, src_tokens: Tensor) -> Tuple[Tensor, ...]:
        from ..models.g2lstm import move_padding

        encoder = self.encoder
        padding_mask = src_tokens.eq(encoder.padding_idx)  # [B,S]
        lengths = (~padding_mask).sum(1)
        steps = src_tokens.shape[1]
        x = encoder.embed_tokens(src_tokens).transpose(0, 1)  # [S,B,E]
        if encoder.left_pad:
            x = move_padding(x, lengths, to_left=False)
        finals_h, finals_c = [], []
        for lstm in self.layers:
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, (h_n, c_n) = lstm(packed)  # h_n, c_n [D,B,H]
            x, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=steps)  # [S,B,D*H], zero at padding
            finals_h.append(torch.cat(h_n.unbind(0), dim=1))
            finals_c.append(torch.cat(c_n.unbind(0), dim=1))
        if encoder.left_pad:
            x = move_padding(x, lengths, to_left=True)
        values = x.transpose(0, 1)  # [B,S,C]
        keys = self.decoder.attention.project_keys(values)  # [B,S,K]
        hiddens = torch.stack([proj(h) for h, proj in zip(finals_h, self.decoder.init_hidden_proj)], dim=1)
        cells = torch.stack([proj(c) for c, proj in zip(finals_c, self.decoder.init_cell_proj)], dim=1)
        return values, keys, padding_mask, hiddens, cells  # hiddens, cells [B,L,H]


class GateProducts(nn.Module):
    """One decoder layer's pre-activations as ``MatMul`` + ``Add`` nodes, the i/f rows
    (``if_*``) apart from the g/o rows (``go_*``), in the gate order of the model."""

    def __init__(self, w_ih: Tensor, w_hh: Tensor, bias: Tensor):
        super().__init__()
        h2 = w_ih.shape[0] // NUM_GATES * NUM_NOISY_GATES
        self.register_buffer("if_input", w_ih[:h2].t().contiguous())  # [in,2H]
        self.register_buffer("if_recurrent", w_hh[:h2].t().contiguous())  # [H,2H]
        self.register_buffer("if_bias", bias[:h2].clone())
        self.register_buffer("go_input", w_ih[h2:].t().contiguous())
        self.register_buffer("go_recurrent", w_hh[h2:].t().contiguous())
        self.register_buffer("go_bias", bias[h2:].clone())

    def forward(self, inp: Tensor, hidden: Tensor) -> Tensor:
        """inp [B,in], hidden [B,H] -> pre-activations [B,4H]."""
        a_if = torch.matmul(inp, self.if_input) + torch.matmul(hidden, self.if_recurrent) + self.if_bias
        a_go = torch.matmul(inp, self.go_input) + torch.matmul(hidden, self.go_recurrent) + self.go_bias
        return torch.cat((a_if, a_go), dim=1)


class DecoderStepGraph(nn.Module):
    """One step of :class:`~fairseq_g2lstm.models.g2lstm.G2LSTMDecoder` with its state
    passed in and out: the cell stack (input feeding), the attention, the output layer."""

    def __init__(self, model):
        super().__init__()
        decoder = model.decoder
        self.decoder = decoder
        self.spec = decoder.layers.gate.resolve(False)
        self.products = nn.ModuleList()
        for layer in range(decoder.layers.num_layers):
            w_ih, w_hh, b_ih, b_hh = (p.detach() for p in decoder.layers.layer_params(layer))
            self.products.append(GateProducts(w_ih, w_hh, b_ih + b_hh))

    def forward(self, prev_tokens: Tensor, encoder_out: Tensor, keys: Tensor, padding_mask: Tensor,
                hiddens: Tensor, cells: Tensor, feed: Tensor) -> Tuple[Tensor, ...]:
        decoder = self.decoder
        x = decoder.embed_tokens(prev_tokens[:, -1])  # [B,E]
        inp = torch.cat((x, feed), dim=1)  # [B,E+H], nn.LSTMCell's column order
        new_h: List[Tensor] = []
        new_c: List[Tensor] = []
        for layer, products in enumerate(self.products):
            preact = products(inp, hiddens[:, layer])  # [B,4H]
            h, c, _ = cell_step(preact, cells[:, layer], self.spec)
            new_h.append(h)
            new_c.append(c)
            inp = h
        memory = {"values": encoder_out, "keys": keys, "mask": padding_mask}
        out, _ = decoder.attention(new_h[-1], memory)  # [B,H]
        features = out.unsqueeze(1)  # [B,1,H]: Linear layers export as MatMul + Add
        if decoder.additional_fc is not None:
            features = decoder.additional_fc(features)
        logits = decoder.output_layer(features)[:, 0]  # [B,V]
        lprobs = F.log_softmax(logits.float(), dim=-1)
        return lprobs, torch.stack(new_h, dim=1), torch.stack(new_c, dim=1), out


def example_inputs(model, batch: int = 2, steps: int = 5):
    """Tensors to trace with: a left-padded batch whose rows differ in length."""
    dictionary = model.encoder.dictionary
    src = torch.full((batch, steps), dictionary.pad(), dtype=torch.long)
    for row in range(batch):
        length = steps - row
        src[row, steps - length:] = torch.arange(length) % (len(dictionary) - dictionary.nspecial) + dictionary.nspecial
        src[row, -1] = dictionary.eos()
    return src


def export_graphs(model, folder: Path) -> Dict[str, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` of ``model`` into ``folder`` (each to a
    temporary name, checked with ``onnx.checker``, then renamed); return their paths."""
    import onnx

    check_exportable(model)
    model.eval()
    src = example_inputs(model)
    encoder, decoder = EncoderGraph(model).eval(), DecoderStepGraph(model).eval()
    with torch.no_grad():
        encoded = encoder(src)
        values, keys, padding_mask, hiddens, cells = encoded
        feed = values.new_zeros(src.shape[0], model.decoder.hidden_size)
        prev = torch.full((src.shape[0], 1), model.decoder.dictionary.eos(), dtype=torch.long)
        decoder_inputs = (prev, values, keys, padding_mask, hiddens, cells, feed)
    batch, source = {0: "batch"}, {0: "batch", 1: "source"}
    graphs = {
        ENCODER_FILE: (encoder, (src,), ENCODER_INPUTS, ENCODER_OUTPUTS,
                       {"src_tokens": source, "encoder_out": source, "keys": source, "padding_mask": source,
                        "hiddens": batch, "cells": batch}),
        DECODER_FILE: (decoder, decoder_inputs, DECODER_INPUTS, DECODER_OUTPUTS,
                       {"prev_tokens": batch, "encoder_out": source, "keys": source, "padding_mask": source,
                        "hiddens": batch, "cells": batch, "feed": batch, "lprobs": batch,
                        "next_hiddens": batch, "next_cells": batch, "next_feed": batch}),
    }
    written = {}
    for name, (module, inputs, input_names, output_names, axes) in graphs.items():
        path = Path(folder) / name
        temporary = path.with_name(f".{name}.tmp{os.getpid()}")
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # The tracer's notes on shape checks and the LSTM's batch size: the graphs
                # are checked with other batch sizes and lengths by the tests.
                warnings.simplefilter("ignore")
                torch.onnx.export(module, inputs, str(temporary), input_names=list(input_names),
                                  output_names=list(output_names), dynamic_axes=axes, opset_version=OPSET,
                                  dynamo=False, do_constant_folding=True)
            onnx.checker.check_model(str(temporary), full_check=True)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        written[name] = path
    return written


def quantize_graphs(folder: Path, quantize: str) -> Dict[str, object]:
    """Replace the float graphs in ``folder`` by onnxruntime's quantization of them; return
    the tool and settings (model.json's ``onnx.quantization``).

    * ``int8``: ``quantize_dynamic`` (int8 weights, activations quantized per call):
      ``MatMul`` -> ``MatMulInteger``, the encoder's ``LSTM`` -> ``DynamicQuantizeLSTM``,
      ``Gather`` (the embeddings) stays float.
    * ``int4-gates``: ``MatMulNBitsQuantizer`` (4-bit weights, symmetric, blocks of
      :data:`INT4_BLOCK_SIZE` along the input axis) on the decoder's i/f gate products only
      (input and recurrent); everything else stays float.
    * ``int4``: the same on every ``MatMul`` of both graphs (the decoder's gate, attention
      and output products, the encoder's key projection); the encoder's ``LSTM`` ops and
      the embeddings stay float (the quantizer rewrites ``MatMul`` only).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if quantize == "none":
        return {}
    for name in (ENCODER_FILE, DECODER_FILE):
        path = Path(folder) / name
        temporary = path.with_name(f".{name}.q{os.getpid()}")
        try:
            if quantize == "int8":
                quantize_dynamic(str(path), str(temporary), weight_type=QuantType.QInt8)
            else:
                graph = onnx.load(str(path))
                exclude = []
                if quantize == "int4-gates":
                    if name != DECODER_FILE:
                        continue
                    # nodes_to_include adds to the quantized op types (onnxruntime 1.32), so
                    # the other MatMuls are excluded instead.
                    gates = gate_matmuls(graph)
                    exclude = [n.name for n in graph.graph.node if n.op_type == "MatMul" and n.name not in gates]
                quantizer = MatMulNBitsQuantizer(graph, bits=4, block_size=INT4_BLOCK_SIZE, is_symmetric=True,
                                                 nodes_to_exclude=exclude)
                quantizer.process()
                onnx.save(quantizer.model.model, str(temporary))
            onnx.checker.check_model(str(temporary))
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    if quantize == "int8":
        return {"tool": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8", "per_channel": False,
                "ops": "MatMul -> MatMulInteger, LSTM -> DynamicQuantizeLSTM"}
    return {"tool": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer", "bits": 4,
            "block_size": INT4_BLOCK_SIZE, "is_symmetric": True,
            "nodes": "decoder i/f gate MatMuls" if quantize == "int4-gates" else "every MatMul"}


def gate_matmuls(graph) -> List[str]:
    """Names of the decoder's ``MatMul`` nodes whose weight holds i/f gate rows."""
    weights = {init.name for init in graph.graph.initializer if GATE_IF_MARK in init.name}
    names = [node.name for node in graph.graph.node if node.op_type == "MatMul" and weights & set(node.input)]
    if not names:
        raise OnnxExportError("the decoder graph has no i/f gate MatMul to quantize")
    return names


def add_onnx(folder: Path, quantize: str = "none") -> Dict[str, object]:
    """Export the model of the model folder ``folder`` (its ``model.pt``, loaded as the
    hub loads it) as ``encoder.onnx`` and ``decoder.onnx`` beside it, quantized as asked,
    and record them in ``model.json`` (written last, atomically): the folder holds one
    ONNX variant, the one its ``model.json`` names. Returns the ``onnx`` entry."""
    import json

    from g2lstm_runtime.folder import MANIFEST, file_sha256, read_manifest

    from ..atomic_file import write_text_atomic
    from .folder import hub_from_folder

    if quantize not in ONNX_QUANTIZE_CHOICES:
        raise OnnxExportError(f"--onnx-quantize {quantize}: choose from {', '.join(ONNX_QUANTIZE_CHOICES)}")
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.get("kind") != "translation":
        raise OnnxExportError(f"{folder}: --onnx exports translation models; this folder holds a {manifest.get('kind')}")
    model = hub_from_folder(folder).models[0]
    export_graphs(model, folder)
    quantization = quantize_graphs(folder, quantize)
    entry = {"encoder": ENCODER_FILE, "decoder": DECODER_FILE, "opset": OPSET, "precision": quantize,
             "quantization": quantization or None, "exported_by": runtime_versions()}
    manifest["onnx"] = entry
    files = dict(manifest.get("files", {}))
    for name in (ENCODER_FILE, DECODER_FILE):
        files[name] = file_sha256(folder / name)
    manifest["files"] = dict(sorted(files.items()))
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return entry


def runtime_versions() -> Dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


__all__ = ["ONNX_QUANTIZE_CHOICES", "OPSET", "OnnxExportError", "add_onnx", "export_graphs", "quantize_graphs",
           "runtime_versions"]
