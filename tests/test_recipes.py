"""The paper's full-scale experiments (examples/iwslt14, examples/wmt14) run end to end on tiny
fixtures in the official archive formats, with a few updates, so that they cannot rot; and they
train with the one recipe per scale that fairseq_g2lstm/data/next_commands.py states."""
import json
import os
import subprocess
import sys
from pathlib import Path


from conftest import REPO
from fairseq_g2lstm.data.next_commands import PAPER_IWSLT14, RECIPES, main as print_recipe
from test_data_prepare import TINY_VOCAB, iwslt_fixture, write_tgz, write_wmt_orig

BIN = Path(sys.executable).parent
TINY = ("--encoder-embed-dim 16 --encoder-hidden-size 16 --decoder-embed-dim 16 --decoder-hidden-size 16 "
        "--decoder-out-embed-dim 16 --max-update 3")


def run_recipe(script: str, source: Path, out: Path, arms: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1", "OUT": str(out),
           "ARMS": arms, "DEVICE_ARGS": "--cpu", "TRAIN_ARGS": TINY, "RANKS": "4", "GATE_SENTENCES": "20",
           "VOCAB": TINY_VOCAB, "GEN_ARGS": "--max-tokens 2000"}
    proc = subprocess.run(["bash", str(REPO / script), str(source)], capture_output=True, text=True, env=env,
                          cwd=out.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def check_outputs(out: Path, labels):
    table = json.loads((out / "table4.json").read_text())
    assert [c["label"] for c in table["checkpoints"]] == labels
    assert [r["name"] for r in table["rows"]] == ["original", "round (r=0.5)", "round-clip (r=0.5, c=1)", "svd (k=4)"]
    assert len(table["cells"]) == 4 * len(labels)
    markdown = (out / "table4.md").read_text()
    assert all(f"{label} BLEU" in markdown for label in labels)
    for label in labels:
        gates = json.loads((out / "gates" / f"gates.{label}.json").read_text())
        assert gates["sentences"] == 20 and "decoder.0" in gates["layers"]
    assert (out / "gates" / "hist.decoder.0.png").read_bytes()[:4] == b"\x89PNG"


def test_iwslt14_recipe_trains_three_arms_and_writes_the_tables(tmp_path):
    files, _, _ = iwslt_fixture()
    archive = write_tgz(tmp_path / "de-en.tgz", files, "de-en")
    out = tmp_path / "work"
    run_recipe("examples/iwslt14/run.sh", archive, out, "plain sharpened gumbel")
    labels = ["plain-seed1", "sharpened-seed1", "gumbel-seed1"]
    check_outputs(out, labels)
    # The arms were trained with identical settings but the gate mode (and their save dirs).
    import fairseq_g2lstm  # noqa: F401  (checkpoints load with plain torch.load)
    import torch

    settings = []
    for label in labels:
        args = vars(torch.load(out / "checkpoints" / label / "checkpoint_best.pt")["cfg"]["model"])
        assert args["arch"] == "g2lstm_iwslt" and args["optimizer"] == "adam" and args["lr"] == [0.002]
        assert args["clip_norm"] == 2.0 and args["batch_size"] == 32 and args["max_epoch"] == 30
        assert args["lr_scheduler"] == "reduce_lr_on_plateau" and args["lr_shrink"] == 0.5
        assert args["lr_patience"] == 0 and args["patience"] == 4
        settings.append({k: v for k, v in args.items() if k not in ("gate_mode", "save_dir")})
    assert settings[0] == settings[1] == settings[2]


def test_wmt14_recipe_runs_from_the_official_layout(tmp_path):
    orig = tmp_path / "orig"
    write_wmt_orig(orig)
    out = tmp_path / "work"
    run_recipe("examples/wmt14/run.sh", orig, out, "gumbel")
    check_outputs(out, ["gumbel-seed1"])


def test_time_steps_measures_and_projects(tmp_path):
    files, _, _ = iwslt_fixture()
    archive = write_tgz(tmp_path / "de-en.tgz", files, "de-en")
    out = tmp_path / "work"
    env_steps = {"TIME_STEPS": "4"}
    os.environ.update(env_steps)
    try:
        log = run_recipe("examples/iwslt14/run.sh", archive, out, "gumbel")
    finally:
        for key in env_steps:
            os.environ.pop(key)
    assert "measured:" in log and "s/update" in log and "projected: 30 epochs" in log
    assert not (out / "checkpoints").exists()


def test_the_recipe_prints_as_one_line_of_train_flags(capsys):
    assert print_recipe(["iwslt14"]) == 0
    words = capsys.readouterr().out.split()
    assert words[:2] == ["--arch", "g2lstm_iwslt"] and tuple(words[2:]) == PAPER_IWSLT14.train_args
    assert words[words.index("--batch-size") + 1] == "32" and words[words.index("--max-epoch") + 1] == "30"
    assert print_recipe(["wmt14"]) == 0
    words = capsys.readouterr().out.split()
    assert words[:2] == ["--arch", "g2lstm_wmt"] and words[words.index("--batch-size") + 1] == "64"
    # both scales share the optimiser and the stopping rule; only the batch and the cap differ
    differing = set(RECIPES["iwslt14"].train_args) ^ set(RECIPES["wmt14"].train_args)
    assert differing == {"32", "64", "30", "10"}
