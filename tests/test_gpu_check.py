"""scripts/gpu_check.sh runs to its summary: its ``--fake-gpu`` mode end to end on the CPU
(the host emulation in the GPU's place), a run cut short by its deadline, and a run
killed from outside.

Every run hides fairseq and sentencepiece from Python (a ``sitecustomize`` on
PYTHONPATH), as on the GPU machine, which has neither. The runs get a private
TORCH_EXTENSIONS_DIR that starts from a copy of this test run's host-emulation build, so
the fake run does not compile it again; a stale build lock is planted in it, which the
script must remove (else the build would wait on it forever).
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairseq_g2lstm.cuda import build, validation

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
PHASES = ("env", "locks", "build", "tests", "graph", "memcheck", "bench-float32", "bench-bfloat16")
# The fake run's tests phase runs a few of the kernel tests (the full host suite runs in
# the ordinary test run): enough to show pytest ran on the host backend.
FAKE_RUN_TESTS = "known_answers or single_steps or reserve_what_they_draw or lengths_must_be_sorted"

HIDE_FAIRSEQ = '''import sys


class _Hide:
    """fairseq and sentencepiece are absent on the GPU check machine."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("fairseq", "sentencepiece"):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden, as on the GPU check machine)", name=name)


sys.meta_path.insert(0, _Hide())
'''


@pytest.fixture(scope="module")
def no_fairseq(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("no_fairseq")
    (folder / "sitecustomize.py").write_text(HIDE_FAIRSEQ)
    return folder


@pytest.fixture(scope="module")
def extensions_dir(tmp_path_factory) -> Path:
    """A TORCH_EXTENSIONS_DIR holding a copy of the host-emulation build (built here first)."""
    try:
        validation.kernel_backend("host")
    except validation.BackendUnavailable as reason:
        pytest.skip(f"the fake GPU check builds the host emulation: {reason}")
    from torch.utils import cpp_extension

    folder = tmp_path_factory.mktemp("torch_extensions")
    built = Path(cpp_extension._get_build_directory(build.HOST_EMULATION_NAME, False))
    if built.is_dir():
        shutil.copytree(built, folder / build.HOST_EMULATION_NAME, ignore=shutil.ignore_patterns("lock"))
    return folder


def run_check(out: Path, no_fairseq: Path, extensions: Path, python: str = sys.executable, **env) -> subprocess.Popen:
    environ = {**os.environ, "OUT": str(out), "PYTHON": python, "TORCH_EXTENSIONS_DIR": str(extensions),
               "PYTHONPATH": str(no_fairseq), "OMP_NUM_THREADS": "1", **env}
    environ.pop("G2LSTM_TEST_BACKENDS", None)
    return subprocess.Popen(["bash", str(SCRIPT), "--fake-gpu"], cwd=REPO, env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def phase_lines(summary: str) -> dict:
    """{phase: (status, detail)} from summary.txt."""
    found = {}
    for line in summary.splitlines():
        parts = line.split(None, 2)
        if parts and parts[0] in PHASES:
            found[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return found


def slow_python(folder: Path, seconds: int) -> str:
    """A PYTHON that sleeps before it starts: every phase that runs Python outlasts a short deadline."""
    wrapper = folder / "slow_python"
    wrapper.write_text(f"#!/bin/sh\nsleep {seconds}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def test_the_fake_gpu_run_reaches_its_summary_and_passes(tmp_path, no_fairseq, extensions_dir):
    lock = extensions_dir / build.HOST_EMULATION_NAME / "lock"
    lock.parent.mkdir(exist_ok=True)
    lock.write_text("")  # what a killed build leaves behind
    out = tmp_path / "out"
    start = time.monotonic()
    proc = run_check(out, no_fairseq, extensions_dir, G2LSTM_GPU_CHECK_PYTEST_K=FAKE_RUN_TESTS)
    stdout, _ = proc.communicate(timeout=900)
    seconds = time.monotonic() - start
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == 0, f"exit {proc.returncode} after {seconds:.0f}s\n{summary}\n{stdout[-3000:]}"
    phases = phase_lines(summary)
    assert list(phases) == list(PHASES), summary
    assert "mode: fake-gpu" in summary and "result: PASS (fake GPU" in summary
    assert phases["env"][0] == "ok" and "device None" in phases["env"][1]
    assert phases["locks"] == ("ok", f"removed 1 stale build lock(s) under {extensions_dir}")
    assert not lock.exists()
    assert phases["build"][0] == "ok" and "host-emulation" in phases["build"][1]
    assert phases["tests"][0] == "ok" and "host backend" in phases["tests"][1] and " passed" in phases["tests"][1]
    assert phases["graph"][0] == "skipped" and "fake GPU" in phases["graph"][1]
    assert phases["memcheck"][0] == "skipped" and "compute-sanitizer not run" in phases["memcheck"][1]
    assert "g2lstm memcheck cases: done" in phases["memcheck"][1]
    for dtype in ("float32", "bfloat16"):
        assert phases[f"bench-{dtype}"][0] == "ok", summary
        table = (out / f"bench-{dtype}.md").read_text()
        assert "| G2 kernel (host emulation)" in table and "### Goals" in table
        assert f"## bench-{dtype}: goals" in summary
    assert "TF32 on" in (out / "bench-float32.md").read_text()
    tests_log = (out / "tests.log").read_text()
    assert "[host" in tests_log and "[cuda" not in tests_log  # G2LSTM_TEST_BACKENDS=host
    print(f"fake GPU check: {seconds:.0f}s wall\n{summary}")


def test_a_phase_killed_by_the_deadline_is_reported_and_the_rest_skipped(tmp_path, no_fairseq, extensions_dir):
    out = tmp_path / "out"
    start = time.monotonic()
    proc = run_check(out, no_fairseq, extensions_dir, python=slow_python(tmp_path, 60), G2LSTM_GPU_CHECK_DEADLINE="6")
    proc.communicate(timeout=120)
    assert time.monotonic() - start < 40  # the deadline, not the sleeping Python, ended it
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == 1, summary
    phases = phase_lines(summary)
    assert list(phases) == list(PHASES), summary
    status, detail = phases["env"]
    assert status == "TIMEOUT" and "killed by the deadline" in detail, summary
    for phase in ("locks", "build"):
        assert phases[phase][0] == "skipped" and phases[phase][1].startswith("deadline:"), summary
    for phase in ("tests", "memcheck", "bench-float32", "bench-bfloat16"):
        assert phases[phase] == ("skipped", "no build (build: skipped)"), summary
    assert "result: FAIL: env(TIMEOUT)" in summary


def descendants(pid: int) -> list:
    """Every process below ``pid`` (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_a_run_killed_from_outside_still_leaves_a_summary_of_what_it_reached(tmp_path, no_fairseq, extensions_dir):
    out = tmp_path / "out"
    proc = run_check(out, no_fairseq, extensions_dir, python=slow_python(tmp_path, 120))
    summary_file = out / "summary.txt"
    try:
        for _ in range(300):  # until the first phase has started
            if summary_file.exists() and phase_lines(summary_file.read_text()).get("env", ("",))[0] == "running":
                break
            time.sleep(0.1)
    finally:  # as a job scheduler's time limit does: every process of the run, at once
        for pid in [proc.pid] + descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.communicate(timeout=30)
    summary = summary_file.read_text()
    phases = phase_lines(summary)
    assert phases["env"][0] == "running" and phases["env"][1].startswith("started at"), summary
    assert all(phases[p] == ("pending", "") for p in PHASES[1:]), summary
    assert "result: INCOMPLETE: not finished: env locks build" in summary


def test_unknown_arguments_are_refused():
    proc = subprocess.run(["bash", str(SCRIPT), "--bogus"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown argument --bogus" in proc.stderr


def test_conftest_imports_without_fairseq_and_sentencepiece(no_fairseq):
    """The GPU check runs pytest with tests/conftest.py (the backend fixture lives there)
    on a machine without fairseq or sentencepiece."""
    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('conftest', 'tests/conftest.py')\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "assert not any(m.split('.')[0] in ('fairseq', 'sentencepiece') for m in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{no_fairseq}"})
    assert proc.returncode == 0, proc.stderr[-2000:]
