"""When the layers use the fused CUDA kernel (--gate-kernel), on a machine without a GPU.

No compiler is needed: builds are replaced by stand-ins through monkeypatch.
"""
import importlib.util
import os
import types
import warnings

import pytest
import torch

import fairseq_g2lstm.cuda as cuda
import fairseq_g2lstm.rnn.stack as stack_module
from fairseq_g2lstm.cuda import build
from fairseq_g2lstm.cuda.function import make_sequence_runner
from fairseq_g2lstm.gates import GateConfig, GateSpec
from fairseq_g2lstm.rnn import CellStack, G2LSTM, fused_cell_step, sequence_fused

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fresh_loader(monkeypatch):
    """A process that has not tried to build the kernel yet."""
    monkeypatch.setattr(cuda, "_ops", None)
    monkeypatch.setattr(cuda, "_build_error", None)
    monkeypatch.setattr(cuda, "_warned", False)


class FakeOps:
    """Stands in for the compiled module (hashable, like a module)."""

    backend = "cuda"


@pytest.fixture
def fake_ops():
    return FakeOps()


def test_auto_on_cpu_tensors_uses_the_torch_path(fresh_loader, monkeypatch):
    monkeypatch.setattr(build, "load_cuda_extension", lambda: pytest.fail("auto on CPU must not build"))
    layer = G2LSTM(3, 4, kernel="auto")
    assert layer._sequence_runner(torch.zeros(2, 1, 3)) is sequence_fused
    assert cuda.cuda_cell_step("auto", torch.zeros(1, 16)) is None


def test_auto_stays_on_the_torch_path_until_validated_on_hardware(fresh_loader, monkeypatch):
    assert cuda.VALIDATED_ON_HARDWARE is False  # flipped only by a passing GPU check
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(build, "load_cuda_extension", lambda: pytest.fail("auto must not build yet"))
    assert cuda.cuda_sequence_runner(required=False) is None
    like = types.SimpleNamespace(is_cuda=True)
    assert cuda.cuda_cell_step("auto", like) is None
    assert cuda.cuda_cell_step("torch", like) is None


