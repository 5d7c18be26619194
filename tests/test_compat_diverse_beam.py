"""Diverse beam search (``--diverse-beam-groups``) with the pinned fairseq, which the
plugin fixes at import (compat.fix_diverse_beam_search).

Unfixed, fairseq's DiverseBeamSearch indexes its per-batch state with the sentences'
dataset ids: ``IndexError: index 8 is out of bounds for dimension 0 with size 8`` on the
toy test set with ``--batch-size 8``."""
import pytest
import torch

from conftest import USER_DIR, cli


def test_generate_with_diverse_beam_groups_translates_every_sentence(toy_data, toy_checkpoint):
    proc = cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--path", toy_checkpoint, "--cpu",
               "--diverse-beam-groups", "2", "--beam", "4", "--nbest", "4", "--batch-size", "8", check=False)
    assert proc.returncode == 0 and "IndexError" not in proc.stderr, proc.stderr[-2000:]
    hypotheses = [line.split("\t")[0] for line in proc.stdout.splitlines() if line.startswith("H-")]
    assert sorted(set(hypotheses)) == sorted(f"H-{i}" for i in range(20))  # all 20 test sentences...
    assert len(hypotheses) == 20 * 4  # ...with one hypothesis per beam


@pytest.fixture(scope="module")
def toy_model_and_batch(toy_data, toy_checkpoint):
    """The toy checkpoint's model, its target dictionary and one batch of 12 test sentences."""
    from fairseq import checkpoint_utils

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(toy_checkpoint)], arg_overrides={"data": str(toy_data / "bin")})
    task.load_dataset("test")
    dataset = task.dataset("test")
    batch = dataset.collater([dataset[i] for i in range(12)])
    return models, task.target_dictionary, batch


def diverse_hypotheses(models, dictionary, batch, ids):
    """Every hypothesis (tokens, score, positional scores) of a diverse beam search over
    ``batch`` whose sentence ids are set to ``ids``."""
    from fairseq.search import DiverseBeamSearch
    from fairseq.sequence_generator import SequenceGenerator

    search = DiverseBeamSearch(dictionary, num_groups=2, diversity_strength=0.5)
    generator = SequenceGenerator(models, dictionary, beam_size=4, max_len_b=12, search_strategy=search)
    finalized = generator.generate(models, {**batch, "id": ids})
    return [[(h["tokens"].tolist(), h["score"].item(), h["positional_scores"].tolist()) for h in sentence]
            for sentence in finalized]


def test_diverse_beam_search_does_not_depend_on_the_sentence_ids(toy_model_and_batch, monkeypatch):
    """The fixed search gives, for any ids, what fairseq's own gives where the ids are the
    batch rows 0..B-1 (the one case it handles)."""
    from fairseq.search import DiverseBeamSearch

    models, dictionary, batch = toy_model_and_batch
    rows = torch.arange(len(batch["id"]))
    assert not torch.equal(batch["id"], rows)  # the collater sorts by length: ids are not the rows
    with monkeypatch.context() as patched:
        patched.setattr(DiverseBeamSearch, "step", DiverseBeamSearch.step.__wrapped__)  # fairseq's own
        reference = diverse_hypotheses(models, dictionary, batch, rows)
    assert diverse_hypotheses(models, dictionary, batch, rows) == reference
    assert diverse_hypotheses(models, dictionary, batch, batch["id"]) == reference
    assert diverse_hypotheses(models, dictionary, batch, batch["id"] + 1000) == reference  # IndexError unfixed


def search_steps(step, sentence_ids, seed=0):
    """Drive a DiverseBeamSearch (2 groups, beam 4) through 4 steps over 3 sentences, as
    SequenceGenerator does: sentence 1 finishes after step 1, sentence 0 after step 2.
    Sentence 0 has one token far ahead at every step, so both groups take it and its
    group overlap grows; the others' stays near 0. Returns each step's outputs."""
    from fairseq.data import Dictionary
    from fairseq.search import DiverseBeamSearch

    dictionary = Dictionary()
    for i in range(8):
        dictionary.add_symbol(f"w{i}")
    search = DiverseBeamSearch(dictionary, num_groups=2, diversity_strength=0.5)
    generator = torch.Generator().manual_seed(seed)
    outputs = []
    for step_number, alive in enumerate([[0, 1, 2], [0, 1, 2], [0, 2], [2]]):
        logits = torch.randn(3, 4, len(dictionary), generator=generator)  # [B,beam,V]
        logits[0, :, 5] += 6.0
        lprobs = torch.log_softmax(logits, dim=-1)[alive]
        scores = torch.randn(3, 4, step_number, generator=generator)[alive] if step_number else None
        outputs.append([out.clone() for out in step(search, step_number, lprobs, scores, None, sentence_ids[alive])])
    return outputs


def same_outputs(a, b) -> bool:
    return all(torch.equal(x, y) for step_a, step_b in zip(a, b) for x, y in zip(step_a, step_b))


@pytest.mark.parametrize("seed", [0, 1])
def test_each_sentence_keeps_its_own_group_overlap(seed):
    """fairseq's own step is right only where the ids are the rows 0..B-1; with other ids
    in range it silently applies another sentence's penalty, out of range it crashes.
    The fixed step gives the rows' result for any ids."""
    from fairseq.search import DiverseBeamSearch

    fixed = DiverseBeamSearch.step
    fairseqs = fixed.__wrapped__
    rows = torch.tensor([0, 1, 2])
    reference = search_steps(fairseqs, rows, seed)
    assert not same_outputs(search_steps(fairseqs, torch.tensor([2, 0, 1]), seed), reference)  # the silent error
    with pytest.raises(IndexError):
        search_steps(fairseqs, torch.tensor([7, 30, 12]), seed)
    for ids in (rows, torch.tensor([2, 0, 1]), torch.tensor([7, 30, 12])):
        assert same_outputs(search_steps(fixed, ids, seed), reference), ids


def test_the_fix_wraps_fairseqs_step_once():
    from fairseq.search import DiverseBeamSearch

    from fairseq_g2lstm.compat import fix_diverse_beam_search

    step = DiverseBeamSearch.step
    fix_diverse_beam_search()
    assert DiverseBeamSearch.step is step and step.maps_sentence_ids_to_rows
    assert step.__wrapped__.__module__ == "fairseq.search"
