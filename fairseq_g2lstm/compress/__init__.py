"""Post-hoc compression of the input- and forget-gate weights (the paper's section 4, the
paper's Table 4): rounding, rounding with clipping, and truncated SVD.

- ``methods``: the math on one block matrix (and bit packing);
- ``blocks``: which blocks of a g2lstm state dict a scope compresses;
- ``packing``: the packed format and its expansion on load;
- ``apply``: state dict and checkpoint level, with the summary;
- ``cli``: ``g2lstm-compress`` (also ``python -m fairseq_g2lstm.compress``);
- ``sweep``: the Table 4 grid through fairseq-generate (``scripts/compression_sweep.py``).

The package itself imports nothing, so that ``python -m`` runs a tool module once and
importing :mod:`.packing` (whose :func:`~.packing.expand_packed` the package's
``__init__`` registers as a model loading hook) brings no fairseq CLI machinery.
"""
