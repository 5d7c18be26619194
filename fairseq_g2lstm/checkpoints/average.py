"""Average the parameters of several g2lstm checkpoints into one.

Usage::

    # the 5 newest epoch checkpoints (checkpointE.pt) of a training run
    g2lstm-average-checkpoints --inputs checkpoints/g2lstm --num-epoch-checkpoints 5 \\
        --output checkpoints/g2lstm/checkpoint_avg5.pt
    # the 4 newest update checkpoints (checkpoint_E_U.pt, from --save-interval-updates)
    g2lstm-average-checkpoints --inputs checkpoints/g2lstm --num-update-checkpoints 4 \\
        --output avg.pt
    # any files
    g2lstm-average-checkpoints --inputs a.pt b.pt c.pt --output avg.pt [--force]

The flags are those of fairseq's ``scripts/average_checkpoints.py``, which the pinned
fairseq wheel does not ship and which fails under torch >= 2.6; ``--force`` is ours.
``python -m fairseq_g2lstm.checkpoints.average`` runs the same command.

The averaged checkpoint is a normal fairseq checkpoint that fairseq-generate,
fairseq-interactive and the hub load unchanged:

- ``model``: every floating-point tensor is the elementwise mean of the inputs',
  computed in float64 and cast back to the tensor's dtype; any other tensor (an integer
  buffer) must be equal in all inputs and is kept;
- everything else (``cfg``/``args``, ``optimizer_history``, ``extra_state``) comes from
  the **first** input. With ``--num-*-checkpoints`` the inputs are ordered newest first,
  as in fairseq, so that is the newest checkpoint;
- ``last_optimizer_state`` is None: the optimizer state of one input does not match the
  averaged weights, and for Adam it is twice the model's size. ``fairseq-train
  --restore-file`` on the result starts a fresh optimizer;
- ``averaged_from``: the input paths, so that the file says how it was made;
- no ``compression`` record: a packed input (``g2lstm-compress --pack``) is expanded to
  its full matrices before averaging, because the mean of SVD factors is not the factor
  of the mean; the mean of compressed weights is itself no longer compressed.

Averaging one checkpoint, or listing a file twice, is allowed (it weighs that file
twice) but warned about on stderr, since it is usually a typo.
"""
import argparse
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..cli_args import EXIT_INPUT_ERROR, OneLineParser, positive_int
from ..compress.packing import expanded, packed_params
from .io import CheckpointError, PathLike, check_input, check_output, load_checkpoint, save_checkpoint

PROG = "g2lstm-average-checkpoints"

# fairseq's checkpoint names (fairseq.checkpoint_utils.save_checkpoint): the end of
# epoch E is checkpointE.pt, update U of epoch E (--save-interval-updates) checkpoint_E_U.pt.
NAMING = {
    "epoch": (re.compile(r"checkpoint(\d+)\.pt"), "checkpointE.pt"),
    "update": (re.compile(r"checkpoint_\d+_(\d+)\.pt"), "checkpoint_E_U.pt"),
}


def last_checkpoints(folder: PathLike, n: int, by: str = "epoch", upper_bound: Optional[int] = None) -> List[Path]:
    """The ``n`` newest epoch (``by="epoch"``) or update (``by="update"``) checkpoints in
    ``folder``, newest first, leaving out those numbered above ``upper_bound``.

    Raises :class:`CheckpointError` when the folder is missing or holds fewer than ``n``.
    """
    if by not in NAMING:
        raise ValueError(f"by must be one of {sorted(NAMING)}; got {by!r}")
    if n < 1:
        raise CheckpointError(f"the number of checkpoints to average must be at least 1; got {n}")
    pattern, naming = NAMING[by]
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder")
    found = []
    for entry in folder.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and entry.is_file():
            number = int(match.group(1))
            if upper_bound is None or number <= upper_bound:
                found.append((number, entry.name, entry))
    if len(found) < n:
        bound = f" numbered at most {upper_bound}" if upper_bound is not None else ""
        raise CheckpointError(f"{folder}: found {len(found)} {by} checkpoints ({naming}){bound}, need {n}")
    found.sort(reverse=True)
    return [path for _, _, path in found[:n]]


