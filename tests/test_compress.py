"""g2lstm-compress: only the input/forget-gate blocks change, each method computes what
the paper's section 4 says, packed checkpoints expand bit for bit and load in fairseq's tools,
and bad inputs give one error line and no file."""
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import BIN, REPO, USER_DIR

from fairseq_g2lstm.checkpoints.io import load_checkpoint
from fairseq_g2lstm.compress.apply import compress_checkpoint, compress_state_dict
from fairseq_g2lstm.compress.cli import main
from fairseq_g2lstm.compress.methods import (CompressionConfig, CompressionError, dequantize, pack_bits, round_codes,
                                             unpack_bits)
from fairseq_g2lstm.compress.packing import expanded
from fairseq_g2lstm.gates import gate_slice

PROG = "g2lstm-compress"
# The toy model's weights are within a few tenths of 0, so the paper's r = 0.5 would
# round every gate weight to 0; these steps leave several levels to check.
STEP, CLIP, RANK = 0.02, 0.06, 4
CONFIGS = {
    "round": CompressionConfig("round", step=STEP),
    "round-clip": CompressionConfig("round-clip", step=STEP, clip=CLIP),
    "svd": CompressionConfig("svd", rank=RANK),
}


@pytest.fixture(scope="module")
def source(toy_checkpoint):
    """The toy checkpoint's model state dict."""
    return load_checkpoint(toy_checkpoint)["model"]


def expected_blocks(state, scope):
    """(name, gate, rows, cols) of every block the scope should compress, written out
    from the layouts of G2LSTM and CellStack, independently of the tool's own search."""
    embed_dim = state["decoder.embed_tokens.weight"].shape[1]
    blocks = []
    for name, weight in state.items():
        match = re.fullmatch(r"(encoder\.lstm|decoder\.layers)\.weight_(ih|hh)_l(\d+)(_reverse)?", name)
        if not match:
            continue
        hidden, cols = weight.shape[0] // 4, weight.shape[1]
        module, kind, layer = match[1], match[2], int(match[3])
        if kind == "hh":
            col_ranges = [slice(0, cols)]
        elif module == "decoder.layers" and layer == 0:  # [embedding ; attention feed]
            col_ranges = [slice(0, embed_dim), slice(embed_dim, cols)] if scope == "all" else [slice(embed_dim, cols)]
        else:
            col_ranges = [slice(0, cols)] if scope == "all" else []
        for gate in ("i", "f"):
            blocks += [(name, gate, gate_slice(gate, hidden), c) for c in col_ranges]
    return blocks


def check_only_blocks_changed(before, after, blocks):
    assert list(after) == list(before)
    inside = {name: torch.zeros(before[name].shape, dtype=torch.bool) for name, *_ in blocks}
    for name, gate, rows, cols in blocks:
        inside[name][rows, cols] = True
        assert not torch.equal(after[name][rows, cols], before[name][rows, cols]), (name, gate, cols)
    for name, value in before.items():
        assert after[name].dtype == value.dtype and after[name].shape == value.shape, name
        if name in inside:  # every entry outside the blocks is bit-identical
            assert torch.equal(after[name][~inside[name]], value[~inside[name]]), name
        else:
            assert torch.equal(after[name], value), name


@pytest.mark.parametrize("method", CONFIGS)
@pytest.mark.parametrize("scope", ["recurrent", "all"])
def test_only_the_input_and_forget_gate_blocks_of_the_scope_change(source, method, scope):
    config = CompressionConfig(**{**CONFIGS[method].to_dict(), "scope": scope})
    before = {name: value.clone() for name, value in source.items()}
    after, summary = compress_state_dict(source, config)
    blocks = expected_blocks(source, scope)
    check_only_blocks_changed(source, after, blocks)
    assert all(torch.equal(source[name], before[name]) for name in source)  # the input is untouched
    reported = [(b.param, b.gate, b.rows, b.cols) for b in summary.blocks]
    assert reported == [(n, g, (r.start, r.stop), (c.start, c.stop)) for n, g, r, c in blocks]
    kinds = {b.kind for b in summary.blocks}
    assert kinds == ({"recurrent", "feed", "input"} if scope == "all" else {"recurrent", "feed"})
    if scope == "all":
        assert any(n == "encoder.lstm.weight_ih_l0" for n, *_ in blocks)  # the input weights changed too


