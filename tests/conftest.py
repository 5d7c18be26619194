"""Shared fixtures: a tiny generated translation corpus, its data-bin, a tiny model
factory, briefly trained translation checkpoints and a language model. Nothing is
downloaded; each trained fixture is built once per session."""
import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairseq_g2lstm.cuda import validation

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "fairseq_g2lstm")
BIN = Path(sys.executable).parent

TINY_DIMS = [
    "--encoder-embed-dim", "16", "--encoder-hidden-size", "16",
    "--decoder-embed-dim", "16", "--decoder-hidden-size", "16", "--decoder-out-embed-dim", "16",
]


def cli(name: str, *args, check=True, input=None, cwd=REPO) -> subprocess.CompletedProcess:
    """Run a fairseq console script of this environment; raise with its output on failure."""
    proc = subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True,
                          input=input, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def train_argument_error(monkeypatch, capsys, *args) -> str:
    """What fairseq-train prints on stderr when it refuses ``args`` while parsing them.

    Parsed in this process, as fairseq-train's ``cli_main`` parses them first (before it
    reads any data), which spares the seconds of a process launch per case; fails unless
    the parser exits with status 2."""
    from fairseq import options

    monkeypatch.setattr(sys, "argv", ["fairseq-train", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        options.parse_args_and_arch(options.get_training_parser())
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def write_toy_corpus(folder: Path, sizes=(("train", 300), ("valid", 30), ("test", 20)), seed=0):
    """A learnable toy task: the target is the reversed, upper-cased source."""
    words = [f"w{i}" for i in range(30)]
    rng = random.Random(seed)
    for split, n in sizes:
        src = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) for _ in range(n)]
        (folder / f"{split}.de").write_text("\n".join(src) + "\n")
        (folder / f"{split}.en").write_text("\n".join(" ".join(reversed(s.split())).upper() for s in src) + "\n")


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    """A fairseq data-bin (joined dictionary) of the toy corpus: de -> en."""
    folder = tmp_path_factory.mktemp("toy")
    write_toy_corpus(folder)
    cli("fairseq-preprocess", "--source-lang", "de", "--target-lang", "en",
        "--trainpref", folder / "train", "--validpref", folder / "valid", "--testpref", folder / "test",
        "--destdir", folder / "bin", "--joined-dictionary", "--workers", "1")
    return folder


@pytest.fixture(scope="session")
def toy_checkpoint(toy_data):
    """A g2lstm_iwslt model (tiny dims) trained for a few updates on the toy data."""
    save_dir = toy_data / "ckpt"
    cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, "--arch", "g2lstm_iwslt", *TINY_DIMS,
        "--max-update", "12", "--max-tokens", "800", "--optimizer", "adam", "--lr", "0.01", "--cpu",
        "--save-dir", save_dir, "--no-epoch-checkpoints", "--seed", "3", "--log-format", "simple")
    return save_dir / "checkpoint_last.pt"


def write_reversal_corpus(folder: Path, sizes=(("train", 4000), ("test", 40)), seed=5):
    """A task a tiny model learns in 150 updates: the target is the source reversed (10
    words, 3 to 6 a sentence, one shared vocabulary)."""
    words = [f"w{i}" for i in range(10)]
    rng = random.Random(seed)
    for split, n in sizes:
        src = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 6))) for _ in range(n)]
        (folder / f"{split}.de").write_text("\n".join(src) + "\n")
        (folder / f"{split}.en").write_text("\n".join(" ".join(reversed(s.split())) for s in src) + "\n")


LEARNED_DIMS = [
    "--encoder-embed-dim", "64", "--encoder-hidden-size", "64", "--decoder-embed-dim", "64",
    "--decoder-hidden-size", "64", "--decoder-out-embed-dim", "64", "--share-all-embeddings",
    "--encoder-layers", "1", "--decoder-layers", "1", "--dropout", "0",
]


