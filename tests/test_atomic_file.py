"""Output files appear whole or not at all (fairseq_g2lstm.atomic_file)."""
import os
import stat

import pytest

from fairseq_g2lstm.atomic_file import atomic_file, write_text_atomic


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".partial"))


def test_the_text_arrives_whole_with_the_permissions_open_would_give(tmp_path):
    target = tmp_path / "new" / "report.json"  # the missing folder is created
    write_text_atomic(target, "{\"bleu\": 1.0}\n")
    assert target.read_text(encoding="utf-8") == "{\"bleu\": 1.0}\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert leftovers(target.parent) == []


def test_a_failure_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "figure.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_file(target, "wb") as stream:
            stream.write(b"half of a new")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_text_mode_is_utf8_whatever_the_locale(tmp_path, monkeypatch):
    monkeypatch.setenv("LC_ALL", "C")
    target = write_text_atomic(tmp_path / "t.md", "Übersetzung → translation\n")
    assert target.read_bytes() == "Übersetzung → translation\n".encode("utf-8")


def test_only_write_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="mode must be"):
        with atomic_file(tmp_path / "x", "a"):
            pass
