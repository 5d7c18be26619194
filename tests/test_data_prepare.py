"""prepare_parallel, prepare_iwslt14 and prepare_wmt14 on tiny fixtures in the official
formats (an in-memory de-en.tgz with tag and XML files, WMT-style SGML and archives).

The slow part is fairseq-preprocess, so each front end runs end to end once, in a
module-scoped fixture, and the checks read its data-bin and manifest."""
import io
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import sentencepiece

from fairseq_g2lstm.data import archives, prepare_iwslt14, prepare_parallel, prepare_wmt14, sentencepiece_bpe
from fairseq_g2lstm.data.download import download
from fairseq_g2lstm.data.errors import PrepareError
from fairseq_g2lstm.data.filters import NO_LENGTH_FILTER, LengthFilter, clean_pair
from fairseq_g2lstm.data.segments import read_segments
from fairseq_g2lstm.data.synthetic_corpus import generate_pairs
from fairseq_g2lstm.data.textio import PairWriter

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY_VOCAB = "300"


def run_main(main, args, capsys):
    """(exit status, stdout, stderr) of an in-process ``main``."""
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def write_lines(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def manifest_of(destdir: Path) -> dict:
    return json.loads((destdir / "manifest.json").read_text(encoding="utf-8"))


def dictionary_symbols(destdir: Path, lang: str):
    return [line.split(" ")[0] for line in (destdir / f"dict.{lang}.txt").read_text(encoding="utf-8").splitlines()]


def expected_subword_drops(destdir: Path, pairs, lowercase, length_filter, max_subwords) -> int:
    """Pairs that pass the word filters but have more pieces than ``max_subwords``."""
    model = sentencepiece.SentencePieceProcessor(model_file=str(destdir / "spm.model"))
    cleaned = [clean_pair(s, t, lowercase, length_filter, Counter()) for s, t in pairs]
    return sum(
        1 for pair in cleaned
        if pair and max(len(model.encode(side, out_type=str)) for side in pair) > max_subwords
    )  # fmt: skip


def assert_counts_add_up(manifest: dict):
    for split, counts in manifest["splits"].items():
        assert counts["read"] == counts["kept"] + sum(counts["dropped"].values()), split


# --------------------------------------------------------------------------- IWSLT14


TALKS = 20
SENTENCES_PER_TALK = 23
METADATA_TAGS = ("url", "keywords", "talkid")


def iwslt_fixture():
    """The archive's files as {name: text}, and the pairs the recipe should keep, in order."""
    sentences = iter(generate_pairs(TALKS * SENTENCES_PER_TALK, seed=7))
    de, en, kept = [], [], []
    for talk in range(TALKS):
        for tag in METADATA_TAGS:
            de.append(f"<{tag}>{tag} {talk}</{tag}>")
            en.append(f"<{tag}>{tag} {talk}</{tag}>")
        for tag, german, english in (("title", f"Vortrag {talk}", f"Talk {talk}"),
                                     ("description", f"Über Dinge {talk}", f"About things {talk}")):
            de.append(f"<{tag}>{german}</{tag}>")
            en.append(f"<{tag}>{english}</{tag}>")
            kept.append((german, english))
        for german, english in (next(sentences) for _ in range(SENTENCES_PER_TALK)):
            de.append(german)
            en.append(english)
            kept.append((german, english))
    # one pair for each training filter of the recipe: empty, too long, bad ratio
    de += ["  ", "lang " * 180, "kurz"]
    en += ["", "long " * 180, "this one is much much longer"]
    files = {"train.tags.de-en.de": "\n".join(de) + "\n", "train.tags.de-en.en": "\n".join(en) + "\n"}
    test_pairs = []
    for number, test_set in enumerate(prepare_iwslt14.TEST_SETS):
        pairs = list(generate_pairs(4 + number, seed=100 + number))
        pairs[0] = ("Es ist ein ’Test’ &amp; mehr.", "It’s a test &amp; more.")
        for lang, side in (("de", 0), ("en", 1)):
            segs = "".join(f'<seg id="{i}"> {pair[side]} </seg>\n' for i, pair in enumerate(pairs, 1))
            files[f"{test_set}.{lang}.xml"] = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<srcset setid="x" srclang="german">\n'
                f'<doc docid="1" genre="lectures">\n<url>http://x</url>\n<talkid>1</talkid>\n'
                f"<title>A title</title>\n{segs}</doc>\n</srcset>\n</mteval>\n"
            )
        test_pairs += [(de.replace("’", "'").replace("&amp;", "&"), en.replace("’", "'").replace("&amp;", "&"))
                       for de, en in pairs]  # fmt: skip
    return files, kept, test_pairs


