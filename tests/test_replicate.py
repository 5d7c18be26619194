"""The replication script end to end on the toy corpus: train two arms, evaluate them with
the project's tools, write RESULTS.md and its figures; a second run redoes nothing."""
import json
import os
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
        # the stored test translations give the BLEU that fairseq-generate printed, recomputed here
        import sacrebleu

        assert len(result["hypotheses"]) == len(result["references"]) == 20
        recomputed = sacrebleu.corpus_bleu(result["hypotheses"], [result["references"]]).score
        assert abs(recomputed - result["bleu"]) < 0.006, (recomputed, result["bleu"])
        assert result["lowercased"] is False  # the toy data-bin has no manifest saying otherwise
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
    assert "sacreBLEU, beam 5, test set in its original case;" in report
    assert "| G2-LSTM (gumbel) | encoder.0.reverse |" in report  # every layer of the results
    assert "| seed | plain BLEU | G2 BLEU | G2 - plain | p |" in report  # the paired bootstrap, from the JSON
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


# --- the committed RESULTS.md against the committed results (no model runs) --------------------------
RESULTS_DIR = REPO / "examples/replicate/results"
NUMBER_WORDS = {3: "three", 4: "four", 5: "five"}


def committed_results():
    sys.path.insert(0, str(REPO / "examples/replicate"))
    import report

    results = report.load_results(RESULTS_DIR)
    return report, results, report.by_arm(results, ("plain", "sharpened", "gumbel"))


def reading_text():
    text = (REPO / "examples/replicate/RESULTS.md").read_text()
    return " ".join(text.split("end of the generated part", 1)[1].split())  # one line: wrapping is free


def outside_share(run, layer, gate="input"):
    entry = run["gates"]["layers"][layer][gate]
    return 100 * (entry["share_below"] + entry["share_above"])


def test_the_reading_counts_every_gate_layer_and_its_shares_match_the_results():
    """Item 2 of the reading: the plain/G2/sharpened means of each layer, the per-seed
    lists, and how many layers are a finding (every G2 seed above every plain seed)."""
    import re
    import statistics

    report, results, groups = committed_results()
    reading = reading_text()
    layers = report.gate_layers(results)
    assert "encoder.0.reverse" in layers and len(layers) == 5
    findings = [layer for layer in layers if min(outside_share(r, layer) for r in groups["gumbel"])
                > max(outside_share(r, layer) for r in groups["plain"])]
    assert f"a finding in {NUMBER_WORDS[len(findings)]} of the {NUMBER_WORDS[len(layers)]} layers" in reading
    for layer in layers:  # "decoder.0 80/83/97%"
        means = [round(statistics.fmean(outside_share(r, layer) for r in groups[arm]))
                 for arm in ("plain", "gumbel", "sharpened")]
        assert f"{layer} {means[0]}/{means[1]}/{means[2]}%" in reading, layer
    quoted = re.findall(r"([a-z]+\.\d(?:\.reverse)?): ([\d., ]+?) against ([\d., ]+\d)", reading)
    assert {layer for layer, _, _ in quoted} >= set(findings) - {"encoder.0"}
    for layer, g2, plain in quoted:
        assert g2 == ", ".join(f"{outside_share(r, layer):.1f}" for r in groups["gumbel"]), layer
        assert plain == ", ".join(f"{outside_share(r, layer):.1f}" for r in groups["plain"]), layer


def test_every_mean_and_seed_list_of_the_reading_is_a_series_of_the_results():
    """Each "m ± s (a, b, c)" of the reading (BLEU, and BLEU change under each compression)
    is the mean, sample standard deviation and per-seed values of one arm in the results."""
    import re
    import statistics

    _, _, groups = committed_results()
    series = {}
    for arm, runs in groups.items():
        series[(arm, "bleu")] = [r["bleu"] for r in runs]
        for row in runs[0]["compression"]:
            if row != "original":
                series[(arm, row)] = [r["compression"][row]["delta"] for r in runs]
    reading = reading_text().replace("\u2212", "-")
    found = re.findall(r"(-?\d+\.\d\d) ± (\d+\.\d\d) \((-?\d+\.\d\d), (-?\d+\.\d\d), (-?\d+\.\d\d)\)", reading)
    assert len(found) >= 10
    for mean, std, *seeds in found:
        matches = [key for key, values in series.items() if [f"{v:.2f}" for v in values] == seeds]
        assert matches, (mean, std, seeds)
        values = series[matches[0]]
        assert f"{statistics.fmean(values):.2f}" == mean and f"{statistics.stdev(values):.2f}" == std, matches[0]


def test_the_report_case_and_layers_come_from_the_results():
    report, results, _ = committed_results()
    assert report.test_set_case(results) == "lowercased test set"  # run.py's data, prepared with --lowercase
    assert report.test_set_case([{**results[0], "lowercased": False}]) == "test set in its original case"
    generated = (REPO / "examples/replicate/RESULTS.md").read_text()
    assert generated.count("| encoder.0.reverse |") == 3 and "SPEC" not in generated


def test_paired_bootstrap_from_stored_hypotheses():
    """G2 against plain per seed, from the hypotheses each results file keeps: an arm
    that equals the references beats a garbled one with the smallest p-value the
    resampling can give (sacreBLEU's (0 + 1) / (n + 1)), and identical outputs give no
    difference."""
    report, _, _ = committed_results()
    references = [f"the cat number {i} sat on the mat near door {i % 7}" for i in range(60)]
    garbled = [" ".join(reversed(line.split())) for line in references]

    def run(arm, seed, hypotheses):
        return {"arm": arm, "seed": seed, "hypotheses": hypotheses, "references": references}

    groups = {"plain": [run("plain", 1, garbled), run("plain", 2, references)],
              "gumbel": [run("gumbel", 1, references), run("gumbel", 2, references), run("gumbel", 3, references)]}
    rows = report.paired_bootstrap_rows(groups, samples=200)
    assert [row["seed"] for row in rows] == [1, 2]  # seed 3 has no plain partner
    assert round(rows[0]["system"], 6) == 100.0 and rows[0]["baseline"] < 30
    assert rows[0]["p_value"] == 1 / 201  # the least p of 200 resamples: (0 + 1) / (200 + 1)
    assert round(rows[1]["system"], 6) == round(rows[1]["baseline"], 6) == 100.0
    lines = report.significance_lines(groups)
    assert lines[-2].startswith("| 1 | ") and lines[-1].startswith("| 2 | 100.00 | 100.00 | +0.00 |")
    assert report.significance_lines({"plain": [{"arm": "plain", "seed": 1}]})[0].startswith("Not computed")


def test_every_child_of_the_evaluation_imports_this_checkout(tmp_path, monkeypatch):
    """g2lstm-gates runs as ``python -m``: with the environment of ``checkout_env`` it
    imports the checkout the evaluation imported, even from a folder where another copy
    of the package would be found first."""
    sys.path.insert(0, str(REPO / "examples/replicate"))
    import evaluation

    decoy = tmp_path / "other" / "fairseq_g2lstm"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise SystemExit('the wrong copy')\n")
    monkeypatch.setenv("PYTHONPATH", str(decoy.parent))
    env = evaluation.checkout_env()
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), str(decoy.parent)]
    which = [sys.executable, "-c", "import fairseq_g2lstm; print(fairseq_g2lstm.__file__)"]
    proc = subprocess.run(which, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.stdout.strip() == str(REPO / "fairseq_g2lstm" / "__init__.py"), proc.stderr
    unpinned = subprocess.run(which, capture_output=True, text=True, cwd=tmp_path)  # os.environ, as before
    assert "the wrong copy" in unpinned.stderr
