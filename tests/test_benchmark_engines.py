"""benchmarks/engines.py on the session's tiny translation model: every engine this
checkout can run, with the model given twice under two names.

No timing assertions: the table has its fields, every engine that cannot run here is
named with its reason, the BLEU of the same engine on the same model is the same number
under both names, and the sentences (test split and joined long ones) are what they claim.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import sentencepiece

from served_model import served_model

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "engines.py"
sys.path.insert(0, str(REPO))

from benchmarks import engines  # noqa: E402

HEADER = ["model", "engine", "set", "sent/s", "x fairseq", "end-to-end sent/s", "BLEU", "same as fairseq",
          "peak RSS MB", "files MB", "start-up s"]
LIMIT = 12


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return served_model(tmp_path_factory)


@pytest.fixture(scope="module")
def run(model, tmp_path_factory):
    """(stdout, results) of one round on the test set (the long one is checked without
    translating it) with the same checkpoint as models ``a`` and ``b``."""
    tmp = tmp_path_factory.mktemp("engines")
    out = tmp / "engines.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(model["data"]),
                           "--model", f"a={model['checkpoint']}", "--model", f"b={model['checkpoint']}",
                           "--rounds", "1", "--threads", "1", "--limit", str(LIMIT), "--sets", "test",
                           "--batch-size", "5", "--workdir", str(tmp / "work"), "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout, json.loads(out.read_text())


def test_the_table_has_a_row_per_model_engine_and_set(run):
    stdout, results = run
    table = [line for line in stdout.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    assert cells[0] == HEADER
    setup = results["setup"]
    ran, skipped = list(setup["engines"]), setup["skipped"]
    assert engines.BASELINE in ran and set(ran) | set(skipped) == set(engines.ENGINES)
    assert not set(ran) & set(skipped)
    for name, why in skipped.items():
        assert why and f"Skipped {name}: {why}." in stdout
    expected = [(m, e, "test") for e in ran for m in ("a", "b")]
    assert [(r["model"], r["engine"], r["set"]) for r in results["rows"]] == expected
    assert [tuple(row[:3]) for row in cells[2:]] == [(m, e, f"{s} ({setup['sets'][s]})") for m, e, s in expected]
    assert setup["sets"] == {"test": LIMIT}
    machine = setup["machine"]
    assert machine["cpu_model"] and machine["threads"] == 1 and machine["commit"] and machine["date"]
    assert f"commit {machine['commit']}" in stdout
    for r in results["rows"]:
        assert 0 <= r["bleu"] <= 100 and r["same_every_round"]
        assert r["peak_rss_mb"]["median"] > 0 and r["startup_s"]["median"] > 0 and r["files_mb"] > 0
        assert r["end_to_end_sentences_per_s"]["median"] > 0
        if r["engine"] == engines.BASELINE:
            assert r["same_as_baseline"] == 1.0 and r["x_baseline"] is None


def test_the_same_engine_on_the_same_model_scores_the_same(run):
    rows = {(r["model"], r["engine"], r["set"]): r for r in run[1]["rows"]}
    for (model, engine, kind), r in rows.items():
        if model == "a":
            twin = rows[("b", engine, kind)]
            assert (twin["bleu"], twin["hypotheses_sha1"], twin["files_mb"]) == (
                r["bleu"], r["hypotheses_sha1"], r["files_mb"]), (engine, kind)


def test_fairseq_generate_reads_the_checkpoint_and_dictionaries_and_translates(run, model):
    results = run[1]
    row = next(r for r in results["rows"] if r["engine"] == engines.BASELINE and r["set"] == "test")
    data = model["data"]
    needed = [model["checkpoint"], data / "dict.de.txt", data / "dict.en.txt"]
    assert row["files"] == [str(f) for f in needed]
    assert row["files_mb"] == pytest.approx(sum(f.stat().st_size for f in needed) / 2**20)
    assert row["bleu"] > 50  # the model reverses sentences; a broken reading of its output scores near 0


def test_the_long_set_joins_test_sentences(model, tmp_path):
    opts = engines.parse_options(["--data", str(model["data"]), "--model", f"a={model['checkpoint']}",
                                  "--limit", "7", "--join", "3"])
    opts.src, opts.tgt = engines.languages(opts.data)
    sets, first = engines.sentence_sets(opts, tmp_path)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model["data"] / "spm.model"))
    test, long = sets["test"], sets["long"]
    assert [len(test.sources), len(long.sources), len(first.sources)] == [7, 3, 1]
    assert long.sources[0] == " ".join(test.sources[:3]) and long.sources[2] == test.sources[6]
    assert long.references[1] == " ".join(test.references[3:6])
    assert first.sources == test.sources[:1]
    # the text the translators read is the data-bin's subwords decoded
    src_pieces, _ = engines.read_split(model["data"], "de", "en")
    assert test.sources[4] == sp.decode(src_pieces[4].split())
    assert long.source_file.read_text().splitlines() == long.sources


def test_fairseq_generate_output_is_read_in_sentence_order():
    lines = ["S-1\tw1 w2", "H-1\t-0.5\tw2 w1", "D-1\t-0.5\tw2 w1", "S-0\tw3", "H-0\t-0.1\t", "P-0\t-0.1"]
    hyps, first = engines.hypotheses(engines.ENGINES[engines.BASELINE], lines, 2)
    assert hyps == ["", "w2 w1"] and first == 1
    assert engines.bleu(["w2 w1 w3 w4"], ["w2 w1 w3 w4"]) == pytest.approx(100)
    assert engines.bleu(["a b"], ["c d"]) == sacrebleu.corpus_bleu(["a b"], [["c d"]]).score


def test_bad_model_argument_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        engines.parse_options(["--data", str(tmp_path), "--model", "no-equals-sign"])
    assert exit_info.value.code == 2 and "NAME=CHECKPOINT" in capsys.readouterr().err
