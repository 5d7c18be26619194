"""Fixes for two breakages of the pinned fairseq build; importing the plugin applies them.

1. Checkpoints under torch >= 2.6. ``torch.load`` now defaults to ``weights_only=True``
   and fairseq calls it without the flag. A fairseq checkpoint pickles its training
   arguments as an ``argparse.Namespace``, which the safe unpickler refuses
   ("Unsupported global: GLOBAL argparse.Namespace"). Allow-listing that one class is
   enough: the rest of a checkpoint is tensors, dicts, lists and numbers.

2. Sentences silently left out of fairseq-generate (fairseq issue #5036).
   ``data_utils.batch_by_size`` drops the last batch when its size is not a multiple of
   ``--required-batch-size-multiple`` (8 by default), so up to 7 test sentences go
   untranslated and unscored. The wrapper gives those sentences their own batch.

fairseq imports the ``--user-dir`` module before it builds batches or loads anything.
"""
import argparse

import numpy as np
import torch


def allow_fairseq_checkpoints() -> None:
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 loads everything anyway
        add_safe_globals([argparse.Namespace])


def keep_last_partial_batch() -> None:
    from fairseq.data import data_utils

    batch_by_size = data_utils.batch_by_size
    if getattr(batch_by_size, "keeps_last_partial_batch", False):
        return

    def batch_by_size_keeping_all(indices, *args, **kwargs):
        if not isinstance(indices, np.ndarray):
            indices = np.fromiter(indices, dtype=np.int64, count=-1)
        batches = batch_by_size(indices, *args, **kwargs)
        batched = sum(len(b) for b in batches)
        if batched < len(indices):
            # batch_by_size fills batches in index order, so what it dropped is the tail.
            batches = list(batches) + [indices[batched:]]
        return batches

    batch_by_size_keeping_all.keeps_last_partial_batch = True
    batch_by_size_keeping_all.__doc__ = batch_by_size.__doc__
    data_utils.batch_by_size = batch_by_size_keeping_all
