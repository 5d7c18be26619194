"""The inference fast path: torch's fused LSTM kernel and cell give the reference's results.

At eval with soft gates a G2 layer is a standard LSTM (sharpened: with the temperature
folded into the weights), so the encoder layers run through torch's fused LSTM and the
decoder steps through its LSTM cell. Each test checks values against the reference
path (``kernel="reference"``) and that the fast path really ran.
"""
import pytest
import torch
from fairseq.sequence_generator import SequenceGenerator

import fairseq_g2lstm.rnn.layer as layer_module
from fairseq_g2lstm.gates import GateConfig
from fairseq_g2lstm.rnn import CellStack, G2LSTM

from test_model import source_batch, target_prefix, with_strong_weights

MODES = ("plain", "gumbel", "sharpened")
BIDIRECTIONAL = ([False, False], [True, False], [True, True])


def count_calls(monkeypatch, owner, name):
    """Replace ``owner.name`` by a wrapper that records each call; returns the record."""
    calls, original = [], getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.fixture
def native_calls(monkeypatch):
    """The layer's calls of the fused-kernel runner."""
    return count_calls(monkeypatch, layer_module, "sequence_native")


@pytest.fixture
def native_steps(monkeypatch):
    """CellStack.native_step calls."""
    return count_calls(monkeypatch, CellStack, "native_step")


def layer_pair(mode, bidirectional, **kwargs):
    torch.manual_seed(3)
    fast = G2LSTM(6, 5, len(bidirectional), bidirectional, dropout=0.3, gate=GateConfig(mode), **kwargs).eval()
    reference = G2LSTM(6, 5, len(bidirectional), bidirectional, dropout=0.3, gate=GateConfig(mode),
                       kernel="reference", **kwargs).eval()
    reference.load_state_dict(fast.state_dict())
    return fast, reference


@pytest.mark.parametrize("bidirectional", BIDIRECTIONAL)
@pytest.mark.parametrize("mode", MODES)
def test_layer_fast_path_equals_reference_on_padded_batches(mode, bidirectional, native_calls):
    fast, reference = layer_pair(mode, bidirectional)
    x = torch.randn(7, 6, 6)
    lengths = torch.tensor([3, 7, 0, 5, 3, 1])  # unsorted, repeated, an empty row
    dirs = sum(1 + b for b in bidirectional)
    state = (torch.randn(dirs, 6, 5), torch.randn(dirs, 6, 5))
    assert fast.uses_native_kernel()
    out, (h, c) = fast(x, lengths, state)
    assert len(native_calls) == dirs
    expected, (h_ref, c_ref) = reference(x, lengths, state)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(h, h_ref, atol=1e-6) and torch.allclose(c, c_ref, atol=1e-6)
    assert torch.equal(out[:, 2], torch.zeros_like(out[:, 2]))  # the empty row: zero output...
    assert torch.equal(h[:, 2], state[0][:, 2]) and torch.equal(c[:, 2], state[1][:, 2])  # ...initial state


@pytest.mark.parametrize("mode", MODES)
def test_layer_fast_path_without_padding_is_one_call_per_direction(mode, native_calls):
    fast, reference = layer_pair(mode, [True, False])
    x = torch.randn(4, 3, 6)
    out, (h, c) = fast(x)
    expected, (h_ref, c_ref) = reference(x)
    assert len(native_calls) == 3
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(h, h_ref, atol=1e-6) and torch.allclose(c, c_ref, atol=1e-6)


def test_sharpened_fast_path_really_uses_the_temperature():
    fast, _ = layer_pair("sharpened", [False])
    plain = G2LSTM(6, 5, 1, gate=GateConfig("plain")).eval()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(4, 2, 6)
    assert not torch.allclose(fast(x)[0], plain(x)[0], atol=1e-3)


