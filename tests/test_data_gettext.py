"""The gettext demo corpus: .mo parsing, message cleaning, deterministic splits, fallback.

Catalogs are written by the tests in the binary .mo format, so nothing depends on what
happens to be installed."""
import json
import os
import struct
from collections import Counter
from pathlib import Path

import pytest

from fairseq_g2lstm.data import gettext_corpus, synthetic_corpus
from fairseq_g2lstm.data.errors import PrepareError
from fairseq_g2lstm.data.mo_catalog import CatalogFormatError, read_catalog


def write_mo(path: Path, messages, charset="UTF-8"):
    """Write a .mo catalog. ``messages``: (msgid, msgstr) with ``\\0``-joined plural forms
    and ``\\x04``-prefixed contexts, as gettext stores them. The header is added."""
    entries = sorted([("", f"Content-Type: text/plain; charset={charset}\n"), *messages])
    encoded = [(k.encode(charset), v.encode(charset)) for k, v in entries]
    count = len(encoded)
    tables_end = 28 + 16 * count
    offset, ids, strs, blob = tables_end, [], [], b""
    for key, _ in encoded:
        ids.append((len(key), offset + len(blob)))
        blob += key + b"\0"
    for _, value in encoded:
        strs.append((len(value), offset + len(blob)))
        blob += value + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, count, 28, 28 + 8 * count, 0, 0)
    table = b"".join(struct.pack("<2I", *item) for item in ids + strs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + table + blob)


MESSAGES_A = [
    ("Open the file", "Die Datei öffnen"),
    ("_Properties", "_Eigenschaften"),
    ("menu\x04Quit", "Beenden"),
    ("%d file deleted\0%d files deleted", "%d Datei gelöscht\0%d Dateien gelöscht"),
    ("%s: %s", "%s: %s"),
    ("Close", ""),
    ("OK", "OK"),
    ("Line one\n   and   line two\n", "Zeile eins\nund Zeile zwei\n"),
    ("word " * 60, "Wort " * 60),
]
MESSAGES_B = [("Open the file", "Die Datei öffnen"), ("Street", "Strasse")]


@pytest.fixture
def locale_dir(tmp_path):
    root = tmp_path / "locale"
    write_mo(root / "de" / "LC_MESSAGES" / "a.mo", MESSAGES_A)
    write_mo(root / "de_CH" / "LC_MESSAGES" / "b.mo", MESSAGES_B, charset="ISO-8859-1")
    write_mo(root / "fr" / "LC_MESSAGES" / "a.mo", [("Open the file", "Ouvrir le fichier")])
    return root


def test_read_catalog_splits_plurals_drops_contexts_and_header(locale_dir):
    entries = list(read_catalog(locale_dir / "de" / "LC_MESSAGES" / "a.mo"))
    assert len(entries) == len(MESSAGES_A)  # the header entry is skipped
    by_id = {entry.msgids[0]: entry for entry in entries}
    assert by_id["Quit"].msgstrs == ["Beenden"]
    assert by_id["%d file deleted"].msgids == ["%d file deleted", "%d files deleted"]
    assert by_id["%d file deleted"].msgstrs == ["%d Datei gelöscht", "%d Dateien gelöscht"]


def test_read_catalog_decodes_the_declared_charset(locale_dir):
    entries = list(read_catalog(locale_dir / "de_CH" / "LC_MESSAGES" / "b.mo"))
    assert [(e.msgids[0], e.msgstrs[0]) for e in entries] == sorted(MESSAGES_B)


def test_read_catalog_rejects_other_files(tmp_path):
    bogus = tmp_path / "bogus.mo"
    bogus.write_bytes(b"not a catalog at all, but long enough")
    with pytest.raises(CatalogFormatError):
        list(read_catalog(bogus))


