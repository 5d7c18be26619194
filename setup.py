"""fairseq-g2lstm: G2-LSTM (Gumbel-gate LSTM) translation models as a fairseq plugin.

``pip install ".[all]"`` gives every ``g2lstm-*`` command with figures, TensorBoard,
serving and int8 inference. Install torch first (``pip install torch==2.13.0`` for the
CPU build, or the CUDA build you want): pip would otherwise pick a torch build for you.
``requirements.txt`` pins the exact stack that the tests run on.

fairseq comes from the ``ve-fairseq`` distribution, a build of fairseq main that
installs on Python 3.11 (PyPI's ``fairseq`` 0.12.2 does not). A source checkout of
fairseq works too: install this package with ``--no-deps`` beside it.
"""
import os

from setuptools import find_packages, setup

VERSION = "0.2.0"

EXTRAS = {
    "figures": ["matplotlib>=3.7"],
    # fairseq's --tensorboard-logdir writer, and the viewer
    "tensorboard": ["tensorboardX>=2.6", "tensorboard>=2.14"],
    "serve": ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9"],
    "quantize": ["torchao>=0.12"],
    "test": ["pytest>=8", "httpx>=0.27", "selenium>=4.20", "libretranslatepy>=2.1", "deep-translator>=1.11.4"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})


def cuda_build_options():
    """``G2LSTM_BUILD_CUDA=1 pip install .`` builds the fused CUDA gate kernel now, as
    ``fairseq_g2lstm.cuda._C`` (needs torch and nvcc). Without it, nothing is compiled:
    the kernel is built on first CUDA use, and a CPU-only install never needs nvcc."""
    if os.environ.get("G2LSTM_BUILD_CUDA", "") != "1":
        return {}
    import importlib.util

    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("g2lstm_cuda_build", os.path.join(here, "fairseq_g2lstm", "cuda", "build.py"))
    cuda_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cuda_build)  # sources and flags, without importing the package
    sources = [os.path.join("fairseq_g2lstm", "cuda", name) for name in cuda_build.CUDA_SOURCES]
    flags = {"cxx": cuda_build.cxx_flags(), "nvcc": cuda_build.nvcc_flags()}
    extension = CUDAExtension(cuda_build.INSTALLED_MODULE, sources, extra_compile_args=flags)
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}


setup(
    name="fairseq-g2lstm",
    version=VERSION,
    description="G2-LSTM (Towards Binary-Valued Gates for Robust LSTM Training) for fairseq",
    long_description=open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["fairseq_g2lstm", "fairseq_g2lstm.*", "g2lstm_runtime", "g2lstm_runtime.*"]),
    # The stack (ve-fairseq's wheels, the pinned torch) is tested on Python 3.11 only.
    python_requires=">=3.11,<3.12",
    install_requires=["torch>=2.6", "ve-fairseq>=0.12.3", "numpy", "sentencepiece", "sacrebleu>=2.0"],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "g2lstm-prepare-parallel = fairseq_g2lstm.data.prepare_parallel:main",
            "g2lstm-prepare-iwslt14 = fairseq_g2lstm.data.prepare_iwslt14:main",
            "g2lstm-prepare-wmt14 = fairseq_g2lstm.data.prepare_wmt14:main",
            "g2lstm-prepare-lm = fairseq_g2lstm.data.prepare_lm:main",
            "g2lstm-build-gettext-corpus = fairseq_g2lstm.data.gettext_corpus:main",
            "g2lstm-average-checkpoints = fairseq_g2lstm.checkpoints.average:main",
            "g2lstm-gates = fairseq_g2lstm.gate_stats.cli:cli_main",
            "g2lstm-compress = fairseq_g2lstm.compress.cli:main",
            "g2lstm-compression-sweep = fairseq_g2lstm.compress.sweep:main",
            "g2lstm-export = fairseq_g2lstm.export.cli:main",
            "g2lstm-serve = fairseq_g2lstm.serve.cli:main",
            "g2lstm-translate = g2lstm_runtime.translate:main",
            "g2lstm-user-dir = fairseq_g2lstm.__main__:main",
        ]
    },
    package_data={
        # The CUDA kernel's sources, for its build on first use.
        "fairseq_g2lstm.cuda": ["*.cu", "*.cuh", "*.h", "*.cpp"],
        # The server's web page (plain HTML, CSS and JavaScript; no build step).
        "fairseq_g2lstm.serve": ["static/*"],
    },
    **cuda_build_options(),
)
