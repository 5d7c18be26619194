"""fairseq-g2lstm: G2-LSTM (Gumbel-gate LSTM) translation models for fairseq.

Layout, bottom up: ``gates`` (the gate math) -> ``rnn`` (cells and layers) ->
``models`` (the fairseq model and architectures) -> ``data`` and the tools.

``--user-dir fairseq_g2lstm`` imports this package, which registers the ``g2lstm``
model. The layers below ``models`` need only torch, so they also work where fairseq
is not installed.
"""
from .compat import allow_fairseq_checkpoints, fix_diverse_beam_search, keep_last_partial_batch

allow_fairseq_checkpoints()

try:
    import fairseq  # noqa: F401
except ImportError:  # torch-only use: gates and rnn
    pass
else:
    keep_last_partial_batch()
    fix_diverse_beam_search()
    from . import models  # noqa: F401
