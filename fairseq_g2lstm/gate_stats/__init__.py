"""Gate statistics: how open or shut the G2 gates are.

* :mod:`.summary` - running tallies (shares below 0.1 and above 0.9, mean, entropy,
  histograms) fed by the layers' ``gate_recorder`` hook; pure torch. The training
  metrics and ``g2lstm-gates`` both use it.
"""
from .summary import GATES, HIGH, LOW, GateTallies, GateTally

__all__ = ["GATES", "HIGH", "LOW", "GateTallies", "GateTally"]