def test_round_gives_multiples_of_the_step_and_round_clip_stays_within_the_clip(source):
    for method in ("round", "round-clip"):
        after, summary = compress_state_dict(source, CONFIGS[method])
        for name, gate, rows, cols in expected_blocks(source, "recurrent"):
            original, block = source[name][rows, cols].double(), after[name][rows, cols].double()
            clipped = original.clamp(-CLIP, CLIP) if method == "round-clip" else original
            expected = (STEP * torch.round(clipped / STEP)).float()  # r * round(w / r), as in the paper
            assert torch.equal(after[name][rows, cols], expected), (method, name, gate)
            codes = block / STEP
            assert torch.allclose(codes, codes.round(), atol=1e-5)
            if method == "round-clip":
                assert block.abs().max() <= CLIP + 1e-7
        codes = {round(v / STEP) for v in summary.distinct_values}
        assert len(codes) == len(summary.distinct_values) > 2
        if method == "round-clip":  # 7 levels, -3..3: 3 bits a value
            assert codes <= set(range(-3, 4))
            assert all(b.bits == 3 * b.shape[0] * b.shape[1] and b.distinct_values <= 7 for b in summary.blocks)


def test_svd_blocks_have_the_rank_and_are_the_best_rank_k_approximation(source):
    after, summary = compress_state_dict(source, CONFIGS["svd"])
    blocks = expected_blocks(source, "recurrent")
    assert len(summary.blocks) == len(blocks)
    for (name, gate, rows, cols), report in zip(blocks, summary.blocks):
        original, block = source[name][rows, cols].double(), after[name][rows, cols].double()
        assert torch.linalg.matrix_rank(after[name][rows, cols]).item() == RANK, (name, gate)
        singular = torch.linalg.svdvals(original)
        best = singular[RANK:].square().sum().sqrt().item()  # Eckart-Young: the least error of rank k
        error = torch.linalg.norm(block - original).item()
        assert error == pytest.approx(best, rel=1e-4), (name, gate)
        assert report.relative_error == pytest.approx(error / torch.linalg.norm(original).item(), rel=1e-9)
        m, n = report.shape
        assert report.parameters == RANK * (m + n) and report.float_bits == 32 * m * n


def test_bits_pack_and_unpack_exactly():
    generator = torch.Generator().manual_seed(0)
    for low, high in [(0, 1), (-2, 3), (-7, 9), (-300, 301), (5, 6)]:
        codes = torch.randint(low, high, (37, 11), generator=generator)
        packed, bits, offset = pack_bits(codes)
        assert packed.dtype == torch.uint8 and packed.numel() == (codes.numel() * bits + 7) // 8
        assert bits == max(1, (int(codes.max()) - int(codes.min())).bit_length())
        assert torch.equal(unpack_bits(packed, bits, offset, codes.numel()).view(codes.shape), codes)


@pytest.mark.parametrize("method", ["round-clip", "svd"])
def test_packed_checkpoint_expands_bit_for_bit_and_is_smaller(toy_data, toy_checkpoint, tmp_path, method):
    plain = compress_checkpoint(toy_checkpoint, tmp_path / "plain.pt", CONFIGS[method], pack=False)
    packed = compress_checkpoint(toy_checkpoint, tmp_path / "packed.pt", CONFIGS[method], pack=True)
    assert packed.output_file_bytes < plain.output_file_bytes
    assert packed.model_bytes_after < plain.model_bytes_after
    unpacked_state = load_checkpoint(tmp_path / "plain.pt")["model"]
    packed_state = load_checkpoint(tmp_path / "packed.pt")["model"]
    assert any(".g2pack." in key for key in packed_state)
    full = expanded(packed_state)
    assert list(full) == list(unpacked_state)
    assert all(torch.equal(full[k], unpacked_state[k]) and full[k].dtype == unpacked_state[k].dtype for k in full)

    # the hub loads it through the models' state-dict upgrades, as fairseq's CLIs do
    from fairseq_g2lstm.models import G2LSTMModel

    hub = G2LSTMModel.from_pretrained(str(tmp_path), checkpoint_file="packed.pt",
                                      data_name_or_path=str(toy_data / "bin"))
    loaded = hub.models[0].state_dict()
    assert all(torch.equal(loaded[k], unpacked_state[k]) for k in unpacked_state)


