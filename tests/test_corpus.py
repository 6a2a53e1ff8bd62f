"""The story world: exact probabilities, the grammar's dependencies, splits and tasks."""
import math
from collections import Counter

import pytest

from course_lib.corpus import (
    Activity, StoryWorld, WorldConfig, coherence_task, entropy_floor, generate_stories, translate,
)


@pytest.fixture(scope="module")
def small_world():
    """A world small enough to list every story it can write."""
    config = WorldConfig(
        female_names=("ada", "eve"),
        male_names=("bob", "dan"),
        relations=("sister",),
        times={"morning": ("in", "the", "morning"), "noon": ("at", "noon"), "night": ("at", "night")},
        activities={
            "eat breakfast": Activity(("eat", "breakfast"), ("morning",)),
            "read a book": Activity(("read", "a", "book"), ("morning", "noon", "night")),
            "swim": Activity(("swim",), ("morning", "noon")),
        },
        places={"cafe": ("eat breakfast", "read a book"), "beach": ("swim",)},
        moods={"happy": ("morning", "noon", "night"), "sleepy": ("night",)},
        max_sentences=3,
    )
    return StoryWorld(config)


@pytest.fixture(scope="module")
def world():
    return StoryWorld()


@pytest.fixture(scope="module")
def stories(world):
    return world.sample(20_000, seed=1)


def test_probabilities_of_all_stories_sum_to_one(small_world):
    stories = list(small_world.enumerate())
    assert len(stories) > 1000
    assert math.fsum(math.exp(s.log_prob) for s in stories) == pytest.approx(1.0, abs=1e-9)


def test_different_choices_never_write_the_same_text(small_world):
    texts = [s.text for s in small_world.enumerate()]
    assert len(texts) == len(set(texts))


def test_parse_gives_back_the_generators_log_prob(small_world, world, stories):
    for story in list(small_world.enumerate())[::50] + stories[:2000]:
        owner = small_world if story.tokens[0] in small_world.config.names else world
        assert owner.log_prob(story.tokens) == pytest.approx(story.log_prob, abs=1e-12)


def test_exact_entropy_floor_equals_enumeration(small_world):
    stories = list(small_world.enumerate())
    weights = [math.exp(s.log_prob) for s in stories]
    expected_nll = math.fsum(w * -s.log_prob for w, s in zip(weights, stories))
    expected_tokens = math.fsum(w * s.n_predicted_tokens for w, s in zip(weights, stories))
    assert small_world.exact_entropy_floor() == pytest.approx(expected_nll / expected_tokens, rel=1e-12)


def test_entropy_floor_matches_monte_carlo(world):
    sample = world.sample(50_000, seed=7)
    assert entropy_floor(sample) == pytest.approx(world.exact_entropy_floor(), abs=0.004)


def test_entropy_floor_counts_the_end_token(small_world):
    story = next(small_world.enumerate())
    assert entropy_floor([story]) == pytest.approx(-story.log_prob / (len(story.tokens) + 1))
    with pytest.raises(ValueError, match="stories"):
        entropy_floor([])


def test_exact_next_word_and_masked_word_probabilities_equal_enumeration(small_world):
    # Every story listed, with its probability added to each prefix it starts with
    # and to each of its copies with one word blanked out (the length kept).
    stories = list(small_world.enumerate())
    starting_with, blanked = Counter(), Counter()
    for s in stories:
        p = math.exp(s.log_prob)
        for j in range(len(s.tokens) + 1):
            starting_with[s.tokens[:j]] += p
        for j in range(len(s.tokens)):
            blanked[s.tokens[:j] + (None,) + s.tokens[j + 1:]] += p
    for story in stories[::101]:
        next_word = small_world.next_word_log_probs(story)
        masked = small_world.masked_word_log_probs(story)
        tokens, p = story.tokens, math.exp(story.log_prob)
        assert len(next_word) == len(tokens) + 1 and len(masked) == len(tokens)
        assert math.fsum(next_word) == pytest.approx(story.log_prob, abs=1e-12)  # the chain rule
        for i in range(len(tokens)):
            expected_next = starting_with[tokens[:i + 1]] / starting_with[tokens[:i]]
            expected_masked = p / blanked[tokens[:i] + (None,) + tokens[i + 1:]]
            assert math.exp(next_word[i]) == pytest.approx(expected_next, rel=1e-9)
            assert math.exp(masked[i]) == pytest.approx(expected_masked, rel=1e-9)
        # The end: this story's share among the stories that start with all of it.
        assert math.exp(next_word[-1]) == pytest.approx(p / starting_with[tokens], rel=1e-9)


def test_exact_conditionals_reject_a_story_from_another_world(small_world, world):
    story = world.sample(1, seed=0)[0]
    with pytest.raises(ValueError, match="not one this world can write"):
        small_world.next_word_log_probs(story)
    with pytest.raises(ValueError, match="not one this world can write"):
        small_world.masked_word_log_probs(story)


