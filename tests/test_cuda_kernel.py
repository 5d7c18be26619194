"""The fused G2 kernel against the torch reference path.

Every test runs on two backends with the same Python glue, host loops and per-thread
step code (fairseq_g2lstm/cuda/g2lstm_steps.cuh):

* ``host``: the host emulation, a C++ build for CPU tensors in which each kernel launch
  is a serial loop. It runs wherever a C++ compiler and ninja are (CI included).
* ``cuda``: the CUDA extension on a GPU; skipped without one.

The same noise tensor is fed to both paths through the explicit-noise debug hook;
the kernel's own (Philox) noise is checked by its statistics. Every kernel call fills
its outputs with NaN first (poison), so an element the kernels leave unwritten fails
the comparison. Tolerances (norm-wise relative): 1e-5 in float32, 1e-2 in bfloat16
(and float16), against a float32 reference.
"""
import copy
import math

import pytest
import torch

from fairseq_g2lstm.cuda import validation
from fairseq_g2lstm.cuda.function import batch_sizes_for, make_cell_step, make_sequence_runner
from fairseq_g2lstm.gates import LOGISTIC_EPS, GateSpec, sample_gate_noise
from fairseq_g2lstm.rnn import CellStack, G2LSTM, cell_step, sequence_reference

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
    if not spec.noisy:
        return None
    gen = torch.Generator().manual_seed(seed)
    return sample_gate_noise(shape, spec.noise_prob, dtype=torch.float64, generator=gen).to(device, dtype)


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
def kernel_noise(ops, device, steps, batch, hidden, noise_prob):
    """The noise the kernel draws [T,B,2H], read back from its gates (float64 run with zero
    pre-activations and inv_tau = 1)."""
    zeros = dict(device=device, dtype=torch.float64)
    _, _, _, gates, _, _ = ops.sequence_forward(
        torch.zeros(steps, batch, 4 * hidden, **zeros), torch.zeros(4 * hidden, hidden, **zeros),
        torch.zeros(batch, hidden, **zeros), torch.zeros(batch, hidden, **zeros), [batch] * steps,
        1.0, noise_prob, LOGISTIC_EPS, False, None, None, True)
    return validation.recover_noise(gates).cpu()


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


def test_cuda_noise_is_the_documented_philox_stream(backend):
    """Element (t, b, j) draws from counter (offset/4 + t, b*H + j) under key seed of the
    CUDA generator's state, as g2lstm_gates.cuh says."""
    name, ops, device = backend
    if name != "cuda":
        pytest.skip("the host emulation takes its seed from the CPU generator")
    p, steps, batch, hidden = 0.5, 3, 4, 8
    torch.cuda.manual_seed(1234)
    state = torch.cuda.get_rng_state().view(torch.int64)
    seed, offset = int(state[0]) & (2**64 - 1), int(state[1])
    noise = kernel_noise(ops, device, steps, batch, hidden, p)
    for t, b, j in ((0, 0, 0), (1, 2, 5), (2, 3, 7)):
        want_i, want_f = validation.expected_kernel_noise(seed, offset, t, b * hidden + j, p, LOGISTIC_EPS)
        assert noise[t, b, j].item() == pytest.approx(want_i, abs=1e-9)
        assert noise[t, b, hidden + j].item() == pytest.approx(want_f, abs=1e-9)


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
