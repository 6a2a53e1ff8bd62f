"""Tests of course_lib.lab.viz: the plain functions behind every picture and the attention explorer."""
from __future__ import annotations

import base64
import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402

from course_lib.lab import viz  # noqa: E402
from course_lib.attention import scaled_dot_product_attention  # noqa: E402
from course_lib.lab.cooccurrence import WordVectors  # noqa: E402
from course_lib.corpus import generate_stories  # noqa: E402

TOKENS = ["alice", "went", "to", "the", "park", "."]
D = 16


@pytest.fixture(scope="module")
def vectors() -> WordVectors:
    words = sorted({token for story in generate_stories(20, seed=3) for token in story.tokens} | set(TOKENS))
    table = torch.randn(len(words), D, generator=torch.Generator().manual_seed(0))
    return WordVectors(words, table)


def entropy(p: torch.Tensor) -> float:
    return -(p * p.clamp(min=1e-30).log()).sum().item()


def tick_labels(labels) -> list[str]:
    return [label.get_text() for label in labels]


# --- explorer_weights --------------------------------------------------------


@pytest.mark.parametrize("query", [0, 4, 5])
def test_weights_sum_to_one(vectors, query):
    weights = viz.explorer_weights(TOKENS, query, vectors, scale=0.25)
    assert weights.shape == (len(TOKENS),)
    assert (weights >= 0).all()
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_scale_one_over_sqrt_d_is_scaled_dot_product_attention(vectors):
    keys = vectors(TOKENS)  # (T, d)
    for query in range(len(TOKENS)):
        ours = viz.explorer_weights(TOKENS, query, vectors, scale=1 / math.sqrt(D))
        _, reference = scaled_dot_product_attention(keys[query:query + 1], keys, keys)
        torch.testing.assert_close(ours, reference[0])


def test_larger_scale_gives_sharper_weights(vectors):
    query = vectors(["park"])[0]
    weights = [viz.explorer_weights(TOKENS, query, vectors, scale) for scale in (0.05, 0.25, 1.0, 3.0)]
    maxima = [w.max().item() for w in weights]
    entropies = [entropy(w) for w in weights]
    assert maxima == sorted(maxima) and maxima[-1] > maxima[0] + 0.3
    assert entropies == sorted(entropies, reverse=True)
    # a tiny scale makes attention nearly uniform
    torch.testing.assert_close(weights[0], torch.full((len(TOKENS),), 1 / len(TOKENS)), atol=0.15, rtol=0)


def test_query_vector_and_mapping_of_vectors(vectors):
    mapping = {word: vectors[word] for word in TOKENS}
    question = torch.ones(D)
    from_mapping = viz.explorer_weights(TOKENS, question, mapping, 0.5)
    from_callable = viz.explorer_weights(TOKENS, question, vectors, 0.5)
    torch.testing.assert_close(from_mapping, from_callable)
    expected = torch.softmax(vectors(TOKENS) @ question * 0.5, dim=0)
    torch.testing.assert_close(from_callable, expected)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(query=6), ValueError, "position from 0 to 5"),
    (dict(query=-1), ValueError, "position from 0 to 5"),
    (dict(query="park"), TypeError, "int"),
    (dict(query=torch.ones(D + 1)), ValueError, f"({D},)"),
    (dict(scale=0.0), ValueError, "scale"),
    (dict(scale=float("nan")), ValueError, "scale"),
    (dict(tokens="alice went"), TypeError, "text.split()"),
    (dict(tokens=[]), ValueError, "non-empty"),
    (dict(vectors=lambda tokens: torch.ones(2, D)), ValueError, "T = 6"),
    (dict(vectors=42), TypeError, "vectors"),
    (dict(vectors={"alice": torch.ones(D)}), KeyError, "'went'"),
])
def test_explorer_weights_errors(vectors, kwargs, error, words):
    arguments = dict(tokens=TOKENS, query=0, vectors=vectors, scale=1.0) | kwargs
    with pytest.raises(error) as info:
        viz.explorer_weights(**arguments)
    assert words in str(info.value)


# --- figures -------------------------------------------------------------------


def test_heatmap_of_one_head_labels_both_axes():
    weights = torch.softmax(torch.randn(4, 6), dim=-1)
    fig = viz.plot_attention(weights, TOKENS[:4], TOKENS, title="hello")
    heatmap = fig.axes[0]
    assert len(fig.axes) == 2  # the heatmap and its colour bar
    assert tick_labels(heatmap.get_xticklabels()) == TOKENS
    assert tick_labels(heatmap.get_yticklabels()) == TOKENS[:4]
    assert heatmap.get_title() == "hello"
    assert not plt.fignum_exists(fig.number)  # closed: Jupyter shows it once, as the returned value


