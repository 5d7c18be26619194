"""g2lstm-gates: gate statistics, histograms and per-token heatmaps of checkpoints.

One run of the command (two checkpoints, every layer, two heatmaps) is shared by most
tests; the numbers it writes are checked against raw gates that the tests' own recorder
collects, and against the dataset's token counts."""
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BIN

import fairseq_g2lstm  # noqa: F401  (registers the model; lets torch.load read fairseq checkpoints)
from fairseq_g2lstm.gate_stats import cli, collect, figures

HIDDEN = 16  # conftest's TINY_DIMS
SUBSET = 40  # pairs of the 300-pair toy train split
SEED = 7
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED_LAYERS = ["encoder.0", "encoder.0.reverse", "encoder.1", "decoder.0", "decoder.1"]  # g2lstm_iwslt


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def variant_checkpoint(source: Path, target: Path, **model_args) -> Path:
    """A copy of ``source`` whose stored model flags are changed (e.g. another gate mode)."""
    state = torch.load(source, map_location="cpu")
    for name, value in model_args.items():
        setattr(state["cfg"]["model"], name, value)
    torch.save(state, target)
    return target


@pytest.fixture(scope="module")
def checkpoints(toy_checkpoint, tmp_path_factory):
    """The toy checkpoint (G2) and a copy read as the sharpened baseline: same weights,
    other eval gates sigmoid(a / 0.2), so the two overlays differ."""
    folder = tmp_path_factory.mktemp("gate_ckpts")
    sharpened = variant_checkpoint(toy_checkpoint, folder / "sharpened.pt", gate_mode="sharpened")
    return [toy_checkpoint, sharpened]


@pytest.fixture(scope="module")
def run(toy_data, checkpoints, tmp_path_factory):
    """g2lstm-gates over both checkpoints: 40 train pairs, every layer, two heatmaps."""
    out = tmp_path_factory.mktemp("gates_out")
    before = {path: (sha256(path), sorted(p.name for p in path.parent.iterdir())) for path in checkpoints}
    argv = [str(toy_data / "bin"), "--path", *map(str, checkpoints), "--labels", "G2", "sharpened", "--cpu",
            "--max-sentences", str(SUBSET), "--seed", str(SEED), "--max-tokens", "300", "--layer", "all",
            "--out-dir", str(out), "--no-progress-bar",
            "--heatmap", "w1 w2 w3 w4", "--heatmap-target", "W4 W3 W2 W1",
            "--heatmap", "w5 w6 w7", "--heatmap-target", "W7 W6 W5"]
    assert cli.main(argv) == 0
    after = {path: (sha256(path), sorted(p.name for p in path.parent.iterdir())) for path in checkpoints}
    records = {label: json.loads((out / f"gates.{label}.json").read_text()) for label in ("G2", "sharpened")}
    return {"out": out, "records": records, "before": before, "after": after, "argv": argv}


class RawGates:
    """The tests' own recorder: every real (non-padding) gate value per layer and gate,
    and the largest absolute value seen at padding."""

    def __init__(self):
        self.values = {}
        self.padding_max = 0.0

    def recorder(self, prefix):
        def record(layer, direction, gates, lengths):
            name = f"{prefix}.{layer}" + (".reverse" if direction else "")
            steps, batch, width = gates.shape
            hidden = width // 4
            real = torch.arange(steps).unsqueeze(1) < lengths.cpu().unsqueeze(0)  # [T,B], right-padded
            self.padding_max = max(self.padding_max, float(gates[~real].abs().max()) if (~real).any() else 0.0)
            for k, gate in enumerate(("input", "forget")):
                block = gates[..., k * hidden:(k + 1) * hidden][real].double().flatten().cpu().numpy()
                self.values.setdefault((name, gate), []).append(block)

        return record

    def get(self, name, gate):
        return np.concatenate(self.values[(name, gate)])