def test_fast_path_gradients_equal_the_reference_at_eval():
    fast, reference = layer_pair("sharpened", [True, False])
    x = torch.randn(5, 3, 6)
    lengths = torch.tensor([5, 2, 4])
    grads = []
    for layer in (fast, reference):
        out, (h, c) = layer(x, lengths)
        (out.sum() + h.square().sum() + c.sum()).backward()
        grads.append([p.grad.clone() for p in layer.parameters()])
    for g_fast, g_ref in zip(*grads):
        assert torch.allclose(g_fast, g_ref, atol=1e-5)


@pytest.mark.parametrize("case", ["training", "hard eval", "recorder", "explicit noise", "reference kernel"])
def test_paths_that_need_gates_or_noise_keep_the_fused_loop(case, native_calls):
    gate = GateConfig("gumbel", eval_mode="hard" if case == "hard eval" else "soft")
    layer = G2LSTM(6, 5, 2, [True, False], gate=gate, kernel="reference" if case == "reference kernel" else "auto")
    layer.train(case == "training")
    x = torch.randn(4, 3, 6)
    lengths = torch.tensor([4, 2, 3])
    recorded = []
    kwargs = {}
    if case == "recorder":
        kwargs["gate_recorder"] = lambda layer_index, direction, gates, lens: recorded.append(gates)
    if case == "explicit noise":
        kwargs["noise"] = [torch.zeros(4, 3, 10)] * 3
    layer(x, lengths, **kwargs)
    assert native_calls == []
    if case == "recorder":
        assert len(recorded) == 3 and all(g.shape == (4, 3, 20) and g.abs().sum() > 0 for g in recorded)


@pytest.mark.parametrize("mode", MODES)
def test_cell_stack_native_step_equals_the_reference_step(mode):
    torch.manual_seed(5)
    stack = CellStack(4, 5, num_layers=2, feed_size=3, dropout=0.5, gate=GateConfig(mode), kernel="reference").eval()
    spec = stack.gate.resolve(False)
    x, feed = torch.randn(2, 6, 4), torch.randn(6, 3)
    hiddens, cells = [torch.randn(6, 5) for _ in range(2)], [torch.randn(6, 5) for _ in range(2)]
    reference = stack.stepper(x, spec, gates_unobserved=True)  # the reference kernel never goes native
    expected = reference(1, feed, hiddens, cells)
    stack.kernel = "auto"
    fast = stack.stepper(x, spec, gates_unobserved=True)
    h, c, gates = fast(1, feed, hiddens, cells)
    assert gates is None and expected[2] is not None
    for ours, theirs in zip(h + c, expected[0] + expected[1]):
        assert torch.allclose(ours, theirs, atol=1e-6)
    assert stack.stepper(x, spec, gates_unobserved=False)(1, feed, hiddens, cells)[2] is not None


def model_pair(model_factory, **variant):
    fast = with_strong_weights(model_factory(**variant).eval())
    reference = model_factory(gate_kernel="reference", **variant).eval()
    reference.load_state_dict(fast.state_dict())
    fast.log_gate_metrics = reference.log_gate_metrics = False
    return fast, reference


