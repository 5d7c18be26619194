"""Engines for the runtime's :class:`g2lstm_runtime.translator.Translator` that need the
training stack: ``torch`` searches with fairseq's ``SequenceGenerator`` over a folder's
``model.pt``. The runtime never imports this package; it names the module
(:data:`g2lstm_runtime.translator.ENGINE_MODULES`) and loads it only when asked.
"""