def test_summary_signature_and_record_in_the_checkpoint(toy_checkpoint, tmp_path, capsys):
    output = tmp_path / "rc.pt"
    status = main([str(toy_checkpoint), str(output), "--method", "round-clip", "--step", str(STEP), "--clip",
                   str(CLIP), "--summary-json", str(tmp_path / "summary.json")])
    out = capsys.readouterr().out
    assert status == 0
    sha = hashlib.sha256(toy_checkpoint.read_bytes()).hexdigest()
    signature = f"method=round-clip|step={STEP}|clip={CLIP}|scope=recurrent|src={toy_checkpoint.name}@{sha[:8]}"
    lines = out.splitlines()
    assert lines[-1] == signature
    assert re.search(r"decoder\.layers\.weight_ih_l0\s+i rows 0:16, cols 16:32\s+feed", out)
    assert re.search(r"distinct values after rounding: 7 \(-0\.06, -0\.04, -0\.02, 0, 0\.02, 0\.04, 0\.06\)", out)
    assert "3 bits/value" in out and "as float32" in out
    assert "dropped: last_optimizer_state" in out and "not packed" in out

    state = load_checkpoint(output)
    record = state["compression"]
    assert record["signature"] == signature and record["source_sha256"] == sha
    assert (record["method"], record["step"], record["clip"], record["rank"], record["scope"]) == (
        "round-clip", STEP, CLIP, None, "recurrent")
    assert record["source"] == str(toy_checkpoint) and not record["packed"]
    assert len(record["blocks"]) == 12 and all(0 < b["relative_error"] < 1 for b in record["blocks"])
    assert state["last_optimizer_state"] is None
    assert json.loads((tmp_path / "summary.json").read_text())["signature"] == signature


def test_compressing_a_packed_checkpoint_expands_it_first_and_keeps_the_history(toy_checkpoint, tmp_path):
    compress_checkpoint(toy_checkpoint, tmp_path / "a.pt", CONFIGS["round"], pack=True)
    compress_checkpoint(tmp_path / "a.pt", tmp_path / "b.pt", CONFIGS["svd"])
    direct, _ = compress_state_dict(load_checkpoint(tmp_path / "a.pt")["model"], CONFIGS["svd"])
    state = load_checkpoint(tmp_path / "b.pt")
    assert all(torch.equal(state["model"][k], direct[k]) for k in direct)
    assert state["compression"]["method"] == "svd" and state["compression"]["previous"]["method"] == "round"


