"""Building the fused CUDA gate kernel: its sources and flags, the cached builds and the
compile check.

Three ways to a binary, all from the sources in this folder:

* :func:`load_cuda_extension`: built on first CUDA use with
  ``torch.utils.cpp_extension.load`` and cached by torch (``TORCH_EXTENSIONS_DIR``,
  default ``~/.cache/torch_extensions``); a module installed by ``G2LSTM_BUILD_CUDA=1
  pip install .`` (``fairseq_g2lstm.cuda._C``) is used instead when present.
* :func:`load_host_emulation`: the same host loops and per-thread step code compiled for
  CPU tensors by the C++ compiler alone (``host_emulation.cpp``), for the CPU tests.
* :func:`compile_check`: nvcc compiles each ``.cu`` file with the include paths and
  flags torch uses, without linking, so that a syntax or type error shows on a machine
  with nvcc and no GPU.

This module imports only the standard library at the top, so that ``setup.py`` can load
it by path (:data:`CUDA_SOURCES`, :func:`nvcc_flags`) without importing the package.

Command line: ``python -m fairseq_g2lstm.cuda.build [--check DIR | --host] [--verbose]``
builds the CUDA extension (or, with ``--check``, runs the compile check into DIR; with
``--host``, builds the host emulation) and reports the time it took.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))

EXTENSION_NAME = "fairseq_g2lstm_cuda"
HOST_EMULATION_NAME = "fairseq_g2lstm_cuda_host"
# The module that ``G2LSTM_BUILD_CUDA=1 pip install .`` builds.
INSTALLED_MODULE = "fairseq_g2lstm.cuda._C"

CUDA_SOURCES = ("binding.cpp", "g2lstm_forward.cu", "g2lstm_backward.cu")
HOST_EMULATION_SOURCES = ("binding.cpp", "host_emulation.cpp")
HEADERS = ("g2lstm.h", "g2lstm_gates.cuh", "g2lstm_steps.cuh", "g2lstm_sequence.h",
           "g2lstm_cuda_launch.cuh")

# No --use_fast_math: the kernel must agree with torch's expf/tanhf to 1e-5 (fp32).
_NVCC_FLAGS = ["-O3", "-lineinfo"]
_CXX_FLAGS = ["-O3"]
# The host emulation runs tiny shapes; a light optimisation level builds faster.
_HOST_EMULATION_FLAGS = ["-O1", "-DG2LSTM_HOST_EMULATION=1"]
# torch's own flags for every nvcc call (torch.utils.cpp_extension.COMMON_NVCC_FLAGS).
_TORCH_NVCC_FLAGS = [
    "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
]
# The compile check targets Hopper (the machines this project is lent); the JIT build
# follows TORCH_CUDA_ARCH_LIST or the visible GPU, as torch does.
CHECK_ARCH = "90"


def source_paths(names: Sequence[str]) -> List[str]:
    return [os.path.join(HERE, name) for name in names]


def nvcc_flags() -> List[str]:
    return list(_NVCC_FLAGS)


def cxx_flags() -> List[str]:
    return list(_CXX_FLAGS)


class ExtensionBuildError(RuntimeError):
    """The fused kernel could not be built or loaded here."""


def _verbose_default() -> bool:
    return os.environ.get("G2LSTM_CUDA_VERBOSE", "") not in ("", "0")


def load_cuda_extension(verbose: Optional[bool] = None):
    """The compiled CUDA ops module (see ``g2lstm.h``); raises :class:`ExtensionBuildError`.

    An installed build (``G2LSTM_BUILD_CUDA=1``) wins; otherwise the sources are built
    with ``torch.utils.cpp_extension.load``, which caches the binary and rebuilds only
    when a source or flag changes. Set ``G2LSTM_CUDA_VERBOSE=1`` to see the compiler.
    """
    verbose = _verbose_default() if verbose is None else verbose
    try:
        import importlib

        return importlib.import_module(INSTALLED_MODULE)
    except ImportError:
        pass
    try:
        from torch.utils import cpp_extension

        return cpp_extension.load(
            name=EXTENSION_NAME,
            sources=source_paths(CUDA_SOURCES),
            extra_cflags=cxx_flags(),
            extra_cuda_cflags=nvcc_flags(),
            verbose=verbose,
        )
    except Exception as err:  # a compiler error, no nvcc, no ninja, a bad binary...
        raise ExtensionBuildError(_first_line(err)) from err


def load_host_emulation(verbose: Optional[bool] = None):
    """The host-emulation ops module (CPU tensors), built and cached like the CUDA one."""
    verbose = _verbose_default() if verbose is None else verbose
    try:
        from torch.utils import cpp_extension

        return cpp_extension.load(
            name=HOST_EMULATION_NAME,
            sources=source_paths(HOST_EMULATION_SOURCES),
            extra_cflags=list(_HOST_EMULATION_FLAGS),
            verbose=verbose,
        )
    except Exception as err:
        raise ExtensionBuildError(_first_line(err)) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


# --- the compile check -------------------------------------------------------------------
@dataclass
class CompileResult:
    source: str
    command: List[str]
    returncode: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def find_nvcc() -> Optional[str]:
    """nvcc on PATH, else under CUDA_HOME or /usr/local/cuda; None when absent."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return None


