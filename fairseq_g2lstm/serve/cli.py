"""``g2lstm-serve``: an HTTP translation server for model folders (``g2lstm-export``).

Usage::

    g2lstm-serve /tmp/demo-model                       # http://127.0.0.1:8000/
    g2lstm-serve models/g2-de-en models/plain-de-en --port 8080 --api-keys keys.txt
    g2lstm-serve /tmp/demo-model --engine torch         # fairseq's generator, not the ONNX graphs

LibreTranslate's API (``POST /translate``, ``GET /languages``), ours (``/v1/...``) and a
web page at ``/``; docs/serving.md has the API and the limits. The server runs under
uvicorn; SIGTERM (or Ctrl-C) stops accepting connections, finishes the requests in
flight, then exits. ``--engine onnx`` (the default for a folder with ONNX graphs, from
``g2lstm-export --onnx``) translates on ONNX Runtime, ``--engine torch`` (the default
otherwise) with fairseq's generator; gates come from the torch model either way. A bad folder or flag prints one ``g2lstm-serve: error: ...`` line
and exits 2 before anything listens.
"""
import argparse
import logging
import socket
import sys
from typing import List, Optional, Sequence

from g2lstm_runtime.translator import ENGINES

from ..cli_args import EXIT_INPUT_ERROR, OneLineParser, configure_logging, positive_float, positive_int
from .limits import MAX_LEN_A, MAX_LEN_B

PROG = "g2lstm-serve"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Serve g2lstm model folders over HTTP: LibreTranslate's API, "
                                                  "/v1 with n-best, scores and per-token gates, and a web page.")
    parser.add_argument("folders", nargs="+", metavar="DIR", help="model folders written by g2lstm-export; the "
                        "first of each language pair answers LibreTranslate requests for it")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0: any free port)")
    parser.add_argument("--engine", choices=ENGINES,
                        help="onnx: the folder's ONNX graphs on ONNX Runtime (g2lstm-export --onnx adds them); torch: "
                             "fairseq's generator on model.pt (default: onnx for a folder with ONNX graphs, else torch); "
                             "gates and hard gates always come from torch")
    parser.add_argument("--beam", type=positive_int, default=5, help="beam size by default (default %(default)s)")
    parser.add_argument("--max-len-a", type=positive_float, default=MAX_LEN_A,
                        help="a translation may have up to A * S + B tokens for a source of S (default A: "
                             "%(default)s); one cut there is marked truncated in /v1 and logged")
    parser.add_argument("--max-len-b", type=positive_int, default=MAX_LEN_B, help="B (default %(default)s)")
    batching = parser.add_argument_group("dynamic batching")
    batching.add_argument("--max-batch-sentences", type=positive_int, default=32,
                          help="sentences per batch (default %(default)s; 1 turns batching off)")
    batching.add_argument("--max-batch-tokens", type=positive_int, default=4096,
                          help="source tokens per batch (default %(default)s)")
    batching.add_argument("--batch-wait-ms", type=batch_wait_ms, default=5.0,
                          help=f"how long a sentence waits for others to join its batch, 0 to {MAX_BATCH_WAIT_MS:g} "
                               "(default %(default)s)")
    batching.add_argument("--no-batching", action="store_true", help="one sentence at a time (for comparisons)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-chars", type=positive_int, default=2000, help="characters per text (default %(default)s)")
    limits.add_argument("--max-texts", type=positive_int, default=64, help="texts per request (default %(default)s)")
    limits.add_argument("--max-beam", type=positive_int, default=16, help="largest beam and n-best (default %(default)s)")
    limits.add_argument("--max-queue", type=positive_int, default=1024,
                        help="sentences waiting per model before requests get 503 (default %(default)s)")
    limits.add_argument("--request-timeout", type=positive_float, default=30.0,
                        help="seconds from arrival to answer before a 503 (default %(default)s)")
    access = parser.add_argument_group("access")
    access.add_argument("--api-keys", metavar="FILE", help="require an api_key from this file (one per line)")
    access.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow browser pages from ORIGIN to call the API (repeatable; default: none)")
    parser.add_argument("--threads", type=positive_int,
                        help="torch threads, and ONNX Runtime's for the onnx engine (default: torch's; ONNX Runtime: "
                             "OMP_NUM_THREADS, else 2)")
    return parser


