"""g2lstm-average-checkpoints and the checkpoint helpers it shares (fairseq_g2lstm.checkpoints).

One fairseq-train run (3 epochs of 4 updates, --save-interval-updates 2) makes the epoch
checkpoints checkpoint1-3.pt and the update checkpoints checkpoint_1_2/_2_6/_3_10.pt; the
checks average them in Python, through the console script and ``python -m``, and decode
the average with fairseq-generate, fairseq-interactive and the hub."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import BIN, REPO, TINY_DIMS, USER_DIR, cli
from fairseq_g2lstm.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from fairseq_g2lstm.checkpoints.average import PROG, average_checkpoints, last_checkpoints, main

EPOCHS = ["checkpoint1.pt", "checkpoint2.pt", "checkpoint3.pt"]
UPDATES = ["checkpoint_1_2.pt", "checkpoint_2_6.pt", "checkpoint_3_10.pt"]


@pytest.fixture(scope="module")
def run_dir(toy_data):
    """The save dir of a short training run with epoch and update checkpoints."""
    save_dir = toy_data / "ckpt_avg"
    cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, "--arch", "g2lstm_iwslt", *TINY_DIMS,
        "--max-epoch", "3", "--max-tokens", "800", "--optimizer", "adam", "--lr", "0.01", "--cpu",
        "--save-dir", save_dir, "--save-interval-updates", "2", "--seed", "3", "--log-format", "simple")
    assert sorted(os.listdir(save_dir)) == sorted(EPOCHS + UPDATES + ["checkpoint_best.pt", "checkpoint_last.pt"])
    return save_dir


def models_of(paths):
    return [torch.load(path, map_location="cpu")["model"] for path in paths]


def leftovers(folder):
    """Temporary files that a write left behind."""
    return [name for name in os.listdir(folder) if name.endswith(".partial")]


def test_average_is_the_elementwise_mean_of_the_inputs(run_dir):
    paths = [run_dir / name for name in EPOCHS]
    averaged = average_checkpoints(paths)
    inputs = models_of(paths)
    assert list(averaged["model"]) == list(inputs[0])
    for key, value in averaged["model"].items():
        stacked = torch.stack([model[key] for model in inputs])
        assert value.dtype == inputs[0][key].dtype
        assert torch.equal(value, stacked.double().mean(dim=0).to(value.dtype)), key
    assert any(not torch.equal(inputs[0][key], inputs[2][key]) for key in inputs[0])  # the inputs differ
    first = torch.load(paths[0], map_location="cpu")
    assert averaged["cfg"] == first["cfg"] and averaged["optimizer_history"] == first["optimizer_history"]
    assert averaged["last_optimizer_state"] is None
    assert averaged["averaged_from"] == [str(path) for path in paths]


@pytest.mark.parametrize("copies", [1, 2])
def test_averaging_a_checkpoint_with_itself_reproduces_it(run_dir, copies):
    path = run_dir / "checkpoint2.pt"
    averaged = average_checkpoints([path] * copies)["model"]
    (original,) = models_of([path])
    assert list(averaged) == list(original)
    for key, value in original.items():
        assert averaged[key].dtype == value.dtype and torch.equal(averaged[key], value), key


def with_extra_tensors(source, destination, **tensors):
    """A copy of the checkpoint ``source`` with extra model tensors, saved at ``destination``."""
    state = torch.load(source, map_location="cpu")
    state["model"].update(tensors)
    torch.save(state, destination)
    return destination


def test_mean_is_taken_in_float64_and_non_float_tensors_are_kept(run_dir, tmp_path):
    source = run_dir / "checkpoint1.pt"
    big = torch.tensor([60000.0, -60000.0, 1.0], dtype=torch.float16)  # big + big overflows float16
    a = with_extra_tensors(source, tmp_path / "a.pt", half=big, steps=torch.tensor([3, 4]))
    b = with_extra_tensors(source, tmp_path / "b.pt", half=big.clone(), steps=torch.tensor([3, 4]))
    averaged = average_checkpoints([a, b])["model"]
    assert averaged["half"].dtype == torch.float16 and torch.equal(averaged["half"], big)
    assert averaged["steps"].dtype == torch.int64 and averaged["steps"].tolist() == [3, 4]

    c = with_extra_tensors(source, tmp_path / "c.pt", half=big.clone(), steps=torch.tensor([3, 5]))
    with pytest.raises(CheckpointError, match=f"steps differs between {a} and {c}"):
        average_checkpoints([a, c])


def test_checkpoints_of_different_models_are_refused_naming_the_key_and_files(run_dir, tmp_path):
    good = run_dir / "checkpoint1.pt"
    state = torch.load(good, map_location="cpu")
    state["model"]["decoder.fc_out.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "resized.pt")
    message = rf"decoder\.fc_out\.bias is \[7\] in {tmp_path / 'resized.pt'} but \[64\] in {good}"
    with pytest.raises(CheckpointError, match=message):
        average_checkpoints([good, tmp_path / "resized.pt"])
    del state["model"]["decoder.fc_out.bias"]
    torch.save(state, tmp_path / "smaller.pt")
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'smaller.pt'} lacks decoder\.fc_out\.bias, unlike {good}"):
        average_checkpoints([good, tmp_path / "smaller.pt"])


def test_last_checkpoints_follow_fairseqs_names_newest_first(run_dir):
    names = lambda paths: [path.name for path in paths]  # noqa: E731
    assert names(last_checkpoints(run_dir, 2, by="epoch")) == ["checkpoint3.pt", "checkpoint2.pt"]
    assert names(last_checkpoints(run_dir, 2, by="update")) == ["checkpoint_3_10.pt", "checkpoint_2_6.pt"]
    assert names(last_checkpoints(run_dir, 2, by="epoch", upper_bound=2)) == ["checkpoint2.pt", "checkpoint1.pt"]
    assert names(last_checkpoints(run_dir, 2, by="update", upper_bound=9)) == ["checkpoint_2_6.pt", "checkpoint_1_2.pt"]
    message = r"found 1 update checkpoints \(checkpoint_E_U.pt\) numbered at most 5, need 2$"
    with pytest.raises(CheckpointError, match=message):
        last_checkpoints(run_dir, 2, by="update", upper_bound=5)


def average_command(module: bool, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "fairseq_g2lstm.checkpoints.average"] if module else [str(BIN / PROG)]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("module, flag, chosen", [
    (False, "--num-update-checkpoints", ["checkpoint_3_10.pt", "checkpoint_2_6.pt"]),
    (True, "--num-epoch-checkpoints", ["checkpoint3.pt", "checkpoint2.pt"]),
])
def test_command_averages_the_newest_checkpoints_of_a_folder(run_dir, tmp_path, module, flag, chosen):
    proc = average_command(module, "--inputs", run_dir, flag, "2", "--output", tmp_path / "avg.pt")
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = [line.strip() for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert listed == [str(run_dir / name) for name in chosen]
    written = torch.load(tmp_path / "avg.pt", map_location="cpu")
    expected = average_checkpoints([run_dir / name for name in chosen])
    assert all(torch.equal(written["model"][key], value) for key, value in expected["model"].items())
    assert written["cfg"] == expected["cfg"] and written["last_optimizer_state"] is None
    assert leftovers(tmp_path) == []


def decoded(proc: subprocess.CompletedProcess):
    """fairseq-generate's hypotheses and positional scores, in sentence order."""
    return sorted(line for line in proc.stdout.splitlines() if line.startswith(("H-", "P-")))