def _some(keys: List[str]) -> str:
    """The first three keys, and how many more, for a one-line message."""
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _check_same_layout(reference: Dict[str, torch.Tensor], other: Dict[str, torch.Tensor],
                       first: Path, path: Path) -> None:
    """Same parameter names, shapes and dtypes as the first checkpoint, or one line naming
    what differs and where."""
    missing = [key for key in reference if key not in other]
    extra = [key for key in other if key not in reference]
    if missing or extra:
        parts = ([f"lacks {_some(missing)}"] if missing else []) + ([f"has {_some(extra)}"] if extra else [])
        raise CheckpointError(f"{path} {' and '.join(parts)}, unlike {first}: not the same model")
    for key, value in other.items():
        expected = reference[key]
        if value.shape != expected.shape:
            raise CheckpointError(
                f"{key} is {list(value.shape)} in {path} but {list(expected.shape)} in {first}: not the same model")
        if value.dtype != expected.dtype:
            raise CheckpointError(f"{key} is {value.dtype} in {path} but {expected.dtype} in {first}")


def _share_aliases(reference: Dict[str, torch.Tensor], averaged: Dict[str, torch.Tensor]) -> None:
    """Keys that are one tensor in the first checkpoint (tied embeddings:
    ``--share-all-embeddings``, ``--share-decoder-input-output-embed``) become one tensor
    in the average too, so that the saved file stores it once."""
    seen: Dict[Any, str] = {}
    for key, value in reference.items():
        storage = value.untyped_storage().data_ptr()
        identity = (storage, value.storage_offset(), value.shape, value.stride(), value.dtype)
        first = seen.setdefault(identity, key)
        if first != key and torch.equal(averaged[first], averaged[key]):
            averaged[key] = averaged[first]


def _full_model(path: Path, require_g2lstm: bool) -> Dict[str, Any]:
    """The checkpoint at ``path`` with packed weights expanded to full matrices."""
    state = load_checkpoint(path, require_g2lstm)
    if packed_params(state["model"]):
        state["model"] = expanded(state["model"])
    return state


def average_checkpoints(paths: Sequence[PathLike], require_g2lstm: bool = True) -> Dict[str, Any]:
    """The checkpoint whose model is the elementwise mean of the checkpoints at ``paths``.

    The result is the first checkpoint's dict with ``model`` replaced by the mean,
    ``last_optimizer_state`` set to None, ``averaged_from`` added and any
    ``compression`` record dropped (see the module docstring). Packed inputs are
    expanded first, so packed and plain checkpoints of one model average together. Only the first checkpoint, the one being added and a float64 sum per
    parameter are held in memory, whatever the number of inputs.

    Raises :class:`CheckpointError` for an unreadable or non-g2lstm input (see
    :func:`~fairseq_g2lstm.checkpoints.io.load_checkpoint`), inputs of different models
    (a key, shape or dtype differs), or a non-float tensor that differs between inputs.
    """
    paths = [check_input(path) for path in paths]  # a typo fails before the first slow load
    if not paths:
        raise CheckpointError("no checkpoints to average")
    first = paths[0]
    state = _full_model(first, require_g2lstm)
    reference = state["model"]
    sums = {key: value.to(torch.float64, copy=True) for key, value in reference.items() if value.is_floating_point()}
    for path in paths[1:]:
        other = _full_model(path, require_g2lstm)["model"]
        _check_same_layout(reference, other, first, path)
        for key, value in other.items():
            if key in sums:
                sums[key] += value.to(torch.float64)
            elif not torch.equal(value, reference[key]):
                raise CheckpointError(f"{key} differs between {first} and {path}; "
                                      "a non-float tensor cannot be averaged, so it must be equal")
        del other
    averaged = OrderedDict(
        (key, sums[key].div_(len(paths)).to(value.dtype) if key in sums else value) for key, value in reference.items()
    )
    _share_aliases(reference, averaged)
    state["model"] = averaged
    state["last_optimizer_state"] = None
    state["averaged_from"] = [str(path) for path in paths]
    state.pop("compression", None)
    return state