@pytest.fixture(scope="module")
def raw_g2(toy_data, checkpoints):
    """Raw gate values of the G2 checkpoint on the same 40 pairs (the same seed)."""
    loaded = collect.load_g2lstm(checkpoints[0], toy_data / "bin", "G2", device=torch.device("cpu"))
    raw = RawGates()
    collect.collect_tallies(loaded, "train", SUBSET, max_tokens=300, seed=SEED, bins=50, progress=False,
                            recorder_objects=[raw])
    return loaded, raw


def test_json_numbers_match_the_raw_gate_values(run, raw_g2):
    _, raw = raw_g2
    record = run["records"]["G2"]
    assert raw.padding_max == 0.0  # the hook's gates are exactly zero at padding
    for name in EXPECTED_LAYERS:
        for gate in ("input", "forget"):
            values = raw.get(name, gate)
            entry = record["layers"][name][gate]
            assert entry["count"] == values.size
            assert entry["share_below"] == pytest.approx(np.mean(values < 0.1), abs=1e-12)
            assert entry["share_above"] == pytest.approx(np.mean(values > 0.9), abs=1e-12)
            assert entry["mean"] == pytest.approx(values.mean(), rel=1e-9)
            with np.errstate(divide="ignore", invalid="ignore"):
                bits = -(np.where(values > 0, values * np.log2(values), 0.0)
                         + np.where(values < 1, (1 - values) * np.log2(1 - values), 0.0))
            assert entry["entropy_bits"] == pytest.approx(bits.mean(), rel=1e-9)
            expected_hist = np.histogram(values, bins=50, range=(0.0, 1.0))[0] / values.size
            assert len(entry["histogram"]) == 50
            assert sum(entry["histogram"]) == pytest.approx(1.0, abs=1e-9)
            # torch.histc and numpy may put a value lying exactly on a bin edge on either side
            assert np.abs(np.asarray(entry["histogram"]) - expected_hist).sum() * values.size <= 2


def test_every_layer_and_both_directions_appear(run):
    for record in run["records"].values():
        assert list(record["layers"]) == EXPECTED_LAYERS
        for gates in record["layers"].values():
            assert set(gates) == {"input", "forget"}


def test_counts_are_real_tokens_times_hidden_units(run, toy_data):
    """Padding is excluded: every layer's count is the subset's real tokens x H."""
    from fairseq.data import Dictionary, data_utils

    record = run["records"]["G2"]
    dictionary = Dictionary.load(str(toy_data / "bin" / "dict.de.txt"))
    src = data_utils.load_indexed_dataset(str(toy_data / "bin" / "train.de-en.de"), dictionary)
    tgt = data_utils.load_indexed_dataset(str(toy_data / "bin" / "train.de-en.en"), dictionary)
    chosen = np.random.default_rng(SEED).choice(len(src), size=SUBSET, replace=False)
    source_tokens = int(src.sizes[chosen].sum())  # each ends in eos, as the encoder reads it
    target_tokens = int(tgt.sizes[chosen].sum())  # the decoder reads eos + all but the last
    assert record["sentences"] == SUBSET and record["sentences_in_split"] == 300
    assert record["source_tokens"] == source_tokens and record["target_tokens"] == target_tokens
    for name, gates in record["layers"].items():
        tokens = source_tokens if name.startswith("encoder") else target_tokens
        assert gates["input"]["count"] == gates["forget"]["count"] == tokens * HIDDEN, name


