"""``g2lstm-compress``: compress the input/forget-gate weights of a g2lstm checkpoint.

Usage::

    # the paper's translation settings (the paper's section 4, Table 4; docs/paper.md)
    g2lstm-compress checkpoint_best.pt round.pt --method round --step 0.5
    g2lstm-compress checkpoint_best.pt round_clip.pt --method round-clip --step 0.5 --clip 1.0
    g2lstm-compress checkpoint_best.pt svd32.pt --method svd --rank 32
    # also the input-to-gate weights; store codes / factors compactly
    g2lstm-compress checkpoint_best.pt rc_all.pt --method round-clip --scope all --pack

``--step`` defaults to 0.5 and ``--clip`` to 1.0 (the paper's translation setting);
``--rank`` has no default. The output is a new checkpoint that fairseq-generate,
fairseq-interactive and ``G2LSTMModel.from_pretrained`` load unchanged, without
optimizer state, recording what was done in ``state["compression"]``. The summary ends
with a signature line such as
``method=round-clip|step=0.5|clip=1.0|scope=recurrent|src=checkpoint_best.pt@1a2b3c4d``.

A bad input prints one ``g2lstm-compress: error: ...`` line and exits 2, writing nothing.
``python -m fairseq_g2lstm.compress`` runs the same command. The work is in
:func:`fairseq_g2lstm.compress.apply.compress_checkpoint`.
"""
import argparse
import json
import sys
from typing import Optional, Sequence

from ..atomic_file import write_text_atomic
from ..cli_args import EXIT_INPUT_ERROR, OneLineParser, output_file_problem, positive_float, positive_int
from .methods import METHODS, PAPER_CLIP, PAPER_STEP, SCOPES, CompressionConfig, CompressionError

PROG = "g2lstm-compress"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Compress the input- and forget-gate weights of a g2lstm checkpoint (round, round-clip or "
                    "truncated SVD, as in the G2-LSTM paper's Table 4) into a new checkpoint.",
    )
    add = parser.add_argument
    add("input", metavar="IN.pt", help="a g2lstm checkpoint (fairseq-train's checkpoint_*.pt)")
    add("output", metavar="OUT.pt", help="the compressed checkpoint to write")
    add("--method", required=True, choices=METHODS,
        help="round: r*round(w/r); round-clip: clip to [-c,c], then round; svd: keep the top --rank singular values")
    add("--step", type=positive_float, metavar="R", help=f"r of round and round-clip (default {PAPER_STEP})")
    add("--clip", type=positive_float, metavar="C", help=f"c of round-clip (default {PAPER_CLIP})")
    add("--rank", type=positive_int, metavar="K", help="k of svd (the paper: 32 and 16), per gate block")
    add("--scope", choices=SCOPES, default="recurrent",
        help="recurrent: hidden-to-gate and input-feeding weights (the paper's translation setting); "
             "all: also the input-to-gate weights (default: recurrent)")
    add("--pack", action="store_true",
        help="store integer codes (round methods) or the two SVD factors instead of float weights; "
             "the model expands them on load")
    add("--force", action="store_true", help="replace OUT.pt if it exists")
    add("--summary-json", metavar="FILE", help="also write the summary as JSON to FILE")
    return parser


def config_from_args(args: argparse.Namespace) -> CompressionConfig:
    """The :class:`CompressionConfig` of parsed flags, with the paper's defaults for r and c."""
    step, clip = args.step, args.clip
    if args.method in ("round", "round-clip") and step is None:
        step = PAPER_STEP
    if args.method == "round-clip" and clip is None:
        clip = PAPER_CLIP
    return CompressionConfig(args.method, step=step, clip=clip, rank=args.rank, scope=args.scope)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (0, or 2 for a bad input with one error
    line on stderr and no output file)."""
    from ..checkpoints.io import CheckpointError  # after parsing: --help stays fast
    from .apply import compress_checkpoint

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.summary_json:
        problem = output_file_problem(args.summary_json, "--summary-json")
        if problem:
            parser.error(problem)
    try:
        config = config_from_args(args)
        summary = compress_checkpoint(args.input, args.output, config, pack=args.pack, force=args.force)
    except (CheckpointError, CompressionError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(summary.format())
    if args.summary_json:
        write_text_atomic(args.summary_json, json.dumps(summary.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
