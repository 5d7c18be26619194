"""Write a model folder (:mod:`.folder`) from a training checkpoint and its data-bin: the
work behind ``g2lstm-export`` (the command line is :mod:`.cli`).

The checkpoint is any g2lstm checkpoint fairseq loads: the trainer's, an averaged one
(``g2lstm-average-checkpoints``) or a compressed one (``g2lstm-compress``, packed or not;
packed weights stay packed and are expanded on load). Only what inference needs is
kept: the model's weights and configuration, the last training-history entry (fairseq's
loader reads it) and the compression or averaging record.
"""
import copy
import json
import shutil
from argparse import Namespace
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from g2lstm_runtime.folder import (BPE_FILES, CARD, CHECKPOINT, FORMAT, FORMAT_VERSION, LANGUAGE_MODEL, MANIFEST,
                                   TRANSLATION, ModelFolderError, file_sha256, read_manifest)

from ..atomic_file import PathLike
from ..checkpoints.io import CheckpointError, check_input, checkpoint_arch, load_checkpoint
from ..data.atomic_dir import atomic_output_dir, check_destination
from ..data.errors import PrepareError
from .card import model_card
from .folder import interactive_command
from .onnx import ONNX_QUANTIZE_CHOICES, add_onnx

QUANTIZE_CHOICES = ("none", "int8")
TOKENIZER_CHOICES = ("none", "moses")  # fairseq's --tokenizer names
# Checkpoint entries an inference-only copy keeps (besides the trimmed history).
KEPT_ENTRIES = ("model", "cfg", "args", "task_state", "compression", "averaged_from")
# Model arguments reported as the architecture in model.json (the gate flags are separate).
ARCH_PREFIXES = ("encoder_", "decoder_", "attention_", "share_", "dropout", "weight_drop")
GATE_FLAGS = ("gate_mode", "gate_temperature", "gate_noise_prob", "gate_eval", "gate_kernel")
TRAINING_FIELDS = ("optimizer", "lr", "lr_scheduler", "criterion", "label_smoothing", "max_tokens", "max_update",
                   "clip_norm", "seed")


@dataclass
class ExportOptions:
    """What ``g2lstm-export`` was asked for beyond the checkpoint and the data-bin."""

    quantize: str = "none"
    force: bool = False
    sentencepiece_model: Optional[Path] = None
    bpe_codes: Optional[Path] = None
    no_bpe: bool = False
    tokenizer: str = "none"
    source_lang: Optional[str] = None
    target_lang: Optional[str] = None
    bleu: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    # ONNX graphs to add (``--onnx``): None for none, else the precision (``--onnx-quantize``).
    onnx: Optional[str] = None


def _get(config: Any, name: str) -> Any:
    """``config.name`` (argparse.Namespace) or ``config[name]`` (dict cfg); None if absent."""
    if config is None:
        return None
    return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)


def _set(config: Any, name: str, value: Any) -> None:
    if isinstance(config, Mapping):
        config[name] = value
    else:
        setattr(config, name, value)


def model_args(state: Dict[str, Any]) -> Any:
    """The model's arguments: ``cfg["model"]`` (a Namespace for g2lstm) or old ``args``."""
    return _get(state.get("cfg"), "model") or state.get("args")


def is_language_model(state: Dict[str, Any]) -> bool:
    from fairseq.models import ARCH_MODEL_REGISTRY

    from ..models import G2LSTMLanguageModel

    model_class = ARCH_MODEL_REGISTRY.get(checkpoint_arch(state))
    return isinstance(model_class, type) and issubclass(model_class, G2LSTMLanguageModel)


def language_pair(state: Dict[str, Any], data: Path, options: ExportOptions) -> Dict[str, str]:
    """source and target: the flags, else the checkpoint's task, else what fairseq infers
    from the data-bin's file names (as it did when training)."""
    from fairseq.data import data_utils

    task = _get(state.get("cfg"), "task") or state.get("args")
    source = options.source_lang or _get(task, "source_lang")
    target = options.target_lang or _get(task, "target_lang")
    if source is None or target is None:
        try:
            inferred = data_utils.infer_language_pair(str(data))
        except Exception:  # fairseq raises on a data-bin without binarized splits
            inferred = (None, None)
        source, target = source or inferred[0], target or inferred[1]
    if source is None or target is None:
        raise ModelFolderError(f"{data}: cannot tell the language pair (no binarized split files); "
                               "give --source-lang and --target-lang")
    return {"source": source, "target": target}


