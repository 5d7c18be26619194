"""Cells and layers: nn.LSTM equivalence, fused == reference, gradcheck, padding."""
import pytest
import torch

from fairseq_g2lstm.gates import GateConfig, GateSpec, sample_gate_noise
from fairseq_g2lstm.rnn import (
    CellStack, G2LSTM, cell_step, fused_cell_step, reverse_padded, sequence_fused, sequence_reference,
)

PLAIN = GateConfig("plain")
GUMBEL = GateConfig("gumbel")
SPECS = [GateSpec(), GateSpec(1 / 0.9, 0.2), GateSpec(1 / 0.2), GateSpec(hard=True)]


def f64(*shape, grad=True):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("layers, bidirectional", [(1, False), (3, False), (1, True), (2, True)])
@pytest.mark.parametrize("kernel", ["torch", "reference"])
def test_plain_mode_equals_nn_lstm(layers, bidirectional, kernel):
    torch.manual_seed(0)
    native = torch.nn.LSTM(6, 5, layers, bidirectional=bidirectional)
    ours = G2LSTM.from_native(native, PLAIN, kernel=kernel)
    x = torch.randn(7, 3, 6)
    dirs = layers * (1 + bidirectional)
    state = (torch.randn(dirs, 3, 5), torch.randn(dirs, 3, 5))
    expected, (h, c) = native(x, state)
    out, (h2, c2) = ours(x, state=state)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(h2, h, atol=1e-5) and torch.allclose(c2, c, atol=1e-5)
    assert torch.equal(ours.to_native().weight_hh_l0, native.weight_hh_l0)


def test_gumbel_layer_in_eval_equals_nn_lstm_and_is_deterministic():
    torch.manual_seed(1)
    native = torch.nn.LSTM(6, 5, 2, bidirectional=True)
    ours = G2LSTM.from_native(native, GUMBEL).eval()
    x = torch.randn(7, 3, 6)
    first, second = ours(x)[0], ours(x)[0]
    assert torch.equal(first, second)
    assert torch.allclose(first, native(x)[0], atol=1e-5)


def test_gumbel_layer_in_training_is_noisy_and_seeded():
    torch.manual_seed(2)
    ours = G2LSTM(6, 5, 2, True, gate=GUMBEL).train()
    x = torch.randn(7, 3, 6)
    torch.manual_seed(9)
    a = ours(x)[0]
    torch.manual_seed(9)
    b = ours(x)[0]
    c = ours(x)[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, ours.eval()(x)[0])


@pytest.mark.parametrize("kernel", ["torch", "reference"])
def test_sharpened_layer_applies_tau_in_train_and_eval_alike(kernel):
    """sigmoid(a / tau) for i and f equals a plain LSTM whose i/f weights and biases are
    divided by tau: an independent construction of the sharpened baseline."""
    torch.manual_seed(3)
    ours = G2LSTM(6, 5, 2, gate=GateConfig("sharpened", temperature=0.2), kernel=kernel)
    scaled = G2LSTM(6, 5, 2, gate=PLAIN, kernel=kernel)
    state = {name: p.detach().clone() for name, p in ours.named_parameters()}
    for p in state.values():
        p[: 2 * 5] /= 0.2  # the i and f rows
    scaled.load_state_dict(state)
    unscaled = G2LSTM(6, 5, 2, gate=PLAIN, kernel=kernel)
    unscaled.load_state_dict(ours.state_dict())
    x = torch.randn(7, 3, 6)
    train_out, eval_out = ours.train()(x)[0], ours.eval()(x)[0]
    assert torch.allclose(train_out, eval_out, atol=1e-6)  # no noise in either (eval: torch's fused kernel)
    assert torch.allclose(train_out, scaled(x)[0], atol=1e-5)
    assert not torch.allclose(train_out, unscaled(x)[0], atol=1e-3)


def test_layer_draws_fresh_noise_for_every_step_and_direction(monkeypatch):
    seen = []

    def spy(x_proj, w_hh, h0, c0, lengths, spec, noise):
        seen.append(noise)
        return sequence_fused(x_proj, w_hh, h0, c0, lengths, spec, noise)

    torch.manual_seed(0)
    # 8 rows x 16 gate units a step: two all-zero draws (0.8^128 each) cannot pass for "equal".
    ours = G2LSTM(4, 8, 2, [True, False], gate=GUMBEL).train()
    monkeypatch.setattr(ours, "_sequence_runner", lambda x: spy)
    ours(torch.randn(5, 8, 4))
    assert len(seen) == 3 and all(n.shape == (5, 8, 16) for n in seen)
    steps = [step for noise in seen for step in noise.unbind(0)]
    for i in range(len(steps)):
        for j in range(i + 1, len(steps)):
            assert not torch.equal(steps[i], steps[j])