@pytest.fixture(scope="module")
def foreign_checkpoints(toy_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("foreign")
    state = load_checkpoint(toy_checkpoint)
    model_cfg = state["cfg"]["model"]
    model_cfg.arch = model_cfg._name = "lstm"
    torch.save(state, folder / "lstm.pt")
    (folder / "text.pt").write_text("not a checkpoint\n")
    return folder


# case: (input: the toy checkpoint, or a file of foreign_checkpoints; flags; part of the error line)
BAD_INPUTS = {
    "not a g2lstm model": ("lstm.pt", ["--method", "round"], "a 'lstm' model, not a g2lstm model"),
    "not a checkpoint": ("text.pt", ["--method", "round"], "not a torch checkpoint"),
    "missing file": ("nope.pt", ["--method", "round"], "nope.pt: no such file"),
    "rank too large": (None, ["--method", "svd", "--rank", "17"], "the rank can be at most 16"),
    "rank zero": (None, ["--method", "svd", "--rank", "0"], "argument --rank: must be at least 1"),
    "zero step": (None, ["--method", "round", "--step", "0"], "argument --step: must be a positive number"),
    "negative step": (None, ["--method", "round", "--step=-0.5"], "argument --step: must be a positive number"),
    "negative clip": (None, ["--method", "round-clip", "--clip=-1"], "argument --clip: must be a positive number"),
    "unknown method": (None, ["--method", "prune"], "argument --method: invalid choice: 'prune'"),
    "svd without rank": (None, ["--method", "svd"], "--method svd needs --rank"),
    "clip with round": (None, ["--method", "round", "--clip", "1"], "--clip applies to --method round-clip only"),
}


def run_main(capsys, *argv):
    try:
        status = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's usage errors
        status = stop.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_error_line_and_no_file(toy_checkpoint, foreign_checkpoints, tmp_path, capsys, case):
    name, flags, message = BAD_INPUTS[case]
    source = toy_checkpoint if name is None else foreign_checkpoints / name
    status, _, errors = run_main(capsys, source, tmp_path / "out.pt", *flags)
    assert status == 2
    assert len(errors) == 1 and errors[0].startswith(f"{PROG}: error: ") and message in errors[0], errors
    assert os.listdir(tmp_path) == []  # no output, no temporary file


def test_existing_output_needs_force(toy_checkpoint, tmp_path, capsys):
    output = tmp_path / "out.pt"
    output.write_bytes(b"keep me")
    status, _, errors = run_main(capsys, toy_checkpoint, output, "--method", "round")
    assert status == 2 and errors == [f"{PROG}: error: {output} already exists; pass --force to replace it"]
    assert output.read_bytes() == b"keep me" and os.listdir(tmp_path) == ["out.pt"]
    status, _, _ = run_main(capsys, toy_checkpoint, output, "--method", "round", "--force")
    assert status == 0 and load_checkpoint(output)["compression"]["method"] == "round"
    assert os.listdir(tmp_path) == ["out.pt"]


def test_packed_checkpoint_generates_the_same_hypotheses_through_the_clis(toy_data, toy_checkpoint, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def start(*command):
        return subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO, env=env)

    def finish(proc):
        out, err = proc.communicate()
        return proc.returncode, out, err

    # the console script and python -m; a bad input through a real process exits 2 with one line
    runs = [start(BIN / PROG, toy_checkpoint, tmp_path / "packed.pt", "--method", "round-clip", "--step", STEP,
                  "--clip", CLIP, "--pack"),
            start(sys.executable, "-m", "fairseq_g2lstm.compress", tmp_path / "missing.pt", tmp_path / "x.pt",
                  "--method", "round")]
    compress_checkpoint(toy_checkpoint, tmp_path / "plain.pt", CONFIGS["round-clip"])
    (ok, out, err), (bad, _, err_bad) = map(finish, runs)
    assert ok == 0, err
    assert "packed" in out and out.strip().splitlines()[-1].startswith("method=round-clip|")
    assert bad == 2 and [line for line in err_bad.splitlines() if not line.startswith("INFO:fairseq")] == [
        f"{PROG}: error: {tmp_path / 'missing.pt'}: no such file"]
    assert sorted(os.listdir(tmp_path)) == ["packed.pt", "plain.pt"]

    generate = [BIN / "fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--beam", "5", "--cpu",
                "--max-tokens", "2000"]
    results = list(map(finish, [start(*generate, "--path", tmp_path / name) for name in ("packed.pt", "plain.pt")]))
    hypotheses = []
    for status, out, err in results:
        assert status == 0, err[-2000:]
        hypotheses.append(sorted(line for line in out.splitlines() if line.startswith("H-")))
    assert len(hypotheses[0]) == 20 and hypotheses[0] == hypotheses[1]


def test_a_step_whose_codes_would_overflow_is_refused():
    """A step of 1e-19 makes 1.0 / step about 1e19, past int64: the old code wrapped it
    around and decoded w = 1.0 as -0.922 without a word."""
    weight = torch.tensor([[1.0, -0.5], [0.25, 0.0]])
    with pytest.raises(CompressionError, match=r"--step 1e-19 is too small for weights up to 1: .* use --step 2\.22e-16 or more"):
        round_codes(weight, 1e-19)
    codes = round_codes(weight, 2**-40)  # the largest code, 2^40, is still exact
    assert torch.equal(dequantize(codes, 2**-40, torch.float32), weight)


def test_a_too_small_step_is_one_error_line_and_no_file(toy_checkpoint, tmp_path, capsys):
    status, _, errors = run_main(capsys, toy_checkpoint, tmp_path / "out.pt", "--method", "round", "--step", "1e-19")
    assert status == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"{PROG}: error: --step 1e-19 is too small for weights up to ")
    assert os.listdir(tmp_path) == []


