"""Gate statistics: how open or shut the G2 gates are.

* :mod:`.summary` - running tallies (shares below 0.1 and above 0.9, mean, entropy,
  histograms) fed by the layers' ``gate_recorder`` hook; pure torch. The training
  metrics and ``g2lstm-gates`` both use it.
* :mod:`.collect` - ``g2lstm-gates``' work: load a checkpoint, run a split
  teacher-forced, per-token gates of a sentence (imports fairseq).
* :mod:`.figures` - the histogram and heatmap figures (imports matplotlib).
* :mod:`.cli` - the ``g2lstm-gates`` command line (``python -m fairseq_g2lstm.gate_stats``).

Only ``summary`` is imported here: the model imports this package, so the others (which
import the model, fairseq and matplotlib) are imported where used.
"""
from .summary import GATES, HIGH, LOW, GateTallies, GateTally

__all__ = ["GATES", "HIGH", "LOW", "GateTallies", "GateTally"]
