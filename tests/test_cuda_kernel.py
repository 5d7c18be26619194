"""The fused G2 kernel against the torch reference path.

Every test runs on two backends with the same Python glue, host loops and per-thread
step code (fairseq_g2lstm/cuda/g2lstm_steps.cuh):

* ``host``: the host emulation, a C++ build for CPU tensors in which each kernel launch
  is a serial loop. It runs wherever a C++ compiler and ninja are (CI included).
* ``cuda``: the CUDA extension on a GPU; skipped without one.

The same noise tensor is fed to both paths through the explicit-noise debug hook,
drawn as the model draws it (``sample_gate_noise`` in the test's dtype). The kernel's
own (Philox) noise is checked element by element against the documented stream in
every dtype, by its statistics, and by how far it moves the generator. Every kernel
call fills its outputs with NaN first (poison), so an element the kernels leave
unwritten fails the comparison. Tolerances (norm-wise relative): 1e-5 in float32
(against a float32 reference, or a float64 one at many-block sizes), 1e-2 in bfloat16
and float16 (against a float32 reference).

``G2LSTM_TEST_BACKENDS=cuda`` (as ``scripts/gpu_check.sh`` sets it) runs only the CUDA
backend, and fails rather than skips where it cannot run.
"""
import copy
import math

import pytest
import torch

from fairseq_g2lstm.cuda import validation
from fairseq_g2lstm.cuda.function import batch_sizes_for, make_cell_step, make_sequence_runner
from fairseq_g2lstm.gates import LOGISTIC_EPS, GateSpec, sample_gate_noise
from fairseq_g2lstm.rnn import CellStack, G2LSTM, cell_step, fused_cell_step, sequence_reference

FP32_TOL = 1e-5
LOW_PRECISION_TOL = 1e-2

MODES = {
    "gumbel": GateSpec(inv_temperature=1 / 0.9, noise_prob=0.2),
    "plain": GateSpec(),
    "sharpened": GateSpec(inv_temperature=1 / 0.2),
    "hard": GateSpec(hard=True),
}
# Small on the host (a serial loop), GPU-sized on CUDA; the first hidden size of each
# takes the 16-byte vector path, the second the scalar one.
SIZES = {"host": ((5, 4, 8), (5, 4, 5)), "cuda": ((9, 12, 64), (9, 12, 37))}
# Sizes whose step needs many launch blocks (256 threads, B*H/VEC threads a step): on
# CUDA B=128, H=1024, T=50: 128 blocks a step in float32 (and a scalar-path H); on the
# host, whose "launch" is one serial loop, more than one block's worth of threads.
MANY_BLOCK_SIZES = {"host": ((6, 24, 64), (6, 24, 67)), "cuda": ((50, 128, 1024), (50, 128, 1001))}
# Element-by-element Philox checks: a vector-path and a scalar-path hidden size.
PHILOX_SIZES = {"host": ((3, 4, 8), (3, 4, 5)), "cuda": ((3, 32, 64), (3, 32, 37))}
# Gates are checked against sigmoid(expected noise) rounded to the dtype: within one
# unit in the last place of [0.5, 1) in 16-bit types, and within the float32 error of v,
# the logarithms and the sigmoid in float32 (all below 1e-7) otherwise.
GATE_TOL = {torch.float64: 1e-12, torch.float32: 1e-6,
            torch.bfloat16: torch.finfo(torch.bfloat16).eps, torch.float16: torch.finfo(torch.float16).eps}
DTYPE_IDS = {torch.float64: "fp64", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def lengths_for(batch: int, steps: int) -> torch.Tensor:
    """Decreasing lengths with a full row, shorter rows and an empty last row."""
    lengths = torch.linspace(steps, 0, batch).round().long()
    lengths[0] = steps
    lengths[-1] = 0
    return lengths


def inputs(steps, batch, hidden, device, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x_proj = torch.randn(steps, batch, 4 * hidden, generator=gen, dtype=torch.float64)
    w_hh = torch.randn(4 * hidden, hidden, generator=gen, dtype=torch.float64) / math.sqrt(hidden)
    h0 = torch.randn(batch, hidden, generator=gen, dtype=torch.float64) * 0.5
    c0 = torch.randn(batch, hidden, generator=gen, dtype=torch.float64) * 0.5
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (x_proj, w_hh, h0, c0)]


def noise_for(spec, shape, device, dtype, seed=1):
    """The i|f noise as the model draws it: sample_gate_noise in ``dtype`` on ``device``,
    from torch's default generator (seeded here)."""
    if not spec.noisy:
        return None
    torch.manual_seed(seed)
    return sample_gate_noise(shape, spec.noise_prob, device=device, dtype=dtype)


def grads(outputs, wrt, seed=2):
    """Gradients of a random projection of ``outputs`` w.r.t. ``wrt``."""
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device)).sum()
               for o in outputs)
    return torch.autograd.grad(loss, wrt)


