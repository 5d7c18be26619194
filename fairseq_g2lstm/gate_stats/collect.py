"""Load g2lstm checkpoints and measure their gates teacher-forced: the work behind
``g2lstm-gates`` (the command line is :mod:`.cli`).

* :func:`load_g2lstm` loads a checkpoint with fairseq's own loader
  (``checkpoint_utils.load_model_ensemble_and_task``, the data-bin and any flag
  overrides passed as ``arg_overrides``), in eval mode, on a device, and wraps it in
  fairseq's hub interface (what ``G2LSTMModel.from_pretrained`` returns) for raw-text
  encoding and beam search. The checkpoint file is only read.
* :func:`collect_tallies` runs the model teacher-forced over (a seeded random subset of)
  a split, through fairseq's dataset, batching and iterator, and feeds every LSTM
  layer's input and forget gates into :class:`~fairseq_g2lstm.rnn.GateTallies`.
* :func:`stats_record` turns the tallies into the JSON record ``g2lstm-gates`` writes.
* :func:`token_gates` computes the per-token mean gates of one sentence pair (the
  paper's per-token view, section 5).

Layer names are those of :class:`~fairseq_g2lstm.rnn.GateTallies`: ``encoder.<l>`` (and
``encoder.<l>.reverse`` for the reverse direction of a bidirectional layer) and
``decoder.<l>``.

Language models (``g2lstm_lm``, ``--task language_modeling``) work the same way: their
layers are ``decoder.<l>``, a split's items are the task's token blocks, and the
per-token view reads the given text itself (no source, no translation).
"""
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from g2lstm_runtime.folder import file_sha256

from ..checkpoints.io import CheckpointError, check_input, load_checkpoint, one_line_reason
from ..gates import gate_slice
from ..rnn.gate_tallies import GATES, HIGH, LOW, GateTallies

logger = logging.getLogger(__name__)

GATE_LETTERS = {"input": "i", "forget": "f"}  # GATES -> gates.GATE_ORDER
START_SYMBOL = "<s>"  # how the heatmap shows the decoder's first input (fairseq feeds eos)
_MAX_REASON = 200


class GateStatsError(ValueError):
    """Bad input for ``g2lstm-gates`` (data-bin, split, layer name, ...): ``str()`` is one
    line, without a leading ``error:``."""


def pick_device(cpu: bool = False) -> torch.device:
    """The GPU when there is one and ``cpu`` is off, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")


@dataclass
class LoadedModel:
    """A g2lstm checkpoint loaded for gate statistics."""

    path: Path
    label: str
    model: Any  # G2LSTMModel, eval mode, on ``device``
    task: Any  # the fairseq task, with the data-bin's dictionaries
    cfg: Any  # the checkpoint's configuration, overrides applied
    hub: Any  # fairseq.hub_utils.GeneratorHubInterface over ``model``
    sha256: str
    device: torch.device

    @property
    def gate(self):
        """The model's gate flags (mode, temperature, eval mode) as it was built."""
        lstm = self.model.decoder.lstm if is_language_model(self.model) else self.model.encoder.lstm
        return lstm.gate

    def layer_names(self) -> List[str]:
        """Every LSTM layer the teacher-forced pass records, encoder first."""
        return layer_names(self.model)


def is_language_model(model) -> bool:
    """Whether ``model`` is a g2lstm language model (no encoder)."""
    from ..models import G2LSTMLanguageModel

    return isinstance(model, G2LSTMLanguageModel)


def layer_names(model) -> List[str]:
    """``encoder.<l>`` (plus ``encoder.<l>.reverse`` where bidirectional), then ``decoder.<l>``;
    a language model's ``decoder.<l>``."""
    if is_language_model(model):
        return [f"decoder.{layer}" for layer in range(model.decoder.lstm.num_layers)]
    names = []
    for layer, directions in enumerate(model.encoder.lstm.num_directions):
        names.append(f"encoder.{layer}")
        if directions == 2:
            names.append(f"encoder.{layer}.reverse")
    names += [f"decoder.{layer}" for layer in range(model.decoder.layers.num_layers)]
    return names