def write_tgz(path: Path, files: dict, folder: str) -> Path:
    """A gzipped tar, built in memory, with ``files`` under ``folder/``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{folder}/{name}" if folder else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def iwslt(tmp_path_factory):
    """The fixture archive and the data-bin prepare_iwslt14 made of it."""
    root = tmp_path_factory.mktemp("iwslt")
    files, kept, test_pairs = iwslt_fixture()
    archive = write_tgz(root / "de-en.tgz", files, "de-en")
    destdir = root / "data-bin"
    status = prepare_iwslt14.main([str(archive), "--destdir", str(destdir), "--vocab-size", TINY_VOCAB,
                                   "--max-subwords", "64", "--workers", "2"])  # fmt: skip
    assert status == 0
    return {"archive": archive, "destdir": destdir, "kept": kept, "test": test_pairs, "root": root}


def test_iwslt14_extraction_follows_the_recipe(iwslt, tmp_path):
    files = archives.locate_files(iwslt["archive"], prepare_iwslt14.required_files(), tmp_path)
    sources, report = prepare_iwslt14.extract_splits(files, tmp_path, LengthFilter(175, 1.5))

    def read(split):
        (source, target), = sources[split]
        return list(zip(source.read_text(encoding="utf-8").splitlines(),
                        target.read_text(encoding="utf-8").splitlines()))  # fmt: skip

    kept = iwslt["kept"]
    assert read("valid") == kept[22::23]  # every 23rd pair, counted after cleaning
    assert read("train") == [pair for number, pair in enumerate(kept, 1) if number % 23]
    assert read("test") == iwslt["test"]
    assert ("Vortrag 3", "Talk 3") in read("train") + read("valid")  # title kept, tags stripped
    assert report["dropped"] == {"metadata": 3 * TALKS, "empty": 1, "over_max_len": 1, "over_max_ratio": 1}
    assert (report["train"], report["valid"], report["test"]) == (len(kept) - len(kept) // 23, len(kept) // 23,
                                                                   len(iwslt["test"]))  # fmt: skip


def test_iwslt14_manifest_counts_and_lowercased_data_bin(iwslt):
    destdir, kept = iwslt["destdir"], iwslt["kept"]
    manifest = manifest_of(destdir)
    assert_counts_add_up(manifest)
    splits = manifest["splits"]
    assert splits["valid"] == {"read": len(kept) // 23, "kept": len(kept) // 23, "dropped": {}}
    assert splits["test"] == {"read": len(iwslt["test"]), "kept": len(iwslt["test"]), "dropped": {}}
    assert splits["train"]["read"] == len(kept) - len(kept) // 23
    assert manifest["extraction"]["dropped"]["metadata"] == 3 * TALKS
    assert manifest["lowercase"] is True and manifest["train_filters"]["max_subwords"] == 64
    assert manifest["spm_vocab_size"] <= int(TINY_VOCAB) and manifest["dictionary_size"] > 50
    assert manifest["command"].startswith("g2lstm-prepare-iwslt14 ")
    symbols = dictionary_symbols(destdir, "de")
    assert symbols == dictionary_symbols(destdir, "en")  # one joined dictionary
    assert any("\u2581" in symbol for symbol in symbols)  # sentencepiece word-start marks
    assert not any(symbol.lower() != symbol for symbol in symbols)
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            assert (destdir / f"{split}.de-en.{lang}.bin").stat().st_size > 0
    assert (destdir / "spm.model").is_file()
    assert not [path for path in iwslt["root"].iterdir() if path.name.startswith(".")]  # nothing left over


def test_fairseq_train_runs_one_update_on_the_prepared_data(iwslt, tmp_path):
    command = [
        str(BIN / "fairseq-train"), str(iwslt["destdir"]), "--user-dir", str(REPO / "fairseq_g2lstm"),
        "--arch", "g2lstm_iwslt", "--encoder-embed-dim", "16", "--encoder-hidden-size", "16",
        "--decoder-embed-dim", "16", "--decoder-hidden-size", "16", "--decoder-out-embed-dim", "16",
        "--max-update", "1", "--max-tokens", "500", "--optimizer", "adam", "--lr", "1e-3", "--cpu",
        "--save-dir", str(tmp_path), "--no-save", "--no-epoch-checkpoints", "--log-format", "simple",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "num_updates 1 " in result.stdout + result.stderr


# --------------------------------------------------------------------------- prepare_parallel


@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    """A plain-text corpus with one pair for each filter, and its data-bin."""
    root = tmp_path_factory.mktemp("parallel")
    train = list(generate_pairs(400, seed=1)) + [
        (" ", "Nothing on the left."), ("\t", "  "),  # empty / whitespace-only
        ("Wort " * 31, "word " * 31),  # over --max-len 30
        ("Ja.", "Yes, of course, that is entirely right."),  # ratio 7 > 2
        ("Ein sehr sehr sehr langer Satz mit vielen vielen seltenen Wörtern " * 2,
         "A very very very long sentence with many many rare words " * 2),  # fits 30 words
    ]  # fmt: skip
    valid = list(generate_pairs(30, seed=2)) + [("Wort " * 40, "word " * 40), ("", "")]
    test = list(generate_pairs(20, seed=3))
    for split, pairs in (("train", train), ("valid", valid), ("test", test)):
        write_lines(root / f"{split}.de", [de for de, _ in pairs])
        write_lines(root / f"{split}.en", [en for _, en in pairs])
    destdir = root / "data-bin"
    args = ["-s", "de", "-t", "en", "--trainpref", root / "train", "--validpref", root / "valid",
            "--testpref", root / "test", "--destdir", destdir, "--vocab-size", TINY_VOCAB, "--lowercase",
            "--max-len", "30", "--max-ratio", "2", "--max-subwords", "40", "--workers", "1"]  # fmt: skip
    assert prepare_parallel.main([str(arg) for arg in args]) == 0
    return {"destdir": destdir, "train": train, "valid": valid, "test": test}


def test_prepare_parallel_filters_train_only_and_counts_each_reason(parallel):
    destdir = parallel["destdir"]
    manifest = manifest_of(destdir)
    assert_counts_add_up(manifest)
    subword_drops = expected_subword_drops(destdir, parallel["train"], True, LengthFilter(30, 2.0), 40)
    assert subword_drops >= 1  # at least the long sentence of rare words
    assert manifest["splits"]["train"]["dropped"] == {
        "empty": 2, "over_max_len": 1, "over_max_ratio": 1, "over_max_subwords": subword_drops,
    }  # fmt: skip
    # valid keeps its 40-word pair (filters are for training only) but loses the empty one
    assert manifest["splits"]["valid"] == {"read": 32, "kept": 31, "dropped": {"empty": 1}}
    assert manifest["splits"]["test"] == {"read": 20, "kept": 20, "dropped": {}}
    assert manifest["train_filters"] == {"max_len_words": 30, "max_ratio": 2.0, "max_subwords": 40}


def test_prepare_parallel_lowercases_and_prints_the_next_commands(parallel, capsys):
    symbols = dictionary_symbols(parallel["destdir"], "en")
    assert "▁the" in symbols and not any(symbol.lower() != symbol for symbol in symbols)
    manifest = manifest_of(parallel["destdir"])
    assert manifest["spm_model"] == str(parallel["destdir"].resolve() / "spm.model")
    commands = prepare_parallel.next_commands(parallel["destdir"], parallel["destdir"] / "spm.model",
                                              "de", "en", prepare_parallel.PAPER_IWSLT14, lowercase=True)  # fmt: skip
    assert "fairseq-train" in commands and "--arch g2lstm_iwslt" in commands
    assert "--beam 5" in commands and "--remove-bpe sentencepiece" in commands
    assert "--bpe sentencepiece --sentencepiece-model" in commands


# --------------------------------------------------------------------------- WMT14


def sgml(pairs, side: int, setid: str) -> str:
    segs = "".join(f'<seg id="{i}">{pair[side]}</seg>\n' for i, pair in enumerate(pairs, 1))
    return (f'<srcset setid="{setid}" srclang="any">\n<doc sysid="ref" docid="1" origlang="en">\n'
            f"{segs}</doc>\n</srcset>\n")


def write_wmt_orig(orig: Path):
    """A WMT14 folder in the official layout, mixing unpacked files and archives; returns
    (the training corpora {stem: [(de, en)]}, valid pairs, test pairs)."""
    corpora = {
        "training/europarl-v7.de-en": list(generate_pairs(150, seed=11)),
        "commoncrawl.de-en": list(generate_pairs(150, seed=12))
        + [("Wort " * 100, "word " * 100), ("Ja.", "Yes, of course, that is entirely right.")],
        "training/news-commentary-v9.de-en": list(generate_pairs(100, seed=13)),
    }
    for stem, pairs in list(corpora.items())[:2]:  # unpacked
        write_lines(orig / f"{stem}.de", [de for de, _ in pairs])
        write_lines(orig / f"{stem}.en", [en for _, en in pairs])
    stem, pairs = list(corpora.items())[2]
    write_tgz(orig / "training-parallel-nc-v9.tgz",
              {f"{stem}.de": "".join(de + "\n" for de, _ in pairs),
               f"{stem}.en": "".join(en + "\n" for _, en in pairs)}, "")  # fmt: skip
    valid, test = list(generate_pairs(20, seed=14)), list(generate_pairs(25, seed=15))
    write_tgz(orig / "dev.tgz", {"newstest2013-src.en.sgm": sgml(valid, 1, "newstest2013"),
                                 "newstest2013-ref.de.sgm": sgml(valid, 0, "newstest2013"),
                                 "newstest2013.en": "unused\n"}, "dev")  # fmt: skip
    write_lines(orig / "test-full" / "newstest2014-deen-src.en.sgm", [sgml(test, 1, "newstest2014")])
    write_lines(orig / "test-full" / "newstest2014-deen-ref.de.sgm", [sgml(test, 0, "newstest2014")])
    return corpora, valid, test


@pytest.fixture(scope="module")
def wmt(tmp_path_factory):
    """A WMT14 folder mixing unpacked files and archives, and its data-bin (En->De)."""
    root = tmp_path_factory.mktemp("wmt")
    orig = root / "orig"
    corpora, valid, test = write_wmt_orig(orig)
    destdir = root / "data-bin"
    assert prepare_wmt14.main([str(orig), "--destdir", str(destdir), "--vocab-size", TINY_VOCAB, "--workers", "2"]) == 0
    train = [(en, de) for pairs in corpora.values() for de, en in pairs]
    return {"destdir": destdir, "train": train, "valid": valid, "test": test}


def test_wmt14_reads_archives_and_sgml_and_drops_pairs_over_64_subwords(wmt):
    destdir = wmt["destdir"]
    manifest = manifest_of(destdir)
    assert_counts_add_up(manifest)
    assert (manifest["source_lang"], manifest["target_lang"]) == ("en", "de")
    assert manifest["train_filters"] == {"max_len_words": None, "max_ratio": 1.5, "max_subwords": 64}
    subword_drops = expected_subword_drops(destdir, wmt["train"], False, LengthFilter(None, 1.5), 64)
    assert subword_drops >= 1  # the 100-word pair
    assert manifest["splits"]["train"] == {
        "read": 402,
        "kept": 402 - 1 - subword_drops,
        "dropped": {"over_max_ratio": 1, "over_max_subwords": subword_drops},
    }
    assert manifest["splits"]["valid"]["kept"] == 20 and manifest["splits"]["test"]["kept"] == 25
    assert any(symbol.lower() != symbol for symbol in dictionary_symbols(destdir, "de"))  # case kept
    assert "--arch g2lstm_wmt" not in manifest["command"]


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def small_corpus(tmp_path):
    pairs = list(generate_pairs(40, seed=5))
    for split in ("train", "valid", "test"):
        write_lines(tmp_path / f"{split}.de", [de for de, _ in pairs])
        write_lines(tmp_path / f"{split}.en", [en for _, en in pairs])
    return tmp_path


def parallel_args(folder: Path, destdir: Path):
    return ["-s", "de", "-t", "en", "--trainpref", folder / "train", "--validpref", folder / "valid",
            "--testpref", folder / "test", "--destdir", destdir, "--vocab-size", TINY_VOCAB]  # fmt: skip


def assert_one_error_line(status: int, err: str, expected: str):
    assert status != 0
    assert err.splitlines() == [expected]


def assert_nothing_written(folder: Path, destdir: Path):
    assert not destdir.exists()
    assert not [path.name for path in folder.iterdir() if path.name.startswith(".")]


def test_missing_file_is_named(small_corpus, capsys):
    (small_corpus / "valid.en").unlink()
    status, _, err = run_main(prepare_parallel.main, parallel_args(small_corpus, small_corpus / "bin"), capsys)
    assert_one_error_line(status, err, f"g2lstm-prepare-parallel: error: {small_corpus / 'valid.en'}: no such file")


def test_invalid_utf8_names_file_and_line_and_leaves_no_output(small_corpus, capsys):
    lines = (small_corpus / "train.de").read_bytes().splitlines(keepends=True)
    lines[16] = b"Ung\xfcltig latin-1\n"
    (small_corpus / "train.de").write_bytes(b"".join(lines))
    destdir = small_corpus / "bin"
    status, _, err = run_main(prepare_parallel.main, parallel_args(small_corpus, destdir), capsys)
    assert_one_error_line(status, err, f"g2lstm-prepare-parallel: error: {small_corpus / 'train.de'} line 17: invalid UTF-8")
    assert_nothing_written(small_corpus, destdir)


def test_different_line_counts_name_the_longer_file(small_corpus, capsys):
    write_lines(small_corpus / "test.en", (small_corpus / "test.en").read_text().splitlines()[:-1])
    status, _, err = run_main(prepare_parallel.main, parallel_args(small_corpus, small_corpus / "bin"), capsys)
    assert_one_error_line(
        status, err,
        f"g2lstm-prepare-parallel: error: {small_corpus / 'test.de'} line 40: {small_corpus / 'test.en'} has only 39 lines; "
        "source and target must have the same number of lines",
    )  # fmt: skip
    assert_nothing_written(small_corpus, small_corpus / "bin")


def test_existing_output_needs_force(small_corpus, capsys):
    destdir = small_corpus / "bin"
    destdir.mkdir()
    (destdir / "old").write_text("x")
    status, _, err = run_main(prepare_parallel.main, parallel_args(small_corpus, destdir), capsys)
    assert_one_error_line(status, err, f"g2lstm-prepare-parallel: error: {destdir} already exists; pass --force to replace it")
    assert (destdir / "old").exists()


def test_wrong_archive_layout_is_named(tmp_path, capsys):
    files, _, _ = iwslt_fixture()
    del files["IWSLT14.TED.tst2012.de-en.en.xml"]
    archive = write_tgz(tmp_path / "de-en.tgz", files, "de-en")
    status, _, err = run_main(prepare_iwslt14.main, [archive, "--destdir", tmp_path / "bin"], capsys)
    assert status != 0 and len(err.splitlines()) == 1
    assert err.startswith(f"g2lstm-prepare-iwslt14: error: {archive}: missing IWSLT14.TED.tst2012.de-en.en.xml; expected the IWSLT14")
    assert_nothing_written(tmp_path, tmp_path / "bin")


def test_xml_segment_counts_must_match(tmp_path, capsys):
    files, _, _ = iwslt_fixture()
    name = "IWSLT14.TED.tst2011.de-en.en.xml"
    files[name] = "\n".join(line for line in files[name].splitlines() if '<seg id="3">' not in line) + "\n"
    folder = tmp_path / "de-en"
    for file_name, text in files.items():
        write_lines(folder / file_name, text.splitlines())
    status, _, err = run_main(prepare_iwslt14.main, [folder, "--destdir", tmp_path / "bin"], capsys)
    assert status != 0 and len(err.splitlines()) == 1
    assert err.startswith(f"g2lstm-prepare-iwslt14: error: {folder / 'IWSLT14.TED.tst2011.de-en.de.xml'} line 14: ")
    assert f"{folder / name} has only 6 segments" in err  # 7 in tst2011, one removed


def test_command_line_script_reports_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "prepare_wmt14.py"), str(tmp_path / "nowhere"),
         "--destdir", str(tmp_path / "bin")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("g2lstm-prepare-wmt14: error:")] == [
        f"g2lstm-prepare-wmt14: error: {tmp_path / 'nowhere'}: no such file or folder"
    ]


# --------------------------------------------------------------------------- building blocks


def test_read_segments_strips_tags_entities_and_typographic_apostrophes(tmp_path):
    path = write_lines(tmp_path / "x.sgm", ['<doc docid="1">', '<seg id="1"> It’s A &amp; B </seg>', "<p>",
                                            '<seg id="2">two</seg>', "</doc>"])  # fmt: skip
    assert list(read_segments(path)) == [(2, "It's A & B"), (4, "two")]


def test_encoding_in_worker_processes_keeps_order(tmp_path, monkeypatch):
    pairs = list(generate_pairs(300, seed=9))
    with PairWriter(tmp_path / "text", "de", "en") as text:
        for pair in pairs:
            text.write(*pair)
    model = sentencepiece_bpe.train_joint_bpe([text.source_path, text.target_path], tmp_path / "spm",
                                              200, 10000, 1.0, seed=1, threads=1)  # fmt: skip
    monkeypatch.setattr(sentencepiece_bpe, "ENCODE_CHUNK_PAIRS", 7)  # many chunks, a full window
    outputs = []
    for workers in (1, 2):
        with PairWriter(tmp_path / f"bpe{workers}", "de", "en") as writer:
            sentencepiece_bpe.encode_split(model, text.source_path, text.target_path, writer, workers, None, Counter())
        outputs.append(writer.source_path.read_text() + writer.target_path.read_text())
    assert outputs[0] == outputs[1]
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
    first_line = outputs[0].splitlines()[0]
    assert processor.decode(first_line.split()) == pairs[0][0]


def test_sentencepiece_training_is_deterministic(tmp_path):
    text = write_lines(tmp_path / "text", [s for pair in generate_pairs(300, seed=4) for s in pair])
    models = [sentencepiece_bpe.train_joint_bpe([text], tmp_path / name, 150, 200, 1.0, seed=1, threads=2)
              for name in ("a", "b")]  # fmt: skip
    vocabularies = [model.with_suffix(".vocab").read_text(encoding="utf-8") for model in models]
    assert vocabularies[0] == vocabularies[1]  # the .model files differ only in the stored prefix
    assert len(vocabularies[0].splitlines()) > 100


def test_length_filter_rules():
    assert NO_LENGTH_FILTER.reason_to_drop("a " * 500, "b") is None
    assert LengthFilter(max_len=3).reason_to_drop("a b c d", "a") == "over_max_len"
    assert LengthFilter(max_ratio=1.5).reason_to_drop("a b c", "a b") is None
    assert LengthFilter(max_ratio=1.5).reason_to_drop("a b c d", "a b") == "over_max_ratio"


def test_download_copies_a_url_and_explains_a_failure(tmp_path):
    source = write_lines(tmp_path / "archive.tgz", ["payload"])
    fetched = download(source.as_uri(), tmp_path / "fetched" / "archive.tgz")
    assert fetched.read_text() == "payload\n"
    with pytest.raises(PrepareError, match="cannot download .*online"):
        download((tmp_path / "absent.tgz").as_uri(), tmp_path / "never.tgz")
    assert not (tmp_path / "never.tgz").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_a_vocabulary_smaller_than_the_alphabet_is_a_clear_error(small_corpus, capsys):
    args = parallel_args(small_corpus, small_corpus / "bin")
    args[args.index("--vocab-size") + 1] = "20"
    status, _, err = run_main(prepare_parallel.main, args, capsys)
    assert status != 0 and len(err.splitlines()) == 1
    assert err.startswith("g2lstm-prepare-parallel: error: sentencepiece training failed: Vocabulary size is smaller than required_chars")
    assert_nothing_written(small_corpus, small_corpus / "bin")


# --------------------------------------------------------------------------- unknown tokens


def binarized_unk_rate(destdir: Path, split: str, lang: str):
    """(<unk> tokens, tokens) of one binarized split, read back through fairseq."""
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str(destdir / f"dict.{lang}.txt"))
    dataset = data_utils.load_indexed_dataset(str(destdir / f"{split}.de-en.{lang}"), dictionary)
    tokens = torch.cat([dataset[i][:-1] for i in range(len(dataset))])  # without </s>
    return int((tokens == dictionary.unk()).sum()), tokens.numel()


def test_pieces_the_training_text_never_shows_are_still_known(tmp_path, capsys):
    """BPE learns "low" on the way to "lowest"; if the training text only ever has
    "lowest", a dictionary built from the encoded training text lacks "low", and "lower"
    in valid loses a piece to <unk>. The dictionary now holds every sentencepiece piece:
    valid has no <unk>; test's one unseen character (Ω) is counted, in the manifest and in
    the binarized data alike, and a split above 1% is warned about."""
    import random

    rng = random.Random(0)
    words = ["lowest", "newest", "widest", "slowest", "fewest", "and", "the", "very"]
    train = [" ".join(rng.choice(words) for _ in range(6)) for _ in range(300)]
    valid = ["lower newer wider", "the lower and the newer"] * 5
    test = ["the lower Ω", "very newer and wider"] * 5
    for split, lines in (("train", train), ("valid", valid), ("test", test)):
        write_lines(tmp_path / f"{split}.de", lines)
        write_lines(tmp_path / f"{split}.en", lines)
    destdir = tmp_path / "bin"
    args = ["-s", "de", "-t", "en", "--trainpref", tmp_path / "train", "--validpref", tmp_path / "valid",
            "--testpref", tmp_path / "test", "--destdir", destdir, "--vocab-size", "60", "--workers", "1"]
    status, out, err = run_main(prepare_parallel.main, args, capsys)
    assert status == 0, err
    manifest = manifest_of(destdir)
    model = sentencepiece.SentencePieceProcessor(model_file=str(destdir / "spm.model"))
    seen_in_training = {piece for line in train for piece in model.encode(line, out_type=str)}
    only_in_valid = {piece for line in valid for piece in model.encode(line, out_type=str)} - seen_in_training
    assert only_in_valid and all(model.piece_to_id(piece) != model.unk_id() for piece in only_in_valid)
    for split in ("train", "valid", "test"):
        unk, total = (sum(v) for v in zip(*(binarized_unk_rate(destdir, split, lang) for lang in ("de", "en"))))
        assert manifest["unk_rate"][split] == pytest.approx(unk / total, abs=1e-12), split
        assert manifest["tokens"][split]["de"] == {"tokens": total // 2, "unk": unk // 2}
    assert manifest["unk_rate"]["train"] == manifest["unk_rate"]["valid"] == 0
    assert manifest["tokens"]["test"]["de"]["unk"] == 5  # one Ω in each of five lines
    assert f"| unknown tokens (<unk>): train 0.00%, valid 0.00%, test {manifest['unk_rate']['test']:.2%}" in out
    assert [line for line in err.splitlines() if line.startswith("WARNING")] == [
        f"WARNING: {manifest['unk_rate']['test']:.1%} of the test tokens are <unk>: characters the sentencepiece "
        "model never saw in training; check the split's language and encoding, or raise --character-coverage"]


@pytest.mark.parametrize("flag, value, message", [
    ("--vocab-size", "0", "argument --vocab-size: must be at least 1; got 0"),
    ("--character-coverage", "2", "argument --character-coverage: must be above 0 and at most 1; got 2"),
    ("--max-ratio", "-1", "argument --max-ratio: must be at least 1 (or 0 for no limit); got -1"),
    ("--max-len", "-3", "argument --max-len: must be 0 or more; got -3"),
    ("--workers", "0", "argument --workers: must be at least 1; got 0"),
])
def test_bad_numbers_are_one_error_line_naming_the_tool(small_corpus, capsys, flag, value, message):
    args = [str(a) for a in parallel_args(small_corpus, small_corpus / "bin")] + [f"{flag}={value}"]
    with pytest.raises(SystemExit) as stop:
        prepare_parallel.main(args)
    errors = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2 and errors == [f"g2lstm-prepare-parallel: error: {message} (see --help)"]
    assert_nothing_written(small_corpus, small_corpus / "bin")


def test_a_folder_given_as_a_text_file_is_named_as_a_folder(small_corpus, capsys):
    (small_corpus / "valid.de").unlink()
    (small_corpus / "valid.de").mkdir()
    status, _, err = run_main(prepare_parallel.main, parallel_args(small_corpus, small_corpus / "bin"), capsys)
    assert status == 2 and err.splitlines() == [
        f"g2lstm-prepare-parallel: error: {small_corpus / 'valid.de'}: a folder, not a text file"]


@pytest.mark.parametrize("signal_name, said", [("SIGTERM", "SIGTERM"), ("SIGINT", "Ctrl-C")])
def test_an_interruption_stops_the_children_and_removes_the_partial_output(tmp_path, signal_name, said):
    """SIGTERM or Ctrl-C while fairseq-preprocess runs: one line, exit 130, no .partial-*
    folder, and no process of the run left (the child and its workers are in one
    process group, which the tool stops)."""
    import signal
    import time

    pairs = list(generate_pairs(20000, seed=7))  # big enough that fairseq-preprocess takes a few seconds
    for split, chunk in (("train", pairs), ("valid", pairs[:2000]), ("test", pairs[:2000])):
        write_lines(tmp_path / f"{split}.de", [de for de, _ in chunk])
        write_lines(tmp_path / f"{split}.en", [en for _, en in chunk])
    args = [str(a) for a in parallel_args(tmp_path, tmp_path / "bin")] + ["--workers", "2"]
    proc = subprocess.Popen([str(BIN / "g2lstm-prepare-parallel"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for line in proc.stdout:  # wait until the binarizing child has started
        if line.startswith("| fairseq-preprocess:"):
            break
    time.sleep(1.0)
    children = subprocess.run(["pgrep", "-g", str(os.getpgid(proc.pid)), "-f", "fairseq_cli.preprocess"],
                              capture_output=True, text=True).stdout.split()
    session_children = subprocess.run(["pgrep", "-f", f"fairseq_cli.preprocess.*{tmp_path}"],
                                      capture_output=True, text=True).stdout.split()
    assert session_children and not children  # the child runs, in its own process group
    proc.send_signal(getattr(signal, signal_name))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.splitlines()[-1] == f"g2lstm-prepare-parallel: interrupted ({said}); the partial output was removed"
    assert "Traceback" not in err
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", f"fairseq_cli.preprocess.*{tmp_path}"], capture_output=True).returncode == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        f"{split}.{lang}" for split in ("train", "valid", "test") for lang in ("de", "en"))
