"""Gate statistics: how open or shut the G2 gates are (``g2lstm-gates``).

* :mod:`.collect` - ``g2lstm-gates``' work: load a checkpoint, run a split
  teacher-forced, per-token gates of a sentence (imports fairseq);
* :mod:`.figures` - the histogram and heatmap figures (imports matplotlib);
* :mod:`.cli` - the ``g2lstm-gates`` command line (``python -m fairseq_g2lstm.gate_stats``).

The running tallies they fill (:class:`~fairseq_g2lstm.rnn.GateTallies`) live with the
layers' gate recorder in :mod:`fairseq_g2lstm.rnn.gate_tallies`, because the models' training
metrics use them too. This package imports nothing itself, so that ``python -m`` runs
a tool module once.
"""
