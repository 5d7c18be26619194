"""``g2lstm-export``: turn a training checkpoint into a self-contained model folder.

Usage::

    g2lstm-export demo/checkpoints/checkpoint_last.pt --data demo/data-bin --out /tmp/demo-model
    g2lstm-export avg.pt --data data-bin --out models/de-en --bleu "27.1 (test, beam 5)" --notes "lowercased input"
    g2lstm-export demo/checkpoints/checkpoint_last.pt --data demo/data-bin --out /tmp/demo-onnx --onnx
    g2lstm-export --onnx /tmp/demo-model --onnx-quantize int8     (add ONNX graphs to an existing folder)

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
    from .onnx import ONNX_QUANTIZE_CHOICES
    from .writer import QUANTIZE_CHOICES, TOKENIZER_CHOICES

    parser = OneLineParser(prog=PROG, description="Export a g2lstm checkpoint (trained, averaged or compressed) and "
                                                  "its data-bin's dictionaries and BPE model as a model folder that "
                                                  "loads and serves alone.")
    parser.add_argument("checkpoint", nargs="?", help="the checkpoint (.pt) to export")
    parser.add_argument("--data", metavar="DATA_BIN", help="the data-bin the model was trained on (required with a "
                                                         "checkpoint)")
    parser.add_argument("--out", metavar="DIR", help="the model folder to write (required with a checkpoint)")
    parser.add_argument("--onnx", nargs="?", const=True, metavar="DIR",
                        help="also write encoder.onnx and decoder.onnx for g2lstm-translate; with DIR, add them to "
                             "that existing model folder (no checkpoint then)")
    parser.add_argument("--onnx-quantize", choices=ONNX_QUANTIZE_CHOICES, default="none",
                        help="the ONNX graphs' precision, made by onnxruntime's quantization tools: int8 (dynamic "
                             "int8), int4-gates (4-bit i/f gate weights of the decoder), int4 (4-bit every MatMul); "
                             "default: %(default)s")
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
    add_to_folder = isinstance(args.onnx, str)
    if add_to_folder and (args.checkpoint or args.data or args.out):
        parser.error("--onnx DIR adds graphs to an existing folder: give no checkpoint, --data or --out")
    if not add_to_folder and not (args.checkpoint and args.data and args.out):
        parser.error("a checkpoint, --data and --out are required (or --onnx DIR for an existing folder)")
    if args.onnx_quantize != "none" and args.onnx is None:
        parser.error("--onnx-quantize needs --onnx")
    configure_logging()
    import fairseq_g2lstm  # noqa: F401  (registers the models before the checkpoint is read)

    from ..checkpoints.io import CheckpointError
    from g2lstm_runtime.folder import ModelFolderError
    from .onnx import add_onnx
    from .writer import ExportOptions, export_model

    if add_to_folder:
        try:
            entry = add_onnx(args.onnx, args.onnx_quantize)
        except (CheckpointError, ModelFolderError) as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return EXIT_INPUT_ERROR
        print(f"{args.onnx}: {entry['encoder']}, {entry['decoder']} ({entry['precision']}, opset {entry['opset']})")
        print(f"translate with it: g2lstm-translate {args.onnx}")
        return 0
    options = ExportOptions(quantize=args.quantize, force=args.force, sentencepiece_model=args.sentencepiece_model,
                            bpe_codes=args.bpe_codes, no_bpe=args.no_bpe, tokenizer=args.tokenizer,
                            source_lang=args.source_lang, target_lang=args.target_lang, bleu=args.bleu,
                            notes=args.notes, onnx=args.onnx_quantize if args.onnx else None)
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
