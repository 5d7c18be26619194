"""End to end through fairseq's own command-line tools.

Each test asserts what the model produced, not only that a tool ran: the reversal model
(conftest) must translate its task, fairseq-interactive must agree with fairseq-generate,
scores must be the model's own log-probabilities, and flags must reach the model.
"""
import math
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_DIMS, USER_DIR, cli, train_argument_error, train_with_noise_spy


def generate_lines(proc: subprocess.CompletedProcess, kind: str):
    """{sentence id: fields after the id} for fairseq-generate's ``kind`` lines (H, P, A, S...)."""
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith(f"{kind}-"):
            head, *rest = line.split("\t")
            out[int(head[len(kind) + 1:])] = rest
    return out


def bleu(proc: subprocess.CompletedProcess) -> float:
    return float(re.search(r"BLEU = ([\d.]+)", proc.stdout.splitlines()[-1]).group(1))


@pytest.fixture(scope="module")
def reversal_generated(reversal_model):
    """fairseq-generate on the reversal model's test set: beam 5, alignments, sacrebleu."""
    folder, checkpoint = reversal_model
    return cli("fairseq-generate", folder / "bin", "--user-dir", USER_DIR, "--path", checkpoint, "--beam", "5",
               "--cpu", "--print-alignment", "--scoring", "sacrebleu", "--max-tokens", "2000")


def test_generate_translates_the_reversal_task_with_reversed_alignments(reversal_generated):
    proc = reversal_generated
    sources, hypotheses, alignments = (generate_lines(proc, k) for k in ("S", "H", "A"))
    assert len(hypotheses) == 40  # every test sentence
    assert bleu(proc) > 60, proc.stdout.splitlines()[-1]
    # Hard attention of target word j on source word n-1-j: the model learnt to reverse.
    links = on_anti_diagonal = 0
    for i, source in sources.items():
        n = len(source[0].split())
        for link in alignments[i][0].split():
            src_pos, tgt_pos = map(int, link.split("-"))
            links += 1
            on_anti_diagonal += src_pos + tgt_pos == n - 1
    assert links >= 3 * len(sources) and on_anti_diagonal >= 0.8 * links


def test_interactive_gives_generates_translations(reversal_model, reversal_generated):
    folder, checkpoint = reversal_model
    sources = (folder / "test.de").read_text().splitlines()[:10]
    proc = cli("fairseq-interactive", folder / "bin", "--user-dir", USER_DIR, "--path", checkpoint, "--cpu",
               "--beam", "5", "--source-lang", "de", "--target-lang", "en", input="\n".join(sources) + "\n")
    interactive = {int(line.split("\t")[0][2:]): line.split("\t")[2]
                   for line in proc.stdout.splitlines() if line.startswith("H-")}
    generated_sources, generated_hypotheses = (generate_lines(reversal_generated, k) for k in ("S", "H"))
    by_source = {generated_sources[i][0]: generated_hypotheses[i][1] for i in generated_sources}
    assert [interactive[i] for i in range(10)] == [by_source[s] for s in sources]
    correct = sum(interactive[i] == " ".join(reversed(s.split())) for i, s in enumerate(sources))
    assert correct >= 6  # an untrained model gets none; this one misses a few 6-word sentences


def test_score_reference_prints_the_models_log_probabilities(toy_data, toy_checkpoint):
    proc = cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--path", toy_checkpoint,
               "--score-reference", "--cpu", "--max-tokens", "2000")
    printed = {i: [float(x) for x in p[0].split()] for i, p in generate_lines(proc, "P").items()}
    assert len(printed) == 20

    import fairseq_g2lstm  # noqa: F401
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(toy_checkpoint)], arg_overrides={"data": str(toy_data / "bin")})
    model = models[0].eval()
    task.load_dataset("test")
    dataset = task.dataset("test")
    for i, scores in printed.items():
        batch = dataset.collater([dataset[i]])
        with torch.no_grad():
            logits, _ = model(**batch["net_input"])
        lprobs = torch.log_softmax(logits.double(), -1)[0].gather(1, batch["target"][0].unsqueeze(1)).squeeze(1)
        assert scores == pytest.approx((lprobs / math.log(2)).tolist(), abs=2e-4)


def test_gate_flags_given_to_fairseq_train_reach_the_trained_model(toy_data, tmp_path):
    args = [str(toy_data / "bin"), "--user-dir", USER_DIR, "--arch", "g2lstm_iwslt", *TINY_DIMS,
            "--gate-temperature", "0.7", "--gate-noise-prob", "0.3", "--max-update", "4", "--max-tokens", "800",
            "--optimizer", "adam", "--lr", "0.01", "--cpu", "--save-dir", str(tmp_path), "--no-epoch-checkpoints",
            "--disable-validation", "--seed", "2"]
    _, draws = train_with_noise_spy(args)
    elements = sum(d["elements"] for d in draws)
    share = sum(d["noised"] for d in draws) / elements
    assert draws and abs(share - 0.3) < 5 * math.sqrt(0.3 * 0.7 / elements), share  # p = 0.3, not the default 0.2

    import fairseq_g2lstm  # noqa: F401
    from fairseq import checkpoint_utils

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task(
        [str(tmp_path / "checkpoint_last.pt")], arg_overrides={"data": str(toy_data / "bin")})
    for gate in (models[0].encoder.lstm.gate, models[0].decoder.layers.gate):
        assert (gate.mode, gate.tau, gate.noise_prob) == ("gumbel", 0.7, 0.3)
        assert gate.resolve(training=True).inv_temperature == pytest.approx(1 / 0.7)


