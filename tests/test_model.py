"""The g2lstm fairseq model: decoding contracts, padding, architectures."""
import pytest
import torch
from fairseq.sequence_generator import SequenceGenerator

from fairseq_g2lstm.models.g2lstm import G2LSTMDecoder, G2LSTMEncoder, move_padding

VARIANTS = [
    {"attention_type": "bahdanau"},
    {"attention_type": "luong"},
    {"gate_mode": "plain", "encoder_bidirectional": "all"},
    {"gate_mode": "sharpened", "encoder_bidirectional": "none", "gate_eval": "hard"},
]


def source_batch(model, lengths=(5, 3, 4)):
    """Left-padded source tokens with EOS, as fairseq's collater builds them."""
    d = model.encoder.dictionary
    steps = max(lengths)
    tokens = torch.full((len(lengths), steps), d.pad(), dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for b, n in enumerate(lengths):
        tokens[b, steps - n : -1] = torch.randint(d.nspecial, len(d), (n - 1,), generator=g)
        tokens[b, -1] = d.eos()
    return tokens, torch.tensor(lengths)


def target_prefix(model, batch, steps):
    d = model.decoder.dictionary
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(d.nspecial, len(d), (batch, steps), generator=g)
    tokens[:, 0] = d.eos()
    return tokens


def with_strong_weights(model, scale=0.5):
    """Weights large enough that every row's state visibly differs (the +-0.1 initialisation
    leaves the rows so alike that a row mix-up hides within the tolerance)."""
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_decoding_gives_the_teacher_forced_scores(model_factory, variant):
    model = model_factory(**variant).eval()
    src, src_lengths = source_batch(model)
    prev = target_prefix(model, 3, 6)
    full, full_attn = model(src, src_lengths, prev)
    encoder_out = model.encoder(src, src_lengths)
    state = {}
    for t in range(prev.shape[1]):
        step, step_attn = model.decoder(prev[:, : t + 1], encoder_out, incremental_state=state)
        assert torch.allclose(step[:, -1], full[:, t], atol=1e-5)
        assert torch.allclose(step_attn[:, -1], full_attn[:, t], atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS[:2])
@pytest.mark.parametrize("new_order", [[2, 0, 1], [1, 1, 0]], ids=["permutation", "repeat"])
def test_reordering_in_the_middle_of_decoding_matches_teacher_forcing(model_factory, variant, new_order):
    """Beam search reorders the cached state between steps (and repeats rows); the steps
    after a reorder must score what teacher forcing of the reordered batch scores."""
    model = with_strong_weights(model_factory(**variant)).eval()
    src, src_lengths = source_batch(model)
    prev = target_prefix(model, 3, 6)
    new_order = torch.tensor(new_order)
    encoder_out = model.encoder(src, src_lengths)
    state = {}
    for t in range(3):
        model.decoder(prev[:, : t + 1], encoder_out, incremental_state=state)
    model.decoder.reorder_incremental_state_scripting(state, new_order)  # what the generator calls
    encoder_out = model.encoder.reorder_encoder_out(encoder_out, new_order)
    prev = prev[new_order]
    full, full_attn = model(src[new_order], src_lengths[new_order], prev)
    for t in range(3, 6):
        step, step_attn = model.decoder(prev[:, : t + 1], encoder_out, incremental_state=state)
        assert torch.allclose(step[:, -1], full[:, t], atol=1e-5)
        assert torch.allclose(step_attn[:, -1], full_attn[:, t], atol=1e-6)


def test_reordering_beams_of_one_sentence_copies_no_encoder_output(model_factory):
    """A reorder that keeps each row's source (beams swapping places) returns the encoder
    output itself and keeps the cached keys; the hidden states still move, and the steps
    after it score what teacher forcing of the reordered rows scores."""
    model = with_strong_weights(model_factory()).eval()
    src, src_lengths = source_batch(model)
    repeat = torch.tensor([0, 0, 1, 1, 2, 2])  # as beam search starts: each sentence twice
    prev = target_prefix(model, 6, 6)
    encoder_out = model.encoder.reorder_encoder_out(model.encoder(src, src_lengths), repeat)
    assert torch.equal(encoder_out["source_index"][0], repeat)
    state = {}
    for t in range(3):
        model.decoder(prev[:, : t + 1], encoder_out, incremental_state=state)
    swap = torch.tensor([1, 0, 2, 3, 5, 4])
    keys = model.decoder.get_incremental_state(state, "cached_state")["keys"]
    model.decoder.reorder_incremental_state_scripting(state, swap)
    assert model.encoder.reorder_encoder_out(encoder_out, swap) is encoder_out
    assert model.decoder.get_incremental_state(state, "cached_state")["keys"] is keys
    prev = prev[swap]
    full, _ = model(src[repeat[swap]], src_lengths[repeat[swap]], prev)
    for t in range(3, 6):
        step, _ = model.decoder(prev[:, : t + 1], encoder_out, incremental_state=state)
        assert torch.allclose(step[:, -1], full[:, t], atol=1e-5)
    mixed = torch.tensor([2, 0, 1, 3, 5, 4])  # row 0 now holds sentence 1: a real reorder
    moved = model.encoder.reorder_encoder_out(encoder_out, mixed)
    assert torch.equal(moved["source_index"][0], repeat[mixed])
    assert torch.equal(moved["encoder_out"][0], encoder_out["encoder_out"][0][:, mixed])


def test_beam_search_is_the_same_without_the_reorder_shortcut(model_factory, monkeypatch):
    import fairseq_g2lstm.models.g2lstm as g2lstm_module

    model = with_strong_weights(model_factory()).eval()
    src, src_lengths = source_batch(model, lengths=(5, 2, 4, 5))
    sample = {"net_input": {"src_tokens": src, "src_lengths": src_lengths}}
    generator = SequenceGenerator([model], model.decoder.dictionary, beam_size=3, max_len_b=8)
    answers, keeps_sources = [], g2lstm_module.keeps_sources
    monkeypatch.setattr(g2lstm_module, "keeps_sources", lambda *args: answers.append(keeps_sources(*args)) or answers[-1])
    shortcut = generator.forward(sample)
    assert True in answers and False in answers  # the shortcut was taken, and refused at the first repeat
    monkeypatch.setattr(g2lstm_module, "keeps_sources", lambda source_index, new_order: False)
    copied = generator.forward(sample)
    for ours, theirs in zip(shortcut, copied):
        for a, b in zip(ours, theirs):
            assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["positional_scores"], b["positional_scores"])


