"""Model folders: a trained model with its dictionaries, BPE model, card and manifest,
loadable alone (``g2lstm-export`` writes them; ``from_pretrained`` and ``g2lstm-serve``
read them).

- ``folder``: loading a folder through fairseq's hub (the format itself, its reading and
  checking: :mod:`g2lstm_runtime.folder`);
- ``writer``: writing one from a checkpoint and its data-bin; ``card``: its ``MODEL.md``;
- ``cli``: ``g2lstm-export``.

Only ``folder`` is imported here: it needs nothing but the standard library until a model
is loaded, so that importing the package (which registers :func:`hub_from_folder` as the
models' folder loader, :mod:`fairseq_g2lstm.models.loading`) stays cheap.
"""
from g2lstm_runtime.folder import ModelFolderError, is_model_folder, read_manifest, verify_folder  # noqa: F401

from .folder import hub_from_folder  # noqa: F401
