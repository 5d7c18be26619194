"""benchmarks/throughput.py in quick mode: it runs, prints the table and writes sane JSON.

No timing assertions: only that every model was measured, with positive numbers, on the
same batches, and that the summary arithmetic (medians, spreads, ratios) is right.
"""
import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "throughput.py"
sys.path.insert(0, str(REPO))

from benchmarks import record, throughput  # noqa: E402
from benchmarks.common import CorpusSpec, write_synthetic_corpus  # noqa: E402

COLUMNS = ["model", "params", "train tok/s", "x lstm", "gen sent/s", "x lstm", "peak MB", "x lstm",
           "above base MB", "x lstm"]


def run_script(*args, timeout=240):
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def table_rows(stdout: str):
    """The Markdown table's header and body rows, as lists of cells."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert set(cells[1]) <= {"---", "---:"}, "second line is not a Markdown separator"
    return cells[0], cells[2:]


def check_results(results: dict, names):
    assert list(results["models"]) == list(names)
    assert results["baseline"] == "lstm"
    fingerprints = {r["train_fingerprint"] for m in results["models"].values() for r in m["runs"]}
    assert len(fingerprints) == 1, "models trained on different batches"
    for name, m in results["models"].items():
        assert m["params"] > 0
        for key in ("train_tokens_per_s", "gen_sentences_per_s", "peak_mb"):
            s = m[key]
            assert 0 < s["min"] <= s["median"] <= s["max"], (name, key, s)
            assert m["ratio"][key] > 0
        for run in m["runs"]:
            assert run["gen_length"] >= 1 and run["gen_sentences"] > 0 and run["train_tokens_per_pass"] > 0
    base = results["models"]["lstm"]["ratio"]
    assert base["train_tokens_per_s"] == base["gen_sentences_per_s"] == base["peak_mb"] == 1.0


def test_quick_mode_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "quick.json"
    stdout = run_script("--quick", "--json", str(out), "--workdir", str(tmp_path))
    header, rows = table_rows(stdout)
    assert header == COLUMNS
    assert [r[0] for r in rows] == list(throughput.MODELS)
    assert all(len(r) == len(COLUMNS) for r in rows)
    assert rows[0][3] == rows[0][5] == rows[0][7] == "1.00x"  # lstm against itself
    results = json.loads(out.read_text())
    check_results(results, throughput.MODELS)
    setup = results["setup"]
    assert setup["quick"] and setup["synthetic"] and setup["device"] == "cpu"
    assert setup["gen_sentences"] > 0 and setup["train_batches_per_pass"] == 2


def test_each_model_in_its_own_process_when_isolated(tmp_path):
    out = tmp_path / "isolated.json"
    stdout = run_script("--quick", "--isolation", "process", "--models", "lstm,g2lstm-gumbel",
                        "--repeats", "1", "--json", str(out), "--workdir", str(tmp_path))
    _, rows = table_rows(stdout)
    assert [r[0] for r in rows] == ["lstm", "g2lstm-gumbel"]
    results = json.loads(out.read_text())
    check_results(results, ["lstm", "g2lstm-gumbel"])
    for m in results["models"].values():
        (run,) = m["runs"]
        assert run["peak_mb"] == run["process_peak_mb"] > run["base_mb"] > 0  # ru_maxrss of the child


def test_medians_spreads_and_ratios():
    def run(train, gen, peak, base):
        return {"params": 10, "train_tokens_per_s": train, "gen_sentences_per_s": gen, "peak_mb": peak,
                "base_mb": base}

    models = {
        "lstm": throughput.combine("lstm", [run([100, 300], [10], 500, 400), run([200], [30], 700, 400)]),
        "g2lstm-gumbel": throughput.combine("g2lstm-gumbel", [run([50], [20, 40, 60], 600, 450)]),
    }
    throughput.add_ratios(models)
    lstm, g2 = models["lstm"], models["g2lstm-gumbel"]
    assert lstm["train_tokens_per_s"] == {"median": 200, "min": 100, "max": 300, "n": 3}
    assert lstm["peak_above_base_mb"]["median"] == 200  # (100 + 300) / 2
    assert g2["ratio"]["train_tokens_per_s"] == pytest.approx(0.25)
    assert g2["ratio"]["gen_sentences_per_s"] == pytest.approx(40 / 20)
    assert g2["ratio"]["peak_mb"] == pytest.approx(600 / 600)
    assert g2["ratio"]["peak_above_base_mb"] == pytest.approx(150 / 200)


def test_unknown_model_is_a_usage_error():
    with pytest.raises(SystemExit, match="unknown"):
        throughput.parse_options(["--models", "lstm,transformer"])


def test_synthetic_corpus_is_deterministic_and_in_range(tmp_path):
    spec = CorpusSpec(train=50, valid=5, test=5, src_vocab=100, tgt_vocab=80, min_len=3, max_len=9, seed=7)
    a = write_synthetic_corpus(tmp_path / "a", spec)
    b = write_synthetic_corpus(tmp_path / "b", spec)
    for name in ("train.src", "train.tgt", "test.src", "test.tgt"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    src = (a / "train.src").read_text().splitlines()
    tgt = (a / "train.tgt").read_text().splitlines()
    assert len(src) == len(tgt) == 50
    assert all(spec.min_len <= len(line.split()) <= spec.max_len for line in src)
    assert all(1 <= len(line.split()) <= spec.max_len for line in tgt)
    other = write_synthetic_corpus(tmp_path / "c", CorpusSpec(**{**spec.__dict__, "seed": 8}))
    assert (other / "train.src").read_bytes() != (a / "train.src").read_bytes()


def test_sizes_reach_both_models_flags():
    opts = throughput.parse_options(["--layers", "3", "--dim", "1024", "--embed-dim", "512", "--data", "DATA"])
    for name in ("lstm", "g2lstm-gumbel"):
        argv = throughput.fairseq_argv(throughput.MODELS[name], opts)
        flags = dict(zip(argv, argv[1:]))  # each flag -> the word after it
        assert flags["--encoder-layers"] == flags["--decoder-layers"] == "3"
        assert flags["--encoder-hidden-size"] == flags["--decoder-hidden-size"] == "1024"
        assert flags["--encoder-embed-dim"] == flags["--decoder-embed-dim"] == "512"
        assert flags["--decoder-out-embed-dim"] == "1024"
    assert throughput.parse_options(["--dim", "64"]).embed_dim == 64  # embeddings default to the hidden size


def test_wmt_like_sizes_build_deeper_models(tmp_path):
    out = tmp_path / "deep.json"
    run_script("--quick", "--models", "lstm,g2lstm-gumbel", "--layers", "3", "--dim", "24", "--embed-dim", "16",
               "--json", str(out), "--workdir", str(tmp_path))
    results = json.loads(out.read_text())
    check_results(results, ["lstm", "g2lstm-gumbel"])
    assert (results["setup"]["layers"], results["setup"]["dim"], results["setup"]["embed_dim"]) == (3, 24, 16)
    g2 = results["models"]["g2lstm-gumbel"]["params"]
    # 16-dim embeddings for the 300-word quick vocabularies and 3 + 3 layers of 24 units
    assert g2 == throughput_params_of_g2lstm(results["setup"]["data"], layers=3, dim=24, embed_dim=16)


def throughput_params_of_g2lstm(data, layers, dim, embed_dim):
    """The parameter count of the g2lstm row, built directly from the same flags."""
    from fairseq import options, tasks

    opts = throughput.parse_options(["--layers", str(layers), "--dim", str(dim), "--embed-dim", str(embed_dim),
                                     "--data", data])
    args = options.parse_args_and_arch(options.get_training_parser(),
                                       throughput.fairseq_argv(throughput.MODELS["g2lstm-gumbel"], opts))
    task = tasks.setup_task(args)
    return sum(p.numel() for p in task.build_model(args).parameters())


def markdown_tables(stdout: str):
    """Every Markdown table of the output as (header, rows), in order."""
    tables, block = [], []
    for line in stdout.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            tables.append(table_rows("\n".join(block)))
            block = []
    return tables


def git(*args) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_compare_runs_each_refs_own_plugin_in_the_children(tmp_path, monkeypatch):
    """A REF folder (a copy of the plugin that leaves a mark when imported) and a REF commit
    (checked out into a temporary worktree, removed afterwards) each run their own code."""
    copy = tmp_path / "copy"
    for package in ("fairseq_g2lstm", "g2lstm_runtime"):
        shutil.copytree(REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    marker = tmp_path / "imported-by"
    with open(copy / "fairseq_g2lstm" / "__init__.py", "a") as f:
        f.write("\nimport os as _os\nwith open(_os.environ['G2LSTM_TEST_MARKER'], 'a') as _f:\n"
                "    _f.write(__file__ + '\\n')\n")
    monkeypatch.setenv("G2LSTM_TEST_MARKER", str(marker))
    out = tmp_path / "compare.json"
    stdout = run_script("--quick", "--models", "g2lstm-gumbel", "--repeats", "1", "--compare", str(copy),
                        "--compare", "HEAD", "--json", str(out), "--workdir", str(tmp_path), timeout=400)
    results = json.loads(out.read_text())
    head = git("rev-parse", "--short", "HEAD")
    assert [c["label"] for c in results["setup"]["compare"]] == ["copy", head]
    worktree = Path(results["setup"]["compare"][1]["plugin_root"])
    rows = {"g2lstm-gumbel": REPO, "g2lstm-gumbel@copy": copy, f"g2lstm-gumbel@{head}": worktree}
    assert list(results["models"]) == list(rows)
    for row, root in rows.items():
        (run,) = results["models"][row]["runs"]
        assert run["plugin_file"] == str((root / "fairseq_g2lstm" / "__init__.py").resolve()), row
    # the copy's own __init__ ran, in its one child only
    assert marker.read_text().splitlines() == [str(copy / "fairseq_g2lstm" / "__init__.py")]
    assert not worktree.exists() and str(worktree) not in git("worktree", "list")
    main, versions = markdown_tables(stdout)[:2]
    assert [r[0] for r in main[1]] == list(rows)
    assert [(r[0], r[1]) for r in versions[1]] == [("g2lstm-gumbel", "g2lstm-gumbel@copy"),
                                                   ("g2lstm-gumbel", f"g2lstm-gumbel@{head}")]
    # one pass per row: no spread, so no ratio between versions is established
    assert all(cell.startswith("not established") for r in versions[1] for cell in r[2:])


def test_compare_refuses_what_is_not_a_checkout_or_commit(tmp_path):
    with pytest.raises(SystemExit, match="no fairseq_g2lstm package"):
        throughput.checkout(str(tmp_path), contextlib.ExitStack())
    with pytest.raises(SystemExit, match="neither a folder nor a commit"):
        throughput.checkout("no-such-ref-0123", contextlib.ExitStack())
    with pytest.raises(SystemExit, match="--isolation process"):
        throughput.parse_options(["--compare", "HEAD", "--isolation", "none"])


def summary(median, low, high, n=3):
    return {"median": median, "min": low, "max": high, "n": n}


def test_a_ratio_within_the_combined_spread_is_not_established():
    base = summary(100, 98, 102)
    faster = record.ratio(summary(110, 105, 115), base)  # 105/102 > 1: every pairing is faster
    assert faster == {"median": pytest.approx(1.10), "min": pytest.approx(105 / 102), "max": pytest.approx(115 / 98),
                      "n": 3, "established": True}
    assert record.format_ratio(faster) == "1.10x (1.03-1.17)"
    slower = record.ratio(summary(80, 78, 82), base)  # 82/98 < 1
    assert slower["established"] and record.format_ratio(slower) == "0.80x (0.76-0.84)"
    wide = record.ratio(summary(110, 95, 125), base)  # 95/102 < 1 < 125/98
    assert not wide["established"]
    assert record.format_ratio(wide) == "not established (1.10x, 0.93-1.28)"
    single = record.ratio(summary(200, 200, 200, n=1), base)  # one pass: its spread is unknown
    assert not single["established"] and record.format_ratio(single).startswith("not established (2.00x")
    # a ratio of ratios (a slowdown against the baseline's) composes the same way
    assert record.ratio(faster, slower)["min"] == pytest.approx(faster["min"] / slower["max"])
    assert record.ratio(faster, slower)["established"]
    assert record.format_summary(summary(200, 150, 210), ".1f") == "200.0 (-25%/+5%)"


def test_ratios_to_the_baseline_and_slowdowns_carry_their_range():
    def run(train, gen, **extra):
        return {"params": 10, "train_tokens_per_s": train, "gen_sentences_per_s": gen, "peak_mb": 500,
                "base_mb": 400, **extra}

    alone = {"lstm": throughput.combine("lstm", [run([100, 104], [10, 11])]),
             "g2lstm-gumbel": throughput.combine("g2lstm-gumbel", [run([150, 160], [10, 12])])}
    throughput.add_ratios(alone)
    assert alone["lstm"]["ratio_range"]["train_tokens_per_s"] is None  # the baseline itself
    assert alone["g2lstm-gumbel"]["ratio_range"]["train_tokens_per_s"]["established"]  # 150/104 > 1
    assert not alone["g2lstm-gumbel"]["ratio_range"]["gen_sentences_per_s"]["established"]  # 10/11 < 1 < 12/10
    competitor = {"pid": 1, "running_at_stop": True, "cpu_s": 1.0}
    busy = {"lstm": [run([90, 94], [9, 10], competitor=competitor)],
            "g2lstm-gumbel": [run([75, 80], [5, 6], competitor=competitor)]}
    contention = throughput.contention_summary(alone, busy)
    g2 = contention["g2lstm-gumbel"]
    assert g2["slowdown"]["train_tokens_per_s"]["median"] == pytest.approx(77.5 / 155)
    assert g2["slowdown"]["train_tokens_per_s"]["established"]  # 80/150 < 1
    lstm_slowdown = contention["lstm"]["slowdown"]["train_tokens_per_s"]
    assert g2["slowdown_x_baseline"]["train_tokens_per_s"]["median"] == pytest.approx(
        (77.5 / 155) / lstm_slowdown["median"])
    assert contention["lstm"]["slowdown_x_baseline"]["train_tokens_per_s"] is None
    assert g2["competitors"] == [competitor]


def test_contention_starts_and_stops_its_competitor(tmp_path):
    out = tmp_path / "contention.json"
    stdout = run_script("--quick", "--models", "lstm,g2lstm-plain", "--repeats", "2", "--contention",
                        "--json", str(out), "--workdir", str(tmp_path))
    results = json.loads(out.read_text())
    assert list(results["contention"]) == ["lstm", "g2lstm-plain"]
    for row, c in results["contention"].items():
        (competitor,) = c["competitors"]
        assert competitor["running_at_stop"] and competitor["cpu_s"] > 0, row  # it ran beside the child
        cmdline = Path(f"/proc/{competitor['pid']}/cmdline")
        assert not cmdline.exists() or b"while True" not in cmdline.read_bytes(), f"{row}: competitor left running"
        assert set(c["slowdown"]) == {"train_tokens_per_s", "gen_sentences_per_s"}
    tables = markdown_tables(stdout)
    assert [r[0] for r in tables[-1][1]] == ["lstm", "g2lstm-plain"]
    machine = results["setup"]["machine"]
    assert machine["cpu_model"] and machine["threads"] == 1 and machine["load_before"] >= 0
    assert machine["commit"] == throughput.git_commit() and f"commit {machine['commit']}" in stdout
