"""Load and save fairseq checkpoints for the plugin's checkpoint tools (averaging,
compression, ...).

Why not fairseq's ``checkpoint_utils`` directly:

- ``load_checkpoint_to_cpu`` meets a missing, truncated or foreign file with a long
  traceback; a tool should instead say in one line which file is wrong and how
  (:class:`CheckpointError`), so that its command line can print that line and exit 2.
- ``torch_persistent_save`` writes the destination in place: a tool killed mid-write, or
  a full disk, leaves a truncated ``.pt`` that fairseq-generate picks up later.
  :func:`save_checkpoint` writes a temporary file next to the destination and renames
  it, so the destination is either the old file, the complete new one, or absent.

A checkpoint here is the dict fairseq saves: ``model`` (the state dict), ``cfg`` (or
``args`` in old checkpoints), ``optimizer_history``, ``extra_state``,
``last_optimizer_state``. Loading uses ``torch.load``'s safe mode, as fairseq does under
torch >= 2.6; importing ``fairseq_g2lstm`` allow-lists the ``argparse.Namespace`` that
fairseq pickles (see ``compat.py``), so a file this module loads, fairseq loads too.
"""
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..atomic_file import PathLike, atomic_file

_MAX_REASON = 160  # characters of a library's own error message kept in ours


class CheckpointError(ValueError):
    """A checkpoint the user has to fix or choose differently; ``str()`` is one line that
    names the file, without a leading ``error:``."""


def one_line_reason(error: BaseException, limit: int = _MAX_REASON) -> str:
    """A short, single-line reason (at most ``limit`` characters) from a third-party
    exception, for the tools' one-line error messages."""
    text = str(error)
    unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsupported:
        return f"it pickles {unsupported.group(1)}, which torch.load's safe mode refuses"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    reason = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _field(config: Any, name: str) -> Any:
    """``config.name`` for an argparse.Namespace, ``config[name]`` for a dict-like cfg."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return config.get(name)
    return getattr(config, name, None)


def checkpoint_arch(state: Mapping) -> Optional[str]:
    """The architecture a fairseq checkpoint was trained with, or None if it names none.

    fairseq >= 0.10 stores the configuration as ``cfg``, whose ``model`` is either an
    ``argparse.Namespace`` (models with ``add_args``, like g2lstm: it has ``arch`` and
    ``_name``) or a dict (dataclass models: ``_name``). Older checkpoints store ``args``
    with ``arch``.
    """
    for source in (_field(state.get("cfg"), "model"), state.get("args")):
        for name in ("arch", "_name"):
            value = _field(source, name)
            if isinstance(value, str) and value:
                return value
    return None


def is_g2lstm_arch(arch: Optional[str]) -> bool:
    """Whether ``arch`` (an architecture or model name) builds a g2lstm model (translation
    or language model)."""
    if not arch:
        return False
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY

    from ..models import G2LSTMLanguageModel, G2LSTMModel  # importing them registers the g2lstm archs

    model_class = ARCH_MODEL_REGISTRY.get(arch) or MODEL_REGISTRY.get(arch)
    return isinstance(model_class, type) and issubclass(model_class, (G2LSTMModel, G2LSTMLanguageModel))


def check_input(path: PathLike) -> Path:
    """``path`` as a Path if it is a file; else the one-line error that
    :func:`load_checkpoint` would raise. Lets a tool check all its inputs before it loads
    the first (slow) one."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    return path


def load_checkpoint(path: PathLike, require_g2lstm: bool = True) -> Dict[str, Any]:
    """The fairseq checkpoint dict at ``path``, with every tensor on the CPU.

    Raises :class:`CheckpointError` when the file is missing or a folder, is not a file
    ``torch.load`` can read, is not a fairseq checkpoint (no ``model`` state dict of
    tensors), or, with ``require_g2lstm`` (the default), holds a model other than g2lstm:
    the plugin's tools rely on g2lstm's parameter layout.
    """
    path = check_input(path)
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as error:  # torch.load fails in many ways on foreign files (even KeyError)
        raise CheckpointError(f"{path}: not a torch checkpoint that can be loaded ({one_line_reason(error)})") from None
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, Mapping) or not all(isinstance(value, torch.Tensor) for value in model.values()):
        raise CheckpointError(f"{path}: not a fairseq checkpoint (no 'model' state dict of tensors)")
    if require_g2lstm:
        arch = checkpoint_arch(state)
        if arch is None:
            raise CheckpointError(f"{path}: the checkpoint names no model architecture (no cfg.model or args.arch)")
        if not is_g2lstm_arch(arch):
            raise CheckpointError(f"{path}: a '{arch}' model, not a g2lstm model")
    return state


def check_output(path: PathLike, force: bool = False) -> None:
    """Fail before any work when ``path`` cannot be written as a new checkpoint: it is a
    folder, or it exists and ``force`` is off."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the output checkpoint's file name")
    if path.exists() and not force:
        raise CheckpointError(f"{path} already exists; pass --force to replace it")


def save_checkpoint(state: Mapping, path: PathLike, force: bool = False) -> Path:
    """Write the checkpoint ``state`` to ``path`` atomically; return ``path``.

    Through :func:`~fairseq_g2lstm.atomic_file.atomic_file`, so neither a half-written
    checkpoint nor a stray temporary file is left behind. An existing ``path`` is
    refused unless ``force``; missing parent folders are created.
    """
    path = Path(path)
    check_output(path, force)
    try:
        with atomic_file(path, "wb") as stream:
            torch.save(dict(state), stream)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot write there ({error.strerror or error})") from None
    return path
