"""DropConnect on the recurrent weights (``G2LSTM(weight_drop=p)``, ``--weight-drop``), as
AWD-LSTM: off it changes nothing, in training one mask per weight and forward scaled by
1/(1-p), in eval nothing, and gradients reach the weights through the mask."""
import pytest
import torch
import torch.nn.functional as F

import fairseq_g2lstm.rnn.layer as layer_module
from fairseq_g2lstm.gates import GateConfig, sample_gate_noise
from fairseq_g2lstm.rnn import G2LSTM, sequence_fused, sequence_reference

GUMBEL, PLAIN = GateConfig("gumbel"), GateConfig("plain")


@pytest.fixture
def recorded(monkeypatch):
    """Every recurrent weight the layer hands to its sequence loop (kernel 'torch')."""
    seen = []

    def recording(x_proj, w_hh, *args):
        seen.append(w_hh.detach().clone())
        return sequence_fused(x_proj, w_hh, *args)

    monkeypatch.setattr(layer_module, "sequence_fused", recording)
    return seen


def test_zero_weight_drop_is_bit_identical_to_the_layer_without_it():
    """p = 0 (the default): the same parameters go to the loop and no random number is
    drawn, so a noisy training forward is bit for bit the loop the layer ran before
    weight drop existed: input projection, noise draw, sequence loop, layer by layer."""
    torch.manual_seed(0)
    lstm = G2LSTM(6, 8, 2, gate=GUMBEL, kernel="reference").train()
    assert lstm.weight_drop == 0.0 and lstm._drop_connect(lstm.weight_hh_l0) is lstm.weight_hh_l0
    x = torch.randn(5, 3, 6)
    torch.manual_seed(7)
    out, (h_n, c_n) = lstm(x)
    after = torch.randn(4)

    torch.manual_seed(7)
    spec, inp, zeros, finals = GUMBEL.resolve(True), x, torch.zeros(3, 8), []
    for k in range(2):
        w_ih, w_hh, b_ih, b_hh = (getattr(lstm, f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        x_proj = F.linear(inp, w_ih, b_ih + b_hh)
        noise = sample_gate_noise((5, 3, 16), spec.noise_prob)
        inp, h, c, _ = sequence_reference(x_proj, w_hh, zeros, zeros, torch.full((3,), 5), spec, noise)
        finals.append((h, c))
    assert torch.equal(out, inp)
    assert torch.equal(h_n, torch.stack([h for h, _ in finals])) and torch.equal(c_n, torch.stack([c for _, c in finals]))
    assert torch.equal(after, torch.randn(4))  # the generator advanced exactly as much


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_training_masks_each_recurrent_weight_once_per_forward(recorded, p):
    torch.manual_seed(1)
    lstm = G2LSTM(16, 64, 2, gate=PLAIN, kernel="torch", weight_drop=p).train()
    x = torch.randn(9, 4, 16)
    out, _ = lstm(x)
    assert len(recorded) == 2  # one matrix per layer for the whole sequence
    for k, used in enumerate(recorded):
        weight = getattr(lstm, f"weight_hh_l{k}").detach()
        kept = used != 0
        assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.03)  # 16,384 elements
        assert torch.allclose(used[kept], weight[kept] / (1 - p), rtol=1e-6, atol=0)
    assert not torch.equal(recorded[0] != 0, recorded[1] != 0)  # a mask per weight
    # constant over the steps: the reference loop, which reads w_hh at every step, gives the
    # same outputs with the recorded masked weights and no weight drop
    inp, zeros = x, torch.zeros(4, 64)
    for k, used in enumerate(recorded):
        w_ih, b_ih, b_hh = (getattr(lstm, f"{n}_l{k}") for n in ("weight_ih", "bias_ih", "bias_hh"))
        inp = sequence_reference(F.linear(inp, w_ih, b_ih + b_hh), used, zeros, zeros, torch.full((4,), 9),
                                 PLAIN.resolve(True))[0]
    assert torch.allclose(out, inp, atol=1e-5)
    lstm(x)
    assert not torch.equal(recorded[2] != 0, recorded[0] != 0)  # a fresh mask the next forward


def test_eval_ignores_weight_drop_and_draws_nothing():
    torch.manual_seed(2)
    dropped = G2LSTM(6, 8, 2, gate=GUMBEL, weight_drop=0.5).eval()
    plain = G2LSTM(6, 8, 2, gate=GUMBEL).eval()
    plain.load_state_dict(dropped.state_dict())
    x = torch.randn(5, 3, 6)
    torch.manual_seed(3)
    out = dropped(x)[0]
    after = torch.randn(4)
    torch.manual_seed(3)
    assert torch.equal(out, plain(x)[0])
    assert torch.equal(after, torch.randn(4))


@pytest.mark.parametrize("kernel", ["torch", "reference"])
def test_gradients_reach_the_recurrent_weights_through_the_mask(recorded, kernel):
    """The layer's gradients (hand-written backward for 'torch') equal autograd's through
    an explicit ``w * mask / (1 - p)`` with the mask the layer used."""
    p = 0.4
    torch.manual_seed(4)
    lstm = G2LSTM(5, 6, 1, gate=PLAIN, kernel=kernel, weight_drop=p).train().double()
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    upstream = torch.randn(7, 3, 6, dtype=torch.float64)
    if kernel == "reference":  # the reference loop does not go through the recorded runner
        torch.manual_seed(5)
        mask = F.dropout(torch.ones(24, 6, dtype=torch.float64), p) != 0
        torch.manual_seed(5)
    out, _ = lstm(x)
    (out * upstream).sum().backward()
    if kernel == "torch":
        mask = recorded[0] != 0
    w = lstm.weight_hh_l0.detach().clone().requires_grad_(True)
    x_proj = F.linear(x, lstm.weight_ih_l0.detach(), (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach())
    zeros = torch.zeros(3, 6, dtype=torch.float64)
    expected = sequence_reference(x_proj, w * mask / (1 - p), zeros, zeros, torch.full((3,), 7), PLAIN.resolve(True))[0]
    (expected * upstream).sum().backward()
    assert torch.allclose(out, expected, atol=1e-10)
    assert torch.allclose(lstm.weight_hh_l0.grad, w.grad, atol=1e-10)
    assert (lstm.weight_hh_l0.grad[~mask] == 0).all()  # dropped weights get no gradient


def test_gradcheck_with_a_fixed_mask():
    """torch.autograd.gradcheck of the fused path, the mask fixed by seeding every call."""
    p = 0.5
    torch.manual_seed(6)
    lstm = G2LSTM(3, 4, 2, gate=GateConfig("sharpened"), kernel="torch", weight_drop=p).train().double()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    names = ["weight_hh_l0", "weight_hh_l1", "weight_ih_l1"]

    def forward(*weights):
        torch.manual_seed(8)  # the same masks at every call
        params = dict(zip(names, weights))
        return torch.func.functional_call(lstm, params, (x,))[0]

    weights = tuple(getattr(lstm, n).detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(forward, weights)


def test_weight_drop_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"--weight-drop must be in \[0, 1\); got 1.0"):
        G2LSTM(3, 4, weight_drop=1.0)
