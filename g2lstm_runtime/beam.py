"""Batched beam search over numpy log-probabilities, with the semantics of fairseq's
``SequenceGenerator`` and ``BeamSearch`` (fairseq 0.12): the same candidates (the best
``2 * beam`` of all beams), the same finalization (a hypothesis ends when EOS is among a
sentence's first ``beam`` candidates; its score is its summed log-probability divided by
``length ** lenpen``; a sentence is done with ``beam`` finished hypotheses or at the
maximum length, where only EOS may follow), the same limits (``max_len_a * src_len +
max_len_b`` with ``src_len`` the batch's padded source width, ``min_len``) and the same
unknown-word penalty. Scores are float32, added in fairseq's order, so that the search
picks what fairseq picks from the same log-probabilities.

The model is behind :class:`Decoder`: given the last token of every live hypothesis it
returns their next-token log-probabilities, and it follows the hypotheses' reordering.
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Protocol

import numpy as np

NEG_INF = np.float32(-math.inf)


class SearchError(ValueError):
    """Search options that cannot work together (for a batch); ``str()`` is one line."""


class Decoder(Protocol):
    """The incremental decoder of a batch of ``B`` sentences, ``beam`` rows each."""

    def step(self, prev_tokens: np.ndarray) -> np.ndarray:
        """prev_tokens [N,1] (the last token of each row) -> log-probabilities [N,V] float32."""

    def reorder(self, rows: np.ndarray) -> None:
        """Keep the rows ``rows`` [N'] (indices into the current rows), in that order."""


@dataclass(frozen=True)
class SearchOptions:
    """fairseq-generate's flags of the same names (``--lenpen``, ``--unkpen``, ...)."""

    beam: int = 5
    nbest: int = 1
    max_len_a: float = 0.0
    max_len_b: int = 200
    min_len: int = 1
    lenpen: float = 1.0
    unkpen: float = 0.0
    max_positions: int = 1024  # the model's max_target_positions: the length is below it

    def __post_init__(self):
        if self.beam < 1 or not 1 <= self.nbest <= self.beam:
            raise SearchError(f"need beam >= 1 and 1 <= nbest <= beam; got beam {self.beam}, nbest {self.nbest}")


@dataclass
class Hypothesis:
    tokens: List[int]  # ends with EOS
    score: float  # summed log-probability / length ** lenpen
    positional_scores: List[float]


def beam_search(decoder: Decoder, src_len: int, batch: int, options: SearchOptions, eos: int, pad: int, unk: int,
                vocab_size: int) -> List[List[Hypothesis]]:
    """The ``nbest`` best hypotheses of each of the ``batch`` sentences, best first.

    src_len: the batch's source width with padding and EOS (fairseq's ``src_tokens.size(1)``).
    """
    beam = options.beam
    max_len = min(int(options.max_len_a * src_len + options.max_len_b), options.max_positions - 1)
    if options.min_len > max_len:
        raise SearchError(f"min_len {options.min_len} cannot be larger than max_len {max_len} "
                          f"(max_len_a * source length + max_len_b)")
    bsz = batch
    scores = np.zeros((bsz * beam, max_len + 1), np.float32)
    tokens = np.full((bsz * beam, max_len + 2), pad, np.int64)
    tokens[:, 0] = eos
    cands_to_ignore = np.zeros((bsz, beam), bool)
    finalized: List[List[Hypothesis]] = [[] for _ in range(batch)]
    sentence_of = np.arange(batch)  # current batch position -> original sentence
    cand_size = 2 * beam
    reorder_state: Optional[np.ndarray] = None
    batch_idxs: Optional[np.ndarray] = None

    for step in range(max_len + 1):  # one extra step for EOS
        if reorder_state is not None:
            if batch_idxs is not None:  # rows were numbered in the shrunk batch: back to the decoder's rows
                corr = batch_idxs - np.arange(batch_idxs.size)
                reorder_state = (reorder_state.reshape(-1, beam) + corr[:, None] * beam).reshape(-1)
            decoder.reorder(reorder_state)
        lprobs = np.array(decoder.step(tokens[:, step: step + 1]), dtype=np.float32, copy=True)  # [N,V]
        lprobs[np.isnan(lprobs)] = NEG_INF
        lprobs[:, pad] = NEG_INF
        lprobs[:, unk] -= np.float32(options.unkpen)
        if step >= max_len:
            lprobs[:, :eos] = NEG_INF
            lprobs[:, eos + 1:] = NEG_INF
        if step < options.min_len:
            lprobs[:, eos] = NEG_INF

        cand_scores, cand_indices, cand_beams = _candidates(step, lprobs.reshape(bsz, beam, vocab_size),
                                                            scores.reshape(bsz, beam, -1), cand_size)
        cand_bbsz_idx = cand_beams + (np.arange(bsz) * beam)[:, None]
        eos_mask = (cand_indices == eos) & (cand_scores != NEG_INF)
        eos_mask[:, :beam][cands_to_ignore] = False

        finished_now: List[int] = []
        eos_rows = cand_bbsz_idx[:, :beam][eos_mask[:, :beam]]
        if eos_rows.size:
            eos_scores = cand_scores[:, :beam][eos_mask[:, :beam]]
            finished_now = _finalize(step, eos_rows, eos_scores, tokens, scores, finalized, sentence_of, beam,
                                     max_len, eos, options.lenpen)
        if len(finished_now) == bsz:
            break
        assert step < max_len

        if finished_now:
            keep = np.ones(bsz, bool)
            keep[finished_now] = False
            batch_idxs = np.nonzero(keep)[0]
            new_bsz = batch_idxs.size
            eos_mask, cand_beams = eos_mask[batch_idxs], cand_beams[batch_idxs]
            cand_bbsz_idx = cand_beams + (np.arange(new_bsz) * beam)[:, None]
            cand_scores, cand_indices = cand_scores[batch_idxs], cand_indices[batch_idxs]
            cands_to_ignore = cands_to_ignore[batch_idxs]
            scores = scores.reshape(bsz, -1)[batch_idxs].reshape(new_bsz * beam, -1)
            tokens = tokens.reshape(bsz, -1)[batch_idxs].reshape(new_bsz * beam, -1)
            sentence_of = sentence_of[batch_idxs]
            bsz = new_bsz
        else:
            batch_idxs = None

        # The first `beam` candidates that do not end here continue (fairseq's active_mask).
        eos_mask[:, :beam] = ~(~cands_to_ignore & ~eos_mask[:, :beam])
        active_mask = eos_mask.astype(np.int64) * cand_size + np.arange(eos_mask.shape[1])
        active_hypos = np.argsort(active_mask, axis=1, kind="stable")[:, :beam]
        cands_to_ignore = np.take_along_axis(active_mask, active_hypos, axis=1) >= cand_size
        active_bbsz_idx = np.take_along_axis(cand_bbsz_idx, active_hypos, axis=1).reshape(-1)
        active_scores = np.take_along_axis(cand_scores, active_hypos, axis=1)

        tokens[:, : step + 1] = tokens[active_bbsz_idx, : step + 1]
        tokens.reshape(bsz, beam, -1)[:, :, step + 1] = np.take_along_axis(cand_indices, active_hypos, axis=1)
        if step > 0:
            scores[:, :step] = scores[active_bbsz_idx, :step]
        scores.reshape(bsz, beam, -1)[:, :, step] = active_scores
        reorder_state = active_bbsz_idx

    return [_best_first(hypos)[: options.nbest] for hypos in finalized]


def _candidates(step: int, lprobs: np.ndarray, scores: np.ndarray, cand_size: int):
    """fairseq's ``BeamSearch.step``: the best ``2 * beam`` (score, token, beam) of each
    sentence over all its beams; at step 0 only the first beam (all beams are equal).
    lprobs [B,beam,V]; scores [B,beam,max_len+1] -> three [B,2*beam] arrays."""
    bsz, beam, vocab = lprobs.shape
    if step == 0:
        lprobs = lprobs[:, :1, :]
    else:
        lprobs = lprobs + scores[:, :, step - 1: step]
    flat = lprobs.reshape(bsz, -1)
    k = min(cand_size, flat.shape[1] - 1)  # -1 so that pad is never chosen
    top = _topk(flat, k)
    values = np.take_along_axis(flat, top, axis=1)
    return values, top % vocab, top // vocab


def _topk(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest of each row, largest first, the lower index first
    among equal values. values [B,M] -> [B,k]."""
    rows, width = values.shape
    if k < width:
        candidates = np.argpartition(-values, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(values, candidates, axis=1).min(axis=1, keepdims=True)
        if np.count_nonzero(values >= kth) > k * rows:  # a tie at the k-th value: decide it by index
            return np.stack([np.lexsort((np.arange(width), -row))[:k] for row in values])
    else:
        candidates = np.broadcast_to(np.arange(width), values.shape)
    chosen = np.take_along_axis(values, candidates, axis=1)
    order = np.stack([np.lexsort((c, -v)) for v, c in zip(chosen, candidates)])
    return np.take_along_axis(candidates, order, axis=1)


def _finalize(step, eos_rows, eos_scores, tokens, scores, finalized, sentence_of, beam, max_len, eos,
              lenpen) -> List[int]:
    """fairseq's ``finalize_hypos``: store the hypotheses that end with EOS at ``step``;
    return the batch positions of the sentences that are now done."""
    hypo_tokens = tokens[eos_rows, 1: step + 2].copy()
    hypo_tokens[:, step] = eos
    positional = scores[eos_rows, : step + 1].copy()
    positional[:, step] = eos_scores
    positional[:, 1:] = positional[:, 1:] - positional[:, :-1]
    normalized = eos_scores / np.float32((step + 1) ** lenpen)
    positions = eos_rows // beam
    for i, position in enumerate(positions):
        hypos = finalized[sentence_of[position]]
        if len(hypos) < beam:
            hypos.append(Hypothesis(hypo_tokens[i].tolist(), float(normalized[i]), positional[i].tolist()))
    done = []
    for position in np.unique(positions):
        if len(finalized[sentence_of[position]]) == beam or step == max_len:
            done.append(int(position))
    return done


def _best_first(hypos: List[Hypothesis]) -> List[Hypothesis]:
    order = np.argsort(-np.array([h.score for h in hypos], dtype=np.float32), kind="stable")
    return [hypos[i] for i in order]
