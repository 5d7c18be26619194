"""g2lstm_runtime: what a deployed G2-LSTM model folder needs, without torch or fairseq.

``fairseq_g2lstm`` trains, exports and serves models; this package holds the pieces of
deployment that must also run where torch and fairseq are not installed. It imports
nothing of ``fairseq_g2lstm``; ``fairseq_g2lstm`` builds on it.

- ``text``: how a sentence is prepared before subword splitting, for training data and
  for every translation path alike.
"""
