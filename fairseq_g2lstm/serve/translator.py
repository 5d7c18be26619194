"""One served model: a model folder loaded through fairseq's hub interface.

Everything here is a call of the hub (``encode``, ``generate``, ``decode``: what
``hub.translate`` does, and what the hub tests compare with fairseq-interactive) or of
the gate tools' teacher-forced pass (:func:`fairseq_g2lstm.gate_stats.collect.teacher_forced_gates`,
as ``g2lstm-gates --heatmap`` uses it). The server only schedules these calls.
"""
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

import torch
from torch import Tensor

from g2lstm_runtime.folder import TRANSLATION, ModelFolderError, verify_folder

from ..export.folder import hub_from_folder
from ..gate_stats.collect import START_SYMBOL, LoadedModel, teacher_forced_gates, unit_means


class GenerationKey(NamedTuple):
    """The settings a batch shares (the batcher's key)."""

    beam: int
    nbest: int
    hard_gates: bool = False
    gate_layer: Optional[int] = None  # None: no gates wanted


@dataclass
class Hypothesis:
    text: str
    score: float  # the beam search's score: the mean log-probability per target token
    tokens: List[str]  # the target pieces, ending in </s>


@dataclass
class SentenceResult:
    hypotheses: List[Hypothesis]  # best first
    gates: Optional[Dict[str, Any]] = None


class Translator:
    """A translation model folder, loaded once, used from one thread at a time (the
    batcher's worker): ``run_batch`` translates a batch of encoded sentences."""

    def __init__(self, folder, model_id: Optional[str] = None, max_batch_tokens: int = 4096,
                 device: Optional[torch.device] = None):
        self.folder = Path(folder)
        self.manifest = verify_folder(self.folder)
        if self.manifest["kind"] != TRANSLATION:
            raise ModelFolderError(f"{folder}: a {self.manifest['kind'].replace('_', ' ')}; the server translates")
        self.id = model_id or self.folder.resolve().name
        self.source = self.manifest["languages"]["source"]
        self.target = self.manifest["languages"]["target"]
        self.device = device or torch.device("cpu")
        self.max_batch_tokens = max_batch_tokens
        self.hub = self._load()
        self._hard_hub = None  # loaded on the first request for hard gates
        self._hard_lock = threading.Lock()
        model = self.hub.models[0]
        self.num_layers = model.decoder.layers.num_layers
        self.bidirectional = [d == 2 for d in model.encoder.lstm.num_directions]
        from fairseq import utils

        self.max_source_tokens = utils.resolve_max_positions(self.hub.task.max_positions(),
                                                             model.max_positions())[0]

    def _load(self, **overrides):
        from omegaconf import open_dict

        hub = hub_from_folder(self.folder, **overrides)
        with open_dict(hub.cfg):  # the batcher bounds the batches; the hub should not split them again
            hub.cfg.dataset.max_tokens = self.max_batch_tokens
            hub.cfg.dataset.batch_size = None
        hub.to(self.device)
        hub.eval()
        return hub

    def hub_for(self, hard_gates: bool):
        """The hub as trained, or (``hard_gates``) the same folder loaded with
        ``--gate-eval hard`` (every gate rounded to 0 or 1), the hub's documented override."""
        if not hard_gates:
            return self.hub
        with self._hard_lock:
            if self._hard_hub is None:
                self._hard_hub = self._load(gate_eval="hard")
        return self._hard_hub

    def encode(self, text: str) -> Tensor:
        """Raw text -> source ids [S] ending in eos (tokenizer, BPE, dictionary)."""
        return self.hub.encode(text)

    def run_batch(self, key: GenerationKey, sources: List[Tensor]) -> List[SentenceResult]:
        """Beam search over ``sources`` (each [S]) as one batch, n-best per sentence; with
        ``key.gate_layer``, the gates of the best translation, teacher-forced."""
        hub = self.hub_for(key.hard_gates)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pin_memory.*")  # fairseq's iterator on a CPU machine
            outputs = hub.generate(sources, beam=key.beam)
        results = []
        for source, hypos in zip(sources, outputs):
            best = [Hypothesis(hub.decode(h["tokens"]), float(h["score"]),
                               [hub.tgt_dict[i] for i in h["tokens"].tolist()]) for h in hypos[: key.nbest]]
            gates = None
            if key.gate_layer is not None:
                gates = self.token_gates(hub, source, hypos[0]["tokens"].cpu(), key.gate_layer)
            results.append(SentenceResult(best, gates))
        return results

    def token_gates(self, hub, source: Tensor, target: Tensor, layer: int) -> Dict[str, Any]:
        """The per-token mean input and forget gates of encoder layer ``layer`` over the
        source tokens (both directions where it is bidirectional) and of decoder layer
        ``layer`` over the target steps (step t reads token t-1 and predicts token t)."""
        loaded = LoadedModel(self.folder, self.id, hub.models[0], hub.task, hub.cfg, hub, "", self.device)
        names = [f"encoder.{layer}"] + ([f"encoder.{layer}.reverse"] if self.bidirectional[layer] else [])
        source_side = {name: unit_means(teacher_forced_gates(loaded, source, target, name)) for name in names}
        target_side = unit_means(teacher_forced_gates(loaded, source, target, f"decoder.{layer}"))
        predicts = [hub.tgt_dict[i] for i in target.tolist()]
        return {
            "layer": layer,
            "source": {"tokens": [hub.src_dict[i] for i in source.tolist()], "layers": source_side},
            "target": {"reads": [START_SYMBOL] + predicts[:-1], "predicts": predicts,
                       "layers": {f"decoder.{layer}": target_side}},
        }

    def describe(self) -> Dict[str, Any]:
        """What ``GET /v1/models`` says about the model."""
        manifest = self.manifest
        return {
            "id": self.id,
            "source": self.source,
            "target": self.target,
            "arch": manifest["arch"],
            "gates": manifest["gates"],
            "layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "vocabulary": manifest["vocabulary"],
            "bpe": manifest["bpe"],
            "quantize": manifest.get("quantize"),
            "compression": manifest.get("compression"),
            "max_source_tokens": self.max_source_tokens,
        }
