"""The replication script end to end on the toy corpus: train two arms, evaluate them with
the project's tools, write RESULTS.md and its figures; a second run redoes nothing."""
import json
import subprocess
import sys

from conftest import REPO

TINY = ("--encoder-embed-dim 32 --encoder-hidden-size 32 --decoder-embed-dim 32 --decoder-hidden-size 32 "
        "--decoder-out-embed-dim 32 --max-epoch 2 --max-tokens 800")


def replicate(toy_data, tmp_path, *extra):
    command = [sys.executable, str(REPO / "examples/replicate/run.py"), "--data-bin", str(toy_data / "bin"),
               "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results"),
               "--report", str(tmp_path / "RESULTS.md"), "--arms", "plain", "gumbel", "--seeds", "1",
               "--train-args", TINY, *extra]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_replication_trains_evaluates_reports_and_resumes(toy_data, tmp_path):
    first = replicate(toy_data, tmp_path)
    assert "plain-seed1: training" in first and "gumbel-seed1: training" in first
    for name in ("plain-seed1", "gumbel-seed1"):
        result = json.loads((tmp_path / "results" / f"{name}.json").read_text())
        assert result["training"]["epochs"] == 2 and result["training"]["valid_curve"]
        rows = ["original", "round (r=0.5)", "round-clip (r=0.5, c=1)", "svd (k=32)", "svd (k=16)"]
        assert list(result["compression"]) == rows
        assert result["compression"]["original"]["bleu"] == result["bleu"]
        assert result["compression"]["round-clip (r=0.5, c=1)"]["signature"].startswith("method=round-clip|step=0.5")
        assert set(result["gates"]["layers"]) == {"encoder.0", "encoder.0.reverse", "encoder.1", "decoder.0",
                                                  "decoder.1"}
        assert len(result["heatmaps"]) == 2
        assert result["heatmaps"][0]["row"]["input"] and result["heatmaps"][0]["target"]
    # Only the gate mode differs between the arms' training commands.
    plain, gumbel = (json.loads((tmp_path / "results" / f"{n}.json").read_text())["training"]["command"]
                     for n in ("plain-seed1", "gumbel-seed1"))
    assert plain.replace("plain", "ARM") == gumbel.replace("gumbel", "ARM")

    report = (tmp_path / "RESULTS.md").read_text()
    assert "baseline (plain LSTM), ours" in report and "G2-LSTM (gumbel), paper (IWSLT14) | 31.95" in report
    assert "Models finished: 2 of 2" in report
    for figure in ("figures/hist.decoder.0.png", "figures/heatmap.1.png", "figures/heatmap.2.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({figure})" in report

    (tmp_path / "RESULTS.md").write_text(report + "\nA reading written by hand.\n")
    second = replicate(toy_data, tmp_path)
    assert "training" not in second and "evaluating" not in second
    assert second.count("results exist, skipped") == 2
    assert "DEBUG" not in second  # fairseq's import-time DEBUG root logger let matplotlib flood the report stage
    assert (tmp_path / "RESULTS.md").read_text().endswith("A reading written by hand.\n")


def test_training_record_counts_every_attempt_once(tmp_path):
    """A resumed training: fairseq restarts its wall clock, and an epoch run again by the
    second attempt counts once, as its last run."""
    sys.path.insert(0, str(REPO / "examples/replicate"))
    import run as replicate_run

    def valid(epoch, loss, updates):
        return f"| INFO | valid | epoch {epoch:03d} | valid on 'valid' subset | loss {loss} | nll_loss 1 | num_updates {updates}"

    def train(epoch, wall):
        return f"| INFO | train | epoch {epoch:03d} | loss 3 | num_updates 9 | wall {wall}"

    log = tmp_path / "run.train.log"
    log.write_text("\n".join([
        "$ fairseq-train first attempt", valid(1, 5.0, 10), train(1, 600), valid(2, 4.0, 20), train(2, 1200),
        "$ fairseq-train killed before an epoch ended",
        "$ fairseq-train resumed", valid(2, 3.9, 20), train(2, 500), valid(3, 4.1, 30), train(3, 900),
    ]) + "\n")
    record = replicate_run.training_record(replicate_run.Run("gumbel", 1), ["fairseq-train"], log, threads=1)
    assert [v["valid_loss"] for v in record["valid_curve"]] == [5.0, 3.9, 4.1]
    assert (record["best_epoch"], record["best_valid_loss"], record["epochs"]) == (2, 3.9, 3)
    assert record["train_wall_minutes"] == round((1200 + 900) / 60, 1)


def test_report_shows_checkout_paths_relative_to_the_checkout():
    """A training started from a snapshot of the tree records absolute paths into this checkout."""
    sys.path.insert(0, str(REPO / "examples/replicate"))
    import report

    command = f"fairseq-train {REPO}/examples/replicate/work/data-bin --user-dir fairseq_g2lstm --save-dir /elsewhere/ck"
    assert report.checkout_relative(command) == ("fairseq-train examples/replicate/work/data-bin "
                                                 "--user-dir fairseq_g2lstm --save-dir /elsewhere/ck")
