"""Shared by the benchmark and the tests: a tiny, deterministic parallel corpus.

:func:`synthetic_data_bin` writes a made-up source/target corpus and binarizes it with
fairseq's own preprocessing (the code behind ``fairseq-preprocess``), so the harness and
the distributed test need nothing downloaded. The corpus is a pure function of its
:class:`CorpusSpec`: the same spec gives byte-identical files on every machine.

The text is not a language, but it has the shape that matters for speed: sentence
lengths spread over ``[min_len, max_len]`` tokens, a Zipf-like word distribution over a
vocabulary of a few thousand types, and a target that is a (noisy, locally reordered)
function of the source, so the two sides have similar but not equal lengths.
"""
import bisect
import itertools
import json
import random
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Tuple

SPLITS = ("train", "valid", "test")
SRC, TGT = "src", "tgt"


@dataclass(frozen=True)
class CorpusSpec:
    """Sizes of the synthetic corpus. Sentence lengths are uniform in [min_len, max_len]."""

    train: int = 2000
    valid: int = 100
    test: int = 200
    src_vocab: int = 3000
    tgt_vocab: int = 3000
    min_len: int = 5
    max_len: int = 40
    seed: int = 1


QUICK_CORPUS = CorpusSpec(train=200, valid=20, test=24, src_vocab=300, tgt_vocab=300, min_len=4, max_len=16)


def _zipf_sampler(rng: random.Random, vocab: int):
    """A function drawing word ids in [0, vocab) with probability ~ 1/(rank+1)."""
    cumulative = list(itertools.accumulate(1.0 / (k + 1) for k in range(vocab)))
    total = cumulative[-1]
    return lambda: min(bisect.bisect_left(cumulative, rng.random() * total), vocab - 1)


def _translate(src_ids: List[int], rng: random.Random, spec: CorpusSpec) -> List[int]:
    """A deterministic-looking 'translation': a fixed word map, local swaps, a few drops
    and inserts, clamped to [min_len, max_len]."""
    out = [(k * 7919 + 13) % spec.tgt_vocab for k in src_ids]
    for i in range(0, len(out) - 1, 3):  # swap every third adjacent pair
        out[i], out[i + 1] = out[i + 1], out[i]
    out = [w for w in out if rng.random() > 0.1 or len(out) <= spec.min_len]
    while rng.random() < 0.3 and len(out) < spec.max_len:
        out.insert(rng.randrange(len(out) + 1), rng.randrange(8))  # frequent 'function words'
    return out[: spec.max_len]


def synthetic_pairs(n: int, spec: CorpusSpec, rng: random.Random) -> List[Tuple[str, str]]:
    draw = _zipf_sampler(rng, spec.src_vocab)
    pairs = []
    for _ in range(n):
        src = [draw() for _ in range(rng.randint(spec.min_len, spec.max_len))]
        tgt = _translate(src, rng, spec)
        pairs.append((" ".join(f"s{k}" for k in src), " ".join(f"t{k}" for k in tgt)))
    return pairs


def write_synthetic_corpus(raw_dir: Path, spec: CorpusSpec = CorpusSpec()) -> Path:
    """Write ``{train,valid,test}.{src,tgt}`` (one sentence a line) into ``raw_dir``."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(spec.seed)
    for split in SPLITS:
        pairs = synthetic_pairs(getattr(spec, split), spec, rng)
        for side, lines in zip((SRC, TGT), zip(*pairs)):
            (raw_dir / f"{split}.{side}").write_text("".join(line + "\n" for line in lines))
    return raw_dir


def binarize(raw_dir: Path, dest_dir: Path) -> Path:
    """Run fairseq's preprocessing on ``raw_dir`` (train/valid/test, src->tgt) into ``dest_dir``."""
    from fairseq import options
    from fairseq_cli import preprocess

    raw = Path(raw_dir)
    args = options.get_preprocessing_parser().parse_args([
        "--source-lang", SRC, "--target-lang", TGT,
        "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"), "--testpref", str(raw / "test"),
        "--destdir", str(dest_dir), "--workers", "1",
    ])
    preprocess.main(args)
    return Path(dest_dir)


def synthetic_data_bin(dest_dir: Path, spec: CorpusSpec = CorpusSpec()) -> Path:
    """A fairseq data-bin of the synthetic corpus ``spec`` in ``dest_dir``, built once.

    A ``corpus.json`` stamp records the spec; a directory built from another spec is rebuilt.
    """
    dest = Path(dest_dir)
    stamp = dest / "corpus.json"
    wanted = json.dumps(asdict(spec), sort_keys=True)
    if stamp.exists() and stamp.read_text() == wanted:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    raw = write_synthetic_corpus(dest / "raw", spec)
    binarize(raw, dest)
    stamp.write_text(wanted)
    return dest


def publish(table: str, results: dict, path: Path, also: str = "") -> None:
    """Print a benchmark's Markdown ``table`` and write its ``results`` as JSON to ``path``,
    atomically (a reader never sees half a file). ``also`` names other files written."""
    from fairseq_g2lstm.atomic_file import write_text_atomic  # imports torch: not at module load

    print(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(results, indent=2))
    print(f"\nwrote {path}{also}", file=sys.stderr)
