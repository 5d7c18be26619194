"""Attention for the input-feeding decoder: additive (Bahdanau) or Luong "general".

Both share one shape of computation, split so that the decoder's step loop does only
per-step work:

* :meth:`memory` runs once per forward: it takes the encoder outputs batch-first and
  projects them into keys ([B,S,K]), once per source batch: generation caches the keys.
* :meth:`forward` runs once per target step: score the keys against the decoder's top
  hidden state, softmax over the source, take the context, and combine
  ``out = tanh(W_out [context; hidden])`` ([B,H]), fairseq's ``lstm`` output layer.

Scores: Luong general ``s_j = src_j . (W q)`` (fairseq's ``lstm``; keys are
``src W``, so a step is one batched dot product); Bahdanau additive
``s_j = v . tanh(W_k src_j + W_q q)`` (the paper's attention).
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_TYPES = ("bahdanau", "luong")
SCORE_SLICE_ELEMENTS = 1 << 18  # 1 MiB of float32: well inside a core's L2 cache

Memory = Dict[str, Optional[Tensor]]


class Attention(nn.Module):
    """Common part: the output combination, masking and context.

    query_dim: Hd, the decoder hidden size;  source_dim: C, the encoder output size.
    """

    def __init__(self, query_dim: int, source_dim: int):
        super().__init__()
        self.query_dim, self.source_dim = query_dim, source_dim
        self.output_proj = nn.Linear(source_dim + query_dim, query_dim, bias=False)

    def memory(self, encoder_out: Tensor, padding_mask: Optional[Tensor], keys: Optional[Tensor] = None) -> Memory:
        """What the steps attend to: ``values`` [B,S,C], ``keys`` [B,S,K] and ``mask`` [B,S]
        or None, from encoder_out [S,B,C] and padding_mask [B,S].

        ``keys`` are the projected keys of an earlier call for the same (reordered) sources:
        generation caches them, so a step does not redo the projection. ``values`` are a
        view where ``encoder_out`` is stored batch-major, as the g2lstm encoder stores it.
        """
        values = encoder_out.transpose(0, 1)
        if not values.is_contiguous():
            values = values.contiguous()
        mask = padding_mask if padding_mask is not None and bool(padding_mask.any()) else None
        return {"values": values, "keys": self.project_keys(values) if keys is None else keys, "mask": mask}

    def project_keys(self, values: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """query [B,Hd], keys [B,S,K] -> unnormalised scores [B,S]."""
        raise NotImplementedError

    def forward(self, query: Tensor, memory: Memory) -> Tuple[Tensor, Tensor]:
        """query [B,Hd] -> (output [B,Hd], attention weights [B,S])."""
        scores = self.score(query, memory["keys"])
        if memory["mask"] is not None:
            scores = scores.masked_fill(memory["mask"], float("-inf"))
        weights = F.softmax(scores, dim=1)
        context = torch.bmm(weights.unsqueeze(1), memory["values"]).squeeze(1)  # [B,C]
        out = torch.tanh(self.output_proj(torch.cat((context, query), dim=1)))
        return out, weights


class LuongAttention(Attention):
    """Luong "general" score, the attention of fairseq's ``lstm`` (same parameters)."""

    def __init__(self, query_dim: int, source_dim: int):
        super().__init__(query_dim, source_dim)
        self.input_proj = nn.Linear(query_dim, source_dim, bias=False)

    def project_keys(self, values: Tensor) -> Tensor:
        return values.matmul(self.input_proj.weight)  # [B,S,C] @ [C,Hd] -> [B,S,Hd]

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(keys, query.unsqueeze(2)).squeeze(2)


class BahdanauAttention(Attention):
    """Additive (MLP) score, as in the paper's translation model. Width A = Hd."""

    def __init__(self, query_dim: int, source_dim: int):
        super().__init__(query_dim, source_dim)
        self.key_proj = nn.Linear(source_dim, query_dim, bias=True)
        self.query_proj = nn.Linear(query_dim, query_dim, bias=False)
        self.score_proj = nn.Linear(query_dim, 1, bias=False)

    def project_keys(self, values: Tensor) -> Tensor:
        return self.key_proj(values)  # [B,S,A]

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """At inference, rows are scored in slices of about :data:`SCORE_SLICE_ELEMENTS`
        [rows,S,A] values: the sum, the tanh and the product then stay in the CPU's cache
        instead of making three trips through memory (beam search scores thousands of rows
        at every step). The scores are the same up to float rounding (the product's
        kernel may sum in another order for another number of rows)."""
        projected = self.query_proj(query)  # [B,A]
        rows = max(1, SCORE_SLICE_ELEMENTS // (keys.shape[1] * keys.shape[2]))
        if rows >= keys.shape[0] or (torch.is_grad_enabled() and (keys.requires_grad or projected.requires_grad)):
            return self._score_rows(projected, keys)
        return torch.cat([self._score_rows(q, k) for q, k in zip(projected.split(rows), keys.split(rows))])

    def _score_rows(self, projected: Tensor, keys: Tensor) -> Tensor:
        """projected [b,A] queries, keys [b,S,A] -> scores [b,S]."""
        hidden = (keys + projected.unsqueeze(1)).tanh_()  # [b,S,A]; in place: one buffer, not two
        return self.score_proj(hidden).squeeze(2)


def build_attention(kind: str, query_dim: int, source_dim: int) -> Attention:
    if kind == "bahdanau":
        return BahdanauAttention(query_dim, source_dim)
    if kind == "luong":
        return LuongAttention(query_dim, source_dim)
    raise ValueError(f"--attention-type must be one of {', '.join(ATTENTION_TYPES)}; got {kind!r}")
