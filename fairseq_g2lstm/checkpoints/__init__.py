"""Tools that read and write fairseq checkpoints of g2lstm models.

- ``io``: :func:`load_checkpoint` and :func:`save_checkpoint`, the helpers every such
  tool shares (CPU loading with one-line errors, atomic writes);
- ``average``: the mean of several checkpoints (``g2lstm-average-checkpoints``, also
  ``python -m fairseq_g2lstm.checkpoints.average``).

This package imports only ``io``, so that ``python -m`` runs a tool module exactly once.
"""
from .io import CheckpointError, checkpoint_arch, load_checkpoint, save_checkpoint  # noqa: F401