def test_blocks_whose_codes_or_factors_are_not_smaller_stay_floats_when_packed(toy_checkpoint, tmp_path):
    """Rank 8 of a 16 x 16 block stores 8 (16 + 16) = 256 numbers, as many as the block;
    a step of 1e-13 needs codes of about 41 bits, more than float32's 32. Packing those
    would make the file larger, so the blocks stay float32 and the summary says so."""
    for name, config in [("svd", CompressionConfig("svd", rank=8)), ("round", CompressionConfig("round", step=1e-13))]:
        plain = compress_checkpoint(toy_checkpoint, tmp_path / f"{name}-plain.pt", config)
        packed = compress_checkpoint(toy_checkpoint, tmp_path / f"{name}-packed.pt", config, pack=True)
        assert {b.encoding for b in packed.blocks} == {"float"}, name
        assert all(b.bits == b.float_bits == 32 * b.shape[0] * b.shape[1] for b in packed.blocks)
        assert all(b.encoded_bits >= b.float_bits for b in packed.blocks)
        assert packed.model_bytes_after == plain.model_bytes_after  # nothing to pack: the same tensors
        assert packed.output_file_bytes <= plain.output_file_bytes + 4096  # (pickle overhead of the record)
        state = load_checkpoint(tmp_path / f"{name}-packed.pt")["model"]
        assert not any(".g2pack." in key for key in state)
        unpacked = load_checkpoint(tmp_path / f"{name}-plain.pt")["model"]
        assert all(torch.equal(state[key], unpacked[key]) for key in unpacked)
        text = packed.format()
        assert "(no smaller)" in text and "x smaller" not in text, text
        assert "note: 12 of 12 blocks stay float32 in a packed checkpoint" in text


def test_a_block_worth_packing_is_packed_next_to_one_that_is_not(source):
    """Only the blocks whose codes are narrower than float32 are stored as codes; the
    others go to P.g2pack.rest bit for bit, and the expansion is exact."""
    state = dict(source)
    name = "decoder.layers.weight_hh_l0"
    wide = state[name].clone()
    wide[0, 0] = 3e4  # the input gate's block now needs codes of ~42 bits at step 1e-8; the forget gate's does not
    state[name] = wide
    config = CompressionConfig("round", step=1e-8)
    plain, _ = compress_state_dict(state, config)
    packed, summary = compress_state_dict(state, config, pack=True)
    encodings = {(b.param, b.gate): b.encoding for b in summary.blocks}
    assert encodings[(name, "i")] == "float" and encodings[(name, "f")] == "codes"
    meta = packed[f"{name}.g2pack.meta"].tolist()
    assert meta[4] == 1 and meta[5:9] == [16, 32, 0, 16]  # one packed block: the forget gate's rows
    full = expanded(packed)
    assert all(torch.equal(full[key], plain[key]) for key in plain)


def test_compressing_a_checkpoint_onto_itself_is_refused(toy_checkpoint, tmp_path, capsys):
    source = tmp_path / "model.pt"
    source.write_bytes(toy_checkpoint.read_bytes())
    before = source.read_bytes()
    for target in (source, tmp_path / "." / "model.pt"):
        status, _, errors = run_main(capsys, source, target, "--method", "round", "--force")
        assert status == 2 and errors == [
            f"{PROG}: error: {target} is the input checkpoint; write the compressed model to another file"]
    assert source.read_bytes() == before and os.listdir(tmp_path) == ["model.pt"]


@pytest.mark.parametrize("where, message", [
    ("folder", "is a folder; give a file name"),
    ("under a file", "is a file, not a folder"),
])
def test_a_summary_path_that_cannot_be_written_fails_before_the_work(toy_checkpoint, tmp_path, capsys, where, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    summary = tmp_path / "folder" if where == "folder" else tmp_path / "file" / "summary.json"
    status, _, errors = run_main(capsys, toy_checkpoint, tmp_path / "out.pt", "--method", "round",
                                 "--summary-json", summary)
    assert status == 2 and len(errors) == 1 and errors[0].startswith(f"{PROG}: error: --summary-json "), errors
    assert message in errors[0]
    assert sorted(os.listdir(tmp_path)) == ["file", "folder"]  # no OUT.pt
