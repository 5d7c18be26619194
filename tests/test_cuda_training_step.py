"""A whole training step through the fused kernel gives the torch path's loss, gradients
and updated weights, with the same noise.

Same noise: both models draw the G2 noise with torch's generator from the same seed
(the kernel's runner is told not to draw its own), and dropout draws alike.

Two models:

* ``iwslt_like`` (no fairseq): the g2lstm_iwslt shape built from the project's own
  modules: embeddings 256, a 2-layer G2LSTM encoder with a bidirectional first layer,
  a 2-layer input-feeding CellStack decoder with additive (Bahdanau) attention, dropout
  0.2. (Its attention is written here: fairseq_g2lstm.models imports fairseq.)
  It runs wherever the kernel does, the GPU check machine included (no fairseq there).
* ``fairseq``: the registered ``g2lstm_iwslt`` architecture itself; skipped without
  fairseq.

Backends as in test_cuda_kernel.py: ``host`` (the host emulation on the CPU, small
sizes) and ``cuda`` (the extension on a GPU, full size; skipped without one).
"""
import argparse
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fairseq_g2lstm.cuda as cuda
import fairseq_g2lstm.rnn.stack as stack_module
from fairseq_g2lstm.cuda import validation
from fairseq_g2lstm.cuda.function import make_cell_step, make_sequence_runner
from fairseq_g2lstm.gates import GateConfig
from fairseq_g2lstm.rnn import CellStack, G2LSTM

LOSS_TOL = 1e-5
GRAD_TOL = 1e-4
GRAD_FLOOR = 1e-6
PAD = 1
SIZES = {"host": dict(dim=32, vocab=40, batch=4, src_len=7, tgt_len=6),
         "cuda": dict(dim=256, vocab=1000, batch=32, src_len=20, tgt_len=18)}


@pytest.fixture
def kernel_with_torch_noise(backend, monkeypatch):
    """Make ``--gate-kernel cuda`` use ``backend``'s ops, with noise drawn by torch."""
    _, ops, _ = backend
    kernel_run, kernel_step = make_sequence_runner(ops), make_cell_step(ops)
    calls = {"sequence": 0, "cell": 0}

    def runner(*args, **kwargs):  # no draws_noise: the layer samples noise with torch
        calls["sequence"] += 1
        return kernel_run(*args, **kwargs)

    def step(*args, **kwargs):
        calls["cell"] += 1
        return kernel_step(*args, **kwargs)

    monkeypatch.setattr(cuda, "cuda_sequence_runner", lambda required: runner)
    monkeypatch.setattr(stack_module, "cuda_cell_step", lambda kernel, like: step if kernel == "cuda" else None)
    return backend + (calls,)


class AdditiveAttention(nn.Module):
    """Bahdanau's score, fairseq lstm's output layer: tanh(W [context; query])."""

    def __init__(self, dim: int):
        super().__init__()
        self.key, self.query = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1, bias=False)
        self.output_proj = nn.Linear(2 * dim, dim, bias=False)

    def forward(self, query, keys, values, mask):
        """query [B,H], keys = key(values) [S,B,H], values [S,B,H], mask [B,S] -> [B,H]."""
        scores = self.score(torch.tanh(keys + self.query(query))).squeeze(2).t()  # [B,S]
        weights = F.softmax(scores.masked_fill(mask, float("-inf")), dim=1)
        context = torch.einsum("bs,sbh->bh", weights, values)
        return torch.tanh(self.output_proj(torch.cat([context, query], dim=1)))


class IwsltLike(nn.Module):
    """g2lstm_iwslt's shape from the project's modules (fairseq-free)."""

    def __init__(self, vocab: int, dim: int, kernel: str, layers: int = 2, dropout: float = 0.2):
        super().__init__()
        gate = GateConfig(mode="gumbel")
        self.src_embed = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.encoder = G2LSTM(dim, dim, layers, bidirectional=[True] + [False] * (layers - 1),
                              dropout=dropout, gate=gate, kernel=kernel)
        self.bridge = nn.Linear(2 * dim, dim)  # the bidirectional layer's state -> decoder layer 0
        self.decoder = CellStack(dim, dim, layers, feed_size=dim, dropout=dropout, gate=gate, kernel=kernel)
        self.attention = AdditiveAttention(dim)
        self.out = nn.Linear(dim, vocab)
        self.dropout = dropout

    def forward(self, src, src_lengths, prev_tgt):
        """src [S,B] right-padded, src_lengths [B], prev_tgt [T,B] -> logits [T,B,V]."""
        x = F.dropout(self.src_embed(src), self.dropout, self.training)
        enc, (h_n, c_n) = self.encoder(x, src_lengths)
        hiddens = [self.bridge(torch.cat([h_n[0], h_n[1]], 1)), h_n[2]]
        cells = [self.bridge(torch.cat([c_n[0], c_n[1]], 1)), c_n[2]]
        mask = torch.arange(src.shape[0], device=src.device).unsqueeze(0) >= src_lengths.to(src.device).unsqueeze(1)
        keys = self.attention.key(enc)
        y = F.dropout(self.tgt_embed(prev_tgt), self.dropout, self.training)
        steps, batch = prev_tgt.shape
        spec = self.decoder.gate.resolve(self.training)
        x_proj, weights = self.decoder.project_inputs(y), self.decoder.step_weights()
        noise = self.decoder.sample_noise(steps, batch, spec, y)
        feed, outs = y.new_zeros(batch, self.decoder.hidden_size), []
        for t in range(steps):
            hiddens, cells, _ = self.decoder.step(x_proj[t], feed, hiddens, cells, weights, spec,
                                               None if noise is None else noise[t])
            out = self.attention(hiddens[-1], keys, enc, mask)
            feed = F.dropout(out, self.dropout, self.training)
            outs.append(feed)
        return self.out(torch.stack(outs))