def test_averaged_checkpoint_decodes_like_the_same_weights_saved_by_hand(toy_data, run_dir, tmp_path):
    paths = [run_dir / name for name in EPOCHS]
    assert main(["--inputs", *map(str, paths), "--output", str(tmp_path / "avg.pt")]) == 0
    by_hand = torch.load(paths[0], map_location="cpu")  # the mean, computed here, in the first input's checkpoint
    inputs = models_of(paths)
    by_hand["model"] = {key: torch.stack([model[key] for model in inputs]).double().mean(0).to(value.dtype)
                        for key, value in inputs[0].items()}
    torch.save(by_hand, tmp_path / "by_hand.pt")

    def generate(checkpoint):
        return decoded(cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--path", checkpoint,
                           "--beam", "5", "--cpu", "--batch-size", "32"))

    averaged = generate(tmp_path / "avg.pt")
    assert len([line for line in averaged if line.startswith("H-")]) == 20  # every test sentence
    assert averaged == generate(tmp_path / "by_hand.pt")  # same hypotheses, scores and positional scores

    proc = cli("fairseq-interactive", toy_data / "bin", "--user-dir", USER_DIR, "--path", tmp_path / "avg.pt",
               "--cpu", "--beam", "5", "--source-lang", "de", "--target-lang", "en", input="w1 w2 w3\nw4 w5\n")
    assert len([line for line in proc.stdout.splitlines() if line.startswith("H-")]) == 2

    from fairseq_g2lstm.models import G2LSTMModel

    def best_scores(folder, name):
        hub = G2LSTMModel.from_pretrained(str(folder), checkpoint_file=name, data_name_or_path=str(toy_data / "bin"))
        sentences = ["w1 w2 w3", "w4 w5 w6 w7", "w8"]
        return [(hub.decode(hypos[0]["tokens"]), round(hypos[0]["score"].item(), 6))
                for hypos in hub.generate([hub.encode(sentence) for sentence in sentences], beam=5)]

    assert best_scores(tmp_path, "avg.pt") == best_scores(tmp_path, "by_hand.pt")
    assert best_scores(tmp_path, "avg.pt") != best_scores(run_dir, paths[0].name)  # the average is not its first input