@pytest.mark.parametrize(
    "english, german, expected",
    [
        ("_Open", "_Öffnen", ("Open", "Öffnen")),
        ("Pro_perties", "_Eigenschaften", ("Properties", "Eigenschaften")),
        ("&File", "&Datei", ("File", "Datei")),
        ("database pg_database", "Datenbank pg_database", ("database pg_database", "Datenbank pg_database")),
        ("column_type", "Spaltentyp", ("column_type", "Spaltentyp")),
        ("max_wal_senders is _set", "max_wal_senders ist _gesetzt",
         ("max_wal_senders is _set", "max_wal_senders ist _gesetzt")),
        ("AT&T syntax", "AT&T-Syntax", ("AT&T syntax", "AT&T-Syntax")),
        ("the &lt; key", "die &lt;-Taste", ("the &lt; key", "die &lt;-Taste")),
    ],
)  # fmt: skip
def test_strip_accelerators_removes_mnemonics_but_not_identifiers(english, german, expected):
    assert gettext_corpus.strip_accelerators(english, german) == expected


@pytest.mark.parametrize(
    "text, dominated",
    [("%s: %s", True), ("invalid device %s %s", True), ("deleting secret %s failed: %s", False),
     ("%(name)s {0}", True), ("%1$s of %2$s", True), ("materialized view %s", False), ("100%% done", False)],
)  # fmt: skip
def test_placeholders_dominate(text, dominated):
    assert gettext_corpus.placeholders_dominate(text) is dominated


@pytest.mark.parametrize(
    "english, german, reason",
    [("Close", "", "untranslated"), ("_OK", "_OK", "identical"), ("%s: %s", "%s: %s", "placeholders"),
     ("word " * 51, "Wort " * 51, "too_long"), ("Bad", "B\ufffdse", "undecodable"), (" \n", "Leer", "empty")],
)  # fmt: skip
def test_clean_message_drops_with_a_reason(english, german, reason):
    dropped = Counter()
    assert gettext_corpus.clean_message(english, german, dropped) is None
    assert dropped == {reason: 1}


def test_clean_message_collapses_whitespace_and_decodes_entities():
    pair = gettext_corpus.clean_message("Line one\n   and &lt;two&gt;\n", "Zeile eins\nund &lt;zwei&gt;", Counter())
    assert pair == ("Zeile eins und <zwei>", "Line one and <two>")


def test_build_corpus_counts_dedups_and_writes_aligned_splits(locale_dir, tmp_path):
    out = tmp_path / "corpus"
    manifest = gettext_corpus.build_corpus(locale_dir, out, valid_fraction=0.2, test_fraction=0.2)
    assert manifest["source"] == "gettext"
    assert manifest["catalogs"] == 2  # de and de_CH, not fr
    # 9 + 2 entries, the plural one giving two message pairs
    assert manifest["message_pairs"] == 12
    assert manifest["dropped"] == {"duplicate": 1, "identical": 1, "placeholders": 1, "too_long": 1,
                                   "untranslated": 1}  # fmt: skip
    lines = {name: (out / name).read_text(encoding="utf-8").splitlines()
             for name in (f"{s}.{l}" for s in gettext_corpus.SPLITS for l in ("de", "en"))}  # fmt: skip
    pairs = {pair for split in gettext_corpus.SPLITS for pair in zip(lines[f"{split}.de"], lines[f"{split}.en"])}
    assert pairs == {
        ("Die Datei öffnen", "Open the file"),
        ("Eigenschaften", "Properties"),
        ("Beenden", "Quit"),
        ("%d Datei gelöscht", "%d file deleted"),
        ("%d Dateien gelöscht", "%d files deleted"),
        ("Zeile eins und Zeile zwei", "Line one and line two"),
        ("Strasse", "Street"),
    }
    assert manifest["kept"] == len(pairs) == sum(manifest["splits"].values())
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_build_corpus_is_deterministic(locale_dir, tmp_path):
    for name in ("first", "second"):
        gettext_corpus.build_corpus(locale_dir, tmp_path / name)
    for path in (tmp_path / "first").iterdir():
        assert path.read_bytes() == (tmp_path / "second" / path.name).read_bytes()


