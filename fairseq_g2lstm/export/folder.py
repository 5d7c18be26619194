"""Loading a model folder (its format: :mod:`g2lstm_runtime.folder`) through fairseq's hub,
and the fairseq-interactive command that uses it.

fairseq's hub already loads "a folder with model.pt and its dictionaries"; what it cannot
know is the language pair (it infers it from binarized data files, which a model folder
does not carry), the tokenizer and the BPE, and how the training text was prepared
(lowercased, normalised). :func:`hub_from_folder` reads all of them from ``model.json``.
"""
import functools
from pathlib import Path
from typing import Any, Dict, List

from g2lstm_runtime.folder import BPE_FILES, CHECKPOINT, TRANSLATION, PathLike, read_manifest
from g2lstm_runtime.text import TextPreparation


def hub_overrides(folder: PathLike, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """The fairseq arguments that make the folder load alone: its tokenizer, its BPE (the
    file under the name fairseq's ``from_pretrained`` also looks for) and, for a
    translation model, its language pair."""
    overrides: Dict[str, Any] = {}
    if manifest.get("tokenizer"):
        overrides["tokenizer"] = manifest["tokenizer"]
    bpe = manifest.get("bpe")
    if bpe:
        file_name, argument = BPE_FILES[bpe["name"]]
        overrides.update({"bpe": bpe["name"], argument: str(Path(folder).resolve() / file_name)})
    if manifest["kind"] == TRANSLATION:
        overrides.update(source_lang=manifest["languages"]["source"], target_lang=manifest["languages"]["target"])
    return overrides


def hub_from_folder(folder: PathLike, **kwargs):
    """fairseq's hub interface (``GeneratorHubInterface``: ``translate``, ``sample``,
    ``encode``, ``generate``, ``decode``) over a model folder, whose ``encode`` first
    prepares the text as the training data was (:func:`prepared_hub_class`).
    ``kwargs`` are fairseq argument overrides, as for ``from_pretrained`` (``beam=5``,
    ``gate_eval="hard"``, ...); they win over the folder's own."""
    from fairseq import hub_utils

    manifest = read_manifest(folder)
    loaded = hub_utils.from_pretrained(str(Path(folder).resolve()), checkpoint_file=CHECKPOINT,
                                       data_name_or_path=".", **{**hub_overrides(folder, manifest), **kwargs})
    hub = prepared_hub_class()(loaded["args"], loaded["task"], loaded["models"])
    hub.prepare = TextPreparation.from_manifest(manifest)
    return hub


@functools.lru_cache(maxsize=None)
def prepared_hub_class():
    """``PreparedHubInterface``, defined on first use (fairseq is imported only then)."""
    from fairseq.hub_utils import GeneratorHubInterface

    class PreparedHubInterface(GeneratorHubInterface):
        """fairseq's hub, preparing each sentence (``self.prepare``) before its tokenizer,
        BPE and dictionary: ``translate``, ``sample`` and ``encode`` all read it as the
        model read its training data."""

        prepare = TextPreparation()

        def encode(self, sentence: str):
            return super().encode(self.prepare(sentence))

    return PreparedHubInterface


def interactive_command(folder: PathLike, manifest: Dict[str, Any]) -> List[str]:
    """The fairseq-interactive command line that translates with the folder (for the card
    and the docs; ``$(g2lstm-user-dir)`` stands for the plugin's folder)."""
    folder = str(folder)
    command = ["fairseq-interactive", folder, "--user-dir", "$(g2lstm-user-dir)",
               "--path", f"{folder}/{CHECKPOINT}", "--beam", "5"]
    if manifest["kind"] == TRANSLATION:
        command += ["--source-lang", manifest["languages"]["source"], "--target-lang", manifest["languages"]["target"]]
    if manifest.get("tokenizer"):
        command += ["--tokenizer", manifest["tokenizer"]]
    bpe = manifest.get("bpe")
    if bpe:
        file_name, argument = BPE_FILES[bpe["name"]]
        command += ["--bpe", bpe["name"], f"--{argument.replace('_', '-')}", f"{folder}/{file_name}"]
    return command
