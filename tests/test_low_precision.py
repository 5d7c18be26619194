"""bfloat16 and float16: G2 training is finite and changes nothing but rounding.

The G2 noise was once drawn in the activations' dtype, and in bfloat16 every element
without noise became NaN (``eps - 1`` rounds to ``-1``, so ``L = inf`` and ``inf * 0``).
Here the layer and the decoder stack run in low precision in training mode, and a whole
fairseq-train run in float16 on the CPU.

fairseq's ``--bf16`` cannot run on a CPU: it turns on ``--tpu`` (options.py), which needs
torch_xla. ``--memory-efficient-fp16 --cpu`` does run (plain ``--fp16`` builds its fp32
master weights on CUDA), so the fairseq test uses it.
"""
import copy

import pytest
import torch

from conftest import TINY_DIMS, USER_DIR, train_with_noise_spy
from fairseq_g2lstm.cuda.validation import relative_error
from fairseq_g2lstm.gates import GateConfig, sample_gate_noise
from fairseq_g2lstm.rnn import CellStack, G2LSTM

GUMBEL = GateConfig("gumbel")
# Norm-wise relative error against float32 with the same (rounded) weights and noise.
TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 5e-3}
DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])


def low_and_high(module: torch.nn.Module, dtype: torch.dtype):
    """The module in ``dtype``, and a float32 copy of exactly those rounded weights."""
    low = copy.deepcopy(module).to(dtype).train()
    high = copy.deepcopy(low).float().train()
    return low, high


def gradients(outputs, wrt, seed=0):
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o.float() * torch.randn(o.shape, generator=gen)).sum() for o in outputs)
    return torch.autograd.grad(loss, wrt)


@DTYPES
def test_layer_trains_finite_without_explicit_noise(dtype):
    """The path users hit: training mode, noise drawn by the layer itself."""
    torch.manual_seed(0)
    layer = G2LSTM(8, 16, 2, bidirectional=[True, False], gate=GUMBEL).to(dtype).train()
    x = torch.randn(9, 4, 8, dtype=dtype, requires_grad=True)
    out, (h_n, c_n) = layer(x, torch.tensor([9, 7, 4, 1]))
    for t in (out, h_n, c_n):
        assert t.dtype == dtype and torch.isfinite(t).all()
    for g in gradients((out, h_n, c_n), [x, *layer.parameters()]):
        assert torch.isfinite(g).all()


@DTYPES
@pytest.mark.parametrize("kernel", ["torch", "reference"])
def test_layer_matches_float32_with_the_same_noise(dtype, kernel):
    torch.manual_seed(1)
    low, high = low_and_high(G2LSTM(8, 16, 2, bidirectional=[True, False], gate=GUMBEL, kernel=kernel), dtype)
    steps, batch = 9, 4
    noise = [sample_gate_noise((steps, batch, 32), 0.2, dtype=dtype) for _ in range(3)]
    lengths = torch.tensor([9, 7, 4, 1])
    x_low = torch.randn(steps, batch, 8).to(dtype).requires_grad_()
    x_high = x_low.detach().float().requires_grad_()
    got = low(x_low, lengths, noise=noise)
    want = high(x_high, lengths, noise=[n.float() for n in noise])
    flat_got, flat_want = (got[0], *got[1]), (want[0], *want[1])
    for g, w, what in zip(flat_got, flat_want, ("out", "h_n", "c_n")):
        assert g.dtype == dtype
        assert relative_error(g, w) <= TOLERANCE[dtype], what
    names = ["x"] + [n for n, _ in low.named_parameters()]
    for g, w, what in zip(gradients(flat_got, [x_low, *low.parameters()]),
                          gradients(flat_want, [x_high, *high.parameters()]), names):
        assert g.dtype == dtype and torch.isfinite(g).all(), what
        assert relative_error(g, w) <= TOLERANCE[dtype], f"grad {what}"


@DTYPES
def test_cell_stack_matches_float32_and_is_finite(dtype):
    torch.manual_seed(2)
    low, high = low_and_high(CellStack(8, 16, num_layers=2, feed_size=16, gate=GUMBEL), dtype)
    steps, batch = 6, 3
    x_low = torch.randn(steps, batch, 8).to(dtype).requires_grad_()
    x_high = x_low.detach().float().requires_grad_()
    spec = GUMBEL.resolve(True)
    noise = low.sample_noise(steps, batch, spec, x_low)  # drawn as the decoder draws it
    assert noise.dtype == dtype and torch.isfinite(noise).all()

    def unroll(stack, x, step_noise):
        x_proj, weights = stack.project_inputs(x), stack.step_weights()
        hiddens = [x.new_zeros(batch, 16) for _ in range(2)]
        cells = list(hiddens)
        feed, outs = x.new_zeros(batch, 16), []
        for t in range(steps):
            hiddens, cells, _ = stack.step(x_proj[t], feed, hiddens, cells, weights, spec, step_noise[t])
            feed = torch.tanh(hiddens[-1])
            outs.append(hiddens[-1])
        return torch.stack(outs), cells[-1]

    got = unroll(low, x_low, noise)
    want = unroll(high, x_high, noise.float())
    for g, w in zip(got, want):
        assert g.dtype == dtype and torch.isfinite(g).all()
        assert relative_error(g, w) <= TOLERANCE[dtype]
    for g, w in zip(gradients(got, [x_low, *low.parameters()]), gradients(want, [x_high, *high.parameters()])):
        assert g.dtype == dtype and torch.isfinite(g).all()
        assert relative_error(g, w) <= TOLERANCE[dtype]


def test_fairseq_train_in_float16_on_cpu_is_finite(toy_data, tmp_path):
    args = [str(toy_data / "bin"), "--user-dir", USER_DIR, "--arch", "g2lstm_iwslt", *TINY_DIMS,
            "--max-update", "6", "--max-tokens", "800", "--optimizer", "adam", "--lr", "0.01", "--cpu",
            "--memory-efficient-fp16", "--save-dir", str(tmp_path), "--no-save", "--seed", "1",
            "--log-format", "simple", "--log-interval", "1"]
    proc, draws = train_with_noise_spy(args)
    log = proc.stdout + proc.stderr
    assert "num_updates 6" in log
    assert draws and all(d["dtype"] == "torch.float16" and d["finite"] for d in draws)  # the model ran in fp16
    losses = [float(line.split("loss=")[1].split(",")[0]) for line in log.splitlines() if "train_inner" in line]
    assert len(losses) == 6 and all(loss == loss and loss < 20 for loss in losses)  # finite, no NaN