def sequence_inputs(steps=6, batch=4, hidden=3, lengths=(6, 5, 5, 2)):
    torch.manual_seed(4)
    return (f64(steps, batch, 4 * hidden), f64(4 * hidden, hidden), f64(batch, hidden), f64(batch, hidden),
            torch.tensor(lengths))


@pytest.mark.parametrize("spec", SPECS)
def test_fused_sequence_equals_reference_forward_and_gradients(spec):
    x_proj, w_hh, h0, c0, lengths = sequence_inputs()
    noise = sample_gate_noise((6, 4, 6), 0.5, dtype=torch.float64) if spec.noisy else None
    ref = sequence_reference(x_proj, w_hh, h0, c0, lengths, spec, noise)
    fused = sequence_fused(x_proj, w_hh, h0, c0, lengths, spec, noise)
    for a, b in zip(ref, fused):  # out, h_n, c_n and the gates
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    ref, fused = ref[:3], fused[:3]  # the gates carry no gradient
    upstream = [torch.randn_like(t) for t in ref]
    inputs = (x_proj, w_hh, h0, c0)
    for a, b in zip(torch.autograd.grad(ref, inputs, upstream), torch.autograd.grad(fused, inputs, upstream)):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("spec", SPECS[:3])
def test_gradcheck_fused_sequence(spec):
    x_proj, w_hh, h0, c0, lengths = sequence_inputs(steps=4, batch=3, hidden=2, lengths=(4, 3, 1))
    noise = sample_gate_noise((4, 3, 4), 0.5, dtype=torch.float64) if spec.noisy else None
    assert torch.autograd.gradcheck(
        lambda *a: sequence_fused(*a, lengths, spec, noise), (x_proj, w_hh, h0, c0))


@pytest.mark.parametrize("spec", SPECS[:3])
def test_gradcheck_fused_cell(spec):
    preact, c_prev = f64(3, 8), f64(3, 2)
    noise = sample_gate_noise((3, 4), 0.5, dtype=torch.float64) if spec.noisy else None
    assert torch.autograd.gradcheck(lambda p, c: fused_cell_step(p, c, spec, noise), (preact, c_prev))
    h, c, gates = fused_cell_step(preact, c_prev, spec, noise)
    h_ref, c_ref, gates_ref = cell_step(preact, c_prev, spec, noise)
    assert torch.allclose(h, h_ref, atol=1e-12) and torch.allclose(c, c_ref, atol=1e-12)
    assert torch.allclose(gates, gates_ref, atol=1e-12)


def test_gradcheck_layer_with_fixed_noise():
    torch.manual_seed(5)
    ours = G2LSTM(3, 2, 2, [True, False], gate=GUMBEL).double().train()
    noise = [sample_gate_noise((4, 2, 4), 0.5, dtype=torch.float64) for _ in range(3)]
    names = [name for name, _ in ours.named_parameters()]
    lengths = torch.tensor([4, 3])

    def run(x, *weights):
        out, (h_n, c_n) = torch.func.functional_call(ours, dict(zip(names, weights)), (x, lengths),
                                                     {"noise": noise})
        return out, h_n, c_n

    weights = [p.detach().clone().requires_grad_() for p in ours.parameters()]
    assert torch.autograd.gradcheck(run, (f64(4, 2, 3), *weights))


