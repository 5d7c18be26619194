"""Model folders: a trained model with its dictionaries, BPE model, card and manifest,
loadable alone (``g2lstm-export`` writes them; ``from_pretrained`` and ``g2lstm-serve``
read them).

- ``folder``: the format (names, ``model.json``), reading, checking and loading a folder;
- ``writer``: writing one from a checkpoint and its data-bin; ``card``: its ``MODEL.md``;
- ``cli``: ``g2lstm-export``.

Only ``folder`` is imported here: it needs nothing but the standard library until a model
is loaded, so the models can import it.
"""
from .folder import ModelFolderError, hub_from_folder, is_model_folder, read_manifest, verify_folder  # noqa: F401