def find_bpe(data: Path, options: ExportOptions) -> Optional[Dict[str, Any]]:
    """The BPE model to ship: the flags, else the sentencepiece model the data-bin's
    ``manifest.json`` names (g2lstm's preparation scripts write it), else the only
    ``*.model`` or a ``bpecodes``/``code`` file in the data-bin; None if there is none."""
    if options.no_bpe:
        return None
    if options.sentencepiece_model:
        return {"name": "sentencepiece", "path": check_file(options.sentencepiece_model, "--sentencepiece-model")}
    if options.bpe_codes:
        return {"name": "subword_nmt", "path": check_file(options.bpe_codes, "--bpe-codes")}
    recorded = _data_manifest(data).get("spm_model")
    if recorded and (data / Path(recorded).name).is_file():
        return {"name": "sentencepiece", "path": data / Path(recorded).name}
    models = sorted(data.glob("*.model"))
    if len(models) == 1:
        return {"name": "sentencepiece", "path": models[0]}
    if len(models) > 1:
        raise ModelFolderError(f"{data}: several sentencepiece models ({', '.join(p.name for p in models)}); "
                               "choose one with --sentencepiece-model")
    for name in ("bpecodes", "code"):
        if (data / name).is_file():
            return {"name": "subword_nmt", "path": data / name}
    return None


def check_file(path: PathLike, flag: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"{flag} {path}: no such file")
    return path


def _data_manifest(data: Path) -> Dict[str, Any]:
    """The data-bin's ``manifest.json`` (written by g2lstm's preparation scripts), or {}."""
    try:
        manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def dictionary_files(data: Path, kind: str, languages: Dict[str, str]) -> List[Path]:
    names = ["dict.txt"] if kind == LANGUAGE_MODEL else [f"dict.{languages['source']}.txt",
                                                         f"dict.{languages['target']}.txt"]
    paths = [data / name for name in dict.fromkeys(names)]
    for path in paths:
        if not path.is_file():
            raise ModelFolderError(f"{data}: no {path.name}; is it the data-bin the model was trained on?")
    return paths


def inference_state(state: Dict[str, Any], quantize: str) -> Dict[str, Any]:
    """The checkpoint without optimizer state, its data path pointing into the folder
    (``.``), and ``quantize`` in the model's arguments so that loading applies it."""
    kept = {key: copy.deepcopy(state[key]) if key != "model" else state[key] for key in KEPT_ENTRIES if key in state}
    kept["optimizer_history"] = state.get("optimizer_history", [])[-1:]  # fairseq's loader reads the last entry
    kept["extra_state"] = {}
    kept["last_optimizer_state"] = None
    task = _get(kept.get("cfg"), "task")
    if task is not None:
        _set(task, "data", ".")
    args = model_args(kept)
    _set(args, "quantize", quantize)
    if _get(args, "data") is not None:
        _set(args, "data", ".")
    return kept


def describe(state: Dict[str, Any], kind: str, languages: Dict[str, str], dictionaries: Dict[str, int],
             bpe: Optional[Dict[str, Any]], data: Path, checkpoint: Path, options: ExportOptions) -> Dict[str, Any]:
    """model.json without ``files`` (added once they are written)."""
    args = model_args(state)
    values = vars(args) if isinstance(args, Namespace) else dict(args or {})
    history = (state.get("optimizer_history") or [{}])[-1]
    compression = state.get("compression") or {}
    data_manifest = _data_manifest(data)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "arch": checkpoint_arch(state),
        "architecture": {k: _plain(v) for k, v in sorted(values.items()) if k.startswith(ARCH_PREFIXES)},
        "gates": {k[len("gate_"):]: _plain(values.get(k)) for k in GATE_FLAGS},
        "languages": languages,
        "vocabulary": dictionaries,
        "tokenizer": None if options.tokenizer == "none" else options.tokenizer,
        "bpe": {"name": bpe["name"], "file": BPE_FILES[bpe["name"]][0]} if bpe else None,
        "quantize": options.quantize,
        "compression": compression.get("signature"),
        "averaged_from": state.get("averaged_from"),
        "training": {
            "updates": history.get("num_updates"),
            "command": state.get("training_command"),  # recorded by no fairseq version so far: usually None
            **{name: _plain(values.get(name)) for name in TRAINING_FIELDS},
        },
        "data": {"lowercase": data_manifest.get("lowercase"), "prepared_by": data_manifest.get("command")},
        "source_checkpoint": {"name": checkpoint.name, "sha256": file_sha256(checkpoint)},
        "bleu": options.bleu,
        "notes": list(options.notes),
        "created_by": f"g2lstm-export {_version()}",
    }