@pytest.mark.parametrize("kernel", ["torch", "reference"])
def test_padding_does_not_change_outputs(kernel):
    torch.manual_seed(6)
    ours = G2LSTM(4, 3, 2, [True, False], gate=GateConfig("sharpened"), kernel=kernel).eval()
    lengths = torch.tensor([3, 6, 1, 4])  # unsorted on purpose
    x = torch.randn(6, 4, 4)
    out, (h_n, c_n) = ours(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone, (h1, c1) = ours(x[:n, b : b + 1])
        assert torch.allclose(out[:n, b], alone[:, 0], atol=1e-6)
        assert (out[n:, b] == 0).all()
        assert torch.allclose(h_n[:, b], h1[:, 0], atol=1e-6) and torch.allclose(c_n[:, b], c1[:, 0], atol=1e-6)


def test_reverse_padded_reverses_each_row_within_its_length():
    x = torch.arange(8.0).view(4, 2, 1)  # column b holds 2t + b
    lengths = torch.tensor([4, 2])
    rev = reverse_padded(x, lengths)
    assert rev[:, 0, 0].tolist() == [6.0, 4.0, 2.0, 0.0]
    assert rev[:, 1, 0].tolist() == [3.0, 1.0, 5.0, 7.0]
    assert torch.equal(reverse_padded(rev, lengths), x)


def test_cell_stack_in_plain_mode_equals_nn_lstm_cells():
    torch.manual_seed(7)
    stack = CellStack(4, 3, num_layers=2, feed_size=2, gate=PLAIN).eval()
    cells = [torch.nn.LSTMCell(6, 3), torch.nn.LSTMCell(3, 3)]
    for layer, cell in enumerate(cells):
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, kind).data.copy_(getattr(stack, f"{kind}_l{layer}"))
    x, feed = torch.randn(5, 2, 4), torch.randn(5, 2, 2)
    hs, cs = [torch.zeros(2, 3)] * 2, [torch.zeros(2, 3)] * 2
    hs_ref, cs_ref = list(hs), list(cs)
    x_proj, weights = stack.project_inputs(x), stack.step_weights()
    for t in range(5):
        hs, cs, _ = stack.step(x_proj[t], feed[t], hs, cs, weights, stack.gate.resolve(False))
        inp = torch.cat([x[t], feed[t]], 1)
        for layer, cell in enumerate(cells):
            hs_ref[layer], cs_ref[layer] = cell(inp, (hs_ref[layer], cs_ref[layer]))
            inp = hs_ref[layer]
        for a, b in zip(hs + cs, hs_ref + cs_ref):
            assert torch.allclose(a, b, atol=1e-6)


def test_cell_stack_fused_equals_reference_with_the_same_noise():
    torch.manual_seed(8)
    fused = CellStack(4, 3, num_layers=2, feed_size=3, gate=GUMBEL).double().train()
    ref = CellStack(4, 3, num_layers=2, feed_size=3, gate=GUMBEL, kernel="reference").double().train()
    ref.load_state_dict(fused.state_dict())
    spec = GUMBEL.resolve(True)
    noise = fused.sample_noise(4, 2, spec, torch.zeros((), dtype=torch.float64))
    x = torch.randn(4, 2, 4, dtype=torch.float64)

    def run(stack):
        hs, cs, feed = [torch.zeros(2, 3, dtype=torch.float64)] * 2, [torch.zeros(2, 3, dtype=torch.float64)] * 2, None
        x_proj, weights, outs = stack.project_inputs(x), stack.step_weights(), []
        for t in range(4):
            hs, cs, _ = stack.step(x_proj[t], hs[-1] if feed is None else feed, hs, cs, weights, spec, noise[t])
            feed = hs[-1]
            outs.append(feed)
        out = torch.stack(outs)
        out.pow(2).sum().backward()
        return out, [p.grad for p in stack.parameters()]

    out_f, grads_f = run(fused)
    out_r, grads_r = run(ref)
    assert torch.allclose(out_f, out_r, atol=1e-10)
    for a, b in zip(grads_f, grads_r):
        assert torch.allclose(a, b, atol=1e-10)


def test_explicit_noise_follows_its_rows_when_the_layer_sorts_by_length():
    torch.manual_seed(9)
    fused = G2LSTM(4, 3, 2, [True, False], gate=GUMBEL).double().train()
    ref = G2LSTM(4, 3, 2, [True, False], gate=GUMBEL, kernel="reference").double().train()
    ref.load_state_dict(fused.state_dict())
    lengths = torch.tensor([2, 5, 3])  # unsorted: the fused path reorders rows
    noise = [sample_gate_noise((5, 3, 6), 0.5, dtype=torch.float64) for _ in range(3)]
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    out, (h_n, c_n) = fused(x, lengths, noise=noise)
    out_ref, (h_ref, c_ref) = ref(x, lengths, noise=noise)
    assert torch.allclose(out, out_ref, atol=1e-10)
    assert torch.allclose(h_n, h_ref, atol=1e-10) and torch.allclose(c_n, c_ref, atol=1e-10)
