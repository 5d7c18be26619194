"""The model folder: a trained model that needs nothing else to translate.

``g2lstm-export`` writes one, and every way of translating with it reads it: the hub
(``G2LSTMModel.from_pretrained(DIR)``), ``g2lstm-serve`` and fairseq-interactive::

    DIR/
      model.pt                  inference-only checkpoint (no optimizer state); packed
                                compressed weights stay packed (expanded on load)
      dict.<src>.txt dict.<tgt>.txt   the dictionaries (a language model: dict.txt)
      sentencepiece.bpe.model   the sentencepiece model, or ``bpecodes`` (subword-nmt),
                                under the names fairseq's ``from_pretrained`` looks for
      MODEL.md                  the model card, for people
      model.json                what is inside, for programs (:data:`FORMAT`), with the
                                sha256 of every other file

This module is the format and its reading, with the standard library only, so that a
reader without torch checks a folder exactly as the server does.
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

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


def file_sha256(path: PathLike) -> str:
    """The sha256 of a file, hex, read in 1 MiB chunks (checkpoints are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def verify_folder(folder: PathLike, names: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """The manifest, after checking that every file it lists is there with its sha256.
    A server calls this before it serves a folder: a half-copied or edited folder fails
    here, with the file named, instead of translating wrongly. ``names``: check only these
    of the listed files (those a reader uses: the ONNX engine never reads ``model.pt``)."""
    manifest = read_manifest(folder)
    wanted = None if names is None else set(names)
    for name, digest in manifest.get("files", {}).items():
        if wanted is not None and name not in wanted:
            continue
        path = Path(folder) / name
        if not path.is_file():
            raise ModelFolderError(f"{folder}: {name} is missing")
        if file_sha256(path) != digest:
            raise ModelFolderError(f"{folder}: {name} does not match its sha256 in {MANIFEST} (changed or incomplete)")
    return manifest
