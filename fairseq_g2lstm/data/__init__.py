"""Data preparation: parallel text to fairseq data-bin folders, and an offline demo corpus.

Nothing here imports fairseq or torch: the preparation steps run in plain Python (plus
sentencepiece) and call ``fairseq-preprocess`` as a separate process, so that they stay
quick to start and testable without the model code.

Entry points (each module has ``main(argv=None)`` and runs with ``python -m``):

- ``prepare_parallel``: any plain-text corpus given as train/valid/test prefixes;
- ``prepare_iwslt14``: the IWSLT14 De-En archive (fairseq's recipe, on sentencepiece);
- ``prepare_wmt14``: the WMT14 En-De archives (streams 4.5M pairs);
- ``gettext_corpus``: a German-English corpus from the machine's gettext catalogs.
"""
