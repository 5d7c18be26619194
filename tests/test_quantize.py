"""--quantize int8: what it does to the weights, how close the outputs stay, and that it
reaches the model through fairseq-generate's --model-overrides.

Tolerance: int8 with one scale per row rounds each weight by at most max|row|/254 (0.2%
of the row's largest weight), and the dynamic activation quantization rounds each input
row the same way; through the tiny model's ~6 stacked products these relative errors add
up to about 1% of the logits. The assertions allow 3% (and 0.1 in any log-probability):
loose enough for every seed, far below what a wrong scale or a transposed weight gives
(errors of order 100%).
"""
import pytest
import torch
from torchao.quantization import Int8Tensor, PerRow

from fairseq_g2lstm.models.loading import QUANTIZE_CHOICES, check_quantize
from fairseq_g2lstm.quantize import quantize_model, rounded_weights

from conftest import TINY_DIMS, USER_DIR, cli
from test_cli import generate_lines


def decoder_log_probs(model, tokens):
    """Teacher-forced log-probabilities [B,T,V] of the model on ``tokens`` [B,S]."""
    lengths = torch.full((tokens.shape[0],), tokens.shape[1])
    with torch.no_grad():
        logits, _ = model(tokens, lengths, tokens)
    return torch.log_softmax(logits, dim=-1)


def quantized_copy(model_factory, fp32_model, **overrides):
    """A model built with --quantize int8 that loads ``fp32_model``'s weights, in eval."""
    model = model_factory(quantize="int8", **overrides)
    model.load_state_dict(fp32_model.state_dict())
    return model.eval()


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_int8_outputs_stay_within_the_rounding_error(model_factory, attention):
    fp32 = model_factory(attention_type=attention).eval()
    tokens = torch.randint(4, 25, (3, 7))
    ref = decoder_log_probs(fp32, tokens)
    int8 = quantized_copy(model_factory, fp32, attention_type=attention)
    out = decoder_log_probs(int8, tokens)
    relative = ((out - ref).norm() / ref.norm()).item()
    assert 0 < relative < 0.03, relative  # changed, but only by rounding
    assert (out - ref).abs().max().item() < 0.1


def test_int8_stores_linear_weights_as_int8_and_rounds_the_recurrent_ones(model_factory):
    fp32 = model_factory().eval()
    int8 = quantized_copy(model_factory, fp32)
    fc = int8.decoder.fc_out.weight
    assert isinstance(fc, Int8Tensor) and fc.qdata.dtype == torch.int8
    assert torch.allclose(fc.dequantize(), fp32.decoder.fc_out.weight, atol=0.1 / 254 + 1e-7)
    names = dict(rounded_weights(int8))
    assert {"encoder.lstm.weight_hh_l0_reverse", "encoder.lstm.weight_ih_l1", "decoder.layers.weight_hh_l1"} <= set(names)
    for name, weight in names.items():
        original = dict(fp32.named_parameters())[name].detach()
        scale = Int8Tensor.from_hp(original, granularity=PerRow()).scale  # [rows,1]: torchao's own scales
        steps = weight.detach() / scale
        assert torch.allclose(steps, steps.round(), atol=1e-3), name  # on the int8 grid
        assert -128 - 1e-3 <= steps.min() and steps.max() <= 127 + 1e-3, name  # int8's range
        assert ((weight - original).abs() <= scale / 2 + 1e-7).all(), name  # rounded to the nearest step
        assert not torch.equal(weight, original), name
    assert torch.equal(int8.encoder.lstm.bias_ih_l0, fp32.encoder.lstm.bias_ih_l0)  # biases stay float


def test_none_leaves_the_model_untouched(model_factory):
    model = model_factory().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert quantize_model(model, "none") is model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_quantized_model_refuses_to_train(model_factory):
    model = model_factory(quantize="int8")
    model.eval()  # inference is fine
    with pytest.raises(ValueError, match="--quantize int8 is for inference"):
        model.train()


