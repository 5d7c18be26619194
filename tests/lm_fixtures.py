"""Helpers of the language-model tests: a PTB-format corpus, a tiny g2lstm_lm model and a
briefly trained checkpoint (conftest's session fixture ``trained_lm`` trains the one the
tests share)."""
import argparse
import random
from pathlib import Path

from conftest import USER_DIR, cli

# Tiny sizes: 2 layers of 24 units, embeddings 16 (so the last layer is projected 24 -> 16), tied.
LM_DIMS = ["--decoder-embed-dim", "16", "--decoder-hidden-size", "24", "--decoder-out-embed-dim", "16",
           "--decoder-layers", "2", "--share-decoder-input-output-embed"]
LM_TRAIN = ["--task", "language_modeling", "--tokens-per-sample", "32", "--sample-break-mode", "none",
            "--batch-size", "8", "--optimizer", "adam", "--lr", "0.01", "--cpu", "--seed", "1",
            "--no-epoch-checkpoints", "--log-format", "simple"]

SUBJECTS = ["the company", "the market", "investors", "the president", "<unk> corp", "the board"]
VERBS = ["said", "expects", "reported", "sold", "bought"]
OBJECTS = ["N shares", "a new plan", "the stock", "N million", "its <unk> unit", "N N"]


def write_ptb_corpus(folder: Path, sizes=(("train", 600), ("valid", 60), ("test", 60)), seed=0) -> dict:
    """PTB-format text (lower case, ``<unk>``, ``N`` for numbers, no punctuation, a space at
    both ends of a line as in Mikolov's files) with a learnable structure: subject, verb,
    object, sometimes ``and`` another clause. Returns {split: path} (``ptb.SPLIT.txt``)."""
    rng = random.Random(seed)
    paths = {}
    for split, n in sizes:
        lines = []
        for _ in range(n):
            clauses = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"]
            if rng.random() < 0.4:
                clauses.append(f"{rng.choice(VERBS)} {rng.choice(OBJECTS)}")
            lines.append(" " + " and ".join(clauses) + " ")
        paths[split] = folder / f"ptb.{split}.txt"
        paths[split].write_text("\n".join(lines) + "\n")
    return paths


def prepare_ptb(folder: Path) -> Path:
    """The corpus of :func:`write_ptb_corpus` through g2lstm-prepare-lm; returns the data-bin."""
    paths = write_ptb_corpus(folder)
    cli("g2lstm-prepare-lm", "--train", paths["train"], "--valid", paths["valid"], "--test", paths["test"],
        "--destdir", folder / "bin", "--workers", "1")
    return folder / "bin"


def train_lm(data: Path, save_dir: Path, *extra, updates: int = 200):
    """fairseq-train a tiny g2lstm_lm; returns the finished process (its log is the output)."""
    return cli("fairseq-train", data, "--user-dir", USER_DIR, "--arch", "g2lstm_lm", *LM_DIMS, *LM_TRAIN,
               "--max-update", updates, "--save-dir", save_dir, *extra)


class LMTask:
    """What build_model needs from a language_modeling task: one dictionary."""

    def __init__(self, size=20):
        from fairseq.data import Dictionary

        self.dictionary = Dictionary()
        for i in range(size):
            self.dictionary.add_symbol(f"w{i}")
        self.source_dictionary = self.target_dictionary = self.dictionary


def build_lm(arch="g2lstm_lm", task=None, tiny=True, **overrides):
    """A g2lstm_lm model with tiny sizes (those of LM_DIMS; ``tiny=False``: the arch's own);
    ``overrides`` are arg names and values."""
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY

    sizes = dict(decoder_embed_dim=16, decoder_hidden_size=24, decoder_out_embed_dim=16, decoder_layers=2,
                 share_decoder_input_output_embed=True) if tiny else {}
    args = argparse.Namespace(**{**sizes, **overrides})
    ARCH_CONFIG_REGISTRY[arch](args)
    return ARCH_MODEL_REGISTRY[arch].build_model(args, task or LMTask())
