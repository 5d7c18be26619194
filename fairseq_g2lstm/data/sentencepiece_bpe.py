"""Joint sentencepiece BPE: train on a sample of both languages, encode in worker processes.

Encoded text is written as pieces joined by spaces, with sentencepiece's ``▁`` (U+2581)
word-start marker, which is what fairseq's ``--remove-bpe sentencepiece`` and
``--bpe sentencepiece`` undo and apply.
"""
import collections
import itertools
import multiprocessing
import signal
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import sentencepiece

from .errors import PrepareError
from .filters import OVER_MAX_SUBWORDS
from .textio import PairWriter, read_pairs

Pair = Tuple[str, str]

ENCODE_CHUNK_PAIRS = 5000
"""Pairs per task sent to a worker: large enough to amortise the inter-process copy."""

TASKS_IN_FLIGHT_PER_WORKER = 2
"""Chunks queued ahead per worker: keeps the workers busy while bounding memory."""


def train_joint_bpe(
    text_files: Sequence[Path],
    model_prefix: Path,
    vocab_size: int,
    input_sentence_size: int,
    character_coverage: float,
    seed: int,
    threads: int,
) -> Path:
    """Train one BPE model on all ``text_files`` together; return the ``.model`` path.

    At most ``input_sentence_size`` lines (a seeded random sample over all files) are
    used, so a corpus of millions of lines trains in bounded memory. ``vocab_size`` is an
    upper bound (``hard_vocab_limit=False``): a small corpus yields fewer pieces instead
    of an error.
    """
    sentencepiece.set_random_generator_seed(seed)
    try:
        sentencepiece.SentencePieceTrainer.train(
            input=[str(path) for path in text_files],
            model_prefix=str(model_prefix),
            model_type="bpe",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=character_coverage,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            num_threads=threads,
            minloglevel=2,
        )
    except RuntimeError as error:  # e.g. a vocabulary smaller than the alphabet
        message = str(error).split("] ")[-1].strip() or str(error).strip() or type(error).__name__
        raise PrepareError(f"sentencepiece training failed: {message}") from None
    return Path(f"{model_prefix}.model")


def vocabulary(model_path: Path) -> List[str]:
    """The model's pieces in id order, without its control and unknown symbols (``<unk>``,
    ``<s>``, ``</s>``), which fairseq's dictionary has already."""
    model = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    return [model.id_to_piece(i) for i in range(model.get_piece_size())
            if not (model.is_control(i) or model.is_unknown(i))]


def write_fairseq_dictionary(model_path: Path, counts: Counter, path: Path) -> Path:
    """A fairseq ``dict.txt`` (``PIECE COUNT`` lines) holding every piece of the model.

    Why not let fairseq-preprocess build it from the encoded training text: that
    dictionary lacks every piece the training text happens not to contain after
    encoding (intermediate merges, rare characters). On a small corpus the valid and
    test splits then lose 10% of their tokens to ``<unk>``. With the model's whole
    vocabulary, only characters the model has never seen become ``<unk>``. Pieces are
    ordered by their count in ``counts`` (the training text), then by id.
    """
    pieces = vocabulary(model_path)
    order = sorted(range(len(pieces)), key=lambda i: (-counts.get(pieces[i], 0), i))
    with open(path, "w", encoding="utf-8") as stream:
        for i in order:
            stream.write(f"{pieces[i]} {counts.get(pieces[i], 0)}\n")
    return path


def vocabulary_size(model_path: Path) -> int:
    """Number of pieces in a trained model, control symbols included."""
    return sentencepiece.SentencePieceProcessor(model_file=str(model_path)).get_piece_size()


_worker_model: Optional[sentencepiece.SentencePieceProcessor] = None


def _load_worker_model(model_path: str) -> None:
    global _worker_model
    _worker_model = sentencepiece.SentencePieceProcessor(model_file=model_path)


def _init_worker(model_path: str) -> None:
    """A pool worker: the parent handles Ctrl-C and SIGTERM and ends the pool, so the
    worker ignores Ctrl-C (no traceback per worker) and dies at once on SIGTERM (not the
    parent's handler, which a forked worker would otherwise inherit)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _load_worker_model(model_path)


def _encode_chunk(pairs: List[Pair]) -> List[Tuple[str, str, int]]:
    """[(source, target)] -> [(source pieces, target pieces, pieces on the longer side)].

    Pieces are joined here, in the worker, so that strings rather than lists of pieces
    travel back to the writing process.
    """
    sources, targets = zip(*pairs)
    encoded_sources = _worker_model.encode(list(sources), out_type=str)
    encoded_targets = _worker_model.encode(list(targets), out_type=str)
    return [
        (" ".join(source), " ".join(target), max(len(source), len(target)))
        for source, target in zip(encoded_sources, encoded_targets)
    ]


def _chunks(pairs: Iterable[Pair], size: int) -> Iterator[List[Pair]]:
    iterator = iter(pairs)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _encode_in_order(model_path: Path, pairs: Iterable[Pair], workers: int):
    """Yield encoded chunks in input order, with at most a few chunks in memory."""
    chunks = _chunks(pairs, ENCODE_CHUNK_PAIRS)
    if workers <= 1:
        _load_worker_model(str(model_path))
        yield from map(_encode_chunk, chunks)
        return
    with multiprocessing.Pool(workers, _init_worker, (str(model_path),)) as pool:
        # Pool.imap would read the whole input ahead; a bounded window of async tasks
        # keeps the streaming promise for multi-million-pair corpora.
        pending = collections.deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_encode_chunk, (chunk,)))
            if len(pending) >= TASKS_IN_FLIGHT_PER_WORKER * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def encode_split(
    model_path: Path,
    source_path: Path,
    target_path: Path,
    writer: PairWriter,
    workers: int,
    max_subwords: Optional[int],
    dropped: Counter,
) -> None:
    """Encode aligned files into ``writer``; pairs over ``max_subwords`` pieces on either
    side are dropped and counted (pass ``None`` to keep every pair)."""
    for chunk in _encode_in_order(model_path, read_pairs(source_path, target_path), workers):
        for source, target, longest in chunk:
            if max_subwords is not None and longest > max_subwords:
                dropped[OVER_MAX_SUBWORDS] += 1
                continue
            writer.write(source, target)
