"""fairseq-g2lstm: G2-LSTM (Gumbel-gate LSTM) translation and language models for fairseq.

Layout, bottom up; a room imports only from its own floor and those below
(``tests/test_layering.py`` checks it):

1. ``gates``: the gate math;
2. ``cuda``: the fused gate kernel that the layers dispatch to;
3. ``rnn``: cells and layers, and the tallies of their gates;
4. ``models``: the fairseq models and architectures, with their loading hooks
   (:mod:`.models.loading`);
5. the tools on a model: ``checkpoints``, ``compress``, ``gate_stats``, ``quantize``,
   ``export``, ``data``;
6. what serves or runs an exported model: ``serve``, ``engines``.

``atomic_file``, ``cli_args`` and ``compat`` are small helpers any room may use; the
torch-free :mod:`g2lstm_runtime` is a separate package that never imports this one.

``--user-dir fairseq_g2lstm`` imports this package, which registers the ``g2lstm``
and ``g2lstm_lm`` models and hands them the tools' loading hooks (expanding packed
weights, ``--quantize``, model folders). The layers below ``models`` need only torch,
so they also work where fairseq is not installed.
"""
from .compat import (allow_fairseq_checkpoints, fix_diverse_beam_search, keep_last_partial_batch,
                     restore_numpy_compat_long)

allow_fairseq_checkpoints()


def register_loading_hooks() -> None:
    """What the tools add to loading a g2lstm model (:mod:`.models.loading`): the models
    sit below the tools and cannot import them, so they are introduced here."""
    from g2lstm_runtime.folder import is_model_folder

    from .compress.packing import expand_packed
    from .export.folder import hub_from_folder
    from .models import loading
    from .quantize import quantize_on_load

    loading.STATE_DICT_UPGRADES["packed weights"] = expand_packed
    loading.LOADED_MODEL_HOOKS["quantize"] = quantize_on_load
    loading.FOLDER_LOADERS["model folder"] = (is_model_folder, hub_from_folder)


try:
    import fairseq  # noqa: F401
except ImportError:  # torch-only use: gates and rnn
    pass
else:
    keep_last_partial_batch()
    fix_diverse_beam_search()
    restore_numpy_compat_long()
    from . import models  # noqa: F401  (registers the models)

    register_loading_hooks()