def _plain(value: Any) -> Any:
    """JSON-safe: tuples become lists, anything exotic its string."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fairseq-g2lstm")
    except metadata.PackageNotFoundError:
        return "unknown"


def export_model(checkpoint: PathLike, data: PathLike, out: PathLike, options: ExportOptions) -> Dict[str, Any]:
    """Write the model folder ``out``; return its manifest. Everything is checked before
    the (slow) checkpoint load, and the folder appears whole or not at all."""
    checkpoint, data, out = check_input(checkpoint), Path(data), Path(out)
    if options.quantize not in QUANTIZE_CHOICES:
        raise ModelFolderError(f"--quantize {options.quantize}: choose from {', '.join(QUANTIZE_CHOICES)}")
    if options.tokenizer not in TOKENIZER_CHOICES:
        raise ModelFolderError(f"--tokenizer {options.tokenizer}: choose from {', '.join(TOKENIZER_CHOICES)}")
    if options.onnx is not None and options.onnx not in ONNX_QUANTIZE_CHOICES:
        raise ModelFolderError(f"--onnx-quantize {options.onnx}: choose from {', '.join(ONNX_QUANTIZE_CHOICES)}")
    if not data.is_dir():
        raise ModelFolderError(f"{data}: no such data-bin folder")
    check_out_apart(out, {"--data": (data, True), "the checkpoint": (checkpoint, False),
                          "the checkpoint's folder": (checkpoint.parent, False)})
    try:
        check_destination(out, options.force)
    except PrepareError as error:
        raise ModelFolderError(str(error)) from None
    bpe = find_bpe(data, options)
    state = load_checkpoint(checkpoint)
    kind = LANGUAGE_MODEL if is_language_model(state) else TRANSLATION
    languages = language_pair(state, data, options) if kind == TRANSLATION else {}
    dictionaries = dictionary_files(data, kind, languages)
    sizes = {_dictionary_role(path, kind, languages): _dictionary_size(path) for path in dictionaries}
    manifest = describe(state, kind, languages, sizes, bpe, data, checkpoint, options)
    with atomic_output_dir(out, options.force) as staging:
        torch.save(inference_state(state, options.quantize), staging / CHECKPOINT)
        for path in dictionaries:
            shutil.copyfile(path, staging / path.name)
        if bpe:
            shutil.copyfile(bpe["path"], staging / BPE_FILES[bpe["name"]][0])
        (staging / CARD).write_text(model_card(manifest, interactive_command("THIS_FOLDER", manifest)), encoding="utf-8")
        manifest["files"] = {path.name: file_sha256(path) for path in sorted(staging.iterdir())}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if options.onnx is not None:
            manifest["onnx"] = add_onnx(staging, options.onnx)
            manifest["files"] = read_manifest(staging)["files"]
    return manifest


def check_out_apart(out: Path, inputs: Dict[str, Tuple[Path, bool]]) -> None:
    """Refuse an ``out`` that is or holds an input (replacing it with ``--force`` would
    delete the training data or the checkpoints), or sits inside one whose flag says so
    (the data-bin: fairseq reads every file there). ``inputs``: name -> (path, whether
    inside is refused too)."""
    target = out.resolve()
    for name, (path, not_inside) in inputs.items():
        path = path.resolve()
        relation = ("is" if target == path else "holds" if target in path.parents
                    else "is inside" if not_inside and path in target.parents else None)
        if relation:
            raise ModelFolderError(f"--out {out} {relation} {name} ({path}); write the model folder elsewhere")


def _dictionary_role(path: Path, kind: str, languages: Dict[str, str]) -> str:
    if kind == LANGUAGE_MODEL:
        return "target"
    return "source" if path.name == f"dict.{languages['source']}.txt" else "target"


def _dictionary_size(path: Path) -> int:
    """Entries of a fairseq dictionary file plus its 4 special symbols (as fairseq counts)."""
    from fairseq.data import Dictionary

    return len(Dictionary.load(str(path)))


__all__ = ["CheckpointError", "ExportOptions", "ModelFolderError", "export_model", "QUANTIZE_CHOICES"]
