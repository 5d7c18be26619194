"""A sharpened cell stack folds its temperature into the weights once per weight change,
not once per generation step, and gives the same outputs as folding afresh."""
import pytest
import torch

from fairseq_g2lstm.gates import GateConfig
from fairseq_g2lstm.rnn import stack as stack_module
from fairseq_g2lstm.rnn.stack import CellStack


def run_steps(stack, steps=3, batch=2):
    spec = stack.gate.resolve(stack.training)
    torch.manual_seed(0)
    x = torch.randn(steps, batch, 3)
    hiddens = [torch.zeros(batch, 4) for _ in range(stack.num_layers)]
    cells = [torch.zeros(batch, 4) for _ in range(stack.num_layers)]
    outputs = []
    for t in range(steps):  # one stepper per step, as incremental generation calls the decoder
        step = stack.stepper(x[t : t + 1], spec, gates_unobserved=True)
        hiddens, cells, _ = step(0, None, hiddens, cells)
        outputs.append(hiddens[-1])
    return torch.stack(outputs)


@pytest.fixture
def folds(monkeypatch):
    calls = []
    real = stack_module.prescale_weight
    monkeypatch.setattr(stack_module, "prescale_weight", lambda w, spec: calls.append(1) or real(w, spec))
    return calls


def test_the_folded_weights_are_made_once_and_match_a_fresh_fold(folds):
    torch.manual_seed(1)
    stack = CellStack(3, 4, num_layers=2, gate=GateConfig(mode="sharpened")).eval()
    with torch.no_grad():
        cached = run_steps(stack)
        assert len(folds) == 8  # 4 tensors x 2 layers, for the first step only
        stack._folded = None
        fresh = run_steps(stack)
    assert torch.equal(cached, fresh)


def test_a_weight_change_or_training_drops_the_folded_weights(folds):
    torch.manual_seed(1)
    stack = CellStack(3, 4, num_layers=1, gate=GateConfig(mode="sharpened")).eval()
    with torch.no_grad():
        before = run_steps(stack)
        stack.weight_hh_l0.add_(0.5)  # as an optimizer step or load_state_dict does
        after = run_steps(stack)
        assert len(folds) == 8 and not torch.equal(before, after)
        reference = CellStack(3, 4, num_layers=1, gate=GateConfig(mode="sharpened")).eval()
        reference.load_state_dict(stack.state_dict())
        assert torch.equal(after, run_steps(reference))
    stack.train().eval()
    with torch.no_grad():
        run_steps(stack)
    assert len(folds) == 8 + 4 + 4  # the reference's fold, then the stack's after train()


def test_nothing_is_kept_while_gradients_are_recorded_or_with_nothing_to_fold(folds):
    torch.manual_seed(1)
    sharpened = CellStack(3, 4, gate=GateConfig(mode="sharpened")).eval()
    run_steps(sharpened, steps=2)  # grad enabled: a kept fold would hold the first step's graph
    assert len(folds) == 8 and sharpened._folded is None
    gumbel = CellStack(3, 4, gate=GateConfig(mode="gumbel")).eval()  # tau 1 at eval: no copy to keep
    with torch.no_grad():
        run_steps(gumbel, steps=2)
    assert gumbel._folded is None
