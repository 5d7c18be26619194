"""fairseq-g2lstm: G2-LSTM (Gumbel-gate LSTM) translation and language models for fairseq.

Layout, bottom up: ``gates`` (the gate math) -> ``rnn`` (cells and layers) ->
``models`` (the fairseq model and architectures) -> ``data`` and the tools.

``--user-dir fairseq_g2lstm`` imports this package, which registers the ``g2lstm``
and ``g2lstm_lm`` models. The layers below ``models`` need only torch, so they also
work where fairseq is not installed.
"""
from .compat import (allow_fairseq_checkpoints, fix_diverse_beam_search, keep_last_partial_batch,
                     restore_numpy_compat_long)

allow_fairseq_checkpoints()

try:
    import fairseq  # noqa: F401
except ImportError:  # torch-only use: gates and rnn
    pass
else:
    keep_last_partial_batch()
    fix_diverse_beam_search()
    restore_numpy_compat_long()
    from . import models  # noqa: F401