VARIANTS = [
    {"attention_type": "bahdanau", "encoder_bidirectional": "first"},
    {"attention_type": "luong", "encoder_bidirectional": "first"},
    {"attention_type": "bahdanau", "encoder_bidirectional": "all", "gate_mode": "plain"},
    {"attention_type": "luong", "encoder_bidirectional": "none", "gate_mode": "sharpened"},
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_fast_path_equals_reference_teacher_forced_and_incremental(model_factory, variant, native_steps):
    fast, reference = model_pair(model_factory, **variant)
    src, src_lengths = source_batch(fast, lengths=(5, 2, 4, 5))
    prev = target_prefix(fast, 4, 6)
    expected, expected_attn = reference(src, src_lengths, prev)
    out, attn = fast(src, src_lengths, prev)
    assert len(native_steps) == prev.shape[1]
    assert torch.allclose(out, expected, atol=1e-5) and torch.allclose(attn, expected_attn, atol=1e-6)
    encoder_out = fast.encoder(src, src_lengths)
    state = {}
    for t in range(prev.shape[1]):
        step, _ = fast.decoder(prev[:, : t + 1], encoder_out, incremental_state=state)
        assert torch.allclose(step[:, -1], expected[:, t], atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS[:2])
def test_beam_search_output_is_the_same_on_both_paths(model_factory, variant, native_steps):
    fast, reference = model_pair(model_factory, **variant)
    src, src_lengths = source_batch(fast, lengths=(5, 2, 4, 5))
    sample = {"net_input": {"src_tokens": src, "src_lengths": src_lengths}}
    hypos = []
    for model in (fast, reference):
        generator = SequenceGenerator([model], model.decoder.dictionary, beam_size=3, max_len_b=8)
        hypos.append(generator.forward(sample))
    assert native_steps
    for ours, theirs in zip(*hypos):
        for a, b in zip(ours, theirs):
            assert torch.equal(a["tokens"], b["tokens"])
            assert torch.allclose(a["positional_scores"], b["positional_scores"], atol=1e-5)


def test_gate_statistics_in_eval_keep_their_path(model_factory, native_steps):
    from fairseq_g2lstm.rnn import GateTallies

    fast, reference = model_pair(model_factory, attention_type="bahdanau")
    src, src_lengths = source_batch(fast)
    prev = target_prefix(fast, 3, 5)
    tallies = [GateTallies(), GateTallies()]
    fast(src, src_lengths, prev, gate_stats=tallies[0])
    reference(src, src_lengths, prev, gate_stats=tallies[1])
    assert native_steps == []
    summaries = [{(name, gate): tally.summary() for name, gate, tally in t} for t in tallies]
    assert len(summaries[0]) == 2 * (3 + 2)  # i and f of encoder.0, encoder.0.reverse, encoder.1, decoder.0-1
    assert summaries[0].keys() == summaries[1].keys()
    for key, summary in summaries[0].items():
        assert summary["count"] == summaries[1][key]["count"] > 0
        assert summary["mean"] == pytest.approx(summaries[1][key]["mean"], abs=1e-6)


class MarkedWeight(torch.Tensor):
    """A tensor subclass standing in for a quantized weight."""


def test_weights_of_a_tensor_subclass_keep_the_fused_loop(native_calls, native_steps):
    layer = G2LSTM(6, 5, 1).eval()
    stack = CellStack(4, 5, feed_size=3).eval()
    expected = layer(torch.ones(3, 2, 6))[0]
    assert len(native_calls) == 1 and layer.uses_native_kernel()
    layer.weight_hh_l0 = torch.nn.Parameter(layer.weight_hh_l0.detach().as_subclass(MarkedWeight))
    stack.weight_ih_l0 = torch.nn.Parameter(stack.weight_ih_l0.detach().as_subclass(MarkedWeight))
    assert not layer.uses_native_kernel() and not stack.uses_native_cell(stack.gate.resolve(False), True)
    assert torch.allclose(layer(torch.ones(3, 2, 6))[0], expected, atol=1e-6)
    assert len(native_calls) == 1


def test_bahdanau_scores_in_slices_equal_the_whole_batch(monkeypatch):
    import fairseq_g2lstm.models.attention as attention_module

    torch.manual_seed(6)
    attention = attention_module.BahdanauAttention(8, 6).eval()
    keys, query = attention.project_keys(torch.randn(7, 5, 6)).detach(), torch.randn(7, 8)
    with torch.no_grad():
        whole = attention.score(query, keys)
        monkeypatch.setattr(attention_module, "SCORE_SLICE_ELEMENTS", 2 * 5 * 8)  # slices of 2 rows
        sliced = attention.score(query, keys)
    assert torch.allclose(sliced, whole, rtol=0, atol=1e-6)  # the product's kernel may sum in another order
    expected = torch.tanh(keys + attention.query_proj(query).unsqueeze(1)) @ attention.score_proj.weight[0]
    assert torch.allclose(whole, expected, atol=1e-6)
    scores = attention.score(query, keys)  # with autograd: one piece, gradients flow
    scores.sum().backward()
    assert attention.query_proj.weight.grad is not None
