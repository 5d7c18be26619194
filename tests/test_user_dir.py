"""g2lstm-user-dir and ``python -m fairseq_g2lstm``: the --user-dir path that works from
any folder, checked by running fairseq from a folder that is not the repository."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN, REPO, cli


@pytest.mark.parametrize("command", [[str(BIN / "g2lstm-user-dir")], [sys.executable, "-m", "fairseq_g2lstm"]])
def test_prints_the_package_folder_from_any_cwd(tmp_path, command):
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == str(REPO / "fairseq_g2lstm") + "\n"


def test_a_bad_flag_is_one_error_line(tmp_path):
    proc = subprocess.run([str(BIN / "g2lstm-user-dir"), "--nope"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "g2lstm-user-dir: error: unrecognized arguments: --nope (see --help)"]


def test_fairseq_generate_loads_a_g2lstm_checkpoint_from_another_folder(toy_data, toy_checkpoint, tmp_path):
    user_dir = subprocess.run([str(BIN / "g2lstm-user-dir")], capture_output=True, text=True,
                              cwd=tmp_path).stdout.strip()
    assert Path(user_dir).is_absolute() and Path(tmp_path) != REPO
    proc = cli("fairseq-generate", toy_data / "bin", "--user-dir", user_dir, "--path", toy_checkpoint,
               "--beam", "2", "--cpu", "--max-tokens", "2000", cwd=tmp_path)
    assert len([line for line in proc.stdout.splitlines() if line.startswith("H-")]) == 20
    # the relative form works only from the repository root: from elsewhere fairseq cannot find it
    relative = cli("fairseq-generate", toy_data / "bin", "--user-dir", "fairseq_g2lstm", "--path", toy_checkpoint,
                   "--beam", "2", "--cpu", "--max-tokens", "2000", cwd=tmp_path, check=False)
    assert relative.returncode != 0
