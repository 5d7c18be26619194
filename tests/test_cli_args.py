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


def test_flag_types_accept_their_range_and_name_the_rule_otherwise():
    import argparse

    import pytest

    from fairseq_g2lstm import cli_args

    cases = [
        (cli_args.positive_int, "3", 3, ["0", "-1", "x"]),
        (cli_args.non_negative_int, "0", 0, ["-1", "1.5"]),
        (cli_args.share, "1", 1.0, ["0", "1.01", "nan"]),
        (cli_args.split_fraction, "0", 0.0, ["1", "-0.1", "inf"]),
        (cli_args.ratio_or_zero, "0", 0.0, ["0.5", "-1"]),
    ]
    for kind, good, value, bad in cases:
        assert kind(good) == value
        for text in bad:
            with pytest.raises(argparse.ArgumentTypeError):
                kind(text)
    assert cli_args.ratio_or_zero("1.5") == 1.5


def test_output_paths_are_checked_before_the_work(tmp_path):
    from fairseq_g2lstm.cli_args import output_dir_problem, output_file_problem

    (tmp_path / "file").write_text("x")
    assert output_file_problem(tmp_path / "new" / "deeper" / "a.json", "--json") is None
    assert output_file_problem(tmp_path, "--json") == f"--json {tmp_path} is a folder; give a file name"
    assert output_file_problem(tmp_path / "file" / "a.json", "--json") == (
        f"--json {tmp_path / 'file' / 'a.json'}: {tmp_path / 'file'} is a file, not a folder")
    assert output_dir_problem(tmp_path / "new", "--out-dir") is None
    assert output_dir_problem(tmp_path / "file", "--out-dir") == f"--out-dir {tmp_path / 'file'} is a file, not a folder"