def duplicate_warnings(paths: Sequence[Path]) -> List[str]:
    """Warnings for an average that is probably a mistake: one input, or a file listed
    more than once (it then weighs more than the others)."""
    if len(paths) == 1:
        return [f"only one checkpoint: the output is {paths[0]}'s model without optimizer state"]
    counts: Dict[Path, int] = {}
    for path in paths:
        counts[path.resolve()] = counts.get(path.resolve(), 0) + 1
    return [f"{path} is given {n} times, so it weighs {n} times in the mean"
            for path, n in counts.items() if n > 1]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Average the parameters of g2lstm checkpoints into a new checkpoint "
                    "(the flags of fairseq's scripts/average_checkpoints.py).",
    )  # fmt: skip
    parser.add_argument("--inputs", required=True, nargs="+", metavar="PATH",
                        help="checkpoint files; or one folder, with --num-epoch-checkpoints or "
                             "--num-update-checkpoints")
    parser.add_argument("--output", required=True, metavar="FILE", help="the averaged checkpoint to write")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--num-epoch-checkpoints", type=positive_int, metavar="N",
                       help="average the N newest epoch checkpoints (checkpointE.pt) of the --inputs folder")
    count.add_argument("--num-update-checkpoints", type=positive_int, metavar="N",
                       help="average the N newest update checkpoints (checkpoint_E_U.pt) of the --inputs folder")
    parser.add_argument("--checkpoint-upper-bound", type=int, metavar="K",
                        help="with --num-*-checkpoints, only checkpoints of epoch (or update) K or earlier; e.g. "
                             "--num-epoch-checkpoints 10 --checkpoint-upper-bound 50 averages epochs 41-50")
    parser.add_argument("--force", action="store_true", help="replace --output if it exists")
    return parser  # fmt: skip


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status. A bad input (missing, unreadable or
    non-g2lstm checkpoint, mismatched models, too few checkpoints in the folder, an
    existing output without --force) prints one ``g2lstm-average-checkpoints: error:``
    line on stderr and returns 2, with nothing written."""
    parser = build_parser()
    args = parser.parse_args(argv)
    by = "update" if args.num_update_checkpoints is not None else "epoch"
    count = args.num_update_checkpoints if by == "update" else args.num_epoch_checkpoints
    if args.checkpoint_upper_bound is not None and count is None:
        parser.error("--checkpoint-upper-bound needs --num-epoch-checkpoints or --num-update-checkpoints")
    if count is not None and len(args.inputs) != 1:
        parser.error(f"--num-{by}-checkpoints takes one folder as --inputs; got {len(args.inputs)} paths")
    try:
        check_output(args.output, args.force)  # before the slow part
        if count is None:
            paths = [Path(path) for path in args.inputs]
            folders = [path for path in paths if path.is_dir()]
            if folders:
                raise CheckpointError(f"{folders[0]} is a folder; to average its newest checkpoints add "
                                      "--num-epoch-checkpoints N or --num-update-checkpoints N")
            paths = [check_input(path) for path in paths]
        else:
            paths = last_checkpoints(args.inputs[0], count, by=by, upper_bound=args.checkpoint_upper_bound)
        print(f"averaging {len(paths)} checkpoint{'s' if len(paths) > 1 else ''}:", *paths, sep="\n  ", flush=True)
        state = average_checkpoints(paths)
        for warning in duplicate_warnings(paths):  # after the inputs proved good: an error stays one line
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
        save_checkpoint(state, args.output, force=args.force)
    except CheckpointError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(f"wrote {args.output} (cfg from {paths[0]}; optimizer state dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