def test_hard_gates_on_an_existing_checkpoint_through_model_overrides(toy_data, toy_checkpoint):
    """``--model-overrides "{'gate_eval': 'hard'}"``: fairseq passes it as arg_overrides to
    the loader; the reloaded model's input and forget gates are then exactly 0 or 1, and
    its scores differ from soft evaluation."""
    import fairseq_g2lstm  # noqa: F401
    from fairseq import checkpoint_utils
    from fairseq_g2lstm.rnn import GateTallies

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(toy_checkpoint)], arg_overrides={"data": str(toy_data / "bin"), "gate_eval": "hard"})
    model = models[0].eval()
    task.load_dataset("test")
    dataset = task.dataset("test")
    tallies = GateTallies(bins=10)
    with torch.no_grad():
        model(**dataset.collater([dataset[i] for i in range(8)])["net_input"], gate_stats=tallies)
    names = {name for name, _, _ in tallies}
    assert names == {"encoder.0", "encoder.0.reverse", "encoder.1", "decoder.0", "decoder.1"}
    for name, gate, tally in tallies:
        assert tally.count > 0
        assert float(tally.below) + float(tally.above) == tally.count, (name, gate)  # all 0 or 1

    def scores(*extra):
        proc = cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--path", toy_checkpoint,
                   "--beam", "5", "--cpu", "--max-tokens", "2000", *extra)
        return {i: float(h[0]) for i, h in generate_lines(proc, "H").items()}

    soft, hard = scores(), scores("--model-overrides", "{'gate_eval': 'hard'}")
    assert soft.keys() == hard.keys() and len(soft) == 20
    assert sum(abs(soft[i] - hard[i]) > 1e-3 for i in soft) >= 10


def test_validate_reloads_the_checkpoint(toy_data, toy_checkpoint):
    proc = cli("fairseq-validate", toy_data / "bin", "--task", "translation", "--user-dir", USER_DIR,
               "--path", toy_checkpoint, "--cpu", "--max-tokens", "2000")
    assert re.search(r"valid on 'valid' subset \| loss [\d.]+ \|", proc.stdout + proc.stderr)


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
def test_bad_flag_values_exit_with_one_clear_message(toy_data, tmp_path, monkeypatch, capsys, flag, value, message):
    stderr = train_argument_error(monkeypatch, capsys, toy_data / "bin", "--user-dir", USER_DIR, "--arch",
                                  "g2lstm_iwslt", "--max-update", "1", "--cpu", "--save-dir", tmp_path, flag, value)
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], stderr[-2000:]
    assert "Traceback" not in stderr


def scalar_tags(folder) -> set:
    """The scalar tags of the TensorBoard event files in ``folder`` (TFRecord framing:
    length, its CRC, the serialized Event, its CRC), read with tensorboardX's protobufs."""
    import struct

    from tensorboardX.proto import event_pb2

    tags = set()
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            tags |= {value.tag for value in event.summary.value}
            offset += 12 + length + 4
    return tags


def test_training_logs_gate_saturation_in_the_log_and_tensorboard(toy_data, tmp_path):
    proc = cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, "--arch", "g2lstm_iwslt", *TINY_DIMS,
               "--max-update", "4", "--max-tokens", "800", "--optimizer", "adam", "--lr", "0.01", "--cpu",
               "--save-dir", tmp_path / "ckpt", "--no-save", "--log-format", "simple", "--log-interval", "2",
               "--tensorboard-logdir", tmp_path / "tb")
    log = proc.stdout + proc.stderr
    assert "Please install tensorboardX" not in log
    for line_kind in ("| train_inner |", "| valid |", "| train |"):
        line = next(line for line in log.splitlines() if line_kind in line)
        values = {k: float(v) for k, v in re.findall(r"(gate_[if]_(?:lo|hi|mean))[ =]([\d.]+)", line)}
        assert set(values) == {f"gate_{g}_{s}" for g in "if" for s in ("lo", "hi", "mean")}, line
        assert all(0.0 <= v <= 1.0 for v in values.values())
        assert values["gate_i_lo"] + values["gate_i_hi"] <= 1.0
    for subset in ("train", "valid"):
        tags = scalar_tags(tmp_path / "tb" / subset)
        assert {f"gate_{g}_{s}" for g in "if" for s in ("lo", "hi", "mean")} <= tags, (subset, tags)

    quiet = cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, "--arch", "g2lstm_iwslt", *TINY_DIMS,
                "--max-update", "2", "--max-tokens", "800", "--optimizer", "adam", "--cpu", "--no-gate-metrics",
                "--save-dir", tmp_path / "ckpt2", "--no-save", "--log-format", "simple")
    assert "gate_i_lo" not in quiet.stdout + quiet.stderr


TOOLS = ["g2lstm-prepare-parallel", "g2lstm-prepare-iwslt14", "g2lstm-prepare-wmt14", "g2lstm-prepare-lm",
         "g2lstm-build-gettext-corpus", "g2lstm-average-checkpoints", "g2lstm-gates", "g2lstm-compress",
         "g2lstm-compression-sweep", "g2lstm-user-dir"]


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_answers_an_unknown_flag_with_one_line_under_its_own_name(tool, tmp_path):
    """One error contract: ``PROG: error: ...``, exit 2, no usage block, nothing written."""
    from conftest import BIN

    proc = subprocess.run([str(BIN / tool), "--no-such-flag"], capture_output=True, text=True, cwd=tmp_path)
    ours = [line for line in proc.stderr.splitlines() if not line.startswith("INFO:fairseq")]
    assert proc.returncode == 2 and len(ours) == 1 and ours[0].startswith(f"{tool}: error: "), proc.stderr
    assert list(tmp_path.iterdir()) == []