def run_main(capsys, *args):
    """(exit status, stdout, stderr lines) of an in-process ``main``."""
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err.splitlines()


def test_force_replaces_an_existing_output(run_dir, tmp_path, capsys):
    output = tmp_path / "avg.pt"
    output.write_text("old")
    status, _, errors = run_main(capsys, "--inputs", run_dir / "checkpoint1.pt", "--output", output)
    assert status == 2 and errors == [f"{PROG}: error: {output} already exists; pass --force to replace it"]
    assert output.read_text() == "old"
    status, out, _ = run_main(capsys, "--inputs", run_dir / "checkpoint1.pt", "--output", output, "--force")
    assert status == 0 and f"wrote {output}" in out
    assert torch.equal(load_checkpoint(output)["model"]["decoder.fc_out.bias"],
                       load_checkpoint(run_dir / "checkpoint1.pt")["model"]["decoder.fc_out.bias"])


def non_g2lstm(run_dir, folder):
    """A g2lstm checkpoint relabelled as fairseq's ``lstm``, as an lstm checkpoint names itself."""
    state = torch.load(run_dir / "checkpoint1.pt", map_location="cpu")
    state["cfg"]["model"].arch = state["cfg"]["model"]._name = "lstm"
    torch.save(state, folder / "lstm.pt")
    return folder / "lstm.pt"