# --- the Philox stream -------------------------------------------------------------------
def test_philox_matches_the_known_answers(backend):
    _, ops, _ = backend
    for counter, key, expected in validation.PHILOX_KNOWN_ANSWERS:
        assert tuple(ops.philox4x32_10(*counter, *key)) == expected
        assert validation.philox4x32_10(counter, key) == expected
        words = validation.philox4x32_10_tensor([torch.tensor([c]) for c in counter], key)
        assert tuple(int(w) for w in words) == expected


def test_the_noise_grid_is_the_documented_stream_element_by_element():
    """validation.expected_kernel_noise_grid (vectorised, used at GPU sizes) against the
    scalar spec, over a grid with a 64-bit seed and an offset."""
    seed, offset, steps, batch, hidden = 2**63 + 12345, 8, 3, 4, 5
    grid = validation.expected_kernel_noise_grid(seed, offset, steps, batch, hidden, 0.5, LOGISTIC_EPS)
    for t in range(steps):
        for b in range(batch):
            for j in range(hidden):
                want_i, want_f = validation.expected_kernel_noise(seed, offset, t, b * hidden + j, 0.5, LOGISTIC_EPS)
                assert grid[t, b, j].item() == pytest.approx(want_i, abs=1e-12)
                assert grid[t, b, hidden + j].item() == pytest.approx(want_f, abs=1e-12)
    assert 0.3 < (grid != 0).double().mean().item() < 0.7


# --- sequence: forward, backward ---------------------------------------------------------
@pytest.mark.parametrize("mode", sorted(MODES))
def test_sequence_forward_matches_reference_with_gates(backend, mode):
    name, ops, device = backend
    spec = MODES[mode]
    for steps, batch, hidden in SIZES[name]:
        x_proj, w_hh, h0, c0 = inputs(steps, batch, hidden, device)
        lengths = lengths_for(batch, steps)
        noise = noise_for(spec, (steps, batch, 2 * hidden), device, torch.float32)
        out, h_n, c_n, gates, hs, cs = ops.sequence_forward(
            x_proj, w_hh, h0, c0, batch_sizes_for(lengths, steps), spec.inv_temperature,
            spec.noise_prob if noise is None else 0.0, LOGISTIC_EPS, spec.hard, noise, None, True)
        ref_out, ref_h, ref_c, ref_gates = sequence_reference(x_proj, w_hh, h0, c0, lengths, spec, noise)
        for got, want, what in ((out, ref_out, "out"), (h_n, ref_h, "h_n"), (c_n, ref_c, "c_n"),
                                (gates, ref_gates, "gates")):
            assert not torch.isnan(got).any(), f"{what}: unwritten elements (H={hidden})"
            assert validation.relative_error(got, want) <= FP32_TOL, f"{what} (H={hidden})"
        assert torch.equal(hs[0], h0.detach()) and torch.equal(cs[0], c0.detach())
        assert torch.equal(hs[1:], out)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_sequence_backward_matches_reference(backend, mode):
    name, ops, device = backend
    spec = MODES[mode]
    run = make_sequence_runner(ops)
    for steps, batch, hidden in SIZES[name]:
        x_proj, w_hh, h0, c0 = inputs(steps, batch, hidden, device)
        lengths = lengths_for(batch, steps)
        noise = noise_for(spec, (steps, batch, 2 * hidden), device, torch.float32)
        got = run(x_proj, w_hh, h0, c0, lengths, spec, noise, poison=True)
        want = sequence_reference(x_proj, w_hh, h0, c0, lengths, spec, noise)
        for g, w, what in zip(grads(got, (x_proj, w_hh, h0, c0)), grads(want, (x_proj, w_hh, h0, c0)),
                              ("x_proj", "w_hh", "h0", "c0")):
            assert not torch.isnan(g).any(), f"grad {what}: unwritten elements (H={hidden})"
            assert validation.relative_error(g, w) <= FP32_TOL, f"grad {what} (H={hidden}, {mode})"


