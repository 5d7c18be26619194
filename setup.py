"""fairseq-g2lstm: G2-LSTM (Gumbel-gate LSTM) translation models as a fairseq plugin.

The distribution deliberately does not require the name ``fairseq``: several builds
provide the ``fairseq`` package (ve-fairseq, fairseq-fixed, a source checkout), and the
code only imports it. ``requirements.txt`` pins the build measured to work.
"""
import os

from setuptools import find_packages, setup


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
    version="0.1.0",
    description="G2-LSTM (Towards Binary-Valued Gates for Robust LSTM Training) for fairseq",
    packages=find_packages(include=["fairseq_g2lstm", "fairseq_g2lstm.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.0", "sentencepiece", "sacrebleu"],
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
        ]
    },
    # The CUDA kernel's sources, for its build on first use.
    package_data={"fairseq_g2lstm.cuda": ["*.cu", "*.cuh", "*.h", "*.cpp"]},
    **cuda_build_options(),
)