def write_file(path, data: bytes):
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing file": (lambda run, tmp: ["--inputs", tmp / "nope.pt"], "nope.pt: no such file"),
    "not a torch file": (lambda run, tmp: ["--inputs", write_file(tmp / "text.pt", b"hello\n")],
                         "text.pt: not a torch checkpoint that can be loaded"),
    "truncated file": (lambda run, tmp: ["--inputs", write_file(tmp / "cut.pt", (run / EPOCHS[0]).read_bytes()[:5000])],
                       "cut.pt: not a torch checkpoint that can be loaded"),
    "not a fairseq checkpoint": (lambda run, tmp: ["--inputs", save_checkpoint({"weights": torch.ones(2)}, tmp / "w")],
                                 "w: not a fairseq checkpoint (no 'model' state dict of tensors)"),
    "not a g2lstm model": (lambda run, tmp: ["--inputs", run / "checkpoint1.pt", non_g2lstm(run, tmp)],
                           "lstm.pt: a 'lstm' model, not a g2lstm model"),
    "different models": (lambda run, tmp: ["--inputs", run / "checkpoint1.pt",
                                            with_extra_tensors(run / "checkpoint2.pt", tmp / "x.pt", x=torch.ones(1))],
                          "x.pt has x, unlike"),
    "too few checkpoints": (lambda run, tmp: ["--inputs", run, "--num-epoch-checkpoints", "4"],
                            "found 3 epoch checkpoints (checkpointE.pt), need 4"),
    "a folder without --num-*": (lambda run, tmp: ["--inputs", run],
                                 "is a folder; to average its newest checkpoints add --num-epoch-checkpoints N"),
    "missing folder": (lambda run, tmp: ["--inputs", tmp / "none", "--num-update-checkpoints", "2"],
                       "none: no such folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_error_line_and_no_output(run_dir, tmp_path, capsys, case):
    arguments, message = BAD_INPUTS[case]
    output = tmp_path / "out" / "avg.pt"
    status, _, errors = run_main(capsys, *arguments(run_dir, tmp_path), "--output", output)
    assert status == 2
    assert len(errors) == 1 and errors[0].startswith(f"{PROG}: error: ") and message in errors[0], errors
    assert not output.exists() and not output.parent.exists()


def test_bad_input_through_the_console_script_has_no_traceback(run_dir, tmp_path):
    proc = average_command(False, "--inputs", run_dir / "checkpoint1.pt", tmp_path / "nope.pt",
                           "--output", tmp_path / "avg.pt")
    assert proc.returncode == 2
    # all but the tensorboardX notice that importing fairseq logs
    ours = [line for line in proc.stderr.splitlines() if not line.startswith("INFO:fairseq")]
    assert ours == [f"{PROG}: error: {tmp_path / 'nope.pt'}: no such file"], proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("arguments, message", [
    (["--inputs", "a.pt", "--checkpoint-upper-bound", "3"], "--checkpoint-upper-bound needs"),
    (["--inputs", "a", "b", "--num-epoch-checkpoints", "2"], "--num-epoch-checkpoints takes one folder"),
    (["--inputs", "a", "--num-epoch-checkpoints", "2", "--num-update-checkpoints", "2"], "not allowed with"),
    (["--inputs", "a", "--num-update-checkpoints", "0"], "must be at least 1; got 0"),
])
def test_flag_misuse_is_a_usage_error(tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_:
        main([*arguments, "--output", str(tmp_path / "avg.pt")])
    errors = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and len(errors) == 1, errors  # one line, no usage block
    assert errors[0].startswith(f"{PROG}: error: ") and message in errors[0], errors
    assert os.listdir(tmp_path) == []


def test_the_folder_of_a_missing_flag_is_named_before_anything_is_printed(run_dir, tmp_path, capsys):
    status, out, errors = run_main(capsys, "--inputs", run_dir, "--output", tmp_path / "avg.pt")
    assert status == 2 and out == "" and errors == [
        f"{PROG}: error: {run_dir} is a folder; to average its newest checkpoints add --num-epoch-checkpoints N "
        "or --num-update-checkpoints N"]


@pytest.mark.parametrize("names, warning", [
    (["checkpoint1.pt"], "only one checkpoint: the output is {0}'s model without optimizer state"),
    (["checkpoint1.pt", "checkpoint2.pt", "checkpoint1.pt"], "{0} is given 2 times, so it weighs 2 times in the mean"),
])
def test_one_input_or_a_repeated_one_is_warned_about(run_dir, tmp_path, capsys, names, warning):
    status, _, errors = run_main(capsys, "--inputs", *[run_dir / name for name in names], "--output", tmp_path / "a.pt")
    assert status == 0 and errors == [f"{PROG}: warning: " + warning.format(run_dir / names[0])]
    status, _, errors = run_main(capsys, "--inputs", run_dir / "checkpoint1.pt", run_dir / "checkpoint2.pt",
                                 "--output", tmp_path / "b.pt")
    assert status == 0 and errors == []


def compressed_copy(source, destination, config, pack):
    from fairseq_g2lstm.compress.apply import compress_checkpoint

    compress_checkpoint(source, destination, config, pack=pack)
    return destination


@pytest.mark.parametrize("method", ["svd", "round"])
def test_packed_checkpoints_average_as_their_full_matrices(run_dir, tmp_path, method):
    """The mean of SVD factors is not the factor of the mean: packed inputs are expanded
    first, so the average equals that of the same checkpoints unpacked, packed or not,
    mixed with plain ones, and the result carries no compression record."""
    from fairseq_g2lstm.compress.methods import CompressionConfig

    config = CompressionConfig("svd", rank=3) if method == "svd" else CompressionConfig("round", step=0.01)
    plain = [compressed_copy(run_dir / name, tmp_path / f"plain{i}.pt", config, False) for i, name in enumerate(EPOCHS)]
    packed = [compressed_copy(run_dir / name, tmp_path / f"packed{i}.pt", config, True) for i, name in enumerate(EPOCHS)]
    assert any(".g2pack." in key for key in torch.load(packed[0], map_location="cpu")["model"])
    inputs = models_of(plain)
    by_hand = {key: torch.stack([model[key] for model in inputs]).double().mean(0).to(value.dtype)
               for key, value in inputs[0].items()}
    for paths in (packed, [packed[0], plain[1], packed[2]], [plain[0], packed[1], plain[2]]):
        averaged = average_checkpoints(paths)
        assert list(averaged["model"]) == list(by_hand)
        assert all(torch.equal(averaged["model"][key], value) for key, value in by_hand.items()), paths
        assert "compression" not in averaged


def test_tied_embeddings_stay_one_tensor_and_are_averaged_once(run_dir, tmp_path):
    """With --share-all-embeddings the encoder's, decoder's and output embeddings are one
    tensor; the average must be that tensor's mean, stored once."""
    tied = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.fc_out.weight")
    paths = []
    for name in EPOCHS[:2]:
        state = torch.load(run_dir / name, map_location="cpu")
        for key in tied[1:]:
            state["model"][key] = state["model"][tied[0]]
        torch.save(state, tmp_path / name)
        paths.append(tmp_path / name)
    assert main(["--inputs", *map(str, paths), "--output", str(tmp_path / "avg.pt")]) == 0
    model = torch.load(tmp_path / "avg.pt", map_location="cpu")["model"]
    inputs = models_of(paths)
    mean = (inputs[0][tied[0]].double() + inputs[1][tied[0]].double()).div(2).float()
    assert all(torch.equal(model[key], mean) for key in tied)
    assert len({model[key].untyped_storage().data_ptr() for key in tied}) == 1


def test_save_checkpoint_leaves_nothing_behind_when_a_write_fails(tmp_path, monkeypatch):
    with pytest.raises(Exception):
        save_checkpoint({"model": {}, "unpicklable": lambda: None}, tmp_path / "a.pt")
    assert os.listdir(tmp_path) == []

    import fairseq_g2lstm.atomic_file as atomic_file_module

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_file_module.os, "replace", full_disk)
    with pytest.raises(CheckpointError, match="a.pt: cannot write there \\(No space left on device\\)"):
        save_checkpoint({"model": {}}, tmp_path / "a.pt")
    assert os.listdir(tmp_path) == []


def test_load_checkpoint_accepts_other_models_when_asked(run_dir, tmp_path):
    path = non_g2lstm(run_dir, tmp_path)
    with pytest.raises(CheckpointError, match="not a g2lstm model"):
        load_checkpoint(path)
    assert load_checkpoint(path, require_g2lstm=False)["cfg"]["model"].arch == "lstm"