def test_auto_uses_the_kernel_on_cuda_tensors_once_validated(fresh_loader, monkeypatch, fake_ops):
    monkeypatch.setattr(cuda, "VALIDATED_ON_HARDWARE", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(build, "load_cuda_extension", lambda: fake_ops)
    runner = cuda.cuda_sequence_runner(required=False)
    assert runner is not None and runner.draws_noise and runner.ops is fake_ops
    assert cuda.cuda_cell_step("auto", types.SimpleNamespace(is_cuda=True)).ops is fake_ops
    assert cuda.cuda_cell_step("auto", torch.zeros(1, 16)) is None  # CPU tensors: torch path


def test_gate_kernel_cuda_without_cuda_is_one_clear_error(fresh_loader, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = r"--gate-kernel cuda: CUDA is not available"
    with pytest.raises(RuntimeError, match=message):
        G2LSTM(3, 4, kernel="cuda")(torch.zeros(2, 1, 3))
    stack = CellStack(3, 4, kernel="cuda")
    spec = GateSpec()
    with pytest.raises(RuntimeError, match=message):
        stack.step(torch.zeros(1, 16), None, [torch.zeros(1, 4)], [torch.zeros(1, 4)], stack.step_weights(), spec)


def test_a_failed_build_under_auto_warns_once_and_falls_back_to_torch(fresh_loader, monkeypatch):
    calls = []

    def failing_build():
        calls.append(1)
        raise build.ExtensionBuildError("nvcc exploded")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "VALIDATED_ON_HARDWARE", True)
    monkeypatch.setattr(build, "load_cuda_extension", failing_build)
    like = types.SimpleNamespace(is_cuda=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cuda.cuda_sequence_runner(required=False) is None
        assert cuda.cuda_sequence_runner(required=False) is None
        assert cuda.cuda_cell_step("auto", like) is None
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "nvcc exploded" in messages[0] and "torch path" in messages[0]
    assert len(calls) == 1  # the failure is remembered, not rebuilt
    with pytest.raises(build.ExtensionBuildError, match="nvcc exploded"):
        cuda.load_ops(required=True)


def test_a_failed_build_under_cuda_is_an_error_not_a_silent_fallback(fresh_loader, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(build, "load_cuda_extension",
                        lambda: (_ for _ in ()).throw(build.ExtensionBuildError("nvcc exploded")))
    with pytest.raises(build.ExtensionBuildError, match="nvcc exploded"):
        cuda.cuda_sequence_runner(required=True)
    with pytest.raises(build.ExtensionBuildError, match="nvcc exploded"):
        cuda.cuda_cell_step("cuda", torch.zeros(1, 16))
    layer = G2LSTM(3, 4, kernel="cuda")
    with pytest.raises(build.ExtensionBuildError, match="nvcc exploded"):
        layer(torch.randn(5, 2, 3), torch.tensor([5, 3]))


def test_a_failed_build_under_auto_trains_on_the_torch_path(fresh_loader, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "VALIDATED_ON_HARDWARE", True)
    monkeypatch.setattr(build, "load_cuda_extension", lambda: (_ for _ in ()).throw(build.ExtensionBuildError("x")))
    torch.manual_seed(0)
    layer = G2LSTM(3, 4, num_layers=2, bidirectional=True, kernel="auto")
    reference = G2LSTM(3, 4, num_layers=2, bidirectional=True, kernel="torch")
    reference.load_state_dict(layer.state_dict())
    x, lengths = torch.randn(5, 2, 3), torch.tensor([5, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        torch.manual_seed(1)
        got = layer(x, lengths)[0]
    torch.manual_seed(1)
    want = reference(x, lengths)[0]
    assert torch.equal(got, want)


def test_the_runner_refuses_tensors_on_the_wrong_device(fake_ops):
    run = make_sequence_runner(fake_ops)
    with pytest.raises(ValueError, match="--gate-kernel cuda: .* needs CUDA tensors"):
        run(torch.zeros(2, 1, 16), torch.zeros(16, 4), torch.zeros(1, 4), torch.zeros(1, 4),
            torch.tensor([2]), GateSpec())


def test_the_layer_leaves_noise_to_a_runner_that_draws_its_own(monkeypatch):
    seen = []

    def runner(x_proj, w_hh, h0, c0, lengths, spec, noise):
        seen.append(noise)
        steps, batch, _ = x_proj.shape
        zeros = x_proj.new_zeros(batch, w_hh.shape[1])
        return x_proj.new_zeros(steps, batch, w_hh.shape[1]), zeros, zeros, torch.zeros_like(x_proj)

    runner.draws_noise = True
    layer = G2LSTM(3, 4, gate=GateConfig(mode="gumbel"), kernel="cuda").train()
    monkeypatch.setattr(layer, "_sequence_runner", lambda x: runner)
    rng = torch.get_rng_state()
    layer(torch.zeros(2, 1, 3))
    assert seen == [None]
    assert torch.equal(torch.get_rng_state(), rng)  # nothing sampled for it
    explicit = torch.ones(2, 1, 8)
    layer(torch.zeros(2, 1, 3), noise=[explicit])
    assert seen[-1] is explicit


def test_the_stack_steps_with_the_kernel_step_when_asked(monkeypatch):
    used = []

    def kernel_step(preact, c_prev, spec, noise=None):
        used.append(True)
        return fused_cell_step(preact, c_prev, spec, noise)

    monkeypatch.setattr(stack_module, "cuda_cell_step", lambda kind, like: kernel_step if kind == "cuda" else None)
    for kind, expected in (("cuda", [True, True]), ("torch", [])):
        used.clear()
        stack = CellStack(3, 4, num_layers=2, kernel=kind)
        x_proj = stack.project_inputs(torch.zeros(1, 1, 3))[0]
        zeros = [torch.zeros(1, 4), torch.zeros(1, 4)]
        stack.step(x_proj, None, zeros, zeros, stack.step_weights(), GateSpec())
        assert used == expected, kind


def test_lengths_must_be_sorted_for_the_kernel(fake_ops):
    from fairseq_g2lstm.cuda.function import batch_sizes_for

    assert batch_sizes_for(torch.tensor([3, 3, 1, 0]), 4) == [3, 2, 2, 0]
    with pytest.raises(ValueError, match="decreasing"):
        batch_sizes_for(torch.tensor([1, 3]), 3)


def _setup_kwargs(monkeypatch, build_cuda):
    """The keyword arguments setup.py passes to setuptools.setup."""
    import setuptools

    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    if build_cuda:
        monkeypatch.setenv("G2LSTM_BUILD_CUDA", "1")
    else:
        monkeypatch.delenv("G2LSTM_BUILD_CUDA", raising=False)
    spec = importlib.util.spec_from_file_location("g2lstm_setup", os.path.join(REPO, "setup.py"))
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return captured


def test_setup_builds_no_extension_unless_asked(monkeypatch):
    kwargs = _setup_kwargs(monkeypatch, build_cuda=False)
    assert kwargs["name"] == "fairseq-g2lstm"
    assert "ext_modules" not in kwargs
    sources = kwargs["package_data"]["fairseq_g2lstm.cuda"]
    assert "*.cu" in sources and "*.cuh" in sources  # the JIT build needs them installed


@pytest.mark.skipif(torch.version.cuda is None or build.find_nvcc() is None,
                    reason="CUDAExtension needs a CUDA build of torch and a CUDA toolkit")
def test_setup_with_g2lstm_build_cuda_declares_the_extension(monkeypatch):
    kwargs = _setup_kwargs(monkeypatch, build_cuda=True)
    (ext,) = kwargs["ext_modules"]
    assert ext.name == build.INSTALLED_MODULE
    assert sorted(os.path.basename(s) for s in ext.sources) == sorted(build.CUDA_SOURCES)
    assert all(os.path.isfile(os.path.join(REPO, s)) for s in ext.sources)
    assert "build_ext" in kwargs["cmdclass"]


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("gate_kernel_bench", os.path.join(REPO, "benchmarks", "gate_kernel.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_needs_cuda_unless_dry_run(monkeypatch, capsys):
    bench = _benchmark_module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_the_benchmark_dry_runs_its_tables_on_cpu(tmp_path):
    bench = _benchmark_module()
    out = tmp_path / "bench.md"
    argv = ["--device", "cpu", "--batches", "2", "--hiddens", "8", "--steps", "3", "--iters", "1",
            "--warmup", "0", "--out", str(out)]
    assert bench.main(argv) == 0
    text = out.read_text()
    assert text.startswith("# G2 layer") and "Generated by `python benchmarks/gate_kernel.py --device cpu" in text
    assert "### B=2 H=8 T=3 float32" in text
    for tf32 in ("off", "on"):  # float32: every row under both settings, each labelled
        assert f"| G2 kernel (cuda), TF32 {tf32} | n/a | n/a |" in text
        assert f"| nn.LSTM (CPU), TF32 {tf32} |" in text
    assert "| G2 torch path, TF32 off |" in text
    assert "Precision: float32 rows marked TF32 off" in text
    assert "### Goals" in text and "nn.LSTM, TF32 off (goal <= 1.3)" in text and "nn.LSTM, TF32 on (goal <= 1.3)" in text


@pytest.fixture
def host_bench():
    """benchmarks/gate_kernel.py, where the kernel's host emulation builds (else skip)."""
    from fairseq_g2lstm.cuda import validation

    try:
        validation.kernel_backend("host")
    except validation.BackendUnavailable as reason:
        pytest.skip(str(reason))
    return _benchmark_module()


def test_the_benchmark_times_the_host_emulation_as_the_kernel_in_a_dry_run(tmp_path, host_bench):
    bench = host_bench
    out = tmp_path / "bench.md"
    argv = ["--device", "cpu", "--kernel", "host", "--dtype", "bfloat16", "--batches", "2", "--hiddens", "8",
            "--steps", "3", "--iters", "1", "--warmup", "0", "--out", str(out)]
    assert bench.main(argv) == 0
    text = out.read_text()
    assert "### B=2 H=8 T=3 bfloat16" in text and "TF32 does not apply" in text
    row = next(line for line in text.splitlines() if line.startswith("| G2 kernel (host emulation) |"))
    assert "n/a" not in row.split("|")[2]  # timed


def test_the_benchmark_kernel_row_fails_loudly_when_the_kernel_does_not_load(monkeypatch):
    """No silent fallback: a failed build raises instead of timing the torch path."""
    bench = _benchmark_module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "load_ops", lambda required=True: (_ for _ in ()).throw(build.ExtensionBuildError("no")))
    with pytest.raises(build.ExtensionBuildError):
        bench.main(["--batches", "2", "--hiddens", "8", "--steps", "3", "--iters", "1", "--warmup", "0"])
    monkeypatch.setattr(cuda, "load_ops", lambda required=True: types.SimpleNamespace(backend="host-emulation"))
    with pytest.raises(bench.KernelNotUsed, match="not 'cuda'"):
        bench.main(["--batches", "2", "--hiddens", "8", "--steps", "3", "--iters", "1", "--warmup", "0"])


def test_the_benchmark_kernel_row_fails_loudly_when_the_layer_skips_the_kernel(monkeypatch, host_bench):
    bench = host_bench
    monkeypatch.setattr(bench, "use_kernel", lambda layer, ops: [0])  # the layer keeps the torch path
    with pytest.raises(bench.KernelNotUsed, match="ran the kernel 0 times"):
        bench.main(["--device", "cpu", "--kernel", "host", "--batches", "2", "--hiddens", "8", "--steps", "3",
                    "--iters", "1", "--warmup", "0"])


def test_typing_gate_kernel_cuda_without_cuda_stops_at_the_argument_check(tmp_path):
    """One line and exit 2 while fairseq-train parses its arguments: before any data is
    read (the data folder does not even exist) and without a traceback."""
    from conftest import cli

    proc = cli("fairseq-train", tmp_path / "no-data", "--user-dir", REPO + "/fairseq_g2lstm", "--arch", "g2lstm_iwslt",
               "--gate-kernel", "cuda", "--cpu", check=False)
    ours = [line for line in proc.stderr.splitlines() if not line.startswith("INFO:fairseq")]
    assert proc.returncode == 2 and ours == [
        "fairseq-train: error: --gate-kernel cuda: CUDA is not available on this machine "
        "(torch.cuda.is_available() is False); use --gate-kernel torch or auto"], proc.stderr


def test_a_checkpoint_trained_with_the_cuda_kernel_decodes_on_a_cpu(toy_data, toy_checkpoint, tmp_path, caplog):
    """The saved --gate-kernel cuda falls back to the torch path with a logged note, and
    translates exactly as the same weights saved with --gate-kernel torch."""
    from fairseq_g2lstm.models import G2LSTMModel

    state = torch.load(toy_checkpoint, map_location="cpu", weights_only=False)
    for kernel in ("cuda", "torch"):
        state["cfg"]["model"].gate_kernel = kernel
        torch.save(state, tmp_path / f"{kernel}.pt")

    def translate(name):
        hub = G2LSTMModel.from_pretrained(str(tmp_path), checkpoint_file=name, data_name_or_path=str(toy_data / "bin"))
        hypos = hub.generate([hub.encode(s) for s in ("w1 w2 w3", "w4 w5 w6 w7")], beam=5)
        return hub, [(hub.decode(h[0]["tokens"]), round(h[0]["score"].item(), 6)) for h in hypos]

    with caplog.at_level("WARNING", logger="fairseq_g2lstm.models.gate_flags"):
        hub, from_cuda = translate("cuda.pt")
    assert {module.kernel for module in hub.models[0].modules() if hasattr(module, "kernel")} == {"torch"}
    assert [r.getMessage() for r in caplog.records if r.name == "fairseq_g2lstm.models.gate_flags"] == [
        "the model was configured with --gate-kernel cuda, but CUDA is not available: using the torch path "
        "(the same gates), as --gate-kernel torch"]
    assert from_cuda == translate("torch.pt")[1]
