"""One served model: a model folder, translated by one of two engines behind one seam.

The seam (:class:`HubSearch`, :class:`OnnxSearch`) is what differs between engines:
``encode`` (text -> source ids, the text prepared as the training data was), ``search``
(a batch of sources -> each sentence's n-best token ids with scores) and ``decode``
(target ids -> text). ``torch`` calls the hub's parts (``encode``; the task's
``inference_step`` with its sequence generator; ``decode``: what ``hub.translate`` does,
and what the hub tests compare with fairseq-interactive); ``onnx`` calls the runtime's
:class:`g2lstm_runtime.translator.Translator` over the folder's ONNX graphs (``g2lstm-export
--onnx``), with the same search settings. Everything else is the same for both: the
batches, the answer's text, tokens and scores, the output bound and its ``truncated``
mark. Gates (the gate tools' teacher-forced pass,
:func:`fairseq_g2lstm.gate_stats.collect.teacher_forced_gates`, as ``g2lstm-gates
--heatmap`` uses it) and hard gates (``--gate-eval hard``, which no ONNX graph holds)
always come from the hub. The server only schedules these calls.

Two things differ from ``hub.generate``, for a server's sake: the batcher has already
made the batch, so it goes to the generator as one batch (no second batching, which
also fails on a sentence longer than the token budget), and the generators are built
once per beam size instead of per call. The output bound is ``max_len_a * S +
max_len_b`` target tokens for a batch whose longest source has S tokens (fairseq's rule,
which the runtime's beam search follows; fairseq-interactive defaults to a fixed 200); a
translation that reaches it is marked ``truncated``.
"""
import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from g2lstm_runtime.beam import Hypothesis as Found
from g2lstm_runtime.beam import SearchOptions
from g2lstm_runtime.folder import TRANSLATION, ModelFolderError, verify_folder
from g2lstm_runtime.translator import ENGINES
from g2lstm_runtime.translator import Translator as RuntimeTranslator

from ..export.folder import hub_from_folder
from ..gate_stats.collect import GATE_LETTERS, START_SYMBOL, LoadedModel, teacher_forced_gates, unit_means
from ..gates import gate_slice
from ..rnn.gate_tallies import GATES, HIGH, LOW
from .limits import MAX_LEN_A, MAX_LEN_B

logger = logging.getLogger(__name__)

MAX_HEATMAP_UNITS = 256  # the page draws one row per unit


def default_engine(manifest: Dict[str, Any]) -> str:
    """``onnx`` where the folder has ONNX graphs (its ``model.json`` has an ``onnx`` entry),
    ``torch`` otherwise."""
    return "onnx" if manifest.get("onnx") else "torch"


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
    truncated: bool = False  # cut at the output bound (max_len_a * S + max_len_b), not ended by the model


@dataclass
class SentenceResult:
    hypotheses: List[Hypothesis]  # best first
    gates: Optional[Dict[str, Any]] = None


class HubSearch:
    """The ``torch`` engine: fairseq's hub over the folder (as trained, or with hard gates)."""

    name = "torch"
    precision = None  # the checkpoint's weights (model.json's quantize says how they were stored)

    def __init__(self, hub, max_len_a: float, max_len_b: int, device: torch.device):
        self.hub, self.device = hub, device
        self.max_len_a, self.max_len_b = max_len_a, max_len_b
        self._generators: Dict[int, Any] = {}

    def generator(self, beam: int):
        """The sequence generator for a beam size, built on first use (as ``hub.generate``
        builds it, from the folder's generation settings) and kept."""
        if beam not in self._generators:
            settings = copy.deepcopy(self.hub.cfg.generation)
            from omegaconf import open_dict

            with open_dict(settings):
                settings.beam, settings.max_len_a, settings.max_len_b = beam, self.max_len_a, self.max_len_b
            self._generators[beam] = self.hub.task.build_generator(self.hub.models, settings)
        return self._generators[beam]

    def encode(self, text: str) -> Tensor:
        """Raw text -> source ids [S] ending in eos (the folder's text preparation,
        tokenizer, BPE, dictionary)."""
        return self.hub.encode(text)

    def search(self, sources: Sequence[Sequence[int]], beam: int, nbest: int) -> List[List[Found]]:
        from fairseq import utils

        hub = self.hub
        sources = [torch.as_tensor(s) for s in sources]  # [S] each
        dataset = hub.task.build_dataset_for_inference(sources, [len(s) for s in sources])
        batch = dataset.collater([dataset[k] for k in range(len(sources))])  # sorted by length
        batch = utils.apply_to_sample(lambda t: t.to(self.device), batch)
        outputs = hub.task.inference_step(self.generator(beam), hub.models, batch)
        by_id = dict(zip(batch["id"].tolist(), outputs, strict=True))
        return [[Found(h["tokens"].tolist(), float(h["score"]), h["positional_scores"].tolist())
                 for h in by_id[k][:nbest]] for k in range(len(sources))]

    def decode(self, tokens: Sequence[int]) -> str:
        return self.hub.decode(torch.tensor(tokens))


