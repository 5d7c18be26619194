"""``g2lstm-export``: turn a training checkpoint into a self-contained model folder.

Usage::

    g2lstm-export demo/checkpoints/checkpoint_last.pt --data demo/data-bin --out /tmp/demo-model
    g2lstm-export avg.pt --data data-bin --out models/de-en --bleu "27.1 (test, beam 5)" --notes "lowercased input"

The folder (see :mod:`.folder` and docs/serving.md) loads with
``G2LSTMModel.from_pretrained(DIR)`` and serves with ``g2lstm-serve DIR``. A bad input
prints one ``g2lstm-export: error: ...`` line and exits 2, writing nothing.
"""
import argparse
import sys
from typing import Optional, Sequence

from ..cli_args import EXIT_INPUT_ERROR, OneLineParser, configure_logging

PROG = "g2lstm-export"


def build_parser() -> argparse.ArgumentParser:
    from .writer import QUANTIZE_CHOICES, TOKENIZER_CHOICES

    parser = OneLineParser(prog=PROG, description="Export a g2lstm checkpoint (trained, averaged or compressed) and "
                                                  "its data-bin's dictionaries and BPE model as a model folder that "
                                                  "loads and serves alone.")
    parser.add_argument("checkpoint", help="the checkpoint (.pt) to export")
    parser.add_argument("--data", required=True, metavar="DATA_BIN", help="the data-bin the model was trained on")
    parser.add_argument("--out", required=True, metavar="DIR", help="the model folder to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                        help="record that loading quantizes the model (default: %(default)s)")
    bpe = parser.add_mutually_exclusive_group()
    bpe.add_argument("--sentencepiece-model", metavar="FILE",
                     help="the sentencepiece model (default: the one in the data-bin)")
    bpe.add_argument("--bpe-codes", metavar="FILE", help="subword-nmt BPE codes instead of sentencepiece")
    bpe.add_argument("--no-bpe", action="store_true", help="the model reads whitespace-separated tokens as they are")
    parser.add_argument("--tokenizer", choices=TOKENIZER_CHOICES, default="none",
                        help="the tokenizer the text went through before the BPE was learned (subword-nmt codes "
                             "usually follow Moses'; default: %(default)s); recorded in model.json")
    parser.add_argument("--source-lang", metavar="SRC", help="default: the checkpoint's, or the data-bin's")
    parser.add_argument("--target-lang", metavar="TGT", help="default: the checkpoint's, or the data-bin's")
    parser.add_argument("--bleu", metavar="TEXT", help="a BLEU score (with its test set) for the model card")
    parser.add_argument("--notes", action="append", default=[], metavar="TEXT",
                        help="a note for the model card (repeatable)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    from ..checkpoints.io import CheckpointError
    from g2lstm_runtime.folder import ModelFolderError
    from .writer import ExportOptions, export_model

    options = ExportOptions(quantize=args.quantize, force=args.force, sentencepiece_model=args.sentencepiece_model,
                            bpe_codes=args.bpe_codes, no_bpe=args.no_bpe, tokenizer=args.tokenizer, source_lang=args.source_lang,
                            target_lang=args.target_lang, bleu=args.bleu, notes=args.notes)
    try:
        manifest = export_model(args.checkpoint, args.data, args.out, options)
    except (CheckpointError, ModelFolderError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except OSError as error:
        print(f"{PROG}: error: {args.out}: cannot write there ({error.strerror or error})", file=sys.stderr)
        return EXIT_INPUT_ERROR
    what = (f"{manifest['languages']['source']}->{manifest['languages']['target']}" if manifest["languages"]
            else "language model")
    print(f"{args.out}: {what}, {manifest['arch']}, bpe {manifest['bpe']['name'] if manifest['bpe'] else 'none'}, "
          f"{len(manifest['files'])} files")
    print(f"serve it: g2lstm-serve {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
