"""g2lstm under fairseq's own distributed data parallel training, 2 processes on CPU (gloo).

fairseq's launcher cannot start CPU ranks (it asserts CUDA; torchrun divides by the CUDA
device count), so each test starts the two ranks by hand, as docs/performance.md tells CPU users to:
``--cpu --distributed-backend gloo --distributed-world-size 2 --distributed-rank R
--distributed-init-method tcp://127.0.0.1:PORT --distributed-no-spawn``.

Each rank runs ``fairseq_cli.train.cli_main`` inside this file's worker (``__main__``
below), which changes nothing in training and records, per rank:

* the parameters after the last update (and before the first), to compare the ranks;
* a *noise probe* before every update: the trainer's own seeding for that update
  (``Trainer._set_seed``), then one training-mode forward of a fixed batch, the same on
  both ranks, with dropout 0. Its output differs between the ranks exactly when the G2
  noise they draw differs; in plain mode (no noise) it must be equal.

Two DDP backends:

* ``legacy_ddp``: fairseq's own all-reduce, the one that runs on CPU as shipped.
* ``pytorch_ddp`` (torch's DistributedDataParallel, the default on GPU, where an unused
  parameter is an error). fairseq passes ``device_ids=[0]`` even for a CPU module, which
  torch rejects, so the worker drops ``device_ids``/``output_device`` for CPU modules and
  changes nothing else. ``find_unused_parameters`` stays False (fairseq's default).
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import QUICK_CORPUS, synthetic_data_bin  # noqa: E402

WORLD_SIZE = 2
UPDATES = 3
RUN_TIMEOUT_S = 180
PROBE_SEED = 1234
PROBE_SHAPE = (4, 7)  # [B,S] of the fixed probe batch; the target side is one shorter


# --- the worker: one rank of fairseq-train, with recording ------------------------------
def _probe_batch(task):
    """A fixed batch, identical on every rank (its own generator, not torch's global one)."""
    gen = torch.Generator().manual_seed(PROBE_SEED)
    batch, steps = PROBE_SHAPE
    src = torch.randint(task.source_dictionary.nspecial, len(task.source_dictionary), (batch, steps), generator=gen)
    prev = torch.randint(task.target_dictionary.nspecial, len(task.target_dictionary), (batch, steps - 1),
                         generator=gen)
    prev[:, 0] = task.target_dictionary.eos()
    return src, torch.full((batch,), steps), prev


def _noise_probe(trainer):
    """The output of a training-mode forward of the probe batch under this update's seed."""
    model = trainer.get_model()
    src, lengths, prev = _probe_batch(trainer.task)
    was_training = model.training
    trainer._set_seed()  # what train_step does first; train_step reseeds, so training is unchanged
    model.train()
    with torch.no_grad():
        logits, _ = model(src, lengths, prev)
    model.train(was_training)
    return logits


def _allow_cpu_pytorch_ddp():
    """fairseq gives DistributedDataParallel ``device_ids`` even for a CPU module; drop them."""
    from fairseq.models import distributed_fairseq_model as dfm

    ddp = dfm.DistributedDataParallel

    def cpu_ddp(module, device_ids=None, output_device=None, **kwargs):
        if next(module.parameters()).device.type != "cpu":
            kwargs.update(device_ids=device_ids, output_device=output_device)
        return ddp(module, **kwargs)

    dfm.DistributedDataParallel = cpu_ddp


def worker(out_prefix: str, train_args):
    from fairseq.trainer import Trainer
    from fairseq_cli import train

    record = {"probes": []}
    init, train_step = Trainer.__init__, Trainer.train_step

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        record["trainer"] = self

    def recording_train_step(self, samples, *args, **kwargs):
        if "initial" not in record:
            record["initial"] = {k: v.detach().clone() for k, v in self.get_model().state_dict().items()}
        record["probes"].append(_noise_probe(self))
        return train_step(self, samples, *args, **kwargs)

    Trainer.__init__, Trainer.train_step = recording_init, recording_train_step
    _allow_cpu_pytorch_ddp()
    sys.argv = ["fairseq-train"] + list(train_args)
    train.cli_main()

    trainer = record["trainer"]
    torch.save({
        "rank": trainer.cfg.distributed_training.distributed_rank,
        "world_size": trainer.data_parallel_world_size,
        "num_updates": trainer.get_num_updates(),
        "initial": record["initial"],
        "final": {k: v.detach().clone() for k, v in trainer.get_model().state_dict().items()},
        "probes": record["probes"],
    }, f"{out_prefix}.rank{trainer.cfg.distributed_training.distributed_rank}.pt")


# --- the test side ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory):
    return synthetic_data_bin(tmp_path_factory.mktemp("dist") / "data-bin", QUICK_CORPUS)


def train_two_ranks(data_bin: Path, run_dir: Path, *, ddp_backend="legacy_ddp", seed=3, extra=()):
    """Train a tiny g2lstm with 2 CPU ranks; return (rank 0 record, rank 1 record, checkpoint)."""
    run_dir.mkdir(parents=True)
    port = free_port()
    common = [
        str(data_bin), "--user-dir", str(REPO / "fairseq_g2lstm"), "--task", "translation",
        "--arch", "g2lstm", "--encoder-layers", "2", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
        "--dropout", "0", "--optimizer", "adam", "--lr", "0.01", "--max-tokens", "300",
        "--max-update", str(UPDATES), "--seed", str(seed), "--disable-validation",
        "--save-dir", str(run_dir / "ckpt"), "--no-epoch-checkpoints", "--num-workers", "0",
        "--log-format", "simple", "--log-interval", "1",
        "--cpu", "--distributed-backend", "gloo", "--distributed-world-size", str(WORLD_SIZE),
        "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
        "--ddp-backend", ddp_backend, *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    procs, logs = [], []
    for rank in range(WORLD_SIZE):
        log = open(run_dir / f"rank{rank}.log", "w")
        logs.append(log)
        cmd = [sys.executable, __file__, str(run_dir / "record"), "--distributed-rank", str(rank), *common]
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO))
    try:
        codes = [p.wait(timeout=RUN_TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    tails = "\n".join(f"--- rank {r} ---\n" + "\n".join((run_dir / f"rank{r}.log").read_text().splitlines()[-25:])
                      for r in range(WORLD_SIZE))
    assert codes == [0] * WORLD_SIZE, f"exit codes {codes}\n{tails}"
    records = [torch.load(run_dir / f"record.rank{r}.pt") for r in range(WORLD_SIZE)]
    checkpoint = torch.load(run_dir / "ckpt" / "checkpoint_last.pt", weights_only=False)
    return records[0], records[1], checkpoint


def assert_same_params(a, b, what):
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{what}: {len(differ)} tensors differ, e.g. {differ[:3]}"


def assert_trained_in_sync(r0, r1, checkpoint):
    """Both ranks took part, the updates moved the parameters, and the ranks ended equal."""
    assert [r0["rank"], r1["rank"]] == [0, 1]
    assert r0["world_size"] == r1["world_size"] == WORLD_SIZE
    assert r0["num_updates"] == r1["num_updates"] == UPDATES
    assert len(r0["probes"]) == len(r1["probes"]) == UPDATES
    moved = [k for k in r0["final"] if not torch.equal(r0["final"][k], r0["initial"][k])]
    assert len(moved) > len(r0["final"]) // 2, "the updates left most parameters unchanged"
    assert_same_params(r0["final"], r1["final"], "rank 0 vs rank 1 after training")
    assert_same_params(r0["final"], checkpoint["model"], "rank 0 vs its checkpoint")


def probes_equal(r0, r1):
    return [torch.equal(a, b) for a, b in zip(r0["probes"], r1["probes"])]


@pytest.fixture(scope="module")
def gumbel_runs(data_bin, tmp_path_factory):
    """Two legacy_ddp runs of the G2 model with the same seed."""
    root = tmp_path_factory.mktemp("gumbel")
    return [train_two_ranks(data_bin, root / name) for name in ("first", "again")]


def test_two_cpu_ranks_train_and_end_with_identical_parameters(gumbel_runs):
    assert_trained_in_sync(*gumbel_runs[0])


def test_same_seed_reproduces_the_distributed_run(gumbel_runs):
    (a0, a1, _), (b0, b1, _) = gumbel_runs
    assert_same_params(a0["final"], b0["final"], "two runs with the same seed, rank 0")
    assert_same_params(a1["final"], b1["final"], "two runs with the same seed, rank 1")
    for a, b in ((a0, b0), (a1, b1)):  # the noise itself, update by update
        assert all(probes_equal(a, b)), f"rank {a['rank']}: the same seed drew different G2 noise"


def test_gate_noise_differs_across_ranks(gumbel_runs):
    """fairseq seeds every rank with the same seed (trainer.py, ``Trainer._set_seed``:
    ``seed + num_updates``); the G2 noise must still differ between ranks, or data
    parallelism draws the same noise N times."""
    r0, r1, _ = gumbel_runs[0]
    same = probes_equal(r0, r1)
    assert not any(same), f"rank 0 and rank 1 drew the same G2 noise at updates {[i for i, s in enumerate(same) if s]}"


@pytest.mark.parametrize("gate_mode,attention", [("gumbel", "bahdanau"), ("plain", "luong")])
def test_pytorch_ddp_finds_no_unused_parameters(data_bin, tmp_path, gate_mode, attention):
    """torch DDP with find_unused_parameters=False fails on the second update if any
    parameter got no gradient; 3 updates must complete with the ranks in sync."""
    r0, r1, checkpoint = train_two_ranks(
        data_bin, tmp_path / "run", ddp_backend="pytorch_ddp",
        extra=("--gate-mode", gate_mode, "--attention-type", attention))
    assert_trained_in_sync(r0, r1, checkpoint)
    if gate_mode == "plain":  # the probe's control: without noise (and dropout 0) the ranks agree
        assert all(probes_equal(r0, r1)), "plain mode: the probe differs across ranks without any noise"


@pytest.mark.parametrize("bidirectional", ["first", "all", "none"])
@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
@pytest.mark.parametrize("gate_mode", ["gumbel", "plain", "sharpened"])
def test_every_parameter_gets_a_gradient(model_factory, gate_mode, attention, bidirectional):
    """What DDP needs of every variant, in one process: no parameter is left without a gradient."""
    model = model_factory(gate_mode=gate_mode, attention_type=attention, encoder_bidirectional=bidirectional,
                          encoder_layers=2, decoder_layers=2)
    model.train()
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(4, 20, (3, 6), generator=gen)
    src[0, :2] = model.encoder.padding_idx  # a left-padded row
    prev = torch.randint(4, 20, (3, 5), generator=gen)
    logits, _ = model(src, torch.tensor([4, 6, 6]), prev)
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"


def test_unused_parameter_detection_works_here():
    """The check above can fail: torch DDP on CPU/gloo does reject an unused parameter."""
    script = (
        "import torch, torch.distributed as dist\n"
        f"dist.init_process_group('gloo', init_method='tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.used = torch.nn.Linear(2, 2); self.unused = torch.nn.Linear(2, 2)\n"
        "    def forward(self, x):\n"
        "        return self.used(x)\n"
        "ddp = torch.nn.parallel.DistributedDataParallel(M())\n"
        "for _ in range(2):\n"
        "    ddp(torch.ones(1, 2)).sum().backward()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, "DDP accepted a parameter that never gets a gradient"
    assert "did not receive grad" in result.stderr or "unused" in result.stderr.lower(), result.stderr[-2000:]


if __name__ == "__main__":  # one rank: tests/test_distributed.py OUT_PREFIX FAIRSEQ_TRAIN_ARGS...
    worker(sys.argv[1], sys.argv[2:])
