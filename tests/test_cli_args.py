"""The logging set-up that the plugin's tools share (fairseq_g2lstm/cli_args.py)."""
import io
import logging

import fairseq  # noqa: F401  (its import sets the root logger to DEBUG: the case configure_logging mends)

from fairseq_g2lstm.cli_args import configure_logging


def test_configure_logging_replaces_a_debug_root_logger_with_fairseqs_format_at_loglevel(monkeypatch):
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        root.setLevel(logging.DEBUG)
        monkeypatch.delenv("LOGLEVEL", raising=False)
        out = io.StringIO()
        configure_logging(out)
        logging.getLogger("matplotlib.font_manager").debug("findfont: scoring fonts")
        logging.getLogger("fairseq_g2lstm.test").info("kept")
        assert "findfont" not in out.getvalue()
        assert " | INFO | fairseq_g2lstm.test | kept" in out.getvalue()

        monkeypatch.setenv("LOGLEVEL", "warning")
        configure_logging(out)
        logging.getLogger("fairseq_g2lstm.test").info("dropped")
        assert "dropped" not in out.getvalue()
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
