"""The explorers of notebooks 05 and 06: the plain functions, and the widgets driven as a learner would."""
import pytest
import torch

from course_lib.lab.explorers import (
    FillInTheBlankExplorer, SamplingExplorer, fill_in_the_blank, next_token_distribution, plot_fill_in_the_blank,
    plot_next_token_filter, sample_with_settings, story_report,
)
from course_lib.generation import generate
from course_lib.lab.probes import diagnose_story
from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.for_story_world()


def tiny_model(family, tokenizer, max_len):
    """An untrained one-block model: the explorers' logic does not depend on what it learned."""
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=tokenizer.vocab_size, max_len=max_len, d_model=16, n_heads=2, n_layers=1,
                               d_ff=32, dropout=0.0)
    return family(config).eval()


@pytest.fixture(scope="module")
def bert(tokenizer):
    return tiny_model(BERT, tokenizer, max_len=32)


@pytest.fixture(scope="module")
def gpt(tokenizer):
    return tiny_model(GPT, tokenizer, max_len=24)


# ---------------------------------------------------------------------------
# BERT: fill in the blanks
# ---------------------------------------------------------------------------


def test_fill_in_the_blank_gives_bert_top_k_for_every_mask(bert, tokenizer):
    text = "[MASK] went to the [MASK] to swim ."
    predictions = fill_in_the_blank(bert, tokenizer, text, k=4)

    ids = torch.tensor([tokenizer.encode(text, style="bert")])
    with torch.no_grad():
        probabilities = torch.softmax(bert(ids)[0], dim=-1)  # (T, vocab_size)
    assert len(predictions) == 2
    for blank, position in zip(predictions, (1, 5)):  # [CLS] is position 0
        expected = probabilities[position].topk(4)
        assert [token for token, _ in blank] == tokenizer.convert_ids_to_tokens(expected.indices)
        assert [p for _, p in blank] == pytest.approx(expected.values.tolist())
        assert [p for _, p in blank] == sorted((p for _, p in blank), reverse=True)


def test_fill_in_the_blank_rejects_bad_inputs(bert, gpt, tokenizer):
    with pytest.raises(ValueError, match=r"at least one \[MASK\]"):
        fill_in_the_blank(bert, tokenizer, "alice went home .")
    with pytest.raises(ValueError, match="k must be"):
        fill_in_the_blank(bert, tokenizer, "[MASK] went home .", k=0)
    with pytest.raises(ValueError, match="max_len"):
        fill_in_the_blank(bert, tokenizer, "[MASK] went home . " * 10)
    with pytest.raises(TypeError, match="BERT"):
        fill_in_the_blank(gpt, tokenizer, "[MASK] went home .")


def test_fill_in_the_blank_figure_has_one_panel_per_mask(bert, tokenizer):
    predictions = fill_in_the_blank(bert, tokenizer, "[MASK] went to the [MASK] to [MASK] .", k=3)
    figure = plot_fill_in_the_blank(predictions, "a title")
    assert len(figure.axes) == 3
    assert all(len(ax.patches) == 3 for ax in figure.axes)
    with pytest.raises(ValueError, match="one non-empty list"):
        plot_fill_in_the_blank([])


def test_fill_in_the_blank_explorer_redraws_when_the_text_changes(bert, tokenizer):
    explorer = FillInTheBlankExplorer(bert, tokenizer, "[MASK] went home .", k=5)
    assert len(explorer.predictions) == 1
    assert explorer.output.outputs[0]["data"]["image/png"]

    explorer.text.value = "[MASK] went to the [MASK] ."
    assert len(explorer.predictions) == 2

    explorer.text.value = "no blank here"
    assert explorer.predictions is None
    assert "at least one [MASK]" in explorer.output.outputs[0]["text"]

    explorer.text.value = "[MASK] went to the skatepark ."
    assert "skatepark" in explorer.output.outputs[-1]["text"]


# ---------------------------------------------------------------------------
# GPT: sampling with settings
# ---------------------------------------------------------------------------


def test_sample_with_settings_is_reproducible_and_depends_on_the_seed(gpt, tokenizer):
    first = sample_with_settings(gpt, tokenizer, 6, temperature=1.5, seed=3)
    assert first == sample_with_settings(gpt, tokenizer, 6, temperature=1.5, seed=3)
    assert first != sample_with_settings(gpt, tokenizer, 6, temperature=1.5, seed=4)
    assert len(first) == 6 and all(isinstance(story, str) for story in first)


def test_sampling_with_top_k_one_is_greedy_decoding(gpt, tokenizer):
    stories = sample_with_settings(gpt, tokenizer, 2, top_k=1, seed=0)
    prompt = torch.full((1, 1), tokenizer.bos_id)
    greedy = generate(gpt, prompt, gpt.config.max_len - 1, greedy=True, eos_id=tokenizer.eos_id)[0, 1:].tolist()
    if tokenizer.eos_id in greedy:
        expected = " ".join(tokenizer.convert_ids_to_tokens(greedy[:greedy.index(tokenizer.eos_id)]))
    else:
        expected = " ".join(tokenizer.convert_ids_to_tokens(greedy) + ["(unfinished)"])
    assert stories == [expected, expected]


def test_sample_with_settings_rejects_bad_inputs(gpt, bert, tokenizer):
    with pytest.raises(ValueError, match="n must be"):
        sample_with_settings(gpt, tokenizer, 0)
    with pytest.raises(TypeError, match="GPT"):
        sample_with_settings(bert, tokenizer, 2)
    with pytest.raises(ValueError, match="temperature"):
        sample_with_settings(gpt, tokenizer, 2, temperature=0.0)


