"""The model folder: a trained model that needs nothing else to translate.

``g2lstm-export`` writes, and ``G2LSTMModel.from_pretrained(DIR)``, ``g2lstm-serve`` and
``fairseq-interactive DIR --path DIR/model.pt`` read, one folder::

    DIR/
      model.pt                  inference-only checkpoint (no optimizer state); packed
                                compressed weights stay packed (expanded on load)
      dict.<src>.txt dict.<tgt>.txt   the dictionaries (a language model: dict.txt)
      sentencepiece.bpe.model   the sentencepiece model, or ``bpecodes`` (subword-nmt),
                                under the names fairseq's ``from_pretrained`` looks for
      MODEL.md                  the model card, for people
      model.json                what is inside, for programs (:data:`FORMAT`), with the
                                sha256 of every other file

fairseq's hub already loads "a folder with model.pt and its dictionaries"; what it cannot
know is the language pair (it infers it from binarized data files, which a model folder
does not carry) and the BPE. :func:`hub_from_folder` reads both from ``model.json``.
"""
import json
import os
from pathlib import Path
from typing import Any, Dict, List

from ..atomic_file import PathLike

FORMAT = "g2lstm-model-folder"
FORMAT_VERSION = 1
MANIFEST = "model.json"
CARD = "MODEL.md"
CHECKPOINT = "model.pt"
# The file names fairseq.hub_utils.from_pretrained finds by itself in a model folder.
BPE_FILES = {"sentencepiece": ("sentencepiece.bpe.model", "sentencepiece_model"),
             "subword_nmt": ("bpecodes", "bpe_codes")}
TRANSLATION, LANGUAGE_MODEL = "translation", "language_model"


class ModelFolderError(ValueError):
    """A folder that is not a complete, intact model folder; ``str()`` is one line."""


def is_model_folder(path: Any) -> bool:
    """Whether ``path`` is a folder with a ``model.json`` (what ``from_pretrained`` tests)."""
    return isinstance(path, (str, os.PathLike)) and (Path(path) / MANIFEST).is_file()


def read_manifest(folder: PathLike) -> Dict[str, Any]:
    """The folder's ``model.json``, checked to be ours and of a version we read."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ModelFolderError(f"{folder}: not a model folder (no {MANIFEST}); make one with g2lstm-export")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"{path}: unreadable ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFolderError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelFolderError(f"{path}: format version {manifest.get('format_version')}; "
                               f"this version reads {FORMAT_VERSION}")
    return manifest


def verify_folder(folder: PathLike) -> Dict[str, Any]:
    """The manifest, after checking that every file it lists is there with its sha256.
    A server calls this before it serves a folder: a half-copied or edited folder fails
    here, with the file named, instead of translating wrongly."""
    from ..checkpoints.io import file_sha256

    manifest = read_manifest(folder)
    for name, digest in manifest.get("files", {}).items():
        path = Path(folder) / name
        if not path.is_file():
            raise ModelFolderError(f"{folder}: {name} is missing")
        if file_sha256(path) != digest:
            raise ModelFolderError(f"{folder}: {name} does not match its sha256 in {MANIFEST} (changed or incomplete)")
    return manifest


def hub_overrides(folder: PathLike, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """The fairseq arguments that make the folder load alone: its BPE (the file under
    the name fairseq's ``from_pretrained`` also looks for) and, for a translation model,
    its language pair."""
    overrides: Dict[str, Any] = {}
    bpe = manifest.get("bpe")
    if bpe:
        file_name, argument = BPE_FILES[bpe["name"]]
        overrides.update({"bpe": bpe["name"], argument: str(Path(folder).resolve() / file_name)})
    if manifest["kind"] == TRANSLATION:
        overrides.update(source_lang=manifest["languages"]["source"], target_lang=manifest["languages"]["target"])
    return overrides


def hub_from_folder(folder: PathLike, **kwargs):
    """fairseq's hub interface (``GeneratorHubInterface``: ``translate``, ``sample``,
    ``encode``, ``generate``, ``decode``) over a model folder. ``kwargs`` are fairseq
    argument overrides, as for ``from_pretrained`` (``beam=5``, ``gate_eval="hard"``, ...);
    they win over the folder's own."""
    from fairseq import hub_utils

    manifest = read_manifest(folder)
    loaded = hub_utils.from_pretrained(str(Path(folder).resolve()), checkpoint_file=CHECKPOINT,
                                       data_name_or_path=".", **{**hub_overrides(folder, manifest), **kwargs})
    return hub_utils.GeneratorHubInterface(loaded["args"], loaded["task"], loaded["models"])


def interactive_command(folder: PathLike, manifest: Dict[str, Any]) -> List[str]:
    """The fairseq-interactive command line that translates with the folder (for the card
    and the docs; ``$(g2lstm-user-dir)`` stands for the plugin's folder)."""
    folder = str(folder)
    command = ["fairseq-interactive", folder, "--user-dir", "$(g2lstm-user-dir)",
               "--path", f"{folder}/{CHECKPOINT}", "--beam", "5"]
    if manifest["kind"] == TRANSLATION:
        command += ["--source-lang", manifest["languages"]["source"], "--target-lang", manifest["languages"]["target"]]
    bpe = manifest.get("bpe")
    if bpe:
        file_name, argument = BPE_FILES[bpe["name"]]
        command += ["--bpe", bpe["name"], f"--{argument.replace('_', '-')}", f"{folder}/{file_name}"]
    return command
