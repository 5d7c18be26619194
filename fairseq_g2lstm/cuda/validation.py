"""Checking the fused kernel against the torch reference (haste's ``validation/``).

Pure torch, no fairseq and no pytest, so that the GPU check (``scripts/gpu_check.sh``)
runs it on a machine that has neither; ``tests/test_cuda_*.py`` build on it.

* :func:`kernel_backend` - the ops module and device of a backend: ``cuda`` (the
  extension, on a GPU) or ``host`` (the host emulation: the same host loops and step
  code on the CPU).
* :func:`recover_noise` - the i/f noise a kernel drew, read back from its gates.
* :func:`relative_error` - the norm-wise error the tolerances are stated in.
"""
from typing import Tuple

import torch
from torch import Tensor

from ..gates import gate_slice

BACKENDS = ("host", "cuda")


class BackendUnavailable(Exception):
    """This machine cannot run a backend at all (no GPU; no C++ toolchain)."""


def kernel_backend(name: str) -> Tuple[object, torch.device]:
    """(ops, device) of backend ``name``.

    Raises :class:`BackendUnavailable` where the machine lacks what the backend needs
    (a CUDA device; a C++ compiler and ninja), and the build's own error where it fails.
    """
    import shutil

    from . import build, load_ops

    if name == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device (torch.cuda.is_available() is False)")
        return load_ops(required=True), torch.device("cuda")
    if name == "host":
        missing = [tool for tool in ("ninja", "c++") if shutil.which(tool) is None]
        if missing:
            raise BackendUnavailable(f"the host emulation's build needs {' and '.join(missing)}")
        return build.load_host_emulation(), torch.device("cpu")
    raise ValueError(f"backend must be one of {BACKENDS}; got {name!r}")


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64 (0 when both are zero)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    scale = expected.norm().item()
    diff = (actual - expected).norm().item()
    return diff / scale if scale > 0 else diff


def recover_noise(gates: Tensor) -> Tensor:
    """The i|f noise [.., 2H] from gates [.., 4H] of a run with zero pre-activations and
    inv_tau = 1, where i = sigmoid(noise): noise = log(i) - log(1 - i)."""
    hidden = gates.shape[-1] // 4
    s = gates[..., gate_slice("i", hidden).start : gate_slice("f", hidden).stop].double()
    return torch.log(s) - torch.log1p(-s)


def logistic_noise_second_moment(eps: float, points: int = 1_000_000) -> float:
    """E[L^2] for L = log(u + eps) - log(1 - u + eps), u ~ U(0,1), by the midpoint rule."""
    u = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    noise = torch.log(u + eps) - torch.log1p(eps - u)
    return float((noise * noise).mean())


# Random123's known-answer vectors for Philox4x32-10: (counter, key) -> output.
PHILOX_KNOWN_ANSWERS = (
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
)


def philox4x32_10(counter, key):
    """Philox4x32-10 in Python, the spec the kernel's g2lstm_gates.cuh implements."""
    mask = 0xFFFFFFFF
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_ in range(10):
        if round_:
            k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & mask, p1 & mask, ((p0 >> 32) ^ c3 ^ k1) & mask, p0 & mask
    return c0, c1, c2, c3


def expected_kernel_noise(seed: int, offset: int, step: int, element: int, noise_prob: float, eps: float):
    """The (i, f) noise the kernel draws for ``element`` (= b*H + j) at ``step``, computed
    in float64 from the documented stream: counter (offset/4 + step, element), key seed."""
    block = offset // 4 + step
    counter = (block & 0xFFFFFFFF, block >> 32, element & 0xFFFFFFFF, element >> 32)
    words = philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32))
    out = []
    for word in words[:2]:
        v = word * 2.0 ** -32 + 2.0 ** -33
        u = torch.tensor(v / noise_prob, dtype=torch.float64)
        noise = torch.log(u + eps) - torch.log1p(eps - u) if v < noise_prob else torch.zeros((), dtype=torch.float64)
        out.append(float(noise))
    return tuple(out)
