"""The g2lstm_lm language model: nn.LSTM equivalence, padding, incremental decoding and
beam search, and the real CLIs (fairseq-train, fairseq-eval-lm, fairseq-generate,
fairseq-interactive) with --task language_modeling."""
import math
import re

import pytest
import torch
import torch.nn.functional as F
from fairseq.sequence_generator import SequenceGenerator

from conftest import USER_DIR, cli, train_argument_error
from lm_fixtures import LM_DIMS, LM_TRAIN, build_lm, train_lm


@pytest.fixture
def lm_factory():
    import fairseq_g2lstm  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    return build_lm


def with_strong_weights(model, scale=0.5):
    """Weights large enough that every row's state visibly differs (see test_model)."""
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def random_tokens(model, batch=3, steps=7, seed=1):
    d = model.decoder.dictionary
    tokens = torch.randint(d.nspecial, len(d), (batch, steps), generator=torch.Generator().manual_seed(seed))
    tokens[:, 0] = d.eos()  # as fairseq's language_modeling feeds a sentence
    return tokens


def log_probs(model, tokens, **kwargs):
    return model.get_normalized_probs(model(tokens, **kwargs), log_probs=True)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_plain_mode_equals_nn_lstm(lm_factory, mode):
    """Plain gates, no dropout: embeddings -> nn.LSTM with the same weights -> the projection
    -> the tied output embeddings give the model's log-probabilities."""
    model = with_strong_weights(lm_factory(gate_mode="plain", dropout=0.0), scale=0.3)
    model.train(mode == "train")
    tokens = random_tokens(model)
    decoder = model.decoder
    native = torch.nn.LSTM(16, 24, 2)
    native.load_state_dict(decoder.lstm.state_dict())
    out, _ = native(decoder.embed_tokens(tokens).transpose(0, 1))  # [T,B,24]
    logits = F.linear(decoder.additional_fc(out), decoder.embed_tokens.weight).transpose(0, 1)
    expected = torch.log_softmax(logits, dim=-1)
    assert decoder.additional_fc is not None and decoder.share_input_output_embed
    assert torch.allclose(log_probs(model, tokens), expected, atol=1e-5)


def test_padding_does_not_change_the_scores_of_real_tokens(lm_factory):
    model = with_strong_weights(lm_factory()).eval()
    tokens = random_tokens(model, batch=3, steps=7)
    lengths = [7, 4, 2]
    padded = tokens.clone()
    for b, n in enumerate(lengths):
        padded[b, n:] = model.decoder.dictionary.pad()
    batch = log_probs(model, padded)
    for b, n in enumerate(lengths):
        alone = log_probs(model, tokens[b : b + 1, :n])
        assert torch.allclose(batch[b, :n], alone[0], atol=1e-5)


@pytest.mark.parametrize("variant", [{}, {"gate_mode": "plain"}, {"gate_mode": "sharpened", "gate_eval": "hard"}])
def test_incremental_decoding_gives_the_teacher_forced_scores(lm_factory, variant):
    model = with_strong_weights(lm_factory(**variant)).eval()
    tokens = random_tokens(model)
    full, _ = model(tokens)
    state = {}
    for t in range(tokens.shape[1]):
        step, extra = model.decoder(tokens[:, : t + 1], incremental_state=state)
        assert step.shape[1] == 1 and extra is None
        assert torch.allclose(step[:, -1], full[:, t], atol=1e-5)


def test_incremental_decoding_from_a_prompt_read_at_once(lm_factory):
    """An empty incremental state and several tokens: the prompt is read in one call, then steps go on."""
    model = with_strong_weights(lm_factory()).eval()
    tokens = random_tokens(model)
    full, _ = model(tokens)
    state = {}
    prompt, _ = model.decoder(tokens[:, :4], incremental_state=state)
    assert torch.allclose(prompt, full[:, :4], atol=1e-5)
    for t in range(4, tokens.shape[1]):
        step, _ = model.decoder(tokens[:, : t + 1], incremental_state=state)
        assert torch.allclose(step[:, -1], full[:, t], atol=1e-5)


@pytest.mark.parametrize("new_order", [[2, 0, 1], [1, 1, 0]], ids=["permutation", "repeat"])
def test_reordering_in_the_middle_of_decoding_matches_teacher_forcing(lm_factory, new_order):
    """Beam search reorders (and repeats) the cached states between steps."""
    model = with_strong_weights(lm_factory()).eval()
    tokens = random_tokens(model)
    new_order = torch.tensor(new_order)
    state = {}
    for t in range(3):
        model.decoder(tokens[:, : t + 1], incremental_state=state)
    model.decoder.reorder_incremental_state_scripting(state, new_order)  # what the generator calls
    tokens = tokens[new_order]
    full, _ = model(tokens)
    for t in range(3, tokens.shape[1]):
        step, _ = model.decoder(tokens[:, : t + 1], incremental_state=state)
        assert torch.allclose(step[:, -1], full[:, t], atol=1e-5)