# the hub's generation settings that the runtime's beam search does not have, at the values
# that leave fairseq's search as the runtime's (fairseq's defaults)
SEARCH_ONLY_ON_TORCH = {"sampling": False, "no_repeat_ngram_size": 0, "match_source_len": False,
                        "unnormalized": False, "temperature": 1.0, "diverse_beam_groups": -1, "prefix_size": 0,
                        "lm_path": None}


class OnnxSearch:
    """The ``onnx`` engine: the runtime's translator over the folder's ONNX graphs, with
    the hub's generation settings (length and unknown-word penalties, minimum length),
    the server's output bound and the model's maximum target length. A folder whose
    generation settings ask for more (:data:`SEARCH_ONLY_ON_TORCH`) is refused: it would
    translate otherwise than on torch."""

    name = "onnx"

    def __init__(self, folder: Path, generation, max_positions: int, max_len_a: float, max_len_b: int,
                 threads: Optional[int]):
        changed = [name for name, value in SEARCH_ONLY_ON_TORCH.items() if generation.get(name, value) != value]
        if changed:
            raise ModelFolderError(f"{folder}: its generation settings ({', '.join(changed)}) are fairseq's only; "
                                   "serve it with --engine torch")
        self.runtime = RuntimeTranslator(folder, engine="onnx", threads=threads)
        self.precision = self.runtime.manifest["onnx"].get("precision", "none")  # the graphs': none, int8, ...
        self.settings = dict(max_len_a=max_len_a, max_len_b=max_len_b, min_len=generation.min_len,
                             lenpen=generation.lenpen, unkpen=generation.unkpen, max_positions=max_positions)

    def encode(self, text: str) -> List[int]:
        return self.runtime.source_dict.encode(self.runtime.pieces(text))

    def search(self, sources: Sequence[Sequence[int]], beam: int, nbest: int) -> List[List[Found]]:
        return self.runtime.translate_batch(sources, SearchOptions(beam=beam, nbest=nbest, **self.settings))

    def decode(self, tokens: Sequence[int]) -> str:
        return self.runtime.text(tokens)


