"""g2lstm_runtime: what a deployed G2-LSTM model folder needs, without torch or fairseq.

``fairseq_g2lstm`` trains, exports and serves models; this package holds the pieces of
deployment that must also run where torch and fairseq are not installed. It imports
nothing of ``fairseq_g2lstm``; ``fairseq_g2lstm`` builds on it.

- ``text``: how a sentence is prepared before subword splitting, for training data and
  for every translation path alike.
- ``folder``: the model folder's format, its reading and checking.
- ``dictionary``: fairseq's dictionary files; ``beam``: fairseq's beam search over numpy
  log-probabilities; ``onnx_engine``: a folder's ONNX graphs on ONNX Runtime;
  ``translator``: sentences in, hypotheses out; ``translate``: ``g2lstm-translate``.
- ``cli_args``: the command-line conventions every g2lstm tool shares.

The torch engine (``--engine torch``, for comparison) lives in the training package
(``fairseq_g2lstm.engines.torch``); ``translator`` imports it by name, only when asked.
"""
