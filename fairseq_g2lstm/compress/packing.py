"""The packed format of compressed weights, and its expansion on load.

``g2lstm-compress --pack`` replaces each compressed weight ``P`` (for example
``decoder.layers.weight_hh_l0``) in the model's state dict by tensors named
``P.g2pack.*``; every other key is unchanged:

=====================  ==================  ================================================
key                    dtype, shape        holds
=====================  ==================  ================================================
``P.g2pack.meta``      int64 [5 + 6 N]     format version, method (1 round, 2 svd), rows,
                                           cols, N blocks; then per block: row start/end,
                                           col start/end, bits (round) or rank k (svd),
                                           code offset (round)
``P.g2pack.rest``      P's dtype [R]       the entries of P outside the N blocks, in
                                           row-major order (bit-identical)
``P.g2pack.step``      float64 []          round methods: the step r
``P.g2pack.codes``     uint8 [...]         round methods: per block, its codes ``q`` minus
                                           the offset, ``bits`` bits each, little-endian,
                                           ``ceil(m n bits / 8)`` bytes; blocks in order
``P.g2pack.factors``   P's dtype [...]     svd: per block ``U_k S_k`` [m,k] then ``V_k^T``
                                           [k,n], flattened; blocks in order
=====================  ==================  ================================================

Round-clip with r 0.5 and c 1.0 has 5 levels, so its codes take 3 bits instead of 32.
:func:`expand_packed` (a state-dict upgrade of :mod:`fairseq_g2lstm.models.loading`, which
the models run inside ``load_state_dict`` for fairseq's CLIs and the hub) rebuilds ``P`` with the same
decode functions that produced the unpacked weights, so the two are bit-identical.
Everything here is a tensor, so a packed checkpoint loads with ``torch.load``'s safe
mode like any other.
"""
from collections import OrderedDict
from typing import Dict, List, Mapping, MutableMapping, Optional, Tuple

import torch
from torch import Tensor

from .blocks import GateBlock
from .methods import CompressionError, dequantize, low_rank_product, pack_bits, unpack_bits

FORMAT_VERSION = 1
TAG = ".g2pack."
METHOD_IDS = {"round": 1, "svd": 2}
_HEADER = 5  # version, method, rows, cols, number of blocks
_PER_BLOCK = 6  # row start, row end, col start, col end, bits (round) or rank (svd), offset (round)


class EncodedBlock:
    """One block's stored form: int64 codes [m,n] (round methods) or the two SVD
    factors ([m,k], [k,n])."""

    def __init__(self, block: GateBlock, codes: Optional[Tensor] = None,
                 factors: Optional[Tuple[Tensor, Tensor]] = None):
        self.block, self.codes, self.factors = block, codes, factors

    def decode(self, step: Optional[float], dtype: torch.dtype) -> Tensor:
        """The compressed block [m,n] in ``dtype``: the only way the tool makes it."""
        if self.codes is not None:
            return dequantize(self.codes, step, dtype)
        return low_rank_product(*self.factors, dtype)


def _outside_blocks(shape: Tuple[int, int], blocks: List[GateBlock]) -> Tensor:
    """Bool mask [rows, cols], True outside every block."""
    mask = torch.ones(shape, dtype=torch.bool)
    for block in blocks:
        mask[block.rows, block.cols] = False
    return mask