@pytest.mark.parametrize("variant", VARIANTS[:2])
def test_beam_one_equals_greedy(model_factory, variant):
    model = model_factory(**variant).eval()
    d = model.decoder.dictionary
    src, src_lengths = source_batch(model)
    generator = SequenceGenerator([model], d, beam_size=1, max_len_b=8)
    hypos = generator.forward({"net_input": {"src_tokens": src, "src_lengths": src_lengths}})
    for b in range(src.shape[0]):
        greedy = [d.eos()]
        while greedy[-1] != d.eos() or len(greedy) == 1:
            if len(greedy) == 9:  # max_len_b: the generator ends the hypothesis here
                greedy.append(d.eos())
                break
            logits, _ = model(src[b : b + 1], src_lengths[b : b + 1], torch.tensor([greedy]))
            lprobs = torch.log_softmax(logits[0, -1], dim=-1)
            lprobs[d.pad()] = -float("inf")
            if len(greedy) == 1:
                lprobs[d.eos()] = -float("inf")  # min_len 1
            greedy.append(lprobs.argmax().item())
        assert hypos[b][0]["tokens"].tolist() == greedy[1:]
        assert len(greedy) > 2


def test_padding_does_not_change_encoder_outputs_or_scores(model_factory):
    model = model_factory().eval()
    src, src_lengths = source_batch(model, lengths=(6, 2, 4))
    prev = target_prefix(model, 3, 4)
    batch_out = model.encoder(src, src_lengths)
    logits, _ = model(src, src_lengths, prev)
    for b, n in enumerate(src_lengths.tolist()):
        alone_src = src[b : b + 1, -n:]
        alone = model.encoder(alone_src, src_lengths[b : b + 1])
        assert torch.allclose(batch_out["encoder_out"][0][-n:, b], alone["encoder_out"][0][:, 0], atol=1e-6)
        for key in ("final_hiddens", "final_cells"):
            for layer_batch, layer_alone in zip(batch_out[key], alone[key]):
                assert torch.allclose(layer_batch[b], layer_alone[0], atol=1e-6)
        alone_logits, _ = model(alone_src, src_lengths[b : b + 1], prev[b : b + 1])
        assert torch.allclose(logits[b], alone_logits[0], atol=1e-5)