def load_g2lstm(
    path,
    data,
    label: str = "",
    *,
    gate_eval: Optional[str] = None,
    overrides: Optional[Dict[str, Any]] = None,
    device: Optional[torch.device] = None,
) -> LoadedModel:
    """Load the g2lstm checkpoint at ``path`` against the data-bin ``data``.

    gate_eval: ``soft`` or ``hard`` to override the checkpoint's ``--gate-eval`` (None:
        keep it). overrides: more fairseq ``arg_overrides``, e.g. ``{"bpe":
        "sentencepiece", "sentencepiece_model": "data-bin/spm.model"}`` for raw text.
    Raises :class:`CheckpointError` (missing, unreadable, not fairseq, not g2lstm) or
    :class:`GateStatsError` (the data-bin) with one line.
    """
    from fairseq import checkpoint_utils
    from fairseq.hub_utils import GeneratorHubInterface

    from ..models import G2LSTMLanguageModel, G2LSTMModel

    path, data = Path(path), Path(data)
    check_input(path)
    check_data_bin(data)
    arg_overrides = {"data": str(data), **(overrides or {})}
    if gate_eval is not None:
        arg_overrides["gate_eval"] = gate_eval
    try:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides=arg_overrides)
    except Exception as error:  # fairseq fails in many ways on foreign files; say which way in one line
        load_checkpoint(path)  # raises the precise CheckpointError for a bad file
        reason = one_line_reason(error, _MAX_REASON)
        raise GateStatsError(f"{path}: fairseq could not load it with the data-bin {data} ({reason})") from None
    model = models[0]
    if not isinstance(model, (G2LSTMModel, G2LSTMLanguageModel)):
        arch = getattr(cfg.model, "arch", None) or getattr(cfg.model, "_name", None) or type(model).__name__
        raise CheckpointError(f"{path}: a '{arch}' model, not a g2lstm model")
    device = device or pick_device()
    try:
        hub = GeneratorHubInterface(cfg, task, models)  # builds the tokenizer and BPE; eval mode
    except Exception as error:
        bpe = {k: v for k, v in (overrides or {}).items() if k in ("bpe", "tokenizer")}
        raise GateStatsError(f"cannot set up raw-text encoding {bpe or ''} ({one_line_reason(error, _MAX_REASON)})") from None
    hub.to(device)
    model.eval()
    return LoadedModel(path, label or default_labels([path])[0], model, task, cfg, hub, file_sha256(path), device)


def task_data(task) -> str:
    """The data-bin of a fairseq task: ``cfg.data``, or ``args.data`` for legacy tasks
    such as language_modeling (whose ``cfg`` is None)."""
    return (task.cfg if task.cfg is not None else task.args).data


def check_data_bin(data: Path) -> None:
    if not data.is_dir():
        raise GateStatsError(f"{data}: no such data-bin folder")
    if not any(data.glob("dict.*.txt")) and not (data / "dict.txt").is_file():  # dict.txt: language models
        raise GateStatsError(f"{data}: not a fairseq data-bin (no dict.*.txt or dict.txt)")


def default_labels(paths: Sequence) -> List[str]:
    """One label per checkpoint: the file's stem (``checkpoint_best``), prefixed with its
    folder's name where stems repeat (``g2lstm-checkpoint_best``), numbered if still equal."""
    paths = [Path(p) for p in paths]
    stems = [p.stem for p in paths]
    labels = [s if stems.count(s) == 1 else f"{p.parent.name}-{s}" for p, s in zip(paths, stems)]
    return [lab if labels.count(lab) == 1 else f"{lab}-{k + 1}" for k, lab in enumerate(labels)]