def test_beam_search_scores_are_the_models_teacher_forced_log_probs(lm_factory):
    """fairseq's SequenceGenerator (beam 4, incremental states reordered every step): each
    hypothesis' positional scores are the log-probs of a full forward over it."""
    model = with_strong_weights(lm_factory(), scale=0.3).eval()
    d = model.decoder.dictionary
    generator = SequenceGenerator([model], d, beam_size=4, max_len_b=6, min_len=2)
    sample = {"net_input": {"src_tokens": torch.full((2, 1), d.eos()), "src_lengths": torch.ones(2)}}
    hypotheses = generator.generate([model], sample)
    assert len(hypotheses) == 2 and all(len(h) == 4 for h in hypotheses)
    for hypos in hypotheses:
        for hypo in hypos:
            tokens = hypo["tokens"]  # ends in eos
            prev = torch.cat([torch.tensor([d.eos()]), tokens[:-1]]).unsqueeze(0)
            expected = log_probs(model, prev)[0].gather(1, tokens.unsqueeze(1)).squeeze(1)
            assert torch.allclose(hypo["positional_scores"], expected, atol=1e-4)


def test_ptb_arch_has_the_papers_sizes(lm_factory):
    model = lm_factory("g2lstm_lm_ptb", tiny=False)
    decoder = model.decoder
    assert (decoder.lstm.num_layers, decoder.lstm.input_size, decoder.lstm.hidden_size) == (3, 400, 1150)
    assert decoder.share_input_output_embed and decoder.fc_out is None
    assert tuple(decoder.additional_fc.weight.shape) == (400, 1150)
    assert decoder.lstm.weight_drop == 0.5 and decoder.lstm.dropout == 0.25
    assert decoder.dropout_in_module.p == 0.4 and decoder.dropout_out_module.p == 0.4
    assert decoder.lstm.gate.mode == "gumbel" and decoder.lstm.gate.tau == 0.9 and decoder.lstm.bidirectional == [
        False] * 3


# --- through the command-line tools ------------------------------------------------------------
@pytest.fixture
def ptb(trained_lm):
    """(data-bin of the PTB-format corpus, its folder, a tiny g2lstm_lm trained 200 updates, its log)."""
    return trained_lm


def untrained_copy(checkpoint, target):
    """The checkpoint with its model re-initialised by build_model (the same configuration
    and seed, no update): what training started from."""
    from fairseq import checkpoint_utils

    state = torch.load(checkpoint, weights_only=False)
    _, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)])
    torch.manual_seed(cfg.common.seed)
    state["model"] = task.build_model(cfg.model).state_dict()
    torch.save(state, target)
    return target


def eval_lm(data, checkpoint, *args) -> float:
    proc = cli("fairseq-eval-lm", data, "--user-dir", USER_DIR, "--path", checkpoint, "--cpu", *args)
    found = re.findall(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+|inf|nan)", proc.stdout + proc.stderr)
    assert found, (proc.stdout + proc.stderr)[-2000:]
    loss, ppl = map(float, found[-1])
    assert ppl == pytest.approx(2 ** loss, abs=0.006)  # printed with 2 decimals
    return ppl


def direct_perplexity(data, checkpoint, split_file) -> float:
    """exp of the mean negative log-likelihood of every word and end of sentence in
    ``split_file``, each line read from the start symbol on, computed with the model."""
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)],
                                                                    arg_overrides={"data": str(data)})
    model, d = models[0].eval(), task.dictionary
    total, count = 0.0, 0
    with torch.no_grad():
        for line in split_file.read_text().splitlines():
            tokens = d.encode_line(line, add_if_not_exist=False).long()  # words + eos
            prev = torch.cat([torch.tensor([d.eos()]), tokens[:-1]]).unsqueeze(0)
            total -= log_probs(model, prev)[0].gather(1, tokens.unsqueeze(1)).sum().item()
            count += len(tokens)
    return math.exp(total / count)


def test_training_lowers_perplexity_and_eval_lm_reports_the_models_own(ptb, tmp_path):
    data, folder, checkpoint, _ = ptb
    untrained = untrained_copy(checkpoint, tmp_path / "untrained.pt")
    vocab = len((data / "dict.txt").read_text().splitlines()) + 4
    # on the training text, sentence by sentence, computed with the model in this process
    before = direct_perplexity(data, untrained, folder / "ptb.train.txt")
    after = direct_perplexity(data, checkpoint, folder / "ptb.train.txt")
    assert vocab / 3 < before < vocab * 3  # an untrained model is close to uniform
    assert after < 0.6 * before, (before, after)
    # sentence by sentence (--sample-break-mode eos), fairseq-eval-lm's test perplexity is the model's own
    test = eval_lm(data, checkpoint, "--gen-subset", "test", "--sample-break-mode", "eos")
    assert test == pytest.approx(direct_perplexity(data, checkpoint, folder / "ptb.test.txt"), abs=0.006)
    assert test < 0.6 * before