MAX_BATCH_WAIT_MS = 10_000.0  # finite: a sentence must not wait for company for ever


def batch_wait_ms(text: str) -> float:
    """A flag type: milliseconds from 0 to :data:`MAX_BATCH_WAIT_MS`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= MAX_BATCH_WAIT_MS:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_BATCH_WAIT_MS:g}; got {text}")
    return value


def read_api_keys(path: str) -> frozenset:
    """The keys in ``path``: one per line; blank lines and comments (``#`` alone or
    followed by a space) are skipped. A line such as ``#s3cret`` could be either, so it
    is refused, with its line number, rather than dropped."""
    try:
        with open(path, encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--api-keys {path}: {getattr(error, 'strerror', None) or error}") from None
    keys = set()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line == "#" or line.startswith(("# ", "#\t")):
            continue
        if line.startswith("#") or len(line.split()) > 1:
            raise ValueError(f"--api-keys {path}: line {number} is neither a key (no '#' first, no spaces) "
                             "nor a comment ('# ' first)")
        keys.add(line)
    if not keys:
        raise ValueError(f"--api-keys {path}: no keys in it")
    return frozenset(keys)


def model_ids(folders: Sequence[str]) -> List[str]:
    """Each folder's name, numbered where names repeat (``de-en``, ``de-en-2``), and
    never an id that another folder has as its own name: a request for an id must reach
    one model only."""
    from pathlib import Path

    names = [Path(folder).resolve().name for folder in folders]
    taken = set(names)
    ids: List[str] = []
    for k, name in enumerate(names):
        if name not in names[:k]:
            ids.append(name)
            continue
        number = 2
        while f"{name}-{number}" in taken:
            number += 1
        ids.append(f"{name}-{number}")
        taken.add(ids[-1])
    return ids


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    # fairseq logs two lines per batch it builds (every request, here); keep its warnings only
    logging.getLogger("fairseq.tasks.fairseq_task").setLevel(logging.WARNING)
    import uvicorn

    from g2lstm_runtime.folder import ModelFolderError
    from .app import ServerSettings, create_app
    from .limits import Limits
    from .translator import Translator

    def fail(message: str) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_INPUT_ERROR

    try:
        api_keys = read_api_keys(args.api_keys) if args.api_keys else None
    except ValueError as error:
        return fail(str(error))
    limits = Limits(max_chars=args.max_chars, max_texts=args.max_texts, max_beam=args.max_beam,
                    request_timeout_s=args.request_timeout, max_queue=args.max_queue)
    if args.beam > limits.max_beam:
        return fail(f"--beam {args.beam} is above --max-beam {limits.max_beam}")
    settings = ServerSettings(limits=limits, beam=args.beam,
                              max_batch_sentences=1 if args.no_batching else args.max_batch_sentences,
                              max_batch_tokens=args.max_batch_tokens,
                              batch_wait_s=0.0 if args.no_batching else args.batch_wait_ms / 1000,
                              api_keys=api_keys, cors_origins=tuple(args.cors_origin))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        sock.listen(2048)  # connections made while the models load wait in the backlog
    except OSError as error:
        return fail(f"cannot listen on {args.host}:{args.port} ({error.strerror or error})")
    try:
        translators = [Translator(folder, model_id, max_len_a=args.max_len_a, max_len_b=args.max_len_b,
                                  engine=args.engine, threads=args.threads)
                       for folder, model_id in zip(args.folders, model_ids(args.folders))]
    except ModelFolderError as error:
        sock.close()
        return fail(str(error))
    app = create_app(translators, settings)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"{PROG}: serving {', '.join(t.id + ' (' + t.source + '->' + t.target + ', ' + t.engine.name + ')' for t in translators)} "
          f"on http://{shown}:{port}/", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=int(limits.request_timeout_s) + 5,
                            lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
