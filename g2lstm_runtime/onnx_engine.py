"""The model of a model folder on ONNX Runtime: its ``encoder.onnx`` and ``decoder.onnx``
(written by ``g2lstm-export --onnx``), one ``InferenceSession`` each, built once.

The session options live in :func:`session_options` alone. The decoder's state between
steps (LSTM states, input feed) stays in numpy arrays here; the beam search
(:mod:`.beam`) only sees log-probabilities and tells this engine how rows are reordered.
"""
import os
from pathlib import Path
from typing import Dict, Mapping, Optional

import numpy as np

from .folder import ModelFolderError

DEFAULT_THREADS = 2


def default_threads() -> int:
    """OMP_NUM_THREADS where it is set (as torch reads it), else :data:`DEFAULT_THREADS`."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_THREADS


def session_options(threads: int):
    """The one place where the sessions' options are set: ``threads`` for the operators,
    one for running operators side by side (the graphs are chains), every graph
    optimisation onnxruntime has."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initializers are not the user's concern
    return options


class OnnxModel:
    """The two sessions of a folder whose ``model.json`` has an ``onnx`` entry."""

    def __init__(self, folder, manifest: Mapping, threads: Optional[int] = None):
        import onnxruntime as ort

        entry = manifest.get("onnx")
        if not entry:
            raise ModelFolderError(f"{folder}: no ONNX graphs; add them with g2lstm-export --onnx {folder}")
        options = session_options(threads or default_threads())
        providers = ["CPUExecutionProvider"]
        self.precision = entry.get("precision", "none")
        self.encoder = ort.InferenceSession(str(Path(folder) / entry["encoder"]), options, providers=providers)
        self.decoder = ort.InferenceSession(str(Path(folder) / entry["decoder"]), options, providers=providers)
        self.feed_size = self.decoder.get_inputs()[DECODER_FEED].shape[1]

    def encode(self, src_tokens: np.ndarray) -> Dict[str, np.ndarray]:
        """src_tokens [B,S] int64, left-padded -> the encoder's outputs by name."""
        names = [o.name for o in self.encoder.get_outputs()]
        return dict(zip(names, self.encoder.run(None, {"src_tokens": src_tokens})))

    def decoder_state(self, encoded: Mapping[str, np.ndarray], beam: int) -> "OnnxDecoder":
        return OnnxDecoder(self, encoded, beam)


DECODER_FEED = 6  # the position of ``feed`` among decoder.onnx's inputs


class OnnxDecoder:
    """:class:`~g2lstm_runtime.beam.Decoder` over ``decoder.onnx`` for a batch of sentences
    with ``beam`` rows each. The encoder's outputs are repeated per row once; a reordering
    that keeps every row's sentence (the usual case) leaves them as they are."""

    def __init__(self, model: OnnxModel, encoded: Mapping[str, np.ndarray], beam: int):
        self.session = model.decoder
        rows = np.repeat(np.arange(encoded["encoder_out"].shape[0]), beam)
        self.source_of = rows  # [N] the sentence of each row
        self.memory = {name: encoded[name][rows] for name in ("encoder_out", "keys", "padding_mask")}
        self.hiddens, self.cells = encoded["hiddens"][rows], encoded["cells"][rows]  # [N,L,H]
        self.feed = np.zeros((rows.size, model.feed_size), np.float32)

    def step(self, prev_tokens: np.ndarray) -> np.ndarray:
        lprobs, self.hiddens, self.cells, self.feed = self.session.run(None, {
            "prev_tokens": np.ascontiguousarray(prev_tokens, dtype=np.int64), **self.memory,
            "hiddens": self.hiddens, "cells": self.cells, "feed": self.feed})
        return lprobs

    def reorder(self, rows: np.ndarray) -> None:
        source_of = self.source_of[rows]
        if not np.array_equal(source_of, self.source_of):
            self.memory = {name: value[rows] for name, value in self.memory.items()}
        self.source_of = source_of
        self.hiddens, self.cells, self.feed = self.hiddens[rows], self.cells[rows], self.feed[rows]
