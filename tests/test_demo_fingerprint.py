"""The demo's corpus fingerprint: pair counts per split and a short sha256 of the test split,
printed by scripts/demo.sh beside the BLEU so that a score names the corpus it was measured on."""
import hashlib
import subprocess
import sys

from conftest import REPO
from fairseq_g2lstm.data.fingerprint import corpus_fingerprint

SPLITS = {"train": ["a b", "c d", "e f"], "valid": ["g h"], "test": ["datei nicht gefunden", "speichern"]}
TARGETS = {"train": ["A B", "C D", "E F"], "valid": ["G H"], "test": ["file not found", "save"]}


def write_corpus(folder, targets=TARGETS):
    folder.mkdir(exist_ok=True)
    for split, lines in SPLITS.items():
        (folder / f"{split}.de").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        (folder / f"{split}.en").write_text("".join(f"{line}\n" for line in targets[split]), encoding="utf-8")
    return folder


def test_fingerprint_counts_pairs_and_hashes_both_sides_of_the_test_split(tmp_path):
    fingerprint = corpus_fingerprint(write_corpus(tmp_path / "corpus"))
    assert fingerprint.pairs == {"train": 3, "valid": 1, "test": 2}
    both = b"datei nicht gefunden\nspeichern\n" + b"\0" + b"file not found\nsave\n"
    assert fingerprint.test_sha256 == hashlib.sha256(both).hexdigest()[:12]
    assert fingerprint.format() == f"corpus: train 3 / valid 1 / test 2 pairs, test sha256 {fingerprint.test_sha256}"


def test_a_changed_target_or_a_training_pair_changes_the_fingerprint(tmp_path):
    original = corpus_fingerprint(write_corpus(tmp_path / "a"))
    changed = dict(TARGETS, test=["file not found", "save all"])
    assert corpus_fingerprint(write_corpus(tmp_path / "b", changed)).test_sha256 != original.test_sha256
    more = write_corpus(tmp_path / "c")
    with open(more / "train.de", "a", encoding="utf-8") as extra:
        extra.write("x y\n")
    assert corpus_fingerprint(more) == original._replace(pairs={"train": 4, "valid": 1, "test": 2})


def test_the_command_prints_it_and_refuses_a_folder_without_the_splits(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    run = [sys.executable, "-m", "fairseq_g2lstm.data.fingerprint"]
    ok = subprocess.run(run + [str(corpus)], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == corpus_fingerprint(corpus).format() + "\n"
    (corpus / "test.en").unlink()
    bad = subprocess.run(run + [str(corpus)], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing test.en" in bad.stderr


def test_the_demo_prints_the_fingerprint_beside_the_bleu():
    script = (REPO / "scripts" / "demo.sh").read_text(encoding="utf-8")
    assert 'FINGERPRINT=$(python -m fairseq_g2lstm.data.fingerprint "$DEMO_DIR/corpus")' in script
    final = script[script.index('stage "done"'):]
    assert final.index('echo "$BLEU') < final.index('echo "$FINGERPRINT')