def test_same_seed_same_stories_other_seed_other_stories(world):
    assert [s.text for s in world.sample(200, seed=3)] == [s.text for s in world.sample(200, seed=3)]
    assert [s.text for s in world.sample(200, seed=3)] != [s.text for s in world.sample(200, seed=4)]


def test_size_limits(world, stories):
    assert len(world.vocabulary) <= 300
    assert max(len(s.tokens) for s in stories) + 2 <= 64  # room for two special tokens
    lengths = Counter(len(s.sentences) for s in stories)
    assert set(lengths) == {1, 2, 3, 4}


def test_dependencies_hold_in_every_story(world, stories):
    cfg = world.config
    for story in stories[:3000]:
        pronouns = {t for t, k in zip(story.tokens, story.kinds) if k == "pronoun"}
        expected = {"she", "her"} if story.person in cfg.female_names else {"he", "his"}
        assert pronouns <= expected, story.text
        for sentence in story.sentences:
            if sentence.activity is not None:
                assert sentence.activity in cfg.places[sentence.place], story.text
                assert story.time in cfg.activities[sentence.activity].times, story.text


@pytest.mark.parametrize("text", [
    "alice went to the library to swim in the morning .",               # place does not offer it
    "alice went to the cafe to eat breakfast at night .",                # wrong time for the activity
    "alice went to the park to play football in the morning . he was happy .",  # pronoun disagrees
    "tom went to the park to meet her sister at noon .",                  # possessive disagrees
    "tom went to the park to meet tom at noon .",                          # meets himself
    "tom went to the park to play football in the evening .",              # football is not an evening game
    "tom went to the park to meet sam at noon . after that he went home . he was happy .",  # nothing after home
    "tom went to the park to meet sam at noon",                            # no final period
    "tom went to the park to meet sam in the evening . then he went to the cafe to eat breakfast .",
    "tom was happy .",
    "",
])
def test_validator_rejects_what_the_grammar_cannot_write(world, text):
    assert not world.is_valid(text)
    assert world.log_prob(text) == -math.inf


def test_validator_accepts_valid_stories_with_or_without_end_token(world, stories):
    assert world.is_valid(stories[0].tokens)
    assert world.is_valid(list(stories[0].tokens) + ["[EOS]"])
    assert world.is_valid("sara went to the cafe to eat breakfast in the morning . she was sleepy .") is False
    assert world.is_valid("sara went to the cafe to eat cake in the evening . she was sleepy .")


def test_annotations(world):
    story = world.parse("emma went to the beach to meet her sister in the evening . "
                        "then she went to the restaurant to eat dinner .")
    assert story.answer_spans("who") == [(0, 1), (8, 9)]
    assert story.answer_spans("where") == [(4, 5), (18, 19)]
    assert story.answer_spans("when") == [(9, 12)]
    assert story.answer_spans("what") == [(6, 7), (20, 22)]
    assert story.pronoun_links == [(7, 0), (14, 0)]
    assert story.pretty().startswith("Emma went to the beach") and story.pretty().endswith("dinner.")
    with pytest.raises(ValueError, match="question"):
        story.answer_spans("why")


def test_splits_are_disjoint_by_text_and_deterministic(world):
    splits = world.splits(20_000, seed=0)
    texts = {name: {s.text for s in part} for name, part in splits.items()}
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    assert 0.07 < len(splits["test"]) / 20_000 < 0.13
    assert [s.text for s in world.splits(20_000, seed=0)["test"]] == [s.text for s in splits["test"]]


def test_translation_reorders_and_shortens(world):
    story = world.parse("alice went to the park to play football in the morning . she was happy .")
    assert translate(story) == ("mane", "alice", "ad", "hortum", "pilam", "ludere", "ivit", ".",
                                "illa", "laetus", "erat", ".")
    for story in world.sample(2000, seed=5):
        target = translate(story)
        assert set(target) <= set(world.target_vocabulary)
        assert len(target) < len(story.tokens)


def test_coherence_task_is_balanced_and_labels_are_exact(world, stories):
    examples = coherence_task(world, stories[:4000], seed=0)
    labels = Counter(e.label for e in examples)
    assert abs(labels[0] - labels[1]) < 0.06 * len(examples)
    assert set(Counter(e.corruption for e in examples if e.label == 0)) == {"pronoun", "place_activity", "time_activity"}
    vocabulary = set(world.vocabulary)
    for example in examples:
        assert world.is_valid(example.tokens) == (example.label == 1)
        assert set(example.tokens) <= vocabulary
    again = coherence_task(world, stories[:4000], seed=0)
    assert [(e.tokens, e.label) for e in again] == [(e.tokens, e.label) for e in examples]


def test_bad_configuration_and_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="p_next"):
        WorldConfig(p_next={"end": 0.5, "then": 0.5, "mood": 0.5, "home": 0.0})
    with pytest.raises(ValueError, match="unknown activity"):
        WorldConfig(places={"cafe": ("fly",)})
    with pytest.raises(ValueError, match="n must be"):
        generate_stories(-1)