def test_split_keeps_one_english_message_in_one_split():
    pairs = [(f"Deutsch {i} {variant}", f"English {i}") for i in range(300) for variant in "ab"]
    splits = gettext_corpus.split_pairs(pairs, valid_fraction=0.1, test_fraction=0.1)
    english_by_split = {split: {english for _, english in pairs} for split, pairs in splits.items()}
    assert not english_by_split["train"] & english_by_split["test"]
    assert not english_by_split["train"] & english_by_split["valid"]
    assert 15 < len(english_by_split["test"]) < 60  # about 10% of 300
    assert splits == gettext_corpus.split_pairs(list(reversed(pairs)), 0.1, 0.1)


def test_no_catalogs_falls_back_to_a_synthetic_corpus_loudly(tmp_path, capsys):
    manifest = gettext_corpus.build_corpus(tmp_path / "empty-locale", tmp_path / "corpus")
    assert manifest["source"] == "synthetic"
    assert "SYNTHETIC" in capsys.readouterr().err
    train = (tmp_path / "corpus" / "train.de").read_text(encoding="utf-8").splitlines()
    assert len(train) == manifest["splits"]["train"] > 10000


def test_synthetic_corpus_is_seeded_and_puts_german_subordinate_verbs_last():
    first = list(synthetic_corpus.generate_pairs(500, seed=3))
    assert first == list(synthetic_corpus.generate_pairs(500, seed=3))
    assert first != list(synthetic_corpus.generate_pairs(500, seed=4))
    german_verbs = {german for german, _ in synthetic_corpus.VERBS}
    subordinate = [german for german, _ in first if ", weil " in german]
    assert subordinate
    assert all(german.rstrip(".").split()[-1] in german_verbs for german in subordinate)


def test_main_refuses_to_overwrite_without_force(locale_dir, tmp_path, capsys):
    out = tmp_path / "corpus"
    assert gettext_corpus.main(["--out", str(out), "--locale-dir", str(locale_dir)]) == 0
    assert gettext_corpus.main(["--out", str(out), "--locale-dir", str(locale_dir)]) != 0
    assert capsys.readouterr().err.strip() == f"g2lstm-build-gettext-corpus: error: {out} already exists; pass --force to replace it"
    assert gettext_corpus.main(["--out", str(out), "--locale-dir", str(locale_dir), "--force"]) == 0


@pytest.mark.parametrize("flags, message", [
    (["--locale-dir", "nope"], "--locale-dir nope: no such folder"),
    (["--valid-fraction", "2"], "argument --valid-fraction: must be at least 0 and below 1; got 2"),
    (["--test-fraction=-0.1"], "argument --test-fraction: must be at least 0 and below 1; got -0.1"),
    (["--valid-fraction", "0.6", "--test-fraction", "0.5"], "leave nothing for the train split"),
])
def test_bad_flags_are_one_error_line_and_write_nothing(tmp_path, capsys, monkeypatch, flags, message):
    """A locale folder the user names must exist: the synthetic fallback is for the
    default folder only, or a typo would quietly give a made-up corpus."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        gettext_corpus.main(["--out", str(tmp_path / "corpus"), *flags])
    errors = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2 and len(errors) == 1, errors
    assert errors[0].startswith("g2lstm-build-gettext-corpus: error: ") and message in errors[0], errors
    assert os.listdir(tmp_path) == []


def test_a_named_locale_folder_without_catalogs_is_an_error_not_a_synthetic_corpus(tmp_path, capsys):
    (tmp_path / "locale").mkdir()
    assert gettext_corpus.main(["--out", str(tmp_path / "corpus"), "--locale-dir", str(tmp_path / "locale")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"g2lstm-build-gettext-corpus: error: {tmp_path / 'locale'}: no German gettext catalogs "
        "(de*/LC_MESSAGES/*.mo) with usable messages"]
    assert sorted(os.listdir(tmp_path)) == ["locale"]


def test_an_empty_train_split_is_an_error(locale_dir, tmp_path):
    with pytest.raises(PrepareError, match="the train split is empty"):
        gettext_corpus.build_corpus(locale_dir, tmp_path / "corpus", valid_fraction=0.5, test_fraction=0.4999999)
    assert not (tmp_path / "corpus").exists()