@pytest.fixture
def no_tf32():
    """float32 products in float32, not TF32 (torch's default for matmul, made explicit)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_many_block_sizes_match_the_float64_reference(backend, no_tf32):
    """float32 kernel against the float64 reference with the same noise, forward and
    backward, at sizes whose steps span many launch blocks. Measured: the float32 torch
    path is within 3e-7 of the float64 reference at B=128, H=1024, T=50."""
    name, ops, device = backend
    spec = MODES["gumbel"]
    run = make_sequence_runner(ops)
    for steps, batch, hidden in MANY_BLOCK_SIZES[name]:
        low = inputs(steps, batch, hidden, device)
        high = [t.detach().double().requires_grad_() for t in low]
        lengths = lengths_for(batch, steps)
        noise = noise_for(spec, (steps, batch, 2 * hidden), device, torch.float32)
        got = run(*low, lengths, spec, noise, poison=True)
        want = sequence_reference(*high, lengths, spec, noise.double())
        for g, w, what in zip(got, want, ("out", "h_n", "c_n", "gates")):
            assert not torch.isnan(g).any(), f"{what}: unwritten elements (H={hidden})"
            assert validation.relative_error(g, w) <= FP32_TOL, f"{what} (H={hidden})"
            assert (g.double() - w).abs().max().item() <= 1e-4, f"{what}: one element off (H={hidden})"
        for g, w, what in zip(grads(got[:3], low), grads(want[:3], high), ("x_proj", "w_hh", "h0", "c0")):
            assert not torch.isnan(g).any(), f"grad {what}: unwritten elements (H={hidden})"
            assert validation.relative_error(g, w) <= FP32_TOL, f"grad {what} (H={hidden})"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_matches_float32_reference(backend, dtype):
    name, ops, device = backend
    spec = MODES["gumbel"]
    run = make_sequence_runner(ops)
    steps, batch, hidden = SIZES[name][0]
    low = [t.detach().to(dtype).requires_grad_() for t in inputs(steps, batch, hidden, device)]
    high = [t.detach().float().requires_grad_() for t in low]
    lengths = lengths_for(batch, steps)
    noise = noise_for(spec, (steps, batch, 2 * hidden), device, dtype)
    got = run(*low, lengths, spec, noise, poison=True)
    want = sequence_reference(*high, lengths, spec, noise.float())
    for g, w, what in zip(got, want, ("out", "h_n", "c_n")):
        assert g.dtype == dtype
        assert validation.relative_error(g, w) <= LOW_PRECISION_TOL, what
    for g, w, what in zip(grads(got, low), grads(want, high), ("x_proj", "w_hh", "h0", "c0")):
        assert g.dtype == dtype
        assert validation.relative_error(g, w) <= LOW_PRECISION_TOL, f"grad {what}"


@pytest.mark.parametrize("mode", ["gumbel", "sharpened", "plain"])
def test_gradcheck_float64(backend, mode):
    _, ops, device = backend
    spec = MODES[mode]
    run = make_sequence_runner(ops)
    cell = make_cell_step(ops)
    for hidden in (2, 3):  # float64: 2 takes the vector path, 3 the scalar one
        steps, batch = 3, 3
        x_proj, w_hh, h0, c0 = inputs(steps, batch, hidden, device, torch.float64)
        lengths = torch.tensor([3, 2, 1])
        noise = noise_for(spec, (steps, batch, 2 * hidden), device, torch.float64)
        assert torch.autograd.gradcheck(
            lambda *a: run(*a, lengths, spec, noise, poison=True), (x_proj, w_hh, h0, c0))
        cell_noise = None if noise is None else noise[0]
        preact = x_proj[0].detach().clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda p, c: cell(p, c, spec, cell_noise, poison=True), (preact, c0))


# --- noise drawn in the kernel -----------------------------------------------------------
def kernel_gates(ops, device, steps, batch, hidden, noise_prob, dtype=torch.float64):
    """The gates [T,B,4H] of a kernel run that draws its own noise, with zero
    pre-activations, weights and state and inv_tau = 1: i|f = sigmoid(noise)."""
    zeros = dict(device=device, dtype=dtype)
    _, _, _, gates, _, _ = ops.sequence_forward(
        torch.zeros(steps, batch, 4 * hidden, **zeros), torch.zeros(4 * hidden, hidden, **zeros),
        torch.zeros(batch, hidden, **zeros), torch.zeros(batch, hidden, **zeros), [batch] * steps,
        1.0, noise_prob, LOGISTIC_EPS, False, None, None, True)
    return gates


def kernel_noise(ops, device, steps, batch, hidden, noise_prob):
    """The noise the kernel draws [T,B,2H], read back from its gates (float64 run)."""
    return validation.recover_noise(kernel_gates(ops, device, steps, batch, hidden, noise_prob)).cpu()


def assert_gates_follow_the_stream(gates, seed, offset, noise_prob, what=""):
    """Every i and f gate of ``gates`` [T,B,4H] (a :func:`kernel_gates` run) is
    sigmoid(the documented stream's noise), within the dtype's GATE_TOL."""
    steps, batch, hidden = gates.shape[0], gates.shape[1], gates.shape[2] // 4
    noise = validation.expected_kernel_noise_grid(seed, offset, steps, batch, hidden, noise_prob, LOGISTIC_EPS)
    want = torch.sigmoid(noise).to(gates.dtype).double()
    got = gates[..., : 2 * hidden].detach().double().cpu()
    diff = (got - want).abs()
    worst = divmod(int(diff.argmax()), 2 * hidden)
    assert diff.max().item() <= GATE_TOL[gates.dtype], (
        f"{what}: {int((diff > GATE_TOL[gates.dtype]).sum())} of {diff.numel()} gates off the stream, "
        f"worst {diff.max().item():.3g} at (t*B+b, i|f unit) {worst}")


def test_kernel_noise_statistics(backend):
    _, ops, device = backend
    p = 0.2
    torch.manual_seed(0)
    noise = kernel_noise(ops, device, 4, 64, 64, p).flatten()
    n = noise.numel()
    noised = (noise.abs() > 1e-9).double()
    share = noised.mean().item()
    assert abs(share - p) <= 5 * math.sqrt(p * (1 - p) / n), f"share of noised elements {share}"
    second_moment = p * validation.logistic_noise_second_moment(LOGISTIC_EPS)
    assert abs(noise.mean().item()) <= 5 * math.sqrt(second_moment / n), "mean"
    squares = noise * noise
    assert abs(squares.mean().item() - second_moment) <= 5 * squares.std().item() / math.sqrt(n), "variance"
    # The noise is eps-clamped logistic noise: |L| <= log((1 + eps) / eps).
    assert noise.abs().max().item() <= math.log((1 + LOGISTIC_EPS) / LOGISTIC_EPS) + 1e-9


def test_kernel_noise_is_fresh_at_every_step_for_each_gate_and_row(backend):
    _, ops, device = backend
    torch.manual_seed(0)
    steps, batch, hidden = 4, 8, 16
    noise = kernel_noise(ops, device, steps, batch, hidden, 0.5)  # [T,B,2H]

    def same_share(a, b):  # elements where both are noised and equal
        return ((a == b) & (a != 0)).double().mean().item()

    for t in range(steps - 1):
        assert same_share(noise[t], noise[t + 1]) == 0.0, f"steps {t} and {t + 1} share draws"
    assert same_share(noise[..., :hidden], noise[..., hidden:]) == 0.0, "i and f share draws"
    assert same_share(noise[:, 0], noise[:, 1]) == 0.0, "rows share draws"
    assert noise.unique().numel() > 0.4 * noise.numel()


def test_same_seed_gives_the_same_output_and_a_new_draw_differs(backend):
    name, ops, device = backend
    run = make_sequence_runner(ops)
    spec = MODES["gumbel"]
    steps, batch, hidden = SIZES[name][0]
    x_proj, w_hh, h0, c0 = (t.detach() for t in inputs(steps, batch, hidden, device))
    lengths = lengths_for(batch, steps)

    def forward():
        return run(x_proj, w_hh, h0, c0, lengths, spec)[0]

    torch.manual_seed(7)
    first = forward()
    again = forward()  # no reseed: the generator moved on
    torch.manual_seed(7)
    repeat = forward()
    torch.manual_seed(8)
    other = forward()
    assert torch.equal(first, repeat)
    assert not torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("mode", ["plain", "hard", "sharpened"])
def test_eval_is_deterministic(backend, mode):
    name, ops, device = backend
    run = make_sequence_runner(ops)
    spec = MODES[mode]
    steps, batch, hidden = SIZES[name][0]
    x_proj, w_hh, h0, c0 = (t.detach() for t in inputs(steps, batch, hidden, device))
    lengths = lengths_for(batch, steps)
    torch.manual_seed(0)
    first = run(x_proj, w_hh, h0, c0, lengths, spec)
    torch.manual_seed(1)
    second = run(x_proj, w_hh, h0, c0, lengths, spec)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", list(DTYPE_IDS), ids=list(DTYPE_IDS.values()))
def test_kernel_noise_is_the_documented_philox_stream_in_every_dtype(backend, dtype):
    """Every element (t, b, j) of every step draws from counter (offset/4 + t, b*H + j)
    under key seed, as g2lstm_gates.cuh says, in the vector and the scalar path of each
    dtype. seed and offset: the CUDA generator's state; on the host emulation a fresh
    64-bit seed from the CPU generator and offset 0 (validation.next_philox_stream)."""
    name, ops, device = backend
    p = 0.5
    torch.manual_seed(1234)
    for steps, batch, hidden in PHILOX_SIZES[name]:
        seed, offset = validation.next_philox_stream(name)
        gates = kernel_gates(ops, device, steps, batch, hidden, p, dtype)
        assert gates.dtype == dtype
        assert_gates_follow_the_stream(gates, seed, offset, p, f"{DTYPE_IDS[dtype]} H={hidden}")
        if dtype == torch.float64:
            want = validation.expected_kernel_noise_grid(seed, offset, steps, batch, hidden, p, LOGISTIC_EPS)
            assert (validation.recover_noise(gates).cpu() - want).abs().max().item() <= 1e-9


def test_the_stream_holds_at_many_block_sizes(backend):
    """The whole [T,B,2H] noise of a many-block size (float64, so the noise reads back
    exactly) against the documented stream."""
    name, ops, device = backend
    steps, batch, hidden = 3, *MANY_BLOCK_SIZES[name][0][1:]
    torch.manual_seed(99)
    seed, offset = validation.next_philox_stream(name)
    gates = kernel_gates(ops, device, steps, batch, hidden, 0.2)
    want = validation.expected_kernel_noise_grid(seed, offset, steps, batch, hidden, 0.2, LOGISTIC_EPS, device)
    off = (validation.recover_noise(gates) - want).abs() > 1e-9
    assert not off.any(), f"{int(off.sum())} of {off.numel()} draws off the stream (B={batch}, H={hidden})"


def test_consecutive_calls_reserve_what_they_draw_and_share_no_draws(backend):
    """Each call moves the generator by exactly what the kernel reserved, and draws only
    from that: on CUDA the Philox offset advances by 4 words per step, and the call's
    noise is the stream at the offset it started from, so the next call starts past
    every counter it used; on the host emulation each call takes one new 64-bit seed
    (its own stream). The single-step op reserves one step."""
    name, ops, device = backend
    p, batch, hidden = 0.5, 4, 8
    torch.manual_seed(5)
    streams = []
    for steps in (3, 5, 1):
        seed, offset = validation.next_philox_stream(name)
        before = validation.generator_state(name)
        if steps == 1:  # the single-step op, drawing its own noise (its Python Function never asks it to)
            zeros = dict(device=device, dtype=torch.float64)
            gates = ops.cell_forward(torch.zeros(batch, 4 * hidden, **zeros), torch.zeros(batch, hidden, **zeros),
                                     1.0, p, LOGISTIC_EPS, False, None, None, True)[2].unsqueeze(0)
        else:
            gates = kernel_gates(ops, device, steps, batch, hidden, p)
        reserved = validation.generator_advance(name, before, validation.generator_state(name))
        assert reserved == (validation.PHILOX_WORDS_PER_STEP * steps if name == "cuda" else 1), f"T={steps}"
        assert_gates_follow_the_stream(gates, seed, offset, p, f"T={steps}")
        streams.append((seed, offset, steps))
    for (seed_a, offset_a, steps_a), (seed_b, offset_b, _) in zip(streams, streams[1:]):
        if name == "cuda":
            assert seed_a == seed_b and offset_b == offset_a + validation.PHILOX_WORDS_PER_STEP * steps_a
        else:
            assert offset_a == offset_b == 0 and seed_a != seed_b


def test_cuda_graph_replay_draws_fresh_noise(backend):
    """A captured forward draws new noise at every replay: the graph reads the seed and
    offset on the device (philox_cuda_state under capture), and each replay advances the
    generator by what the capture reserved. Each replay's noise is the stream at the
    offset the generator had before it."""
    name, ops, device = backend
    if name != "cuda":
        pytest.skip("CUDA graphs need the CUDA backend")
    p, steps, batch, hidden = 0.5, 3, 8, 64
    zeros = dict(device=device, dtype=torch.float64)
    args = (torch.zeros(steps, batch, 4 * hidden, **zeros), torch.zeros(4 * hidden, hidden, **zeros),
            torch.zeros(batch, hidden, **zeros), torch.zeros(batch, hidden, **zeros), [batch] * steps,
            1.0, p, LOGISTIC_EPS, False, None, None, True)
    torch.cuda.manual_seed(42)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (cuBLAS handle and workspace)
        ops.sequence_forward(*args)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gates = ops.sequence_forward(*args)[3]
    seen = []
    for replay in range(3):
        seed, offset = validation.next_philox_stream(name)
        before = validation.generator_state(name)
        graph.replay()
        torch.cuda.synchronize()
        after = validation.generator_state(name)
        assert validation.generator_advance(name, before, after) == validation.PHILOX_WORDS_PER_STEP * steps
        assert_gates_follow_the_stream(gates, seed, offset, p, f"replay {replay}")
        seen.append(gates.clone())
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


# --- padding and poisoning --------------------------------------------------------------
def test_every_element_is_written_and_padding_is_zero(backend):
    name, ops, device = backend
    steps, batch, hidden = SIZES[name][0]
    x_proj, w_hh, h0, c0 = (t.detach() for t in inputs(steps + 2, batch, hidden, device))
    lengths = lengths_for(batch, steps)  # two steps past the longest row: all padding
    batch_sizes = batch_sizes_for(lengths, steps + 2)
    assert batch_sizes[-1] == 0 and lengths[-1] == 0
    spec = MODES["gumbel"]
    out, h_n, c_n, gates, hs, cs = ops.sequence_forward(
        x_proj, w_hh, h0, c0, batch_sizes, spec.inv_temperature, spec.noise_prob, LOGISTIC_EPS, False, None, None,
        True)
    for t, what in ((out, "out"), (h_n, "h_n"), (c_n, "c_n"), (gates, "gates"), (hs, "hs"), (cs, "cs")):
        assert not torch.isnan(t).any(), what
    pad = ~(lengths.to(device).unsqueeze(0) > torch.arange(steps + 2, device=device).unsqueeze(1))  # [T,B]
    assert (out[pad] == 0).all() and (gates[pad] == 0).all()
    assert torch.equal(h_n[-1], h0[-1]) and torch.equal(c_n[-1], c0[-1])  # the empty row
    grads_out = ops.sequence_backward(
        torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n), w_hh, hs, cs, gates,
        batch_sizes, spec.inv_temperature, False, True)
    for t, what in zip(grads_out, ("grad_x_proj", "grad_w_hh", "grad_h0", "grad_c0")):
        assert not torch.isnan(t).any(), what
    assert (grads_out[0][pad] == 0).all()


def test_hard_gates_refuse_noise(backend):
    name, ops, device = backend
    x_proj, w_hh, h0, c0 = (t.detach() for t in inputs(2, 2, 4, device))
    with pytest.raises(RuntimeError, match="hard gates take no noise"):
        ops.sequence_forward(x_proj, w_hh, h0, c0, [2, 2], 1.0, 0.2, LOGISTIC_EPS, True, None, None, False)


# --- the single step (decoder) -------------------------------------------------------------
@pytest.mark.parametrize("mode", sorted(MODES))
def test_cell_step_matches_reference(backend, mode):
    name, ops, device = backend
    spec = MODES[mode]
    step = make_cell_step(ops)
    for _, batch, hidden in SIZES[name]:
        x_proj, _, _, c_prev = inputs(1, batch, hidden, device)
        preact = x_proj[0].detach().requires_grad_()
        noise = noise_for(spec, (batch, 2 * hidden), device, torch.float32)
        got = step(preact, c_prev, spec, noise, poison=True)
        want = cell_step(preact, c_prev, spec, noise)
        for g, w, what in zip(got, want, ("h", "c")):
            assert validation.relative_error(g, w) <= FP32_TOL, what
        for g, w, what in zip(grads(got, (preact, c_prev)), grads(want, (preact, c_prev)), ("preact", "c_prev")):
            assert not torch.isnan(g).any(), what
            assert validation.relative_error(g, w) <= FP32_TOL, f"grad {what}"


def test_kernel_and_torch_single_steps_take_no_noise_as_no_noise(backend):
    """With a noisy spec and noise=None, the kernel's step, the torch step and the
    reference step all apply no noise (tau still applies), and none draws any."""
    name, ops, device = backend
    spec = MODES["gumbel"]
    step = make_cell_step(ops)
    _, batch, hidden = SIZES[name][0]
    x_proj, _, _, c_prev = inputs(1, batch, hidden, device)
    preact = x_proj[0].detach().requires_grad_()
    zero_noise = torch.zeros(batch, 2 * hidden, device=device)
    cpu_state, cuda_state = torch.get_rng_state(), torch.cuda.get_rng_state() if name == "cuda" else None
    got = step(preact, c_prev, spec, None, poison=True)
    fused = fused_cell_step(preact, c_prev, spec, None)
    want = cell_step(preact, c_prev, spec, zero_noise)
    assert torch.equal(torch.get_rng_state(), cpu_state), "a step drew from the CPU generator"
    if cuda_state is not None:
        assert torch.equal(torch.cuda.get_rng_state(), cuda_state), "a step drew from the CUDA generator"
    for result, who in ((got, "kernel"), (fused, "torch")):
        for g, w, what in zip(result, want, ("h", "c", "gates")):
            assert validation.relative_error(g, w) <= FP32_TOL, f"{who} {what}"


# --- through the layers ------------------------------------------------------------------
@pytest.mark.parametrize("against", ["reference", "torch"])
def test_g2lstm_layer_with_kernel_matches(backend, against):
    """Two layers, the first bidirectional, explicit noise per direction: outputs, final
    states and the gradients of the input, every weight and bias, and the initial state.

    Against the reference loop the lengths are sorted: G2LSTM hands explicit noise to its
    runners in the caller's row order, but sorts the rows first for every kernel but
    ``reference`` (so sorting would pair rows and noise differently). Against the torch
    path, which sorts the same way, they are not.
    """
    name, ops, device = backend
    hidden = SIZES[name][0][2]
    torch.manual_seed(0)
    base = G2LSTM(6, hidden, num_layers=2, bidirectional=[True, False], kernel=against).to(device)
    kernel = copy.deepcopy(base)
    kernel.kernel = "cuda"  # sorts rows by length, as for any fused runner
    kernel._sequence_runner = lambda x: make_sequence_runner(ops)
    steps, batch = 7, 5
    x = torch.randn(steps, batch, 6, device=device, requires_grad=True)
    lengths = torch.tensor([7, 7, 6, 3, 0] if against == "reference" else [7, 3, 6, 0, 7])
    state = tuple(torch.randn(3, batch, hidden, device=device, requires_grad=True) for _ in range(2))
    noise = [sample_gate_noise((steps, batch, 2 * hidden), 0.2, device=device) for _ in range(3)]
    got = kernel(x, lengths, state, noise)
    want = base(x, lengths, state, noise)
    flat_got, flat_want = (got[0], *got[1]), (want[0], *want[1])
    for g, w, what in zip(flat_got, flat_want, ("out", "h_n", "c_n")):
        assert validation.relative_error(g, w) <= FP32_TOL, what
    wrt_got = [x, *state, *kernel.parameters()]
    wrt_want = [x, *state, *base.parameters()]
    names = ["x", "h0", "c0"] + [n for n, _ in kernel.named_parameters()]
    for g, w, what in zip(grads(flat_got, wrt_got), grads(flat_want, wrt_want), names):
        assert validation.relative_error(g, w) <= FP32_TOL, what


def test_cell_stack_with_kernel_matches_reference(backend, monkeypatch):
    name, ops, device = backend
    hidden = SIZES[name][0][2]
    torch.manual_seed(0)
    ref = CellStack(6, hidden, num_layers=2, feed_size=hidden, kernel="reference").to(device)
    kernel = copy.deepcopy(ref)
    kernel.kernel = "cuda"
    import fairseq_g2lstm.rnn.stack as stack_module

    monkeypatch.setattr(stack_module, "cuda_cell_step", lambda kind, like: make_cell_step(ops))
    spec = MODES["gumbel"]
    steps, batch = 4, 3
    x = torch.randn(steps, batch, 6, device=device, requires_grad=True)
    noise = ref.sample_noise(steps, batch, spec, x)

    def unroll(stack):
        x_proj, weights = stack.project_inputs(x), stack.step_weights()
        hiddens = [torch.zeros(batch, hidden, device=device) for _ in range(2)]
        cells = list(hiddens)
        feed, outs = torch.zeros(batch, hidden, device=device), []
        for t in range(steps):
            hiddens, cells, _ = stack.step(x_proj[t], feed, hiddens, cells, weights, spec, noise[t])
            feed = torch.tanh(hiddens[-1])
            outs.append(hiddens[-1])
        return torch.stack(outs), cells[-1]

    got, want = unroll(kernel), unroll(ref)
    for g, w in zip(got, want):
        assert validation.relative_error(g, w) <= FP32_TOL
    for g, w, what in zip(grads(got, [x, *kernel.parameters()]), grads(want, [x, *ref.parameters()]),
                          ["x"] + [n for n, _ in kernel.named_parameters()]):
        assert validation.relative_error(g, w) <= FP32_TOL, what


# --- distributed: a noise stream per rank --------------------------------------------------
def test_each_distributed_rank_draws_its_own_reproducible_noise(backend, monkeypatch):
    name, ops, device = backend
    import fairseq_g2lstm.cuda.function as function

    run = make_sequence_runner(ops)
    spec = MODES["gumbel"]
    steps, batch, hidden = SIZES[name][0]
    x_proj, w_hh, h0, c0 = (t.detach() for t in inputs(steps, batch, hidden, device))
    lengths = lengths_for(batch, steps)
    monkeypatch.setattr(function.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(function.dist, "get_world_size", lambda: 2)

    def on_rank(rank):
        monkeypatch.setattr(function.dist, "get_rank", lambda: rank)
        torch.manual_seed(3)  # fairseq seeds every rank alike
        return run(x_proj, w_hh, h0, c0, lengths, spec)[0]

    first, second, first_again = on_rank(0), on_rank(1), on_rank(0)
    assert torch.equal(first, first_again)
    assert not torch.equal(first, second)


def test_an_explicit_seed_fixes_the_draws_and_leaves_the_generator_alone(backend):
    name, ops, device = backend
    steps, batch, hidden = SIZES[name][0]
    x_proj, w_hh, h0, c0 = (t.detach() for t in inputs(steps, batch, hidden, device))
    get_state = torch.cuda.get_rng_state if name == "cuda" else torch.get_rng_state

    def forward(seed):
        return ops.sequence_forward(x_proj, w_hh, h0, c0, [batch] * steps, 1.0, 0.5, LOGISTIC_EPS, False,
                                    None, seed, False)[0]

    before = get_state()
    first, again, other = forward(11), forward(11), forward(12)
    assert torch.equal(get_state(), before)
    assert torch.equal(first, again) and not torch.equal(first, other)
    forward(None)
    assert not torch.equal(get_state(), before)