def test_heatmap_of_several_heads():
    weights = torch.softmax(torch.randn(3, 6, 6), dim=-1)
    fig = viz.plot_attention(weights, TOKENS)
    assert len(fig.axes) == 3 + 1
    assert [ax.get_title() for ax in fig.axes[:3]] == ["head 0", "head 1", "head 2"]
    for ax in fig.axes[:3]:
        assert tick_labels(ax.get_xticklabels()) == TOKENS
    fig = viz.plot_attention(weights, TOKENS, heads=[2, 0])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["head 2", "head 0"]


def test_heatmap_of_a_chosen_size():
    weights = torch.softmax(torch.randn(4, 6), dim=-1)
    fig = viz.plot_attention(weights, TOKENS[:4], TOKENS, figsize=(8, 3.5))
    assert tuple(fig.get_size_inches()) == (8, 3.5)
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="figsize sizes a new figure"):
        viz.plot_attention(weights, TOKENS[:4], TOKENS, ax=ax, figsize=(8, 3.5))
    plt.close(fig)


def test_heatmap_draws_into_given_axes_without_closing_them():
    fig, ax = plt.subplots()
    returned = viz.plot_attention(torch.eye(3), ["a", "b", "c"], ax=ax)
    assert returned is fig and plt.fignum_exists(fig.number)
    image = ax.get_images()[0].get_array()
    torch.testing.assert_close(torch.as_tensor(image.data), torch.eye(3, dtype=torch.float64))
    plt.close(fig)


def test_heatmap_on_an_absolute_scale():
    """By default the largest weight is brightest; with vmax=1 a head that spreads its weight stays dim."""
    spread = torch.full((4, 4), 0.25)
    default, absolute = viz.plot_attention(spread, TOKENS[:4]), viz.plot_attention(spread, TOKENS[:4], vmax=1)
    assert default.axes[0].get_images()[0].get_clim() == (0.0, 0.25)
    assert absolute.axes[0].get_images()[0].get_clim() == (0.0, 1.0)
    assert absolute.axes[1].get_ylim() == (0.0, 1.0)  # the colour bar says so
    two_heads = viz.plot_attention(torch.stack([spread, torch.eye(4)]), TOKENS[:4], vmax=1.0)
    assert {image.get_clim() for ax in two_heads.axes[:2] for image in ax.get_images()} == {(0.0, 1.0)}
    for wrong in (0, -1.0, float("inf"), "1"):
        with pytest.raises(ValueError, match=f"vmax must be a positive number .*got {wrong!r}"):
            viz.plot_attention(spread, TOKENS[:4], vmax=wrong)


@pytest.mark.parametrize("weights, tokens, kwargs, words", [
    (torch.ones(4, 5), TOKENS[:4], {}, "Tk = 5 key columns"),
    (torch.ones(4, 6), TOKENS, {}, "Tq = 4 query rows"),
    (torch.ones(2, 1, 6, 6), TOKENS, {}, "weights[0]"),
    (torch.ones(6), TOKENS, {}, "(Tq, Tk)"),
    (torch.ones(2, 6, 6), TOKENS, {"heads": [2]}, "heads must be indices from 0 to 1"),
    (torch.ones(6, 6), TOKENS, {"heads": 0}, "2-D"),
    (torch.full((6, 6), float("nan")), TOKENS, {}, "finite"),
])
def test_heatmap_errors(weights, tokens, kwargs, words):
    with pytest.raises(ValueError) as info:
        viz.plot_attention(weights, tokens, **kwargs)
    assert words in str(info.value)


def test_bars_one_bar_per_token_with_highlight():
    weights = torch.softmax(torch.arange(6.0), dim=0)
    fig = viz.plot_attention_bars(weights, TOKENS, highlight=[4])
    (ax,) = fig.axes
    bars = ax.patches
    assert len(bars) == 6
    assert [bar.get_height() for bar in bars] == pytest.approx(weights.tolist())
    assert tick_labels(ax.get_xticklabels()) == TOKENS
    colours = [bar.get_facecolor() for bar in bars]
    assert colours[4] != colours[0] and len(set(colours[:4])) == 1


@pytest.mark.parametrize("weights, kwargs, words", [
    (torch.ones(5) / 5, {}, "5 weights but tokens has 6"),
    (torch.ones(2, 6), {}, "shape (T,)"),
    (torch.ones(6) / 6, {"highlight": 9}, "highlight"),
])
def test_bars_errors(weights, kwargs, words):
    with pytest.raises(ValueError) as info:
        viz.plot_attention_bars(weights, TOKENS, **kwargs)
    assert words in str(info.value)


def test_explorer_figure_shows_the_weights(vectors):
    fig = viz.explorer_figure(TOKENS, 4, vectors, 0.25)
    (ax,) = fig.axes
    expected = viz.explorer_weights(TOKENS, 4, vectors, 0.25)
    assert [bar.get_height() for bar in ax.patches] == pytest.approx(expected.tolist())
    assert "'park'" in ax.get_title() and "0.25" in ax.get_title()


