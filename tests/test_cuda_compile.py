"""The CUDA sources compile with the flags torch would use, on a machine with nvcc and
no GPU (CI): a syntax or type error in a ``.cu`` file fails here.

Each ``.cu`` file is compiled once per test session (in parallel, ``-c``, no link);
skipped only where nvcc is absent. binding.cpp and the shared host code are compiled,
linked and run by the host-emulation build (tests/test_cuda_kernel.py).
"""
import os

import pytest

from fairseq_g2lstm.cuda import build

NVCC = build.find_nvcc()
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, CUDA_HOME, /usr/local/cuda)")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("g2lstm_cuda_check"))
    return out_dir, build.compile_check(out_dir, NVCC, jobs=2)


def test_cuda_sources_compile_with_torch_flags(compiled):
    out_dir, results = compiled
    assert sorted(os.path.basename(r.source) for r in results) == ["g2lstm_backward.cu", "g2lstm_forward.cu"]
    for r in results:
        assert r.ok, f"{os.path.basename(r.source)} failed to compile:\n{r.output[-6000:]}"
        obj = os.path.join(out_dir, os.path.basename(r.source) + ".o")
        assert os.path.getsize(obj) > 0


def test_the_check_uses_torch_includes_abi_and_one_hopper_target(compiled):
    _, results = compiled
    command = results[0].command
    joined = " ".join(command)
    assert "-c" in command and "-o" in command  # compile only
    assert any(arg.startswith("-I") and arg.rstrip("/").endswith(os.path.join("torch", "include")) for arg in command)
    assert "-D_GLIBCXX_USE_CXX11_ABI=" in joined and "-DTORCH_EXTENSION_NAME=" in joined
    assert "--expt-relaxed-constexpr" in command
    assert "arch=compute_90,code=sm_90" in command


def test_the_check_catches_a_type_error(tmp_path):
    """The same command line on a source with a type error fails, so a broken kernel
    cannot pass the check unnoticed."""
    broken = tmp_path / "broken.cu"
    broken.write_text(
        '#include "g2lstm_gates.cuh"\n'
        "__global__ void k(float* x) { g2lstm::U32x4 r = g2lstm::sigmoid(x[0]); x[0] = r; }\n"
    )
    command = build.check_commands(NVCC, str(tmp_path))[0]
    source_at = command.index("-c") + 1
    command[source_at] = str(broken)
    command[command.index("-o") + 1] = str(tmp_path / "broken.o")
    command.insert(source_at, f"-I{build.HERE}")
    result = build.run_compile(command, str(broken))
    assert not result.ok
    assert "error" in result.output
