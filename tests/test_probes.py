"""The BERT probes: scores computed from the annotations, checked against models whose answers we know."""
import pytest
import torch

from course_lib.corpus import PRONOUN, default_world
from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.lab.pretraining import StoryData
from course_lib.lab.probes import (
    MISTAKE_KINDS, FillProbe, attention_maps, best_head, diagnose_story, fill_predictions, masked_person_probe,
    masked_pronoun_probe, pronoun_attention_scores,
)


@pytest.fixture(scope="module")
def data():
    return StoryData.build("bert", n_stories=1500, seed=3)


def small_config(data, **overrides):
    sizes = dict(max_len=64, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0)
    return TransformerConfig(vocab_size=data.tokenizer.vocab_size, **{**sizes, **overrides})


class AlwaysSays(BERT):
    """A BERT that predicts the same word at every position, whatever it reads."""

    def __init__(self, config, token_id):
        super().__init__(config)
        self.token_id = token_id

    def forward(self, input_ids, attention_mask=None, segment_ids=None):
        logits = torch.zeros(*input_ids.shape, self.config.vocab_size)
        logits[..., self.token_id] = 1.0
        return logits


def test_fill_predictions_masks_one_position_per_input(data):
    seen = []

    class Recorder(AlwaysSays):
        def forward(self, input_ids, attention_mask=None, segment_ids=None):
            seen.append(input_ids.clone())
            return super().forward(input_ids, attention_mask)

    model = Recorder(small_config(data), data.tokenizer.token_to_id["she"])
    positions = [(0, 1), (2, 3), (2, 5)]
    predictions = fill_predictions(model, data, positions, batch_size=2)
    assert predictions.tolist() == [data.tokenizer.token_to_id["she"]] * 3
    inputs = torch.cat(seen)
    for i, (row, column) in enumerate(positions):
        expected = data.ids["validation"][row].clone()
        expected[column] = data.tokenizer.mask_id
        assert torch.equal(inputs[i], expected)


def test_pronoun_probe_counts_exact_answers_and_gender(data):
    stories = data.stories["validation"][:300]
    pronouns = [story.tokens[i] for story in stories for i, kind in enumerate(story.kinds) if kind == PRONOUN]
    model = AlwaysSays(small_config(data), data.tokenizer.token_to_id["she"])
    probe = masked_pronoun_probe(model, data, limit=300)
    assert probe == FillProbe(exact=pronouns.count("she") / len(pronouns),
                              same_gender=sum(p in ("she", "her") for p in pronouns) / len(pronouns), n=len(pronouns))


def test_person_probe_splits_stories_by_a_later_pronoun(data):
    world = default_world()
    stories = data.stories["validation"][:400]
    model = AlwaysSays(small_config(data), data.tokenizer.token_to_id["alice"])
    for with_pronoun in (True, False):
        persons = [s.person for s in stories if (PRONOUN in s.kinds) == with_pronoun]
        probe = masked_person_probe(model, data, limit=400, with_pronoun=with_pronoun)
        assert probe.n == len(persons)
        assert probe.exact == pytest.approx(persons.count("alice") / len(persons))
        assert probe.same_gender == pytest.approx(
            sum(world.config.gender(p) == "female" for p in persons) / len(persons))


def test_a_word_that_is_no_name_has_no_gender(data):
    model = AlwaysSays(small_config(data), data.tokenizer.token_to_id["park"])
    assert masked_person_probe(model, data, limit=200).same_gender == 0.0
    assert masked_pronoun_probe(model, data, limit=200).same_gender == 0.0


def test_attention_maps_keep_weights_only_during_the_call(data):
    torch.manual_seed(0)
    model = BERT(small_config(data)).eval()
    ids, mask = data.ids["validation"][:3], data.mask["validation"][:3]
    maps = attention_maps(model, ids, mask)
    assert maps.shape == (2, 3, 2, ids.shape[1], ids.shape[1])  # (layers, B, heads, T, T)
    torch.testing.assert_close(maps.sum(dim=-1), torch.ones(2, 3, 2, ids.shape[1]))
    assert (maps[:, ~mask[:, None, None, :].expand(3, 2, ids.shape[1], -1)] == 0).all()  # no weight on padding
    assert all(not block.self_attention.store_attention_weights and block.self_attention.attention_weights is None
               for block in model.body.blocks)


def test_pronoun_attention_scores_average_the_pronoun_to_person_weights(data):
    torch.manual_seed(0)
    model = BERT(small_config(data)).eval()
    stories = data.stories["validation"][:40]
    scores = pronoun_attention_scores(model, data, limit=40, batch_size=16)
    assert scores.shape == (2, 2)

    maps = attention_maps(model, data.ids["validation"][:40], data.mask["validation"][:40])
    by_hand = [maps[:, row, :, pronoun + 1, person + 1]  # +1: [CLS] comes first
               for row, story in enumerate(stories) for pronoun, person in story.pronoun_links]
    torch.testing.assert_close(scores, torch.stack(by_hand).mean(dim=0))


def test_best_head_finds_the_largest_score():
    scores = torch.tensor([[0.1, 0.2, 0.0], [0.05, 0.4, 0.3]])
    assert best_head(scores) == (1, 1)
    with pytest.raises(ValueError, match="n_layers, n_heads"):
        best_head(torch.zeros(3))


def test_probes_reject_a_gpt_or_gpt_data(data):
    gpt = GPT(small_config(data))
    with pytest.raises(TypeError, match="BERT"):
        masked_pronoun_probe(gpt, data)
    gpt_data = StoryData.build("gpt", n_stories=300)
    with pytest.raises(ValueError, match="style='bert'"):
        masked_pronoun_probe(BERT(small_config(data)), gpt_data)
    with pytest.raises(ValueError, match="split must be"):
        masked_person_probe(BERT(small_config(data)), data, split="dev")


# ---------------------------------------------------------------------------
# diagnose_story: the first rule a generated story breaks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind, words", [
    ("alice went to the park to play football in the morning . then he went to the cafe to drink coffee .",
     "pronoun", "'he' refers to alice, who is female"),
    ("leo went to the park to meet her sister at night .", "pronoun", "'her' refers to leo, who is male"),
    ("zoe went to the park to meet zoe in the evening .", "meets_self", "zoe cannot meet zoe"),
    ("max went to the library to swim in the morning .", "place_activity", "the library offers no 'swim'"),
    ("max went to the cafe to eat breakfast at night .", "time_activity", "'eat breakfast' at night"),
    ("max went to the cafe to eat breakfast in the morning . then he went to the cinema to watch a film .",
     "time_activity", "sentence 2"),
    ("emma went to the beach to swim at noon . she was sleepy .", "time_mood", "nobody is 'sleepy' at noon"),
    ("emma went to the beach to swim at noon . after that she went home . she was happy .", "after_home",
     "nothing may follow"),
    ("emma went to the beach to swim at noon . she was calm . she was calm . she was calm . she was calm .",
     "too_long", "at most 4 sentences"),
    ("emma went to the beach to swim at noon . she", "unfinished", "stops in the middle of a sentence"),
    ("emma went to the beach to swim at noon . (unfinished)", "unfinished", "never ends"),
    ("emma the went to beach to swim at noon .", "other", "sentence 1"),
])
def test_diagnose_story_names_the_broken_rule(text, kind, words):
    found_kind, explanation = diagnose_story(text)
    assert found_kind == kind, explanation
    assert words in explanation
    assert kind in MISTAKE_KINDS


def test_diagnose_story_accepts_valid_stories():
    for story in default_world().sample(50, seed=1):
        assert diagnose_story(story.tokens) is None