def test_move_padding_round_trip():
    x = torch.arange(12.0).view(4, 3, 1)
    lengths = torch.tensor([4, 1, 2])
    left = move_padding(x, lengths, to_left=True)
    assert left[:, 2, 0].tolist() == [x[2, 2, 0].item(), x[3, 2, 0].item(), x[0, 2, 0].item(), x[1, 2, 0].item()]
    assert torch.equal(move_padding(left, lengths, to_left=False), x)


def test_iwslt_and_wmt_architectures_have_the_papers_sizes(model_factory):
    import argparse
    from fairseq.models import ARCH_CONFIG_REGISTRY

    for arch, layers, embed, hidden in [("g2lstm_iwslt", 2, 256, 256), ("g2lstm_wmt", 3, 512, 1024)]:
        args = argparse.Namespace()
        ARCH_CONFIG_REGISTRY[arch](args)
        assert (args.encoder_layers, args.decoder_layers) == (layers, layers)
        assert (args.encoder_embed_dim, args.decoder_embed_dim) == (embed, embed)
        assert (args.encoder_hidden_size, args.decoder_hidden_size) == (hidden, hidden)
        assert args.encoder_bidirectional == "first" and args.gate_mode == "gumbel"
    model = model_factory("g2lstm_iwslt", encoder_layers=3, decoder_layers=3)
    assert isinstance(model.encoder, G2LSTMEncoder) and isinstance(model.decoder, G2LSTMDecoder)
    assert model.encoder.lstm.bidirectional == [True, False, False]
    assert model.encoder.final_state_sizes == [32, 16, 16]


def test_share_all_embeddings_ties_three_matrices(model_factory):
    model = model_factory(share_all_embeddings=True)
    assert model.encoder.embed_tokens is model.decoder.embed_tokens
    assert model.decoder.fc_out is None


def test_mismatched_layer_counts_are_refused(model_factory):
    with pytest.raises(ValueError, match="--encoder-layers must match --decoder-layers"):
        model_factory(encoder_layers=2, decoder_layers=3)


def test_training_forward_is_noisy_and_eval_is_not(model_factory):
    model = model_factory()
    src, src_lengths = source_batch(model)
    prev = target_prefix(model, 3, 4)
    model.train()
    model.decoder.dropout_in_module.p = model.decoder.dropout_out_module.p = 0.0
    model.encoder.dropout_in_module.p = model.encoder.dropout_out_module.p = 0.0
    model.encoder.lstm.dropout = model.decoder.layers.dropout = 0.0
    a, b = model(src, src_lengths, prev)[0], model(src, src_lengths, prev)[0]
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(src, src_lengths, prev)[0], model(src, src_lengths, prev)[0])


def test_decoder_draws_fresh_noise_for_every_step_and_layer(model_factory, monkeypatch):
    model = model_factory().train()
    seen = []
    step = model.decoder.layers.step

    def spy(*args):
        seen.append(args[-1])  # the step's noise, [L,B,2H]
        return step(*args)

    monkeypatch.setattr(model.decoder.layers, "step", spy)
    src, src_lengths = source_batch(model)
    model(src, src_lengths, target_prefix(model, 3, 4))
    draws = [layer for noise in seen for layer in noise.unbind(0)]
    assert len(draws) == 4 * 2
    assert all(not torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1:])
    model.eval()
    seen.clear()
    model(src, src_lengths, target_prefix(model, 3, 4))
    assert seen and all(noise is None for noise in seen)