def _cuda_include(nvcc: str) -> Optional[str]:
    """The toolkit's include folder (nvcc may be a wrapper script outside the toolkit)."""
    roots = (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
             os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda")
    for root in roots:
        if root and os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")):
            return os.path.join(root, "include")
    return None  # nvcc still finds its own headers


def _torch_cxx_standard(cpp_extension) -> str:
    """The C++ standard torch's extension builder asks for (c++17 up to torch 2.9, c++20 after)."""
    import inspect

    try:
        text = inspect.getsource(cpp_extension)
    except (OSError, TypeError):
        text = ""
    return "c++20" if "-std=c++20" in text else "c++17"


def check_commands(nvcc: str, out_dir: str, arch: str = CHECK_ARCH) -> List[List[str]]:
    """The nvcc command of each ``.cu`` source: compile only (``-c``), no link.

    The flags are those of ``torch.utils.cpp_extension`` for a CUDA extension: its include
    paths (plus the toolkit's), ``COMMON_NVCC_FLAGS``, the C++ standard, the C++ ABI and
    ``TORCH_EXTENSION_NAME``, and ``-gencode`` for one architecture.
    ``-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE`` stands in for ``c10/cuda/impl/cuda_cmake_macros.h``,
    a generated header that only CUDA builds of torch ship.
    """
    import torch
    from torch.utils import cpp_extension

    try:
        includes = cpp_extension.include_paths("cpu")
    except TypeError:  # torch < 2.4: include_paths(cuda=False)
        includes = cpp_extension.include_paths(False)
    includes = list(includes) + [path for path in [_cuda_include(nvcc)] if path]
    common = getattr(cpp_extension, "COMMON_NVCC_FLAGS", _TORCH_NVCC_FLAGS)
    flags = (
        [f"-I{path}" for path in includes]
        + list(common)
        + nvcc_flags()
        + [
            f"-std={_torch_cxx_standard(cpp_extension)}",
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
            "-DTORCH_API_INCLUDE_EXTENSION_H",
            f"-DTORCH_EXTENSION_NAME={EXTENSION_NAME}",
            "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
            f"-I{sysconfig.get_paths()['include']}",
            "-gencode", f"arch=compute_{arch},code=sm_{arch}",
            "-Xcompiler", "-fPIC",
        ]
    )
    commands = []
    for source in source_paths([s for s in CUDA_SOURCES if s.endswith(".cu")]):
        obj = os.path.join(out_dir, os.path.basename(source) + ".o")
        commands.append([nvcc] + flags + ["-c", source, "-o", obj])
    return commands


def run_compile(command: List[str], source: str) -> CompileResult:
    start = time.monotonic()
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return CompileResult(source, command, proc.returncode, proc.stdout, time.monotonic() - start)


def compile_check(out_dir: str, nvcc: Optional[str] = None, jobs: int = 2) -> List[CompileResult]:
    """Compile every ``.cu`` source with nvcc into ``out_dir`` (no link), ``jobs`` at a time."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found on PATH, CUDA_HOME or /usr/local/cuda")
    os.makedirs(out_dir, exist_ok=True)
    commands = check_commands(nvcc, out_dir)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda cmd: run_compile(cmd, cmd[cmd.index("-c") + 1]), commands))


def sources_digest() -> str:
    """A digest of every source and header, for naming caches."""
    digest = hashlib.sha256()
    for path in source_paths(sorted(set(CUDA_SOURCES + HOST_EMULATION_SOURCES + HEADERS))):
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="DIR", help="compile-check the .cu sources into DIR (no GPU needed)")
    parser.add_argument("--host", action="store_true",
                        help="build the host emulation (CPU) instead of the CUDA extension")
    parser.add_argument("--verbose", action="store_true", help="show the compiler's output")
    args = parser.parse_args(argv)
    start = time.monotonic()
    if args.check:
        results = compile_check(args.check)
        for r in results:
            status = "ok" if r.ok else f"FAILED ({r.returncode})"
            print(f"{os.path.basename(r.source)}: {status} in {r.seconds:.1f}s")
            if not r.ok or args.verbose:
                print(r.output)
        return 0 if all(r.ok for r in results) else 1
    try:
        module = (load_host_emulation if args.host else load_cuda_extension)(verbose=args.verbose)
    except ExtensionBuildError as err:
        print(f"build FAILED after {time.monotonic() - start:.1f}s: {err}", file=sys.stderr)
        if err.__cause__ is not None:
            print(str(err.__cause__), file=sys.stderr)
        return 1
    print(f"built {module.__name__} ({module.backend}) in {time.monotonic() - start:.1f}s: {module.__file__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