class Translator:
    """A translation model folder, loaded once, used from one thread at a time (the
    batcher's worker): ``encode`` turns a text into source ids, ``run_batch`` translates
    a batch of them, ``describe`` says what the model is. ``engine``: ``onnx`` or
    ``torch`` (default: :func:`default_engine`); ``threads``: the onnx engine's."""

    def __init__(self, folder, model_id: Optional[str] = None, device: Optional[torch.device] = None,
                 max_len_a: float = MAX_LEN_A, max_len_b: int = MAX_LEN_B, engine: Optional[str] = None,
                 threads: Optional[int] = None):
        self.folder = Path(folder)
        self.manifest = verify_folder(self.folder)
        if self.manifest["kind"] != TRANSLATION:
            raise ModelFolderError(f"{folder}: a {self.manifest['kind'].replace('_', ' ')}; the server translates")
        engine = engine or default_engine(self.manifest)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
        if engine == "onnx" and not self.manifest.get("onnx"):
            raise ModelFolderError(f"{folder}: no ONNX graphs for --engine onnx; add them with g2lstm-export --onnx "
                                   f"{folder}, or serve it with --engine torch")
        self.id = model_id or self.folder.resolve().name
        self.source = self.manifest["languages"]["source"]
        self.target = self.manifest["languages"]["target"]
        self.device = device or torch.device("cpu")
        self.max_len_a, self.max_len_b = max_len_a, max_len_b
        self.hub = self._load()
        # --gate-eval hard (every gate rounded to 0 or 1), the hub's documented override; loaded
        # now, sharing the weights, so that no request waits for a load in the worker thread
        self.hard_hub = self._load(gate_eval="hard")
        torch.nn.Module.load_state_dict(self.hard_hub.models[0], self.hub.models[0].state_dict(), assign=True)
        model = self.hub.models[0]
        self.num_layers = model.decoder.layers.num_layers
        self.bidirectional = [d == 2 for d in model.encoder.lstm.num_directions]
        from fairseq import utils

        self.max_source_tokens = utils.resolve_max_positions(self.hub.task.max_positions(),
                                                             model.max_positions())[0]
        self.max_target_tokens = model.max_decoder_positions()
        self.hard_engine = HubSearch(self.hard_hub, max_len_a, max_len_b, self.device)
        self.engine = (HubSearch(self.hub, max_len_a, max_len_b, self.device) if engine == "torch" else
                       OnnxSearch(self.folder, self.hub.cfg.generation, self.max_target_tokens, max_len_a, max_len_b,
                                  threads))

    def _load(self, **overrides):
        hub = hub_from_folder(self.folder, **overrides)
        hub.to(self.device)
        hub.eval()
        return hub

    def hub_for(self, hard_gates: bool):
        """The hub as trained, or (``hard_gates``) with ``--gate-eval hard``."""
        return self.hard_hub if hard_gates else self.hub

    def output_bound(self, source_tokens: int) -> int:
        """The most target tokens (before eos) a batch whose longest source has
        ``source_tokens`` tokens, eos included, may get (fairseq's SequenceGenerator rule,
        which the runtime's beam search follows)."""
        return min(int(self.max_len_a * source_tokens + self.max_len_b), self.max_target_tokens - 1)

    def encode(self, text: str) -> Sequence[int]:
        """Raw text -> source ids [S] ending in eos, by the serving engine."""
        return self.engine.encode(text)

    def run_batch(self, key: GenerationKey, sources: List[Sequence[int]]) -> List[SentenceResult]:
        """Beam search over ``sources`` (each [S]) as one batch, n-best per sentence; with
        ``key.gate_layer``, the gates of the best translation, teacher-forced."""
        engine = self.hard_engine if key.hard_gates else self.engine
        found = engine.search(sources, key.beam, key.nbest)
        bound = self.output_bound(max(len(s) for s in sources))
        symbols = self.hub.tgt_dict
        results = []
        for source, hypos in zip(sources, found, strict=True):
            best = [Hypothesis(engine.decode(h.tokens), h.score, [symbols[i] for i in h.tokens], len(h.tokens) > bound)
                    for h in hypos]
            if best[0].truncated:
                logger.warning("%s: a translation was cut at %d tokens (source of %d; --max-len-a %g, --max-len-b %d)",
                               self.id, bound, len(source), self.max_len_a, self.max_len_b)
            gates = None
            if key.gate_layer is not None:
                gates = self.token_gates(self.hub_for(key.hard_gates), torch.as_tensor(source),
                                         torch.tensor(hypos[0].tokens), key.gate_layer)
            results.append(SentenceResult(best, gates))
        return results

    def token_gates(self, hub, source: Tensor, target: Tensor, layer: int) -> Dict[str, Any]:
        """The gates of encoder layer ``layer`` over the source tokens (both directions
        where it is bidirectional) and of decoder layer ``layer`` over the target steps
        (step t reads token t-1 and predicts token t), each in :func:`gate_view`'s form."""
        loaded = LoadedModel(self.folder, self.id, hub.models[0], hub.task, hub.cfg, hub, "", self.device)
        names = [f"encoder.{layer}"] + ([f"encoder.{layer}.reverse"] if self.bidirectional[layer] else [])
        source_side = {name: gate_view(teacher_forced_gates(loaded, source, target, name)) for name in names}
        target_side = gate_view(teacher_forced_gates(loaded, source, target, f"decoder.{layer}"))
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
            "engine": self.engine.name,
            "engine_precision": self.engine.precision,
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
            "max_len": {"a": self.max_len_a, "b": self.max_len_b},
            "text_preparation": {"lowercase": self.hub.prepare.lowercase, "tokenizer": self.hub.prepare.tokenizer,
                                 "bpe": self.hub.prepare.bpe},
        }


def gate_view(gates: Tensor) -> Dict[str, Any]:
    """gates [T,4H] of one layer -> per G2 gate (input, forget) and token: the mean over
    the hidden units (``unit_means``), the share of units below ``LOW`` and above ``HIGH``
    (the saturation measure of ``g2lstm-gates``), and the units themselves, ``"units"``
    [U][T], sorted by their mean over the tokens; at most :data:`MAX_HEATMAP_UNITS`,
    evenly spaced in that order, with ``"unit_ids"`` naming them."""
    view: Dict[str, Any] = dict(unit_means(gates))
    hidden = gates.shape[-1] // 4
    for gate in GATES:
        values = gates[:, gate_slice(GATE_LETTERS[gate], hidden)].double()  # [T,H]
        order = values.mean(0).argsort()
        if hidden > MAX_HEATMAP_UNITS:
            order = order[torch.linspace(0, hidden - 1, MAX_HEATMAP_UNITS).round().long()]
        view[f"{gate}_below"] = (values < LOW).double().mean(-1).tolist()
        view[f"{gate}_above"] = (values > HIGH).double().mean(-1).tolist()
        view[f"{gate}_units"] = values[:, order].t().round(decimals=3).tolist()
        view[f"{gate}_unit_ids"] = order.tolist()
    return view