def file_label(label: str) -> str:
    """``label`` as a file-name part: characters other than letters, digits, ``.-_`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "model"


# --- the teacher-forced pass over a split ---------------------------------------------------------
@dataclass
class SplitRun:
    """What :func:`collect_tallies` ran over."""

    split: str
    sentences_in_split: int
    sentences: int  # pairs actually run
    skipped_too_long: int  # of those drawn, longer than the model's or --max-tokens' limit
    seed: int
    target_tokens: int
    source_tokens: int


def select_indices(num_pairs: int, max_sentences: Optional[int], seed: int) -> Optional[np.ndarray]:
    """The dataset indices to run: None for all (``max_sentences`` None or at least the
    split's size), else a seeded random subset of ``max_sentences``, sorted."""
    if max_sentences is None or max_sentences >= num_pairs:
        return None
    return np.sort(np.random.default_rng(seed).choice(num_pairs, size=max_sentences, replace=False))


def collect_tallies(
    loaded: LoadedModel,
    split: str = "train",
    max_sentences: Optional[int] = 10_000,
    *,
    max_tokens: Optional[int] = 8000,
    batch_size: Optional[int] = None,
    seed: int = 1,
    bins: int = 50,
    log_format: Optional[str] = None,
    progress: bool = True,
    recorder_objects: Sequence[Any] = (),
):
    """Run ``loaded`` teacher-forced, in eval mode, over ``max_sentences`` pairs of
    ``split`` (a seeded random subset; all if the split has fewer) and tally the input and
    forget gates of every layer with entropy and ``bins``-bin histograms.

    recorder_objects: more ``gate_stats`` objects that see the same batches (tests use one
    to keep the raw gates). Returns ``(GateTallies, SplitRun)``.
    """
    from fairseq import utils
    from fairseq.data import iterators
    from fairseq.logging import progress_bar

    task, model = loaded.task, loaded.model
    try:
        task.load_dataset(split, combine=False, epoch=1)
        dataset = task.dataset(split)
    except Exception as error:  # FileNotFoundError, or fairseq's own for a missing split
        raise GateStatsError(f"{task_data(task)}: cannot load the '{split}' split ({one_line_reason(error, _MAX_REASON)})") from None
    chosen = select_indices(len(dataset), max_sentences, seed)
    indices = dataset.ordered_indices()  # fairseq's order: similar lengths together
    if chosen is not None:
        indices = indices[np.isin(indices, chosen)]
    drawn = len(indices)
    max_positions = utils.resolve_max_positions(task.max_positions(), model.max_positions(), max_tokens)
    indices, ignored = dataset.filter_indices_by_size(indices, max_positions)
    if ignored:
        logger.warning("%d of %d pairs are longer than %s tokens and are skipped", len(ignored), drawn, max_positions)
    if not len(indices):
        raise GateStatsError(f"no pair of the '{split}' split fits the length limits {max_positions}")
    batches = dataset.batch_by_size(indices, max_tokens=max_tokens, max_sentences=batch_size,
                                    required_batch_size_multiple=1)
    tallies = GateTallies(bins=bins, entropy=True)
    recorders = [tallies, *recorder_objects]
    fan_out = _FanOut(recorders) if len(recorders) > 1 else tallies
    source_tokens = target_tokens = 0
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # fairseq's iterator asks for pinned memory, which torch warns about on a CPU-only machine
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        itr = iterators.EpochBatchIterator(dataset=dataset, collate_fn=dataset.collater, batch_sampler=batches,
                                           seed=seed, num_workers=0).next_epoch_itr(shuffle=False)
        bar = progress_bar.progress_bar(itr, log_format=log_format if progress else "none", log_interval=100,
                                        prefix=f"gates of {loaded.label} on '{split}'")
        for sample in bar:
            if not sample:
                continue
            if loaded.device.type == "cuda":
                sample = utils.move_to_cuda(sample)
            model(**sample["net_input"], gate_stats=fan_out)
            if not is_language_model(model):  # a language model's src_tokens are its targets, shifted
                source_tokens += int(sample["net_input"]["src_lengths"].sum())
            target_tokens += int(sample["ntokens"])
    run = SplitRun(split, len(dataset), len(indices), len(ignored), seed, target_tokens, source_tokens)
    return tallies, run


class _FanOut:
    """A ``gate_stats`` object that hands every layer's gates to several others."""

    def __init__(self, targets):
        self.targets = targets

    def recorder(self, prefix: str):
        hooks = [target.recorder(prefix) for target in self.targets]

        def record(layer, direction, gates, lengths):
            for hook in hooks:
                hook(layer, direction, gates, lengths)

        return record


def layer_summary(tallies: GateTallies, names: Sequence[str]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``{layer: {gate: {count, share_below, share_above, mean, entropy_bits, histogram}}}``
    in the order of ``names`` (layers that recorded nothing are left out)."""
    by_key = {(name, gate): tally for name, gate, tally in tallies}
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for name in names:
        for gate in GATES:
            tally = by_key.get((name, gate))
            if tally is None:
                continue
            entry = tally.summary()
            entry["histogram"] = tally.fractions()
            out.setdefault(name, {})[gate] = entry
    return out


def stats_record(loaded: LoadedModel, tallies: GateTallies, run: SplitRun,
                 provenance: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON record of one checkpoint's gate statistics (see docs/gate_stats.md)."""
    return {
        "generated_by": provenance,
        "kind": "gate-statistics",
        "label": loaded.label,
        "checkpoint": checkpoint_info(loaded),
        "data": str(Path(task_data(loaded.task)).resolve()),
        "split": run.split,
        "sentences": run.sentences,
        "sentences_in_split": run.sentences_in_split,
        "skipped_too_long": run.skipped_too_long,
        "seed": run.seed,
        "source_tokens": run.source_tokens,
        "target_tokens": run.target_tokens,
        "mode": "teacher-forced, eval (no dropout, no gate noise)",
        "device": loaded.device.type,
        "thresholds": {"low": LOW, "high": HIGH},
        "histogram_bins": tallies.bins,
        "layers": layer_summary(tallies, loaded.layer_names()),
    }


def checkpoint_info(loaded: LoadedModel) -> Dict[str, Any]:
    gate = loaded.gate
    return {
        "path": str(loaded.path.resolve()),
        "sha256_prefix": loaded.sha256[:16],
        "arch": getattr(loaded.cfg.model, "arch", None),
        "gate_mode": gate.mode,
        "gate_temperature": gate.tau,
        "gate_eval": gate.eval_mode,
    }


# --- the per-token view ---------------------------------------------------------------------------
class LayerCapture:
    """A ``gate_stats`` object that keeps the raw gates [T,B,4H] of one layer."""

    def __init__(self, name: str):
        self.name = name
        self.gates: Optional[Tensor] = None

    def recorder(self, prefix: str):
        def record(layer, direction, gates, lengths):
            name = f"{prefix}.{layer}" + (".reverse" if direction else "")
            if name == self.name:
                self.gates = gates.detach().float().cpu()

        return record


def encode_target(loaded: LoadedModel, text: str) -> Tensor:
    """Raw target text -> target ids [T] ending in eos, through the hub's tokenizer and BPE
    (as ``hub.encode`` does for the source)."""
    bpe_text = loaded.hub.apply_bpe(loaded.hub.tokenize(text))
    return loaded.task.target_dictionary.encode_line(bpe_text, add_if_not_exist=False, append_eos=True).long()


def unit_means(gates: Tensor) -> Dict[str, List[float]]:
    """gates [T,4H] of one layer -> the mean over hidden units of the input and forget
    gates at every step, ``{"input": [T], "forget": [T]}``: the per-token view."""
    hidden = gates.shape[-1] // 4
    return {gate: gates[:, gate_slice(GATE_LETTERS[gate], hidden)].double().mean(-1).tolist() for gate in GATES}


def token_gates(loaded: LoadedModel, source: str, target: Optional[str] = None, *, layer: str = "decoder.0",
                beam: int = 5) -> Dict[str, Any]:
    """The mean over hidden units of the input and forget gates of decoder ``layer`` at
    every step of one teacher-forced sentence pair.

    ``source`` (and ``target``) are raw text, encoded by the hub (tokenizer, BPE,
    dictionary) like fairseq-interactive; without ``target`` the checkpoint's own
    beam-``beam`` translation is used. Step t reads target token t-1 (the start symbol
    at t = 0) and predicts token t; the record has both.

    For a language model ``source`` is the text it reads (``target`` must be None).
    """
    hub, tgt_dict = loaded.hub, loaded.task.target_dictionary
    if is_language_model(loaded.model):
        if target is not None:
            raise GateStatsError("a language model reads the --heatmap text itself; give no --heatmap-target")
        src_ids = torch.zeros(0, dtype=torch.long)
        tgt_ids, given = encode_target(loaded, source), "the text itself (language model)"
    elif target is not None:
        src_ids = hub.encode(source)  # [S], ends in eos
        tgt_ids = encode_target(loaded, target)
        given = "given"
    else:
        src_ids = hub.encode(source)  # [S], ends in eos
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pin_memory.*")  # as in collect_tallies
            hypos = hub.generate(src_ids, beam=beam)
        tgt_ids = hypos[0]["tokens"].cpu()
        given = f"beam-{beam} translation"
    means = unit_means(teacher_forced_gates(loaded, src_ids, tgt_ids, layer))
    predicts = [tgt_dict[i] for i in tgt_ids.tolist()]
    reads = [START_SYMBOL] + predicts[:-1]
    return {
        "label": loaded.label,
        "checkpoint": checkpoint_info(loaded),
        "source": source,
        "source_ids": src_ids.tolist(),
        "target": hub.decode(tgt_ids),
        "target_from": given,
        "target_ids": tgt_ids.tolist(),
        "steps": {"reads": reads, "predicts": predicts, **means},
    }


def teacher_forced_gates(loaded: LoadedModel, src_ids: Tensor, tgt_ids: Tensor, layer: str) -> Tensor:
    """The gates [T,4H] of ``layer`` for one pair: src_ids [S] and tgt_ids [T], each
    ending in eos; the decoder reads ``[eos] + tgt_ids[:-1]`` (fairseq's teacher forcing)."""
    eos = loaded.task.target_dictionary.eos()
    prev = torch.cat([torch.tensor([eos]), tgt_ids[:-1]])
    capture = LayerCapture(layer)
    device = loaded.device
    with torch.no_grad():
        if is_language_model(loaded.model):
            loaded.model(prev.unsqueeze(0).to(device), gate_stats=capture)
        else:
            loaded.model(src_ids.unsqueeze(0).to(device), torch.tensor([len(src_ids)], device=device),
                         prev.unsqueeze(0).to(device), gate_stats=capture)
    if capture.gates is None:
        raise GateStatsError(f"layer {layer} recorded no gates")
    return capture.gates[:, 0]


def word_spans(pieces: Sequence[str], bpe) -> Optional[List[List[int]]]:
    """Group subword ``pieces`` into words: lists of positions, in order. None when the
    BPE does not mark word boundaries in a way we know (then show the pieces)."""
    spans: List[List[int]] = []
    separator = str(getattr(bpe, "bpe_symbol", "") or "").strip()  # subword-nmt: "@@" ends a non-final piece
    if separator:
        for k, piece in enumerate(pieces):
            if not spans or not pieces[k - 1].endswith(separator):
                spans.append([])
            spans[-1].append(k)
        return spans
    starts = getattr(bpe, "is_beginning_of_word", None)
    if starts is None:
        return None
    for k, piece in enumerate(pieces):
        try:
            new_word = bool(starts(piece))
        except Exception:  # a BPE whose test needs something else than a piece
            return None
        if new_word or not spans:
            spans.append([])
        spans[-1].append(k)
    return spans


def heatmap_columns(record: Dict[str, Any], bpe, units: str = "auto") -> Dict[str, Any]:
    """The columns to draw for one :func:`token_gates` record: per token read
    (``units="tokens"``), or per word (``"words"``, the mean over the word's pieces;
    ``"auto"``: words where the BPE marks them). Adds ``units``, ``columns``, ``input``
    and ``forget`` to a copy of ``record``."""
    steps = record["steps"]
    reads = steps["reads"]
    spans = None
    if units in ("auto", "words") and bpe is not None:  # without a BPE the tokens are the words
        spans = word_spans(reads[1:], bpe)
        if spans is None and units == "words":
            raise GateStatsError("--heatmap-units words: this BPE does not mark word boundaries; use tokens")
    out = dict(record)
    if spans is None:
        out.update(units="tokens", columns=list(reads), **{gate: list(steps[gate]) for gate in GATES})
        return out
    spans = [[0]] + [[k + 1 for k in span] for span in spans]  # the start symbol stays a column
    columns = [reads[0]] + [_join_pieces([reads[k] for k in span], bpe) for span in spans[1:]]
    out.update(units="words", columns=columns,
               **{gate: [float(np.mean([steps[gate][k] for k in span])) for span in spans] for gate in GATES})
    return out


def _join_pieces(pieces: List[str], bpe) -> str:
    if bpe is None:
        return " ".join(pieces)
    try:
        return bpe.decode(" ".join(pieces)).strip() or "".join(pieces)
    except Exception:
        return "".join(pieces)