def test_a_language_model_quantizes_on_load_and_refuses_to_train():
    """g2lstm_lm takes --quantize as the translation model does: applied when its weights
    are loaded (fairseq-eval-lm, the hub, an exported folder), refused in training."""
    from lm_fixtures import build_lm

    torch.manual_seed(0)
    fp32 = build_lm().eval()
    int8 = build_lm(quantize="int8")
    int8.load_state_dict(fp32.state_dict())
    int8.eval()
    projection = int8.decoder.additional_fc.weight  # hidden 24 -> embeddings 16; the output is tied to them
    assert isinstance(projection, Int8Tensor) and projection.qdata.dtype == torch.int8
    rounded = dict(rounded_weights(int8))
    assert set(rounded) == {f"decoder.lstm.weight_{kind}_l{layer}" for kind in ("ih", "hh") for layer in (0, 1)}
    for name, weight in rounded.items():
        assert not torch.equal(weight, dict(fp32.named_parameters())[name]), name
    tokens = torch.randint(4, 20, (3, 7))
    with torch.no_grad():
        ref = fp32.get_normalized_probs(fp32(tokens), log_probs=True)
        out = int8.get_normalized_probs(int8(tokens), log_probs=True)
    assert 0 < ((out - ref).norm() / ref.norm()).item() < 0.03
    with pytest.raises(ValueError, match="--quantize int8 is for inference"):
        int8.train()


def test_bad_value_is_a_one_line_error(model_factory):
    assert QUANTIZE_CHOICES == ("none", "int8")
    with pytest.raises(ValueError) as info:
        check_quantize("int4")
    assert str(info.value) == "--quantize must be one of none, int8; got 'int4'"
    with pytest.raises(ValueError, match="--quantize must be one of"):
        model_factory(quantize="int9")


def test_model_overrides_quantize_a_checkpoint_in_fairseq_generate(toy_data, toy_checkpoint):
    def generate(*extra, check=True):
        return cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--path", toy_checkpoint,
                   "--beam", "5", "--cpu", "--max-tokens", "2000", *extra, check=check)

    fp32, int8 = generate(), generate("--model-overrides", "{'quantize': 'int8'}")
    fp32_hypos, int8_hypos = generate_lines(fp32, "H"), generate_lines(int8, "H")
    assert len(int8_hypos) == len(fp32_hypos) == 20  # every test sentence translated
    same = [i for i in fp32_hypos if fp32_hypos[i][1] == int8_hypos[i][1]]
    assert same, "int8 changed every hypothesis"
    for i in same:  # the same output scored by the rounded model: close, and not bit-identical everywhere
        assert abs(float(fp32_hypos[i][0]) - float(int8_hypos[i][0])) < 0.1
    assert any(fp32_hypos[i][0] != int8_hypos[i][0] for i in same), "--model-overrides did not reach the model"

    bad = generate("--model-overrides", "{'quantize': 'int9'}", check=False)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].endswith("--quantize must be one of none, int8; got 'int9'")


def test_fairseq_train_refuses_quantize(toy_data, tmp_path):
    proc = cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, "--arch", "g2lstm_iwslt", *TINY_DIMS,
               "--quantize", "int8", "--max-update", "2", "--max-tokens", "800", "--optimizer", "adam",
               "--lr", "0.01", "--cpu", "--save-dir", tmp_path / "ckpt", "--no-save", check=False)
    assert proc.returncode != 0
    # The error is the last line fairseq-train prints; at exit a C++ runtime thread may add
    # "terminate called without an active exception" after it (seen once in CI).
    lines = [line for line in proc.stderr.strip().splitlines() if line != "terminate called without an active exception"]
    assert lines[-1].endswith(
        "--quantize int8 is for inference (fairseq-generate, fairseq-interactive, the hub); "
        "train without it and quantize the trained model")
