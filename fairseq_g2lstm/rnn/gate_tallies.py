"""Running statistics of the G2 gates: how open or shut the input and forget gates are.

G2-LSTM's claim is that its input and forget gates sit near 0 or 1 while a plain LSTM's
sit near 0.5 (the paper's section 5). :class:`GateTally` measures that for one gate of one
layer: the share of values below :data:`LOW` and above :data:`HIGH`, the mean, and
optionally the mean binary entropy and a histogram over [0, 1]. :class:`GateTallies`
keeps one tally per (layer name, gate) and is what the layers' ``gate_recorder`` hook
feeds (see :meth:`fairseq_g2lstm.rnn.G2LSTM.forward`).

Both the training metrics (cheap: counts and sums only) and ``g2lstm-gates`` (with
entropy and histograms) use these classes, so the numbers mean the same in both; they
live here, beside the hook, so that the models need nothing from the tool.

Input convention, from the recorder hook: ``gates`` [T,B,4H] are the activated gates in
block order i, f, g, o, exactly zero at padding; ``lengths`` [B] real steps per row. A
zero at padding lands in the "below" count and in the first histogram bin, and adds
nothing to the sums, so it is subtracted once instead of masking every element.
"""
import math
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from ..gates import NUM_GATES, NUM_NOISY_GATES

LOW = 0.1
HIGH = 0.9
GATES = ("input", "forget")  # the G2 gates, in block order


class GateTally:
    """Totals for one gate of one layer, kept as tensors so that adding never waits for
    the GPU. ``bins``: histogram bins over [0, 1] (None: no histogram); ``entropy``:
    also sum the binary entropy (bits) of every value."""

    def __init__(self, bins: Optional[int] = None, entropy: bool = False):
        self.bins, self.with_entropy = bins, entropy
        self.count = 0
        # Python zeros at first, then float64 tensors on the values' device.
        self.below, self.above, self.total, self.entropy = 0.0, 0.0, 0.0, 0.0
        self.histogram: Optional[Tensor] = None

    def add_counts(self, count: int, below: Tensor, above: Tensor, total: Tensor) -> None:
        """``count`` real values, of which ``below`` < LOW and ``above`` > HIGH, summing to ``total``."""
        self.count += count
        self.below = self.below + below.double()
        self.above = self.above + above.double()
        self.total = self.total + total.double()

    def add_details(self, values: Tensor, padding: int) -> None:
        """Entropy and histogram of ``values`` (any shape; ``padding`` of them are the
        exact zeros of padding, not real values)."""
        values = values.detach()
        if self.with_entropy:
            self.entropy = self.entropy + binary_entropy_bits(values).sum()
        if self.bins is not None:
            hist = torch.histc(values.float(), bins=self.bins, min=0.0, max=1.0).double()
            hist[0] -= padding
            self.histogram = hist if self.histogram is None else self.histogram + hist

    def merge(self, other: "GateTally") -> None:
        self.count += other.count
        self.below, self.above = self.below + other.below, self.above + other.above
        self.total, self.entropy = self.total + other.total, self.entropy + other.entropy
        if self.histogram is not None and other.histogram is not None:
            self.histogram = self.histogram + other.histogram

    def summary(self) -> Dict[str, float]:
        """share_below, share_above, mean (and entropy_bits) of the values seen; NaN if none."""
        n = self.count
        out = {
            "count": n,
            "share_below": float(self.below) / n if n else math.nan,
            "share_above": float(self.above) / n if n else math.nan,
            "mean": float(self.total) / n if n else math.nan,
        }
        if self.with_entropy:
            out["entropy_bits"] = float(self.entropy) / n if n else math.nan
        return out

    def fractions(self) -> Optional[List[float]]:
        """The histogram as fractions of all values (the paper's y axis), or None."""
        if self.histogram is None or not self.count:
            return None
        return (self.histogram / self.count).cpu().tolist()


def threshold_counts(pair: Tensor, exact: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """pair [T,B,2,H], the i and f gates -> (values < LOW, values > HIGH, sum), each [2].

    Counted with float arithmetic, ``ceil(relu(LOW - v))`` is 1 exactly where v < LOW (the
    gates lie in [0, 1]): several times faster on CPU than comparisons, whose boolean
    results are slow to sum, which matters because training computes this every forward.
    ``exact`` sums in float64 (``g2lstm-gates``); training sums in the gates' dtype, which
    is exact for counts below 2^24 a call and far finer than the three digits logged.
    """
    dims, dtype = (0, 1, 3), (torch.float64 if exact else None)
    below = (LOW - pair).relu_().ceil_().sum(dims, dtype=dtype)
    above = (pair - HIGH).relu_().ceil_().sum(dims, dtype=dtype)
    return below, above, pair.sum(dims, dtype=dtype)


def binary_entropy_bits(p: Tensor) -> Tensor:
    """-p log2 p - (1-p) log2 (1-p) elementwise; 0 at p = 0 and p = 1."""
    p = p.double()
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)) / math.log(2)


class GateTallies:
    """One :class:`GateTally` per (layer name, gate), fed by the layers' recorder hook.

    ``recorder(prefix)`` returns the hook for one module (e.g. ``"encoder"``); layer names
    become ``"encoder.0"`` (``"encoder.0.reverse"`` for a reverse direction).
    """

    def __init__(self, bins: Optional[int] = None, entropy: bool = False):
        self.bins, self.entropy = bins, entropy
        self.tallies: Dict[Tuple[str, str], GateTally] = {}

    def recorder(self, prefix: str):
        def record(layer: int, direction: int, gates: Tensor, lengths: Tensor) -> None:
            name = f"{prefix}.{layer}" + (".reverse" if direction else "")
            self.add(name, gates, lengths)

        return record

    def add(self, name: str, gates: Tensor, lengths: Tensor) -> None:
        """gates [T,B,4H], zero at padding; lengths [B]."""
        steps, batch, width = gates.shape
        hidden = width // NUM_GATES
        padding = (steps * batch - int(lengths.sum())) * hidden  # zero values per gate
        pair = gates.detach()[..., : NUM_NOISY_GATES * hidden].unflatten(-1, (NUM_NOISY_GATES, hidden))
        detailed = self.bins is not None or self.entropy
        below, above, total = threshold_counts(pair, exact=detailed)
        for k, gate in enumerate(GATES):
            tally = self.tallies.get((name, gate))
            if tally is None:
                tally = self.tallies[(name, gate)] = GateTally(self.bins, self.entropy)
            tally.add_counts(steps * batch * hidden - padding, below[k] - padding, above[k], total[k])
            if detailed:
                tally.add_details(pair[..., k, :], padding)

    def __iter__(self) -> Iterator[Tuple[str, str, GateTally]]:
        for (name, gate), tally in self.tallies.items():
            yield name, gate, tally

    def per_gate(self) -> Dict[str, GateTally]:
        """Every layer's tally merged, per gate: the numbers the training log shows."""
        merged = {gate: GateTally() for gate in GATES}
        for _, gate, tally in self:
            merged[gate].merge(tally)
        return merged
