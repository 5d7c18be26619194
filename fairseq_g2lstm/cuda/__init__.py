"""The fused CUDA G2 gate kernel, and when the layers use it.

``--gate-kernel`` (``G2LSTM(kernel=...)``, ``CellStack(kernel=...)``):

* ``torch``: the fused torch loop (:mod:`fairseq_g2lstm.rnn.sequence`), everywhere.
* ``cuda``: the kernel. It is built on first use (cached; see :mod:`.build`). Without
  CUDA, or when the build fails, it is an error: a user who asked for the kernel by name
  must not get the torch path's speed without knowing it.
* ``auto``: the kernel on CUDA tensors once :data:`VALIDATED_ON_HARDWARE` is True; until
  then, and on CPU tensors always, the torch path. A failed build falls back to the
  torch path with one warning.

The sources (``g2lstm_*.cu``, ``*.cuh``, ``binding.cpp``) and the design are described
in ``docs/cuda.md``; :mod:`.function` holds the autograd Functions.
"""
import threading
import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

VALIDATED_ON_HARDWARE = False
"""Whether ``--gate-kernel auto`` may pick the kernel on CUDA tensors.

False until ``scripts/gpu_check.sh`` has passed on a GPU (its summary's ``result: PASS``:
the build, every test in ``tests/test_cuda_kernel.py``, ``test_cuda_training_step.py`` and
``test_cuda_dispatch.py`` on the CUDA backend, the CUDA graph test and compute-sanitizer's
memcheck). Flip it to True in the commit that records that run (docs/cuda.md, Status);
``--gate-kernel cuda`` uses the kernel either way.
"""

_lock = threading.Lock()
_ops = None
_build_error: Optional[str] = None
_warned = False


def load_ops(required: bool = True):
    """The compiled CUDA ops, built once per process.

    A failed build is remembered. ``required=True`` raises it as
    :class:`~fairseq_g2lstm.cuda.build.ExtensionBuildError`; ``required=False`` returns
    None after one warning per process.
    """
    global _ops, _build_error, _warned
    from . import build

    with _lock:
        if _ops is None and _build_error is None:
            try:
                _ops = build.load_cuda_extension()
            except build.ExtensionBuildError as err:
                _build_error = str(err)
        if _ops is not None:
            return _ops
        if required:
            raise build.ExtensionBuildError(_build_error)
        if not _warned:
            _warned = True
            warnings.warn(
                f"fairseq_g2lstm: the fused CUDA gate kernel could not be built ({_build_error}); "
                "using the torch path. Run `python -m fairseq_g2lstm.cuda.build --verbose` to see why.",
                RuntimeWarning,
                stacklevel=3,
            )
        return None


def _use_kernel(kernel: str, like: Optional[Tensor]) -> bool:
    """Whether ``kernel`` asks for the CUDA kernel for tensors like ``like``."""
    if kernel == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "--gate-kernel cuda: CUDA is not available (torch.cuda.is_available() is False); "
                "use --gate-kernel torch or auto"
            )
        return True
    if kernel == "auto":
        return VALIDATED_ON_HARDWARE and (like is None or like.is_cuda)
    return False


def cuda_sequence_runner(required: bool) -> Optional[Callable]:
    """The kernel's sequence runner for :class:`~fairseq_g2lstm.rnn.G2LSTM`, or None for the
    torch path.

    ``required`` is ``--gate-kernel cuda``; otherwise it is ``auto`` on CUDA tensors,
    which stays on the torch path until :data:`VALIDATED_ON_HARDWARE`.
    """
    if not _use_kernel("cuda" if required else "auto", None):
        return None
    ops = load_ops(required=required)
    if ops is None:
        return None
    from .function import make_sequence_runner

    return make_sequence_runner(ops)


def cuda_cell_step(kernel: str, like: Tensor) -> Optional[Callable]:
    """The kernel's single step for :class:`~fairseq_g2lstm.rnn.CellStack` (the contract of
    ``fused_cell_step``), or None for the torch path; ``like`` is the step's input."""
    if not _use_kernel(kernel, like):
        return None
    ops = load_ops(required=kernel == "cuda")
    if ops is None:
        return None
    from .function import make_cell_step

    return make_cell_step(ops)
