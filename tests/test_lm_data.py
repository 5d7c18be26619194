"""g2lstm-prepare-lm: PTB-format text to a language-modeling data-bin, and one clear error
line for bad input."""
import json
import subprocess
import sys
from collections import Counter

import pytest

from conftest import BIN, REPO
from lm_fixtures import write_ptb_corpus

from fairseq_g2lstm.data.prepare_lm import main

SPECIALS = 4  # <s> <pad> </s> <unk>


def run_main(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def split_args(paths):
    return ["--train", paths["train"], "--valid", paths["valid"], "--test", paths["test"]]


def binarized_lines(destdir, split):
    """The split as fairseq reads it back: one line of words per sentence."""
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str(destdir / "dict.txt"))
    dataset = data_utils.load_indexed_dataset(str(destdir / split), dictionary)
    return [dictionary.string(dataset[i][:-1]) for i in range(len(dataset))], dictionary, dataset


@pytest.fixture(scope="module")
def ptb_bin(tmp_path_factory):
    """The PTB-format fixture, with an empty line and a blank one added to train, prepared
    with --vocab-size 20."""
    folder = tmp_path_factory.mktemp("ptbdata")
    paths = write_ptb_corpus(folder)
    text = paths["train"].read_text().splitlines()
    paths["train"].write_text("\n".join(text[:5] + ["", "   "] + text[5:]) + "\n")
    status = main([*map(str, split_args(paths)), "--destdir", str(folder / "bin"), "--vocab-size", "20",
                   "--workers", "1"])
    assert status == 0
    return folder, paths


def test_the_data_bin_reads_back_as_the_text_with_rare_words_as_unk(ptb_bin):
    folder, paths = ptb_bin
    destdir = folder / "bin"
    for split in ("train", "valid", "test"):
        assert (destdir / f"{split}.bin").is_file() and (destdir / f"{split}.idx").is_file()
    words = Counter(w for line in paths["train"].read_text().split("\n") for w in line.split())
    lines, dictionary, dataset = binarized_lines(destdir, "test")
    real_words = [w for w in dictionary.symbols[SPECIALS:] if not w.startswith("madeupword")]
    kept = {w for w, _ in words.most_common()} - {"<unk>"}
    assert len(real_words) == 20 and set(real_words) <= kept
    assert min(words[w] for w in real_words) >= max(words[w] for w in kept - set(real_words))  # the most frequent
    expected = [" ".join(w if w in real_words else "<unk>" for w in line.split())
                for line in paths["test"].read_text().splitlines()]
    assert lines == expected
    assert all(dataset[i][-1].item() == dictionary.eos() for i in range(len(dataset)))


def test_manifest_counts_lines_words_and_unknown_words(ptb_bin):
    folder, paths = ptb_bin
    manifest = json.loads((folder / "bin" / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    assert (train["lines_read"], train["lines_kept"], train["dropped"]) == (602, 600, {"empty": 2})
    words = paths["train"].read_text().split()
    dictionary = {line.rsplit(" ", 1)[0] for line in (folder / "bin" / "dict.txt").read_text().splitlines()}
    assert train["words"] == len(words) and train["tokens_with_eos"] == len(words) + 600
    assert train["unknown_words"] == sum(w not in dictionary or w == "<unk>" for w in words)
    assert manifest["requested_vocab_size"] == 20 and manifest["task"] == "language_modeling"
    assert manifest["dictionary_size"] == SPECIALS + len(dictionary) and manifest["dictionary_size"] % 8 == 0
    assert manifest["command"].startswith("g2lstm-prepare-lm --train")


def test_lowercase_and_whitespace(tmp_path, capsys):
    paths = {split: tmp_path / f"{split}.txt" for split in ("train", "valid", "test")}
    paths["train"].write_text("The  Market\tfell\nN shares\n")
    paths["valid"].write_text("the MARKET\n")
    paths["test"].write_text("shares fell\r\n")
    status, out, _ = run_main(capsys, *split_args(paths), "--destdir", tmp_path / "bin", "--lowercase",
                              "--workers", "1")
    assert status == 0 and "fairseq-eval-lm" in out  # the next commands
    assert binarized_lines(tmp_path / "bin", "train")[0] == ["the market fell", "n shares"]
    assert binarized_lines(tmp_path / "bin", "test")[0] == ["shares fell"]


BAD = {
    "missing file": (lambda p: p["valid"].unlink(), "valid.txt: no such file"),
    "invalid UTF-8": (lambda p: p["test"].write_bytes(b"fine line\nbad \xff byte\n"), "test.txt line 2: invalid UTF-8"),
    "empty file": (lambda p: p["train"].write_text(""), "train.txt: the train split is empty"),
    "only empty lines": (lambda p: p["valid"].write_text("\n  \n"), "the valid split has only empty lines (2)"),
    "a folder": (lambda p: (p["test"].unlink(), p["test"].mkdir()), "test.txt: is a folder, not a text file"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_error_line_and_no_data_bin(tmp_path, capsys, case):
    paths = {split: tmp_path / f"{split}.txt" for split in ("train", "valid", "test")}
    for path in paths.values():
        path.write_text("some words here\n")
    breaks, message = BAD[case]
    breaks(paths)
    before = sorted(p.name for p in tmp_path.iterdir())
    status, _, err = run_main(capsys, *split_args(paths), "--destdir", tmp_path / "bin")
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("g2lstm-prepare-lm: error: ") and message in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no data-bin, no leftovers


def test_existing_data_bin_needs_force(ptb_bin, capsys, tmp_path):
    folder, paths = ptb_bin
    status, _, err = run_main(capsys, *split_args(paths), "--destdir", folder / "bin")
    assert status == 2 and "already exists; pass --force" in err
    assert (folder / "bin" / "manifest.json").is_file()


def test_console_script_and_front_end_print_one_line_without_traceback(tmp_path):
    for command in ([str(BIN / "g2lstm-prepare-lm")], [sys.executable, str(REPO / "scripts" / "prepare_lm.py")]):
        proc = subprocess.run([*command, "--train", "nope.txt", "--valid", "v", "--test", "t", "--destdir",
                               str(tmp_path / "bin")], capture_output=True, text=True)
        assert proc.returncode == 2
        assert proc.stderr.strip() == "g2lstm-prepare-lm: error: nope.txt: no such file"