def pack_weight(param: str, weight: Tensor, encoded: List[EncodedBlock],
                step: Optional[float]) -> "OrderedDict[str, Tensor]":
    """The ``P.g2pack.*`` tensors for ``weight`` [rows, cols] (the original or the
    compressed one: only entries outside the blocks are read) and its encoded blocks."""
    method = "round" if encoded[0].codes is not None else "svd"
    meta = [FORMAT_VERSION, METHOD_IDS[method], weight.shape[0], weight.shape[1], len(encoded)]
    payload = []
    for item in encoded:
        b = item.block
        if method == "round":
            stream, bits, offset = pack_bits(item.codes)
            payload.append(stream)
            meta += [b.row_start, b.row_end, b.col_start, b.col_end, bits, offset]
        else:
            left, right = item.factors
            payload += [left.reshape(-1), right.reshape(-1)]
            meta += [b.row_start, b.row_end, b.col_start, b.col_end, left.shape[1], 0]
    parts: "OrderedDict[str, Tensor]" = OrderedDict()
    parts[f"{param}{TAG}meta"] = torch.tensor(meta, dtype=torch.int64)
    parts[f"{param}{TAG}rest"] = weight[_outside_blocks(tuple(weight.shape), [e.block for e in encoded])].clone()
    if method == "round":
        parts[f"{param}{TAG}step"] = torch.tensor(float(step), dtype=torch.float64)
        parts[f"{param}{TAG}codes"] = torch.cat(payload)
    else:
        parts[f"{param}{TAG}factors"] = torch.cat(payload)
    return parts


def _expand_one(param: str, state: MutableMapping[str, Tensor]) -> Tensor:
    """Pop ``param``'s packed tensors from ``state`` and return the expanded weight."""
    meta = state.pop(f"{param}{TAG}meta").tolist()
    version, method_id, rows, cols, count = meta[:_HEADER]
    if version != FORMAT_VERSION:
        raise CompressionError(f"{param}: packed with format version {version}; "
                               f"this plugin reads version {FORMAT_VERSION}")
    rest = state.pop(f"{param}{TAG}rest")
    rounds = method_id == METHOD_IDS["round"]
    step = state.pop(f"{param}{TAG}step").item() if rounds else None
    payload = state.pop(f"{param}{TAG}codes" if rounds else f"{param}{TAG}factors")
    weight = torch.empty(rows, cols, dtype=rest.dtype)
    blocks, at = [], 0
    for j in range(count):
        r0, r1, c0, c1, size, offset = meta[_HEADER + _PER_BLOCK * j: _HEADER + _PER_BLOCK * (j + 1)]
        block = GateBlock(param, "?", "?", r0, r1, c0, c1)
        m, n = block.shape
        if rounds:
            length = (m * n * size + 7) // 8  # size: bits per code
            codes = unpack_bits(payload[at: at + length], size, offset, m * n).view(m, n)
            item = EncodedBlock(block, codes=codes)
        else:
            length = size * (m + n)  # size: the rank
            left = payload[at: at + m * size].view(m, size)
            item = EncodedBlock(block, factors=(left, payload[at + m * size: at + length].view(size, n)))
        at += length
        weight[block.rows, block.cols] = item.decode(step, rest.dtype)
        blocks.append(block)
    weight[_outside_blocks((rows, cols), blocks)] = rest
    return weight


def packed_params(state: Mapping[str, Tensor], prefix: str = "") -> List[str]:
    """The weights stored packed in ``state`` under ``prefix``."""
    suffix = f"{TAG}meta"
    return [key[: -len(suffix)] for key in state if key.startswith(prefix) and key.endswith(suffix)]


def expand_packed(state: MutableMapping[str, Tensor], prefix: str = "") -> List[str]:
    """In place: replace every packed weight under ``prefix`` by its full tensor; return
    their names. A state dict without packed weights is left as it is."""
    names = packed_params(state, prefix)
    for param in names:
        state[param] = _expand_one(param, state)
    return names


def expanded(state: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """A copy of ``state`` with packed weights expanded, each where its ``meta`` key was
    (so the keys come back in the unpacked order)."""
    work: Dict[str, Tensor] = dict(state)
    suffix = f"{TAG}meta"
    full = {param: _expand_one(param, work) for param in packed_params(state)}
    out: "OrderedDict[str, Tensor]" = OrderedDict()
    for key in state:
        if key.endswith(suffix) and key[: -len(suffix)] in full:
            out[key[: -len(suffix)]] = full[key[: -len(suffix)]]
        elif key in work:
            out[key] = work[key]
    return out