def batch_for(size, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch, src_len, tgt_len, vocab = size["batch"], size["src_len"], size["tgt_len"], size["vocab"]
    src_lengths = torch.randint(2, src_len + 1, (batch,), generator=gen)
    src_lengths[0] = src_len
    src = torch.randint(4, vocab, (src_len, batch), generator=gen)
    src[torch.arange(src_len).unsqueeze(1) >= src_lengths.unsqueeze(0)] = PAD
    tgt = torch.randint(4, vocab, (tgt_len + 1, batch), generator=gen)
    return src.to(device), src_lengths, tgt[:-1].to(device), tgt[1:].to(device)


def train_step(model, loss_fn, seed):
    """One step of AdaDelta with clip-norm 2.0 (the paper's optimiser): loss, grads, new weights."""
    optimizer = torch.optim.Adadelta(model.parameters())
    model.train()
    optimizer.zero_grad()
    torch.manual_seed(seed)
    loss = loss_fn(model)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
    optimizer.step()
    return loss.detach(), grads, {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_same_step(kernel_step, torch_step):
    """Loss within LOSS_TOL; each gradient within GRAD_TOL of its norm, with a floor of
    GRAD_FLOOR times the whole gradient's norm for parameters whose gradient nearly
    cancels (an attention key bias: 1e-8 where the rest is 1e-2); weights after the step."""
    (loss_k, grads_k, params_k), (loss_t, grads_t, params_t) = kernel_step, torch_step
    assert validation.relative_error(loss_k, loss_t) <= LOSS_TOL
    assert grads_k.keys() == grads_t.keys()
    total = torch.cat([g.double().flatten() for g in grads_t.values()]).norm().item()
    for name in grads_t:
        diff = (grads_k[name].double() - grads_t[name].double()).norm().item()
        assert diff <= GRAD_TOL * grads_t[name].double().norm().item() + GRAD_FLOOR * total, name
    for name in params_t:
        assert validation.relative_error(params_k[name], params_t[name]) <= GRAD_TOL, name


def test_iwslt_like_training_step_matches_the_torch_path(kernel_with_torch_noise):
    name, _, device, calls = kernel_with_torch_noise
    size = SIZES[name]
    src, src_lengths, prev_tgt, tgt = batch_for(size, device)
    torch.manual_seed(0)
    kernel_model = IwsltLike(size["vocab"], size["dim"], kernel="cuda").to(device)
    torch_model = IwsltLike(size["vocab"], size["dim"], kernel="torch").to(device)
    torch_model.load_state_dict(kernel_model.state_dict())

    def loss_fn(model):
        logits = model(src, src_lengths, prev_tgt)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=PAD)

    kernel_step = train_step(kernel_model, loss_fn, seed=5)
    assert calls == {"sequence": 3, "cell": 2 * size["tgt_len"]}  # 3 encoder directions, 2 decoder layers
    assert_same_step(kernel_step, train_step(torch_model, loss_fn, seed=5))


def test_fairseq_g2lstm_iwslt_training_step_matches_the_torch_path(kernel_with_torch_noise, monkeypatch):
    pytest.importorskip("fairseq")
    from fairseq.data import Dictionary
    from fairseq.models import ARCH_CONFIG_REGISTRY

    from fairseq_g2lstm.models import gate_flags
    from fairseq_g2lstm.models.g2lstm import G2LSTMModel

    # The host backend stands in for CUDA here, so the model must keep --gate-kernel cuda
    # instead of falling back to the torch path as it does on a machine without CUDA.
    monkeypatch.setattr(gate_flags, "usable_gate_kernel", lambda args: args.gate_kernel)

    name, _, device, calls = kernel_with_torch_noise
    size = SIZES[name]
    dictionary = Dictionary()
    for i in range(size["vocab"] - len(dictionary)):
        dictionary.add_symbol(f"w{i}")
    task = types.SimpleNamespace(source_dictionary=dictionary, target_dictionary=dictionary)

    def build(kernel):
        args = argparse.Namespace(arch="g2lstm_iwslt", gate_kernel=kernel)
        if name == "host":  # the shape of g2lstm_iwslt, smaller
            args.encoder_embed_dim = args.decoder_embed_dim = size["dim"]
        ARCH_CONFIG_REGISTRY["g2lstm_iwslt"](args)
        return G2LSTMModel.build_model(args, task).to(device)

    torch.manual_seed(0)
    kernel_model = build("cuda")
    torch_model = build("torch")
    torch_model.load_state_dict(kernel_model.state_dict())
    src, src_lengths, prev_tgt, tgt = batch_for(size, device)
    pad = dictionary.pad()
    # fairseq's layout: batch-first, sources left-padded.
    src_tokens = torch.full((src.shape[1], src.shape[0]), pad, dtype=torch.long, device=device)
    for b, n in enumerate(src_lengths.tolist()):
        src_tokens[b, src.shape[0] - n:] = src[:n, b]

    def loss_fn(model):
        logits, _ = model(src_tokens, src_lengths.to(device), prev_tgt.t())
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.t().reshape(-1), ignore_index=pad)

    kernel_step = train_step(kernel_model, loss_fn, seed=5)
    assert calls == {"sequence": 3, "cell": 2 * size["tgt_len"]}  # 3 encoder directions, 2 decoder layers
    assert_same_step(kernel_step, train_step(torch_model, loss_fn, seed=5))
