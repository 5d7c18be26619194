"""Checking the fused kernel against the torch reference (haste's ``validation/``).

Pure torch, no fairseq and no pytest, so that the GPU check (``scripts/gpu_check.sh``)
runs it on a machine that has neither; ``tests/test_cuda_*.py`` build on it.

* :func:`kernel_backend` - the ops module and device of a backend: ``cuda`` (the
  extension, on a GPU) or ``host`` (the host emulation: the same host loops and step
  code on the CPU); :func:`selected_backends` - the ones the tests run on.
* :func:`expected_kernel_noise_grid` - the noise the documented Philox stream gives,
  for every element of a [T,B,2H] grid; :func:`next_philox_stream` - the (seed, offset)
  a kernel call without a seed will draw from.
* :func:`recover_noise` - the i/f noise a kernel drew, read back from its gates.
* :func:`relative_error` - the norm-wise error the tolerances are stated in.
"""
import os
from typing import Sequence, Tuple

import torch
from torch import Tensor

from ..gates import gate_slice

BACKENDS = ("host", "cuda")
BACKENDS_ENV = "G2LSTM_TEST_BACKENDS"
MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
# Philox words the kernel reserves per step (g2lstm_sequence.h, kPhiloxWordsPerStep).
PHILOX_WORDS_PER_STEP = 4


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


def selected_backends() -> Tuple[str, ...]:
    """The backends the kernel tests run on: those named in ``G2LSTM_TEST_BACKENDS``
    (comma-separated, e.g. ``cuda`` in the GPU check), else all of :data:`BACKENDS`."""
    named = tuple(b.strip() for b in os.environ.get(BACKENDS_ENV, "").split(",") if b.strip())
    unknown = [b for b in named if b not in BACKENDS]
    if unknown:
        raise ValueError(f"{BACKENDS_ENV}: unknown backend(s) {unknown}; choose from {BACKENDS}")
    return named or BACKENDS


def backend_required(name: str) -> bool:
    """Whether ``name`` was asked for by name (``G2LSTM_TEST_BACKENDS``): then a machine
    that cannot run it fails the tests instead of skipping them, so that a GPU check on
    a machine without a usable GPU cannot pass by skipping everything."""
    return name in os.environ.get(BACKENDS_ENV, "").replace(" ", "").split(",")


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


def _mulhilo32(a: int, b: Tensor) -> Tuple[Tensor, Tensor]:
    """(hi, lo) 32-bit words of a * b for a constant a < 2^32 and int64 words b < 2^32,
    exactly: b is split into 16-bit halves so that no product overflows int64."""
    p_lo = a * (b & 0xFFFF)  # < 2^48
    p_hi = a * (b >> 16)  # < 2^48
    mid = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    return (p_hi >> 16) + (mid >> 32), mid & MASK32


def philox4x32_10_tensor(counter: Sequence[Tensor], key: Tuple[int, int]) -> Tuple[Tensor, ...]:
    """:func:`philox4x32_10` on int64 tensors of 32-bit words, element-wise (exact)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_ in range(10):
        if round_:
            k0, k1 = (k0 + 0x9E3779B9) & MASK32, (k1 + 0xBB67AE85) & MASK32
        hi0, lo0 = _mulhilo32(0xD2511F53, c0)
        hi1, lo1 = _mulhilo32(0xCD9E8D57, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def expected_kernel_noise_grid(seed: int, offset: int, steps: int, batch: int, hidden: int,
                               noise_prob: float, eps: float, device=None) -> Tensor:
    """The i|f noise [T,B,2H] (float64) that the documented stream gives every element:
    :func:`expected_kernel_noise` for all (t, b, j) at once."""
    kw = dict(device=device, dtype=torch.int64)
    block = offset // PHILOX_WORDS_PER_STEP + torch.arange(steps, **kw).view(steps, 1, 1)
    element = (torch.arange(batch, **kw).view(1, batch, 1) * hidden
               + torch.arange(hidden, **kw).view(1, 1, hidden))
    block, element = torch.broadcast_tensors(block, element)
    words = philox4x32_10_tensor(
        (block & MASK32, block >> 32, element & MASK32, element >> 32),
        (seed & MASK32, (seed >> 32) & MASK32))
    noise = []
    for word in words[:2]:  # word 0 feeds i, word 1 feeds f
        v = word.double() * 2.0 ** -32 + 2.0 ** -33
        u = v / noise_prob
        logistic = torch.log(u + eps) - torch.log1p(eps - u)
        noise.append(torch.where(v < noise_prob, logistic, torch.zeros_like(v)))
    return torch.cat(noise, dim=-1)


def next_philox_stream(backend: str) -> Tuple[int, int]:
    """(seed, offset) that the next kernel call without an explicit seed draws from,
    read without moving any generator.

    ``cuda``: the default CUDA generator's seed and Philox offset
    (``torch.cuda.get_rng_state()``). ``host``: the host emulation takes a fresh
    64-bit seed from the default CPU generator (one ``random64``, the draw of
    ``random_(-2**63, None)`` on int64) and offset 0.
    """
    if backend == "cuda":
        seed, offset = torch.cuda.get_rng_state().view(torch.int64).tolist()
        return seed & MASK64, offset
    gen = torch.Generator()
    gen.set_state(torch.get_rng_state())
    return int(torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=gen)) & MASK64, 0


def generator_state(backend: str) -> Tensor:
    """The default generator state of the backend's device (CUDA or CPU)."""
    return torch.cuda.get_rng_state() if backend == "cuda" else torch.get_rng_state()


def generator_advance(backend: str, before: Tensor, after: Tensor) -> int:
    """How far the kernel calls between two :func:`generator_state` reads moved the
    generator. ``cuda``: the Philox offset advance, in words per element (a call of T
    steps reserves ``4 T``). ``host``: the number of 64-bit seeds taken (one per call,
    each a stream of its own)."""
    if backend == "cuda":
        return int(after.view(torch.int64)[1]) - int(before.view(torch.int64)[1])
    gen = torch.Generator()
    gen.set_state(before)
    for draws in range(64):
        if torch.equal(gen.get_state(), after):
            return draws
        torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=gen)
    raise AssertionError("the CPU generator moved by more than 64 draws, or not by whole 64-bit draws")