# --- the widget ----------------------------------------------------------------


@pytest.fixture()
def explorer(vectors):
    stories = generate_stories(3, seed=3)
    return viz.attention_explorer(stories, vectors, questions={"where?": vectors["park"], "mine": torch.ones(D)})


def test_explorer_builds_headless(explorer):
    assert explorer.scale.value == pytest.approx(1 / math.sqrt(D), abs=0.01)
    assert explorer.query.value == "where?"
    assert explorer.weights.shape == (len(explorer.stories[0]),)
    (output,) = explorer.output.outputs
    assert "image/png" in output["data"]


def test_explorer_recomputes_when_the_slider_moves(explorer, monkeypatch):
    calls = []
    original = viz.explorer_weights
    monkeypatch.setattr(viz, "explorer_weights", lambda *args: calls.append(args) or original(*args))
    before, picture = explorer.weights.clone(), explorer.output.outputs[0]["data"]["image/png"]
    explorer.scale.value = 3.0
    assert len(calls) == 1 and calls[0][3] == 3.0
    assert explorer.weights.max() > before.max()
    assert explorer.output.outputs[0]["data"]["image/png"] != picture
    explorer.reset.click()
    assert explorer.scale.value == pytest.approx(1 / math.sqrt(D))


def test_explorer_follows_story_and_query(explorer):
    explorer.story.value = 2
    tokens = explorer.stories[2]
    assert explorer.weights.shape == (len(tokens),)
    assert [label for label, _ in explorer.query.options][-1] == f"{tokens[-1]} (word {len(tokens) - 1})"
    assert explorer.query.value == "where?"  # a question stays chosen across stories
    explorer.query.value = 0
    expected = viz.explorer_weights(tokens, 0, explorer.vectors, explorer.scale.value)
    torch.testing.assert_close(explorer.weights, expected)


def test_explorer_scale_slider_is_wide_and_reaches_0_05_exactly(explorer):
    slider = explorer.scale
    assert slider.layout.width == "70%"
    steps_to_0_05 = (0.05 - slider.min) / slider.step
    assert slider.min <= 0.05 and steps_to_0_05 == pytest.approx(round(steps_to_0_05))
    slider.value = 0.05
    assert slider.value == 0.05
    expected = viz.explorer_weights(explorer.stories[0], explorer.questions["where?"], explorer.vectors, 0.05)
    torch.testing.assert_close(explorer.weights, expected)


def test_explorer_saves_one_line_of_text_beside_the_widget(explorer):
    bundle = explorer._repr_mimebundle_()
    line = "Attention explorer: run the cells above (Run > Run All Cells) to use it."
    assert bundle["text/plain"] == repr(explorer) == line
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id


def test_figure_output_is_a_png_display_message():
    fig = viz.plot_attention_bars([0.5, 0.5], ["a", "b"])
    message = viz.figure_output(fig)
    assert message["output_type"] == "display_data"
    assert base64.b64decode(message["data"]["image/png"]).startswith(b"\x89PNG")


def test_explorer_rejects_bad_input(vectors):
    with pytest.raises(ValueError, match="questions\\['bad'\\]"):
        viz.attention_explorer([TOKENS], vectors, questions={"bad": torch.ones(3)})
    with pytest.raises(ValueError, match="non-empty list of stories"):
        viz.attention_explorer([], vectors)


def test_plot_history_draws_loss_metrics_and_floor():
    from course_lib.training import History
    from course_lib.lab.viz import plot_history

    history = History(steps=[0, 1, 2, 3], train_loss=[3.0, 2.0, 1.5, 1.2])
    history.record_eval(1, {"val_loss": 2.1, "accuracy": 0.4})
    history.record_eval(3, {"val_loss": 1.3, "accuracy": 0.7})
    fig = plot_history(history, floor=1.0)
    left, right = fig.axes
    assert len(left.lines) == 3 and len(right.lines) == 1  # training loss, val_loss, floor | accuracy
    assert list(left.lines[1].get_ydata()) == [2.1, 1.3]
    assert right.get_ylabel() == "accuracy" and right.get_ylim() == (0, 1.02)  # a share, on its whole scale
    fig.canvas.draw()
    legend = left.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["training loss", "val loss", "entropy floor (1.000)",
                                                                "accuracy"]
    assert legend.get_window_extent().y1 < left.get_window_extent().y0  # below the plot, on no curve
    assert len(plot_history(history, metrics=["val_loss"]).axes) == 1
    with pytest.raises(ValueError, match="were not recorded"):
        plot_history(history, metrics=["bleu"])
    with pytest.raises(TypeError, match="History"):
        plot_history({"loss": [1, 2]})