def test_json_says_what_produced_it(run, checkpoints):
    record = run["records"]["sharpened"]
    origin = record["generated_by"]
    assert origin["tool"] == "g2lstm-gates" and origin["version"]
    assert origin["command"].startswith("g2lstm-gates ") and "--max-sentences 40" in origin["command"]
    assert list(record)[0] == "generated_by"
    assert record["checkpoint"]["path"] == str(checkpoints[1].resolve())
    assert record["checkpoint"]["sha256_prefix"] == sha256(checkpoints[1])[:16]
    assert record["checkpoint"]["gate_mode"] == "sharpened" and record["checkpoint"]["gate_eval"] == "soft"
    assert (record["split"], record["seed"], record["histogram_bins"]) == ("train", SEED, 50)
    # the sharpened reading of the same weights pushes the gates outwards
    g2 = run["records"]["G2"]["layers"]["decoder.0"]["forget"]
    sharp = record["layers"]["decoder.0"]["forget"]
    assert sharp["entropy_bits"] < g2["entropy_bits"]


def test_checkpoints_are_unchanged_and_nothing_is_written_next_to_them(run):
    assert run["before"] == run["after"]


def read_png_size(path: Path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_histogram_pngs_one_per_layer_at_a_fixed_size(run):
    width, height = (round(x * figures.DPI) for x in figures.HISTOGRAM_SIZE)
    for name in EXPECTED_LAYERS:
        assert read_png_size(run["out"] / f"hist.{name}.png") == (width, height)


def test_histogram_figure_overlays_one_series_per_checkpoint(run):
    from matplotlib.patches import StepPatch

    series = [(label, record["layers"]["decoder.0"]) for label, record in run["records"].items()]
    fig = figures.histogram_figure("decoder.0", series)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["input gate", "forget gate"]
    for ax, gate in zip(axes, ("input", "forget")):
        patches = [p for p in ax.patches if isinstance(p, StepPatch)]
        assert [p.get_label().split(":")[0] for p in patches] == ["G2", "sharpened"]
        for patch, (_, gates) in zip(patches, series):
            np.testing.assert_allclose(patch.get_data().values, gates[gate]["histogram"])
        assert [t.get_text().split(":")[0] for t in ax.get_legend().get_texts()] == ["G2", "sharpened"]
        assert ax.get_xlim() == (0.0, 1.0)


@pytest.mark.parametrize("columns, slanted", [(["a", "b", "c"], False), (["run", "git-prune-packed"], True),
                                              ([f"w{i}" for i in range(figures.MAX_UPRIGHT_COLUMNS + 1)], True)])
def test_heatmap_slants_labels_that_would_run_into_each_other(columns, slanted):
    row = {"label": "G2", "columns": columns, "input": [0.5] * len(columns), "forget": [0.5] * len(columns)}
    ax = figures.heatmap_figure([row]).get_axes()[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == columns
    assert {t.get_rotation() for t in ax.get_xticklabels()} == {45.0 if slanted else 0.0}


def test_heatmap_means_equal_a_direct_computation(run, toy_data, checkpoints):
    from fairseq import checkpoint_utils

    record = json.loads((run["out"] / "heatmap.1.json").read_text())
    assert read_png_size(run["out"] / "heatmap.1.png")[0] > 0 and (run["out"] / "heatmap.2.png").is_file()
    assert record["generated_by"]["tool"] == "g2lstm-gates" and record["layer"] == "decoder.0"
    assert [row["label"] for row in record["checkpoints"]] == ["G2", "sharpened"]
    for row, path in zip(record["checkpoints"], checkpoints):
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [str(path)], arg_overrides={"data": str(toy_data / "bin")})
        model = models[0].eval()
        dictionary = task.target_dictionary
        target = dictionary.encode_line("W4 W3 W2 W1", add_if_not_exist=False).long()
        assert row["target_ids"] == target.tolist() and row["target_from"] == "given"
        source = torch.tensor(row["source_ids"])
        assert source.tolist() == task.source_dictionary.encode_line("w1 w2 w3 w4", add_if_not_exist=False).tolist()
        prev = torch.cat([torch.tensor([dictionary.eos()]), target[:-1]])
        kept = {}

        class Keep:
            def recorder(self, prefix):
                def record_gates(layer, direction, gates, lengths):
                    kept[f"{prefix}.{layer}"] = gates[:, 0]  # [T,4H]

                return record_gates

        with torch.no_grad():
            model(source[None], torch.tensor([len(source)]), prev[None], gate_stats=Keep())
        gates = kept["decoder.0"]
        np.testing.assert_allclose(row["input"], gates[:, :HIDDEN].double().mean(1).numpy(), rtol=1e-6)
        np.testing.assert_allclose(row["forget"], gates[:, HIDDEN:2 * HIDDEN].double().mean(1).numpy(), rtol=1e-6)
        assert row["columns"] == ["<s>", "W4", "W3", "W2", "W1"] and row["units"] == "tokens"
        assert row["steps"]["predicts"] == ["W4", "W3", "W2", "W1", "</s>"]


def test_heatmap_without_a_target_uses_the_beam_translation(toy_data, checkpoints, tmp_path):
    assert cli.main([str(toy_data / "bin"), "--path", str(checkpoints[0]), "--cpu", "--out-dir", str(tmp_path),
                     "--heatmap", "w3 w9", "--heatmap-only"]) == 0
    row = json.loads((tmp_path / "heatmap.1.json").read_text())["checkpoints"][0]
    assert row["target_from"] == "beam-5 translation"
    assert row["target_ids"][-1] == 2 and len(row["input"]) == len(row["target_ids"])  # eos ends it
    assert not list(tmp_path.glob("gates.*.json"))  # --heatmap-only skips the split


def test_replot_redraws_from_the_json_alone(run, tmp_path):
    out = run["out"]
    argv = ["--replot", str(out / "gates.G2.json"), str(out / "gates.sharpened.json"), str(out / "heatmap.2.json"),
            "--out-dir", str(tmp_path)]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heatmap.2.png", "hist.decoder.0.png"]
    assert read_png_size(tmp_path / "hist.decoder.0.png") == read_png_size(out / "hist.decoder.0.png")


def test_gate_eval_hard_override_gives_binary_gates(toy_data, checkpoints, tmp_path):
    assert cli.main([str(toy_data / "bin"), "--path", str(checkpoints[0]), "--labels", "hard", "--cpu",
                     "--gate-eval", "hard", "--max-sentences", "5", "--out-dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "gates.hard.json").read_text())
    assert record["checkpoint"]["gate_eval"] == "hard"
    for gates in record["layers"].values():
        for entry in gates.values():
            assert entry["share_below"] + entry["share_above"] == pytest.approx(1.0)
            assert entry["entropy_bits"] == 0.0
            assert sum(entry["histogram"][1:-1]) == 0.0


def test_words_group_sentencepiece_pieces(tmp_path):
    import sentencepiece as spm
    from fairseq.data.encoders.sentencepiece_bpe import SentencepieceBPE, SentencepieceConfig

    text = tmp_path / "text.txt"
    text.write_text("\n".join(f"w{i} w{i + 1} W{i}" for i in range(40)) + "\n")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "spm"), vocab_size=30,
                                   hard_vocab_limit=False, model_type="bpe", minloglevel=2)
    bpe = SentencepieceBPE(SentencepieceConfig(sentencepiece_model=str(tmp_path / "spm.model")))
    record = {"steps": {"reads": ["<s>", "\u2581W", "12", "\u2581W", "2"], "input": [0.1, 0.2, 0.4, 0.6, 0.9],
                        "forget": [0.0, 1.0, 0.0, 0.5, 0.5]}}
    words = collect.heatmap_columns(record, bpe, "auto")
    assert words["units"] == "words" and words["columns"] == ["<s>", "W12", "W2"]
    assert words["input"] == pytest.approx([0.1, 0.3, 0.75]) and words["forget"] == pytest.approx([0.0, 0.5, 0.5])
    tokens = collect.heatmap_columns(record, bpe, "tokens")
    assert tokens["columns"] == record["steps"]["reads"] and tokens["input"] == record["steps"]["input"]


# --- bad input: one error line, exit status 2, nothing written ------------------------------------------
def error_line(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("g2lstm-gates: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def foreign_checkpoints(toy_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("foreign")
    lstm = variant_checkpoint(toy_checkpoint, folder / "lstm.pt", arch="lstm", _name="lstm")
    torch.save({"weights": torch.zeros(3)}, folder / "not_fairseq.pt")
    return lstm, folder / "not_fairseq.pt"


def test_bad_inputs_give_one_error_line(capsys, toy_data, toy_checkpoint, foreign_checkpoints, tmp_path):
    data, out = str(toy_data / "bin"), str(tmp_path / "out")
    lstm, not_fairseq = map(str, foreign_checkpoints)
    common = ["--cpu", "--out-dir", out, "--max-sentences", "2"]
    assert "missing.pt: no such file" in error_line(capsys, [data, "--path", str(tmp_path / "missing.pt"), *common])
    assert "no such data-bin" in error_line(capsys, [str(tmp_path / "nobin"), "--path", str(toy_checkpoint), *common])
    assert "a 'lstm' model, not a g2lstm model" in error_line(capsys, [data, "--path", lstm, *common])
    assert "not a fairseq checkpoint" in error_line(capsys, [data, "--path", not_fairseq, *common])
    line = error_line(capsys, [data, "--path", str(toy_checkpoint), "--labels", "a", "b", *common])
    assert "--labels has 2 names for 1 checkpoints" in line
    line = error_line(capsys, [data, "--path", f"{toy_checkpoint}:{toy_checkpoint}", "--labels", "a", *common])
    assert "--labels has 1 names for 2 checkpoints" in line  # fairseq's colon-separated --path
    line = error_line(capsys, [data, "--path", str(toy_checkpoint), "--layer", "decoder.9", *common])
    assert line.endswith("valid: all, " + ", ".join(EXPECTED_LAYERS))
    assert "'nosplit' split" in error_line(capsys, [data, "--path", str(toy_checkpoint), "--split", "nosplit", *common])
    assert not (tmp_path / "out").exists()  # not even an empty folder
    (tmp_path / "file").write_text("x")
    line = error_line(capsys, [data, "--path", str(toy_checkpoint), "--cpu", "--out-dir", str(tmp_path / "file" / "o")])
    assert line == f"g2lstm-gates: error: --out-dir {tmp_path / 'file' / 'o'}: {tmp_path / 'file'} is a file, not a folder"


@pytest.mark.parametrize("argv, message", [
    (["--bins", "0"], "argument --bins: must be at least 1; got 0"),
    (["--max-sentences", "x"], "argument --max-sentences: a positive number or 'all'; got 'x'"),
    (["--nope"], "unrecognized arguments: --nope"),
])
def test_usage_errors_are_one_line_without_the_usage_block(capsys, tmp_path, argv, message):
    with pytest.raises(SystemExit) as stop:
        cli.main([str(tmp_path), "--path", "a.pt", *argv])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"g2lstm-gates: error: {message} (see --help)"]


@pytest.mark.parametrize("kind, damage, message", [
    ("gates.G2.json", lambda r: r["layers"]["decoder.0"]["input"].pop("share_below"),
     "layer 'decoder.0' gate 'input' has no 'share_below'"),
    ("gates.G2.json", lambda r: r.pop("layers"), "no 'layers' (dict)"),
    ("heatmap.1.json", lambda r: r["checkpoints"][1].pop("columns"), "checkpoint 1 has no 'columns'"),
])
def test_replot_of_an_incomplete_json_is_one_error_line(run, capsys, tmp_path, kind, damage, message):
    record = json.loads((run["out"] / kind).read_text())
    damage(record)
    (tmp_path / kind).write_text(json.dumps(record))
    line = error_line(capsys, ["--replot", str(tmp_path / kind), "--out-dir", str(tmp_path / "png")])
    assert line.startswith(f"g2lstm-gates: error: {tmp_path / kind}: {message}; not a complete "), line
    assert not (tmp_path / "png").exists()


def test_heatmap_labels_are_cut_to_a_readable_length():
    """An undertrained model can emit one 200-character "word": its tick label is cut,
    so the figure stays the size of one with a 16-character label."""
    long_word = "x" * 200
    rows = [{"label": "G2", "columns": ["<s>", long_word, "ok"], "input": [0.5] * 3, "forget": [0.5] * 3}]
    fig = figures.heatmap_figure(rows)
    labels = [t.get_text() for t in fig.get_axes()[0].get_xticklabels()]
    assert labels == ["<s>", "x" * (figures.MAX_LABEL - 1) + "\u2026", "ok"]
    cut = [{**rows[0], "columns": ["<s>", "x" * figures.MAX_LABEL, "ok"]}]
    assert fig.get_size_inches().tolist() == figures.heatmap_figure(cut).get_size_inches().tolist()
    assert fig.get_size_inches()[1] * figures.DPI < 400


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([str(BIN / "g2lstm-gates"), str(tmp_path), "--path", str(tmp_path / "none.pt")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"g2lstm-gates: error: {tmp_path / 'none.pt'}: no such file"]
    assert not (tmp_path / "gates").exists()


def test_encoder_gate_statistics_equal_the_reference_cell_run_from_the_weights(toy_data, toy_checkpoint, tmp_path):
    """Independent of the tool's hooks: the first encoder layer's forward direction run by
    hand from the checkpoint's weights with the reference cell (eval gates: sigmoid(a)),
    sentence by sentence over the whole train split, gives the shares and means of the
    tool's JSON."""
    from fairseq.data import Dictionary, data_utils

    from fairseq_g2lstm.gates import GateSpec
    from fairseq_g2lstm.rnn.cell import cell_step

    out = tmp_path / "gates"
    assert cli.main([str(toy_data / "bin"), "--path", str(toy_checkpoint), "--labels", "g2", "--cpu",
                     "--max-sentences", "all", "--layer", "encoder.0", "--out-dir", str(out), "--no-progress-bar"]) == 0
    record = json.loads((out / "gates.g2.json").read_text())["layers"]["encoder.0"]

    state = torch.load(toy_checkpoint, map_location="cpu")["model"]
    embed = state["encoder.embed_tokens.weight"]
    w_ih, w_hh = state["encoder.lstm.weight_ih_l0"], state["encoder.lstm.weight_hh_l0"]
    bias = state["encoder.lstm.bias_ih_l0"] + state["encoder.lstm.bias_hh_l0"]
    dictionary = Dictionary.load(str(toy_data / "bin" / "dict.de.txt"))
    sources = data_utils.load_indexed_dataset(str(toy_data / "bin" / "train.de-en.de"), dictionary)
    values = {"input": [], "forget": []}
    with torch.no_grad():
        for k in range(len(sources)):
            h, c = torch.zeros(1, HIDDEN), torch.zeros(1, HIDDEN)
            for x in embed[sources[k].long()]:  # every source token, </s> included
                h, c, gates = cell_step(x @ w_ih.T + h @ w_hh.T + bias, c, GateSpec())
                values["input"].append(gates[0, :HIDDEN])
                values["forget"].append(gates[0, HIDDEN:2 * HIDDEN])
    for gate in ("input", "forget"):
        v = torch.cat(values[gate]).double().numpy()
        entry = record[gate]
        assert entry["count"] == v.size == sum(len(s) for s in sources) * HIDDEN
        assert entry["share_below"] == pytest.approx(np.mean(v < 0.1), abs=2 / v.size)
        assert entry["share_above"] == pytest.approx(np.mean(v > 0.9), abs=2 / v.size)
        assert entry["mean"] == pytest.approx(v.mean(), rel=1e-5)
