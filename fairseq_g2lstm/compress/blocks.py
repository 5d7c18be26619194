"""Which gate blocks of a g2lstm state dict the compression touches.

Only the input-gate and forget-gate rows (:func:`fairseq_g2lstm.gates.gate_slice` of
``i`` and ``f``) of LSTM weight matrices are compressed (the paper's section 4). Parameter
names and layouts (``[4H, K]``, block order i, f, g, o) are those of
:class:`~fairseq_g2lstm.rnn.G2LSTM` (the translation encoder, ``encoder.lstm.``, and the
language model, ``decoder.lstm.``) and :class:`~fairseq_g2lstm.rnn.CellStack` (the
translation decoder, ``decoder.layers.``):

- ``recurrent`` (hidden-to-gate): every ``weight_hh_l*`` (encoder directions included),
  all columns;
- ``feed`` (attention-output-to-gate, input feeding): the decoder's ``weight_ih_l0``
  columns ``[E:]``, after the E embedding columns;
- ``input`` (input-to-gate): the rest of every ``weight_ih_l*``, with scope ``all`` only.

Scope ``recurrent`` (the authors' translation code) takes ``recurrent`` and ``feed``;
scope ``all`` (their language-model code) takes all three. A language model has no
``feed`` blocks: ``recurrent`` takes its ``weight_hh_l*``, ``all`` also its ``weight_ih_l*``. Each (gate, kind) piece of a
matrix is one block: an SVD factorises it on its own. Sizes come from the tensors (H is
a quarter of the rows, E the width of the decoder's embeddings), never from the flags.
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from torch import Tensor

from ..gates import GATE_ORDER, NUM_GATES, NUM_NOISY_GATES, gate_slice
from .methods import CompressionError

ENCODER_LSTM = "encoder.lstm."
DECODER_CELLS = "decoder.layers."
LM_LSTM = "decoder.lstm."  # g2lstm_lm
DECODER_EMBED = "decoder.embed_tokens.weight"
WEIGHT_NAME = re.compile(r"weight_(?P<kind>ih|hh)_l(?P<layer>\d+)(?P<reverse>_reverse)?")
G2_GATES = GATE_ORDER[:NUM_NOISY_GATES]  # ("i", "f")
KINDS_IN_SCOPE = {"recurrent": ("recurrent", "feed"), "all": ("recurrent", "feed", "input")}


@dataclass(frozen=True)
class GateBlock:
    """One compressed block: rows of one gate of ``param``, columns ``[col_start, col_end)``."""

    param: str
    gate: str
    kind: str  # recurrent, feed or input
    row_start: int
    row_end: int
    col_start: int
    col_end: int

    @property
    def rows(self) -> slice:
        return slice(self.row_start, self.row_end)

    @property
    def cols(self) -> slice:
        return slice(self.col_start, self.col_end)

    @property
    def shape(self) -> Tuple[int, int]:
        return self.row_end - self.row_start, self.col_end - self.col_start

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def describe(self) -> str:
        """``decoder.layers.weight_ih_l0[f rows 16:32, cols 16:32] (feed)``."""
        return (f"{self.param}[{self.gate} rows {self.row_start}:{self.row_end}, "
                f"cols {self.col_start}:{self.col_end}] ({self.kind})")


def _column_groups(kind: str, layer: int, is_decoder: bool, cols: int,
                   embed_dim: Optional[int]) -> List[Tuple[str, int, int]]:
    """(kind, start, end) column groups of one weight matrix."""
    if kind == "hh":
        return [("recurrent", 0, cols)]
    if is_decoder and layer == 0:  # [embedding ; feed] columns (CellStack)
        if embed_dim is None or not 0 < embed_dim < cols:
            raise CompressionError(
                f"cannot find the input-feeding columns of {DECODER_CELLS}weight_ih_l0 ({cols} columns; "
                f"decoder embedding width {embed_dim})")
        return [("input", 0, embed_dim), ("feed", embed_dim, cols)]
    return [("input", 0, cols)]


def find_gate_blocks(state: Mapping[str, Tensor], scope: str = "recurrent", prefix: str = "") -> List[GateBlock]:
    """The i/f gate blocks of ``state`` (a g2lstm model's state dict, its keys under
    ``prefix``) that ``scope`` compresses, in state-dict order, i before f.

    Raises :class:`CompressionError` where the state dict holds no LSTM weights or a
    weight's layout is not g2lstm's.
    """
    if scope not in KINDS_IN_SCOPE:
        raise CompressionError(f"--scope must be one of {', '.join(KINDS_IN_SCOPE)}; got {scope!r}")
    embed = state.get(prefix + DECODER_EMBED)
    embed_dim = int(embed.shape[1]) if embed is not None and embed.dim() == 2 else None
    blocks: List[GateBlock] = []
    for name, weight in state.items():
        if not name.startswith(prefix):
            continue
        local = name[len(prefix):]
        module = next((m for m in (ENCODER_LSTM, DECODER_CELLS, LM_LSTM) if local.startswith(m)), None)
        match = WEIGHT_NAME.fullmatch(local[len(module):]) if module else None
        if match is None:
            continue
        if weight.dim() != 2 or weight.shape[0] % NUM_GATES or not weight.is_floating_point():
            raise CompressionError(f"{name} is {list(weight.shape)} {weight.dtype}, not an LSTM weight [4H, K]")
        hidden = weight.shape[0] // NUM_GATES
        groups = _column_groups(match["kind"], int(match["layer"]), module == DECODER_CELLS, weight.shape[1], embed_dim)
        for gate in G2_GATES:
            rows = gate_slice(gate, hidden)
            for kind, start, end in groups:
                if kind in KINDS_IN_SCOPE[scope]:
                    blocks.append(GateBlock(name, gate, kind, rows.start, rows.stop, start, end))
    if not blocks:
        raise CompressionError("no LSTM gate weights (encoder.lstm.weight_*_l*, decoder.layers.weight_*_l*, "
                               "decoder.lstm.weight_*_l*) found")
    return blocks


def blocks_by_param(blocks: List[GateBlock]) -> Dict[str, List[GateBlock]]:
    grouped: Dict[str, List[GateBlock]] = {}
    for block in blocks:
        grouped.setdefault(block.param, []).append(block)
    return grouped


def check_rank(blocks: List[GateBlock], rank: int) -> None:
    """Raise :class:`CompressionError` if ``rank`` exceeds the smaller dimension of any block."""
    smallest = min(blocks, key=lambda block: min(block.shape))
    if rank > min(smallest.shape):
        rows, cols = smallest.shape
        raise CompressionError(
            f"--rank {rank} is larger than the {rows} x {cols} gate block {smallest.describe()}; "
            f"the rank can be at most {min(rows, cols)} here")
