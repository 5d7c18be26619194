"""End to end through fairseq's own command-line tools, on the toy corpus."""
import subprocess
import sys

import pytest

from conftest import REPO, TINY_DIMS, USER_DIR, cli


def test_generate_scores_beam_five_with_alignments(toy_data, toy_checkpoint):
    proc = cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--path", toy_checkpoint,
               "--beam", "5", "--cpu", "--print-alignment", "--scoring", "sacrebleu", "--max-tokens", "2000")
    hypotheses = [line for line in proc.stdout.splitlines() if line.startswith("H-")]
    alignments = [line for line in proc.stdout.splitlines() if line.startswith("A-")]
    assert len(hypotheses) == 20 and len(alignments) == 20
    assert "BLEU" in proc.stdout.splitlines()[-1]


def test_score_reference_scores_the_references(toy_data, toy_checkpoint):
    proc = cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--path", toy_checkpoint,
               "--score-reference", "--cpu", "--max-tokens", "2000")
    assert "BLEU4 = 100.00" in proc.stdout  # the "hypotheses" are the references


def test_interactive_translates_stdin(toy_data, toy_checkpoint):
    proc = cli("fairseq-interactive", toy_data / "bin", "--user-dir", USER_DIR, "--path", toy_checkpoint,
               "--cpu", "--beam", "5", "--source-lang", "de", "--target-lang", "en", input="w1 w2 w3\nw4 w5\n")
    assert len([line for line in proc.stdout.splitlines() if line.startswith("H-")]) == 2


def test_validate_reloads_the_checkpoint(toy_data, toy_checkpoint):
    proc = cli("fairseq-validate", toy_data / "bin", "--task", "translation", "--user-dir", USER_DIR,
               "--path", toy_checkpoint, "--cpu", "--max-tokens", "2000")
    assert "valid on 'valid' subset" in proc.stdout + proc.stderr


def test_training_resumes_from_the_checkpoint(toy_data, toy_checkpoint, tmp_path):
    proc = cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, "--arch", "g2lstm_iwslt", *TINY_DIMS,
               "--max-update", "14", "--max-tokens", "800", "--optimizer", "adam", "--lr", "0.01", "--cpu",
               "--save-dir", tmp_path, "--restore-file", toy_checkpoint, "--no-save", "--log-format", "simple")
    assert "Loaded checkpoint" in proc.stdout + proc.stderr
    assert "num_updates 14" in proc.stdout + proc.stderr


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)


def test_checkpoints_load_with_plain_torch_load_once_the_plugin_is_imported(toy_checkpoint):
    without = python(f"import torch; torch.load({str(toy_checkpoint)!r})")
    assert without.returncode != 0 and "argparse.Namespace" in without.stderr  # the failure the plugin fixes
    with_plugin = python(f"import fairseq_g2lstm, torch; print(sorted(torch.load({str(toy_checkpoint)!r})))")
    assert with_plugin.returncode == 0, with_plugin.stderr
    assert "model" in with_plugin.stdout


def test_importing_the_plugin_and_passing_user_dir_does_not_register_twice(toy_data, tmp_path):
    code = (
        "import sys, fairseq_g2lstm\n"
        "from fairseq_cli.train import cli_main\n"
        f"sys.argv = ['train', {str(toy_data / 'bin')!r}, '--user-dir', {USER_DIR!r}, '--arch', 'g2lstm_iwslt',"
        f" {', '.join(map(repr, TINY_DIMS))}, '--max-update', '1', '--max-tokens', '500', '--cpu',"
        f" '--optimizer', 'adam', '--no-save', '--save-dir', {str(tmp_path)!r}]\n"
        "cli_main()\n"
    )
    proc = python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "num_updates 1" in proc.stdout + proc.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--gate-mode", "foo", "invalid choice: 'foo'"),
    ("--gate-noise-prob", "1.5", "--gate-noise-prob must be in [0, 1]; got 1.5"),
    ("--gate-temperature", "-1", "--gate-temperature must be > 0; got -1.0"),
    ("--attention-type", "dot", "invalid choice: 'dot'"),
])
def test_bad_flag_values_exit_with_one_clear_message(toy_data, tmp_path, flag, value, message):
    proc = cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, "--arch", "g2lstm_iwslt",
               "--max-update", "1", "--cpu", "--save-dir", tmp_path, flag, value, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