@pytest.fixture(scope="session")
def reversal_model(tmp_path_factory):
    """(data folder, checkpoint) of a 1-layer G2 model (gumbel gates) trained to reverse
    sentences: about 30 s of CPU. Tests check what it translates, not just that it runs."""
    folder = tmp_path_factory.mktemp("reversal")
    write_reversal_corpus(folder)
    cli("fairseq-preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref", folder / "train",
        "--testpref", folder / "test", "--destdir", folder / "bin", "--joined-dictionary", "--workers", "1")
    cli("fairseq-train", folder / "bin", "--user-dir", USER_DIR, "--arch", "g2lstm", *LEARNED_DIMS,
        "--max-update", "150", "--max-tokens", "2000", "--optimizer", "adam", "--lr", "0.005", "--cpu",
        "--disable-validation", "--save-dir", folder / "ckpt", "--no-epoch-checkpoints", "--seed", "1")
    return folder, folder / "ckpt" / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def trained_lm(tmp_path_factory):
    """(data-bin, its folder, checkpoint, training log) of a tiny g2lstm_lm (lm_fixtures)
    trained 200 updates on the PTB-format corpus, logging every 10: the language-model
    tests and tools share it."""
    from lm_fixtures import prepare_ptb, train_lm

    folder = tmp_path_factory.mktemp("ptb")
    data = prepare_ptb(folder)
    proc = train_lm(data, folder / "ckpt", "--log-interval", "10")
    return data, folder, folder / "ckpt" / "checkpoint_last.pt", proc.stdout + proc.stderr


NOISE_SPY = """
import json, sys, torch
import fairseq_g2lstm.rnn.layer as layer, fairseq_g2lstm.rnn.stack as stack
draws = []
def spy(original):
    def draw(shape, noise_prob, **kwargs):
        noise = original(shape, noise_prob, **kwargs)
        draws.append({"dtype": str(noise.dtype), "finite": bool(torch.isfinite(noise).all()),
                      "noised": int((noise != 0).sum()), "elements": noise.numel()})
        return noise
    return draw
layer.sample_gate_noise = spy(layer.sample_gate_noise)
stack.sample_gate_noise = spy(stack.sample_gate_noise)
from fairseq_cli.train import cli_main
sys.argv = ["fairseq-train"] + json.loads(sys.argv[1])
cli_main()
print("NOISE-DRAWS " + json.dumps(draws))
"""


def train_with_noise_spy(args):
    """fairseq-train ``args`` in a fresh process that records every G2 noise draw of the
    layers (dtype, finite, noised elements, elements); returns (process, draws)."""
    proc = subprocess.run([sys.executable, "-c", NOISE_SPY, json.dumps([str(a) for a in args])],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(proc.stdout.split("NOISE-DRAWS ", 1)[1].splitlines()[0])


class ToyTask:
    """The two dictionaries that build_model needs, without a data-bin."""

    def __init__(self, size=25):
        from fairseq.data import Dictionary

        self.source_dictionary = Dictionary()
        for i in range(size):
            self.source_dictionary.add_symbol(f"w{i}")
        self.target_dictionary = self.source_dictionary


def build_model(arch="g2lstm_iwslt", task=None, **overrides):
    """A g2lstm model with tiny dimensions; ``overrides`` are arg names and values."""
    from fairseq.models import ARCH_MODEL_REGISTRY, ARCH_CONFIG_REGISTRY

    args = argparse.Namespace(encoder_embed_dim=16, decoder_embed_dim=16, encoder_hidden_size=16,
                              decoder_hidden_size=16, decoder_out_embed_dim=16, **overrides)
    ARCH_CONFIG_REGISTRY[arch](args)
    return ARCH_MODEL_REGISTRY[arch].build_model(args, task or ToyTask())


@pytest.fixture
def model_factory():
    import fairseq_g2lstm  # noqa: F401  (registers the model)

    torch.manual_seed(0)
    return build_model


@pytest.fixture(scope="module", params=validation.selected_backends())
def backend(request):
    """The fused kernel's ops on each backend: the host emulation (CPU) and CUDA, or
    those named in G2LSTM_TEST_BACKENDS (the GPU check: ``cuda``). Skipped where the
    machine has no such backend, unless it was named: then that is a failure."""
    try:
        ops, device = validation.kernel_backend(request.param)
    except validation.BackendUnavailable as reason:
        if validation.backend_required(request.param):
            pytest.fail(f"{request.param} backend ({validation.BACKENDS_ENV}): {reason}")
        pytest.skip(f"{request.param} backend: {reason}")
    return request.param, ops, device
