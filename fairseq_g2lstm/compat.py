"""Fixes for four breakages of the pinned fairseq build; importing the plugin applies them.

1. Checkpoints under torch >= 2.6. ``torch.load`` now defaults to ``weights_only=True``
   and fairseq calls it without the flag. A fairseq checkpoint pickles its training
   arguments as an ``argparse.Namespace``, which the safe unpickler refuses
   ("Unsupported global: GLOBAL argparse.Namespace"). Allow-listing that one class is
   enough: the rest of a checkpoint is tensors, dicts, lists and numbers.

2. Sentences silently left out of fairseq-generate (fairseq issue #5036).
   ``data_utils.batch_by_size`` drops the last batch when its size is not a multiple of
   ``--required-batch-size-multiple`` (8 by default), so up to 7 test sentences go
   untranslated and unscored. The wrapper gives those sentences their own batch.

3. ``--diverse-beam-groups`` crashing with an IndexError in ``fairseq/search.py``
   (``DiverseBeamSearch.step``: ``self.group_overlap[original_batch_idxs, g, :g]``).
   SequenceGenerator passes the sentences' dataset ids (``sample["id"]``) as
   ``original_batch_idxs``, but DiverseBeamSearch uses them as rows of its per-batch
   ``group_overlap`` [B,G,G]: any id >= B is out of bounds (every batch but a first one
   that happens to hold ids 0..B-1), and ids < B in another order read another
   sentence's overlap. The wrapper turns the ids back into batch rows.

4. Language-model data split at sentence ends crashing under numpy 2
   (``AttributeError: module 'numpy' has no attribute 'compat'``): fairseq's
   ``TokenBlockDataset`` with ``--sample-break-mode eos`` (fairseq-interactive and
   fairseq-generate with ``--task language_modeling`` use it) and
   ``LanguagePairDataset`` with ``--num-batch-buckets`` name ``np.compat.long``, which
   numpy 2.0 removed. It was an alias of ``int64`` (numpy's ``long`` on Linux); the fix
   puts back that one name.

fairseq imports the ``--user-dir`` module before it builds batches or loads anything.
"""
import argparse
import inspect

import torch


def allow_fairseq_checkpoints() -> None:
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 loads everything anyway
        add_safe_globals([argparse.Namespace])


def restore_numpy_compat_long() -> None:
    """``np.compat.long`` = ``np.int64`` where numpy has no ``compat`` (see 4.)."""
    import types

    import numpy as np

    try:
        np.compat.long  # noqa: B018  (numpy 1.x: present)
    except AttributeError:
        np.compat = types.SimpleNamespace(long=np.int64)


def keep_last_partial_batch() -> None:
    import numpy as np  # here, not at the top: the torch-only layers must import without numpy
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


def fix_diverse_beam_search() -> None:
    """Make DiverseBeamSearch index its state by batch row, not by sentence id (see 3.).

    At step 0 the generator passes the ids of the whole batch in row order; later steps
    pass the ids of the sentences still being decoded. Their rows in the step-0 batch
    are what DiverseBeamSearch expects (and what it gets, unchanged, where the ids are
    0..B-1 in order). The replaced ``step`` is plain Python: scripting the search with
    TorchScript, which the CLIs and the hub never do, is not supported with it.
    """
    from fairseq.search import DiverseBeamSearch

    step = DiverseBeamSearch.step
    if getattr(step, "maps_sentence_ids_to_rows", False):
        return
    if "original_batch_idxs" not in inspect.signature(step).parameters:
        return  # an older fairseq, whose generator passes no ids

    def step_by_batch_row(self, step_number, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None):
        if original_batch_idxs is not None:
            if step_number == 0:
                self.batch_sentence_ids = original_batch_idxs  # [B] ids, in the step-0 row order
            # [b, B] -> [b]: the step-0 row of each sentence still decoded (ids are unique)
            matches = original_batch_idxs.unsqueeze(1) == self.batch_sentence_ids.unsqueeze(0)
            original_batch_idxs = matches.int().argmax(dim=1)
        return step(self, step_number, lprobs, scores, prev_output_tokens, original_batch_idxs)

    step_by_batch_row.maps_sentence_ids_to_rows = True
    step_by_batch_row.__wrapped__ = step
    step_by_batch_row.__doc__ = step.__doc__
    DiverseBeamSearch.step = step_by_batch_row
