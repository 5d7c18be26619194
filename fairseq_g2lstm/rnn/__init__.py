"""Cells and layers: the LSTM recurrences built on :mod:`fairseq_g2lstm.gates`, and the
tallies that their gate recorder hook feeds (:mod:`.gate_tallies`)."""
from .cell import CellFunction, cell_step, fused_cell_step
from .gate_tallies import GateTallies
from .layer import G2LSTM, check_weight_drop, reverse_padded
from .sequence import SequenceFunction, sequence_fused, sequence_reference
from .stack import CellStack

__all__ = [
    "CellFunction", "CellStack", "G2LSTM", "GateTallies", "SequenceFunction", "cell_step", "check_weight_drop",
    "fused_cell_step", "reverse_padded", "sequence_fused", "sequence_reference",
]
