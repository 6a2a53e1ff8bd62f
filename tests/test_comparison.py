"""Notebook 07's measurements: losses at every word, cloze, generation by unmasking, attention maps.

Small random models are enough here: the tests check what is computed, not
how well a trained model does (tests/test_hub.py holds the checkpoints to
their quality).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.lab.comparison import (
    COMPARED_KINDS, bert_cloze, bert_word_losses, compare_word_losses, exact_cloze,
    generate_by_unmasking, gpt_cloze, gpt_word_losses, story_log_probs,
)
from course_lib.corpus import default_world
from course_lib.corpus import Story
from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.objectives import gpt_token_losses, masked_one_at_a_time_log_probs
from course_lib.lab.probes import attention_maps
from course_lib.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.for_story_world()


@pytest.fixture(scope="module")
def models(tokenizer):
    config = TransformerConfig(vocab_size=tokenizer.vocab_size, max_len=64, d_model=16, n_heads=2, n_layers=2,
                               d_ff=32, dropout=0.0)
    torch.manual_seed(0)
    return GPT(config).eval(), BERT(config).eval()


@pytest.fixture(scope="module")
def stories():
    return default_world().splits(2000, seed=0)["test"][:12]


def test_gpt_word_losses_are_next_token_losses_of_each_word(models, tokenizer, stories):
    gpt, _ = models
    losses = gpt_word_losses(gpt, tokenizer, stories)
    assert [len(row) for row in losses] == [len(s.tokens) for s in stories]
    story = stories[0]
    ids = torch.tensor([tokenizer.encode(story.tokens, style="gpt")])
    log_probs = torch.log_softmax(gpt(ids[:, :-1]), dim=-1)[0]            # (T-1, V)
    by_hand = -log_probs[torch.arange(len(story.tokens)), ids[0, 1:-1]]  # word i follows position i
    torch.testing.assert_close(losses[0], by_hand, atol=1e-5, rtol=1e-4)


def test_gpt_word_losses_never_depend_on_later_words(models, tokenizer, stories):
    gpt, _ = models
    story = stories[0]
    changed = list(story.tokens)
    changed[-2] = "banana"  # an unknown word near the end
    before = gpt_word_losses(gpt, tokenizer, [story])[0]
    after = gpt_word_losses(gpt, tokenizer, [Story(tuple(changed), story.kinds, 0.0, ())])[0]
    torch.testing.assert_close(before[:-2], after[:-2])


def test_bert_word_losses_mask_one_word_at_a_time(models, tokenizer, stories):
    _, bert = models
    losses = bert_word_losses(bert, tokenizer, stories, batch_size=50)  # batches that cut stories apart
    assert [len(row) for row in losses] == [len(s.tokens) for s in stories]
    story = stories[1]
    ids = torch.tensor([tokenizer.encode(story.tokens, style="bert")])
    for i in (0, 4, len(story.tokens) - 1):
        masked = ids.clone()
        masked[0, i + 1] = tokenizer.mask_id
        expected = F.cross_entropy(bert(masked)[0, i + 1], ids[0, i + 1])
        torch.testing.assert_close(losses[1][i], expected, atol=1e-5, rtol=1e-4)


def test_word_losses_by_kind_and_by_position(models, tokenizer, stories):
    gpt, bert = models
    losses = compare_word_losses(gpt, tokenizer, bert, tokenizer, stories)
    n_words = sum(len(s.tokens) for s in stories)
    assert len(losses.words) == len(losses.kinds) == len(losses.gpt) == len(losses.bert) == n_words
    table = losses.by_kind()
    assert list(table) == list(COMPARED_KINDS)
    assert table["person"]["count"] == len(stories)  # one person per story, at position 0
    persons = torch.tensor([k == "person" for k in losses.kinds])
    assert table["person"]["gpt"] == pytest.approx(losses.gpt[persons].mean().item())
    by_position = losses.by_position(min_count=len(stories))
    assert by_position[0]["bert"] == pytest.approx(table["person"]["bert"])
    assert all(row["count"] == len(stories) for row in by_position.values())
    with pytest.raises(ValueError, match="no word of kind"):
        losses.by_kind(["nonsense"])


def test_word_losses_carry_the_story_worlds_exact_losses(models, tokenizer, stories):
    gpt, bert = models
    world = default_world()
    losses = compare_word_losses(gpt, tokenizer, bert, tokenizer, stories[:3], world)
    first = losses.story == 0
    next_word = world.next_word_log_probs(stories[0])
    assert losses.exact_next[first].tolist() == pytest.approx([-lp for lp in next_word[:-1]], abs=1e-6)
    assert losses.exact_masked[first].tolist() == pytest.approx(
        [-lp for lp in world.masked_word_log_probs(stories[0])], abs=1e-6)
    persons = torch.tensor([k == "person" for k in losses.kinds])
    row = losses.by_kind()["person"]
    assert row["exact_next"] == pytest.approx(math.log(16))  # a name from the left: 16 equally likely
    assert row["exact_masked"] <= row["exact_next"]
    assert row == losses.mean_losses(persons)
    with pytest.raises(ValueError, match="selects no word"):
        losses.mean_losses(torch.zeros(len(losses.words), dtype=torch.bool))


def test_story_log_probs_follow_the_chain_rule(models, tokenizer, stories):
    gpt, _ = models
    log_probs = story_log_probs(gpt, tokenizer, [s.tokens for s in stories[:3]])
    words = gpt_word_losses(gpt, tokenizer, stories[:3])
    for row, story in enumerate(stories[:3]):
        ids = torch.tensor([tokenizer.encode(story.tokens, style="gpt")])
        end = -torch.log_softmax(gpt(ids[:, :-1])[0, -1], dim=-1)[tokenizer.eos_id]  # the [EOS] prediction
        torch.testing.assert_close(log_probs[row], -(words[row].sum() + end), atol=1e-4, rtol=1e-4)


def test_cloze_scores_are_distributions_over_the_candidates(models, tokenizer, stories):
    gpt, bert = models
    story = stories[0]
    candidates = ["alice", "ben", "tom"]
    for scores in (gpt_cloze(gpt, tokenizer, story.tokens, 0, candidates),
                   bert_cloze(bert, tokenizer, story.tokens, 0, candidates)):
        assert scores.shape == (3,)
        assert scores.sum().item() == pytest.approx(1.0, abs=1e-5)
    stories_with = [[c] + list(story.tokens[1:]) for c in candidates]
    expected = torch.softmax(story_log_probs(gpt, tokenizer, stories_with), dim=0)
    torch.testing.assert_close(gpt_cloze(gpt, tokenizer, story.tokens, 0, candidates), expected)
    with pytest.raises(ValueError, match="blank"):
        gpt_cloze(gpt, tokenizer, story.tokens, 99, candidates)


def test_exact_cloze_uses_the_pronoun_after_the_blank():
    tokens = "alice went to the park to play football in the morning . she was happy .".split()
    female, male = default_world().config.female_names, default_world().config.male_names
    scores = exact_cloze(tokens, 0, list(female) + list(male))
    torch.testing.assert_close(scores[:len(female)], torch.full((len(female),), 1 / len(female)))
    assert scores[len(female):].sum() == 0
    with pytest.raises(ValueError, match="no candidate"):
        exact_cloze(tokens, 0, ["park", "coffee"])


def test_generation_by_unmasking_fills_every_mask(models, tokenizer):
    _, bert = models
    stories, steps = generate_by_unmasking(bert, tokenizer, length=10, n=4, seed=3)
    assert len(stories) == 4 and all(len(story) == 10 for story in stories)
    specials = set(tokenizer.id_to_token[:7])
    assert not any(word in specials for story in stories for word in story)
    assert len(steps) == 10
    assert [step.count("[MASK]") for step in steps] == list(range(9, -1, -1))  # one word per step
    assert steps[-1] == stories[0]
    again, _ = generate_by_unmasking(bert, tokenizer, length=10, n=4, seed=3)
    assert again == stories


def test_left_to_right_unmasking_writes_in_reading_order(models, tokenizer):
    _, bert = models
    _, steps = generate_by_unmasking(bert, tokenizer, length=6, order="left_to_right")
    for i, step in enumerate(steps):
        assert "[MASK]" not in step[:i + 1] and all(word == "[MASK]" for word in step[i + 1:])
    with pytest.raises(ValueError, match="order"):
        generate_by_unmasking(bert, tokenizer, length=6, order="random")
    with pytest.raises(ValueError, match="length"):
        generate_by_unmasking(bert, tokenizer, length=100)


def test_bert_attends_both_ways_gpt_only_back(models, tokenizer, stories):
    """Notebook 07 puts the two attention patterns side by side: full versus lower-triangular."""
    gpt, bert = models
    ids = torch.tensor([tokenizer.encode(stories[0].tokens, style="gpt")])
    gpt_maps, bert_maps = attention_maps(gpt, ids)[:, 0], attention_maps(bert, ids)[:, 0]  # (n_layers, n_heads, T, T)
    assert (gpt_maps.triu(1) == 0).all()
    above_diagonal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).triu(1)
    assert (bert_maps[..., above_diagonal] > 0).all()


def test_inputs_are_validated(models, tokenizer, stories):
    gpt, bert = models
    with pytest.raises(TypeError, match="gpt must be"):
        gpt_word_losses(bert, tokenizer, stories)
    with pytest.raises(ValueError, match="stories"):
        bert_word_losses(bert, tokenizer, [])
    assert math.isfinite(gpt_word_losses(gpt, tokenizer, stories[:1])[0].sum().item())


# ---------------------------------------------------------------------------
# The two measurements the lab shares (course_lib.objectives)
# ---------------------------------------------------------------------------


def test_masked_one_at_a_time_log_probs_hides_one_position_per_input(models, tokenizer, stories):
    _, bert = models
    batch = tokenizer.encode_batch([s.tokens for s in stories[:4]], style="bert")
    pairs = [(0, 1), (3, 2), (1, 5), (3, 1), (2, len(stories[2].tokens))]  # any order, rows repeated
    bert.train()  # measured in eval mode, and left as it was
    log_probs = masked_one_at_a_time_log_probs(bert, batch.input_ids, batch.attention_mask,
                                               mask_id=tokenizer.mask_id, positions=pairs, batch_size=2)
    assert bert.training
    bert.eval()
    assert log_probs.shape == (len(pairs), tokenizer.vocab_size)
    for (row, position), row_log_probs in zip(pairs, log_probs):
        real = batch.attention_mask[row]
        blanked = batch.input_ids[row, real].clone()  # the story alone, unpadded, with one [MASK]
        blanked[position] = tokenizer.mask_id
        with torch.no_grad():
            expected = torch.log_softmax(bert(blanked[None])[0, position], dim=-1)
        torch.testing.assert_close(row_log_probs, expected, atol=1e-5, rtol=1e-4)
    one_batch = masked_one_at_a_time_log_probs(bert, batch.input_ids, batch.attention_mask,
                                               mask_id=tokenizer.mask_id, positions=torch.tensor(pairs))
    torch.testing.assert_close(one_batch, log_probs)  # the batch size changes nothing


def test_masked_one_at_a_time_log_probs_rejects_bad_positions(models, tokenizer):
    _, bert = models
    ids = torch.tensor([tokenizer.encode("alice went home .", style="bert")])  # (1, 6)
    for positions, words in (([], "non-empty"), ([(0, 1, 2)], "pairs"), ([(1, 1)], "rows from 0 to 0"),
                             ([(0, 6)], "positions from 0 to 5")):
        with pytest.raises(ValueError, match=words):
            masked_one_at_a_time_log_probs(bert, ids, None, mask_id=tokenizer.mask_id, positions=positions)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        masked_one_at_a_time_log_probs(bert, ids, None, mask_id=tokenizer.mask_id, positions=[(0, 1)], batch_size=0)


def test_gpt_token_losses_score_every_next_token_and_no_padding(models, tokenizer, stories):
    gpt, _ = models
    batch = tokenizer.encode_batch([s.tokens for s in stories[:3]], style="gpt")
    gpt.train()
    losses = gpt_token_losses(gpt, batch.input_ids, batch.attention_mask)  # (3, T-1)
    assert gpt.training
    gpt.eval()
    assert losses.shape == (3, batch.input_ids.shape[1] - 1)
    for row in range(3):
        n = int(batch.attention_mask[row].sum())  # [BOS] words [EOS]
        ids = batch.input_ids[row, :n]
        with torch.no_grad():
            expected = F.cross_entropy(gpt(ids[None, :-1])[0], ids[1:], reduction="none")
        torch.testing.assert_close(losses[row, :n - 1], expected, atol=1e-5, rtol=1e-4)
        assert (losses[row, n - 1:] == 0).all()  # padding is never predicted