def test_next_token_distribution_before_and_after_the_filters(gpt, tokenizer):
    prompt = "alice went to the park to"
    ids = torch.tensor([[tokenizer.bos_id] + tokenizer.encode(prompt)])
    with torch.no_grad():
        logits = gpt(ids)[0, -1]

    tokens, before, after = next_token_distribution(gpt, tokenizer, prompt, temperature=0.5, top_k=4)
    assert tokens == tokenizer.id_to_token
    torch.testing.assert_close(before, torch.softmax(logits, dim=-1))
    kept = logits.topk(4).indices
    assert set((after > 0).nonzero().flatten().tolist()) == set(kept.tolist())
    torch.testing.assert_close(after[kept], torch.softmax(logits[kept] / 0.5, dim=-1))

    _, _, nucleus = next_token_distribution(gpt, tokenizer, prompt, top_p=0.5)
    kept_mass = before[nucleus > 0].sum()
    assert kept_mass >= 0.5 and kept_mass - before[nucleus > 0].min() < 0.5  # smallest set reaching 0.5


def test_next_token_filter_figure(gpt, tokenizer):
    tokens, before, after = next_token_distribution(gpt, tokenizer, "zoe went", top_k=2)
    figure = plot_next_token_filter(tokens, before, after, top=6)
    assert len(figure.axes[0].patches) == 12  # 6 tokens, two bars each
    assert "2 tokens can be sampled" in figure.axes[0].get_title()
    with pytest.raises(ValueError, match="one entry per token"):
        plot_next_token_filter(tokens[:3], before, after)


def test_sampled_stories_continue_the_prompt(gpt, tokenizer):
    prompt = "alice went to the"
    stories = sample_with_settings(gpt, tokenizer, 4, seed=2, prompt=prompt)
    assert all(story.startswith(prompt + " ") for story in stories)

    greedy = sample_with_settings(gpt, tokenizer, 1, top_k=1, prompt=prompt)[0]
    start = torch.tensor([[tokenizer.bos_id] + tokenizer.encode(prompt)])
    written = generate(gpt, start, gpt.config.max_len - start.shape[1], greedy=True, eos_id=tokenizer.eos_id)[0, 1:]
    words = tokenizer.convert_ids_to_tokens(written.tolist())
    expected = words[:words.index("[EOS]")] if "[EOS]" in words else words + ["(unfinished)"]
    assert greedy == " ".join(expected)
    with pytest.raises(ValueError, match="prompt is 25 tokens long with \\[BOS\\], more than max_len=24"):
        sample_with_settings(gpt, tokenizer, 1, prompt="alice went home . " * 6)


def test_story_report_says_why_each_rejected_story_is_wrong():
    valid = "zoe went to the park to meet leo in the evening ."
    wrong_pronoun = "leo went to the park to meet her sister at night ."
    unfinished = "emma went to the beach to swim at noon . (unfinished)"
    report = story_report([valid, wrong_pronoun, unfinished]).splitlines()
    kind, explanation = diagnose_story(wrong_pronoun)
    assert report == [f"✓ {valid}",
                      f"✗ {wrong_pronoun}", f"      {kind}: {explanation}",
                      f"✗ {unfinished}", f"      unfinished: {diagnose_story(unfinished)[1]}",
                      "1 of 3 stories valid"]


def test_sampling_explorer_draws_new_stories_when_a_control_changes(gpt, tokenizer):
    prompt = "alice went to the"
    explorer = SamplingExplorer(gpt, tokenizer, prompt=prompt, n=3)
    assert explorer.settings() == {"temperature": 1.0, "top_k": None, "top_p": None}
    assert explorer.stories == sample_with_settings(gpt, tokenizer, 3, seed=0, prompt=prompt)

    explorer.top_k.value = 1
    assert explorer.stories == sample_with_settings(gpt, tokenizer, 3, top_k=1, seed=0, prompt=prompt)
    explorer.top_k.value = 0
    explorer.top_p.value = 0.5
    explorer.temperature.value = 0.7
    assert explorer.settings() == {"temperature": 0.7, "top_k": None, "top_p": 0.5}
    assert explorer.stories == sample_with_settings(gpt, tokenizer, 3, temperature=0.7, top_p=0.5, seed=0,
                                                    prompt=prompt)

    explorer.new_samples.click()
    assert explorer.seed == 1
    assert explorer.stories == sample_with_settings(gpt, tokenizer, 3, temperature=0.7, top_p=0.5, seed=1,
                                                    prompt=prompt)
    figure, text = explorer.output.outputs
    assert figure["data"]["image/png"]
    assert text["text"] == story_report(explorer.stories) + " (seed 1)\n"


# ---------------------------------------------------------------------------
# What a saved notebook shows where the widget cannot be drawn
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("make, name", [
    (lambda bert, gpt, tokenizer: FillInTheBlankExplorer(bert, tokenizer, "[MASK] went home ."),
     "Fill-in-the-blank explorer"),
    (lambda bert, gpt, tokenizer: SamplingExplorer(gpt, tokenizer, n=1), "Sampling explorer"),
])
def test_explorers_save_one_line_of_text_beside_the_widget(bert, gpt, tokenizer, make, name):
    explorer = make(bert, gpt, tokenizer)
    bundle = explorer._repr_mimebundle_()
    line = f"{name}: run the cells above (Run > Run All Cells) to use it."
    assert bundle["text/plain"] == repr(explorer) == line
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