def test_training_logs_gate_saturation(ptb):
    *_, log = ptb
    for line_kind in ("| train_inner |", "| valid |", "| train |"):
        line = next(line for line in log.splitlines() if line_kind in line)
        values = {k: float(v) for k, v in re.findall(r"(gate_[if]_(?:lo|hi|mean))[ =]([\d.]+)", line)}
        assert set(values) == {f"gate_{g}_{s}" for g in "if" for s in ("lo", "hi", "mean")}, line
        assert all(0.0 <= v <= 1.0 for v in values.values())


def test_the_last_validation_logs_the_gate_shares_of_the_saved_model(ptb, tmp_path):
    """The final '| valid |' line comes from the weights that checkpoint_last.pt holds
    (fairseq validates, then saves): g2lstm-gates on the valid split of that checkpoint
    gives the same shares and means, to the log's 3 decimals."""
    import json

    from fairseq_g2lstm.gate_stats import cli as gates_cli

    data, _, checkpoint, log = ptb
    line = [line for line in log.splitlines() if "| valid |" in line][-1]
    logged = {k: float(v) for k, v in re.findall(r"(gate_[if]_(?:lo|hi|mean))[ =]([\d.]+)", line)}
    assert gates_cli.main([str(data), "--path", str(checkpoint), "--labels", "last", "--cpu", "--split", "valid",
                           "--max-sentences", "all", "--out-dir", str(tmp_path), "--no-progress-bar"]) == 0
    layers = json.loads((tmp_path / "gates.last.json").read_text())["layers"].values()
    for letter, gate in (("i", "input"), ("f", "forget")):
        count = sum(layer[gate]["count"] for layer in layers)
        for suffix, key in (("lo", "share_below"), ("hi", "share_above"), ("mean", "mean")):
            measured = sum(layer[gate][key] * layer[gate]["count"] for layer in layers) / count
            assert logged[f"gate_{letter}_{suffix}"] == pytest.approx(measured, abs=0.0005 + 1e-9), (letter, suffix)


def test_no_gate_metrics_and_weight_drop_reach_training(ptb, tmp_path):
    data, *_ = ptb
    proc = train_lm(data, tmp_path, "--no-gate-metrics", "--weight-drop", "0.5", "--no-save", updates=2)
    log = proc.stdout + proc.stderr
    assert "num_updates 2" in log and "gate_i_lo" not in log
    assert "weight_drop=0.5" in log  # fairseq prints the model


def test_generate_and_interactive_continue_a_prompt(ptb):
    data, _, checkpoint, _ = ptb
    common = [data, "--user-dir", USER_DIR, "--task", "language_modeling", "--path", checkpoint, "--cpu",
              "--max-len-b", "20"]  # fairseq's limit includes the prompt; the longest test line has 12 words
    generated = cli("fairseq-generate", *common, "--gen-subset", "test", "--sample-break-mode", "eos",
                    "--beam", "3", "--max-sentences", "4")
    sources = dict(re.findall(r"^S-(\d+)\t(.*)$", generated.stdout, re.M))
    hypotheses = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", generated.stdout, re.M))
    assert len(sources) == 60 and set(hypotheses) == set(sources)
    assert all(hypotheses[i].startswith(sources[i]) for i in sources)  # the line is the prompt
    assert sum(len(hypotheses[i]) > len(sources[i]) for i in sources) > 10  # and some are continued
    interactive = cli("fairseq-interactive", *common, "--beam", "3", input="the company\ninvestors sold\n")
    hypotheses = re.findall(r"^H-(\d+)\t\S+\t(.*)$", interactive.stdout, re.M)
    assert [h[0] for h in hypotheses] == ["0", "1"]
    assert hypotheses[0][1].startswith("the company") and hypotheses[1][1].startswith("investors sold")
    assert len(hypotheses[0][1].split()) > 2  # it continued the prompt


@pytest.mark.parametrize("flag, value, message", [
    ("--weight-drop", "1.5", "--weight-drop must be in [0, 1); got 1.5"),
    ("--gate-noise-prob", "2", "--gate-noise-prob must be in [0, 1]; got 2.0"),
    ("--gate-mode", "foo", "invalid choice: 'foo'"),
])
def test_bad_flag_values_exit_with_one_clear_message(ptb, tmp_path, monkeypatch, capsys, flag, value, message):
    data, *_ = ptb
    stderr = train_argument_error(monkeypatch, capsys, data, "--user-dir", USER_DIR, "--arch", "g2lstm_lm", *LM_DIMS,
                                  *LM_TRAIN, "--max-update", "1", "--save-dir", tmp_path, flag, value)
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], stderr[-2000:]
    assert "Traceback" not in stderr
