"""What the export, server and browser tests share: one tiny translation model with a
sentencepiece model, trained once per test session and exported as a model folder, and a
server started in a subprocess on a free loopback port.

The model learns to reverse sentences of 10 words (``w3 w1 w7`` -> ``w7 w1 w3``) in 150
updates (about half a minute of CPU), so the translations the tests compare are real ones.
Its sentencepiece model is word-level (each ``w<i>`` one piece), which keeps the task as
short, and as learnable, as without one.
"""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List

import httpx
import sentencepiece as spm

from conftest import LEARNED_DIMS, REPO, USER_DIR, cli, write_reversal_corpus

SENTENCES = ["w1 w2 w3", "w4 w5 w6 w7", "w9 w0 w3 w3 w8", "w2 w7 w1", "w5 w5 w6 w0 w1 w2"]
_BUILT: Dict[str, Path] = {}


def served_model(tmp_path_factory) -> Dict[str, Path]:
    """{"data": data-bin (with spm.model inside, as g2lstm's preparation scripts leave it),
    "checkpoint": the trained checkpoint, "folder": its exported model folder}; built on
    the first call of the session, then reused by every test module."""
    if _BUILT:
        return _BUILT
    root = tmp_path_factory.mktemp("served")
    write_reversal_corpus(root)
    spm.SentencePieceTrainer.train(
        input=[str(root / "train.de"), str(root / "train.en")], model_prefix=str(root / "spm"), vocab_size=12,
        hard_vocab_limit=False, model_type="word", character_coverage=1.0, bos_id=-1, eos_id=-1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(root / "spm.model"))
    for split in ("train", "test"):
        for lang in ("de", "en"):
            lines = (root / f"{split}.{lang}").read_text().splitlines()
            (root / f"{split}.spm.{lang}").write_text("\n".join(" ".join(sp.encode(x, out_type=str)) for x in lines) + "\n")
    data = root / "bin"
    cli("fairseq-preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref", root / "train.spm",
        "--testpref", root / "test.spm", "--destdir", data, "--joined-dictionary", "--workers", "1")
    (data / "spm.model").write_bytes((root / "spm.model").read_bytes())
    cli("fairseq-train", data, "--user-dir", USER_DIR, "--arch", "g2lstm", *LEARNED_DIMS,
        "--max-update", "150", "--max-tokens", "2000", "--optimizer", "adam", "--lr", "0.005", "--cpu",
        "--disable-validation", "--save-dir", root / "ckpt", "--no-epoch-checkpoints", "--seed", "1")
    checkpoint = root / "ckpt" / "checkpoint_last.pt"
    cli("g2lstm-export", checkpoint, "--data", data, "--out", root / "reverse-de-en")
    _BUILT.update(data=data, checkpoint=checkpoint, folder=root / "reverse-de-en")
    return _BUILT


def served_model_with_graphs(tmp_path_factory) -> Path:
    """A copy of :func:`served_model`'s folder with ONNX graphs added by
    ``g2lstm-export --onnx DIR`` (same folder name, so the same model id); built once per
    session. Tests copy it before they change it."""
    if "graphs" not in _BUILT:
        graphs = tmp_path_factory.mktemp("served-graphs") / "reverse-de-en"
        shutil.copytree(served_model(tmp_path_factory)["folder"], graphs)
        cli("g2lstm-export", "--onnx", graphs)
        _BUILT["graphs"] = graphs
    return _BUILT["graphs"]


def interactive(folder: Path, sentences: List[str], beam: int = 5) -> List[str]:
    """fairseq-interactive's translations with the model folder (the documented command)."""
    proc = cli("fairseq-interactive", folder, "--user-dir", USER_DIR, "--path", folder / "model.pt", "--cpu",
               "--beam", beam, "--source-lang", "de", "--target-lang", "en", "--bpe", "sentencepiece",
               "--sentencepiece-model", folder / "sentencepiece.bpe.model", input="\n".join(sentences) + "\n")
    return [line.split("\t")[2] for line in proc.stdout.splitlines() if line.startswith("D-")]


class Server:
    """A running ``g2lstm-serve`` subprocess: its base URL, its process and its log."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.lines, self.url = proc, [], None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        marker = " on http://"
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if self.url is None and line.startswith("g2lstm-serve: serving") and marker in line:
                self.url = "http://" + line.rsplit(marker, 1)[1].strip().rstrip("/")
                self._ready.set()
        self._ready.set()  # the process ended

    def wait_ready(self, timeout: float = 120) -> str:
        if not self._ready.wait(timeout) or self.url is None:
            raise AssertionError("the server did not start:\n" + "\n".join(self.lines[-30:]))
        return self.url

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status (the server drains and exits by itself, by the
        signal: uvicorn re-raises it once the requests in flight are answered)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the server did not exit within %s s of SIGTERM" % timeout)


def start_server(*args) -> Server:
    """Start ``g2lstm-serve ARGS --port 0`` (a free port, on 127.0.0.1 by default) and wait
    until it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "fairseq_g2lstm.serve.cli", *map(str, args), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    server = Server(proc)
    try:
        server.wait_ready()
    except AssertionError:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running_server(*args) -> Iterator[Server]:
    server = start_server(*args)
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate, timeout: float = 10, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
