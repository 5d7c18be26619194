"""fairseq-g2lstm: G2-LSTM (Gumbel-gate LSTM) translation models as a fairseq plugin.

The distribution deliberately does not require the name ``fairseq``: several builds
provide the ``fairseq`` package (ve-fairseq, fairseq-fixed, a source checkout), and the
code only imports it. ``requirements.txt`` pins the build measured to work.
"""
from setuptools import find_packages, setup

setup(
    name="fairseq-g2lstm",
    version="0.1.0",
    description="G2-LSTM (Towards Binary-Valued Gates for Robust LSTM Training) for fairseq",
    packages=find_packages(include=["fairseq_g2lstm", "fairseq_g2lstm.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.0", "sentencepiece", "sacrebleu"],
)
