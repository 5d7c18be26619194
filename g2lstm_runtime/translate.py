"""``g2lstm-translate DIR``: translate stdin or a file with a model folder, one line in,
one line out, without torch (ONNX Runtime; ``g2lstm-export --onnx`` adds the graphs)::

    g2lstm-translate /tmp/demo-model < input.txt > output.txt
    g2lstm-translate /tmp/demo-model --input test.de --beam 5 --batch-size 64 > test.hyp
    g2lstm-translate /tmp/demo-model --nbest 3 --input test.de    # "score<TAB>translation" lines

Input is prepared exactly as the model's training data was (the folder's
``model.json``: lowercasing, whitespace, control characters), then split by its
sentencepiece model. ``--engine torch`` translates with fairseq's generator and the
folder's ``model.pt`` instead (needs torch, fairseq and fairseq-g2lstm, whose
``fairseq_g2lstm.engines.torch`` is imported by name only then). Bad input: one line
``g2lstm-translate: error: ...``, exit 2.
"""
import argparse
import os
import sys
from typing import IO, Iterator, List, Optional, Sequence

from .cli_args import EXIT_INPUT_ERROR, OneLineParser, _number, non_negative_int, positive_int
from .beam import SearchError
from .folder import ModelFolderError

PROG = "g2lstm-translate"
PROGRESS_WIDTH = 30


def build_parser() -> argparse.ArgumentParser:
    from .translator import ENGINES

    parser = OneLineParser(prog=PROG, description="Translate text with a model folder: one line in, one line out.")
    parser.add_argument("folder", metavar="DIR", help="a model folder (g2lstm-export; --onnx for the onnx engine)")
    parser.add_argument("--input", metavar="FILE", help="the text to translate (default: stdin)")
    parser.add_argument("--engine", choices=ENGINES, default="onnx",
                        help="onnx: ONNX Runtime, no torch; torch: fairseq's generator (default: %(default)s)")
    parser.add_argument("--beam", type=positive_int, default=5, help="beam size (default: %(default)s)")
    parser.add_argument("--nbest", type=positive_int, default=1,
                        help="hypotheses per sentence; above 1 each line is 'score<TAB>translation' and the "
                             "sentence's block ends with an empty line (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="sentences a batch (default: %(default)s)")
    parser.add_argument("--lenpen", type=_number, default=1.0, help="length penalty (default: %(default)s)")
    parser.add_argument("--unkpen", type=_number, default=0.0, help="unknown-word penalty (default: %(default)s)")
    parser.add_argument("--min-len", type=positive_int, default=1, help="minimum length (default: %(default)s)")
    parser.add_argument("--max-len-a", type=_number, default=0.0, help="maximum length a*src_len+b: a")
    parser.add_argument("--max-len-b", type=non_negative_int, default=200, help="maximum length a*src_len+b: b")
    parser.add_argument("--threads", type=positive_int,
                        help="threads (default: OMP_NUM_THREADS, else 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr for --input")
    return parser


def read_lines(stream: IO[bytes], name: str) -> Iterator[str]:
    """The lines of ``stream`` without their line ends; a line that is not UTF-8 is bad input."""
    for number, raw in enumerate(stream, 1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ModelFolderError(f"{name}: line {number} is not UTF-8 text") from None


class Progress:
    """A one-line progress bar on stderr (a few characters, no dependency)."""

    def __init__(self, total: int, stream: IO[str]):
        self.total, self.done, self.stream = total, 0, stream

    def __call__(self, count: int) -> None:
        self.done += count
        filled = PROGRESS_WIDTH * self.done // max(self.total, 1)
        self.stream.write(f"\r{PROG}: [{'#' * filled}{'.' * (PROGRESS_WIDTH - filled)}] {self.done}/{self.total}")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def write_translations(results, nbest: int, out: IO[str]) -> None:
    for hypotheses in results:
        if nbest == 1:
            out.write(hypotheses[0].text + "\n")
        else:
            out.writelines(f"{h.score:.4f}\t{h.text}\n" for h in hypotheses)
            out.write("\n")
    out.flush()


def run(args, out: IO[str], err: IO[str]) -> None:
    from .translator import Translator

    translator = Translator(args.folder, engine=args.engine, threads=args.threads)
    options = translator.search_options(beam=args.beam, nbest=args.nbest, lenpen=args.lenpen, unkpen=args.unkpen,
                                        min_len=args.min_len, max_len_a=args.max_len_a, max_len_b=args.max_len_b)
    if args.input is not None:
        with open(args.input, "rb") as stream:
            lines = list(read_lines(stream, args.input))
        progress = None if args.no_progress or not lines else Progress(len(lines), err)
        write_translations(translator.translate(lines, options, args.batch_size, progress), args.nbest, out)
        return
    # stdin: translated a batch at a time, so that a pipe gets its lines as they come
    batch: List[str] = []
    for line in read_lines(sys.stdin.buffer, "stdin"):
        batch.append(line)
        if len(batch) == args.batch_size:
            write_translations(translator.translate(batch, options, args.batch_size), args.nbest, out)
            batch = []
    if batch:
        write_translations(translator.translate(batch, options, args.batch_size), args.nbest, out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .translator import EngineUnavailable

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.nbest > args.beam:
        parser.error(f"--nbest {args.nbest} is more than --beam {args.beam}")
    if args.input is not None and not os.path.isfile(args.input):
        parser.error(f"--input {args.input}: no such file")
    try:
        run(args, sys.stdout, sys.stderr)
    except EngineUnavailable as error:
        print(f"{PROG}: error: --engine {error} needs torch, fairseq and fairseq-g2lstm installed", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except (ModelFolderError, SearchError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except OSError as error:
        print(f"{PROG}: error: {error.filename or args.folder}: {error.strerror or error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
