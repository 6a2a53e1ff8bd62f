"""Pictures of attention, training curves, and the attention explorer of notebook 01.

Every plotting function returns a matplotlib ``Figure``. A figure it creates
itself is closed before it is returned: Jupyter then shows it exactly once,
as the value of the cell, instead of once as "the current pyplot figure" and
once more as the returned value. Pass ``ax`` to draw into your own figure.

The explorer is a thin shell: ``explorer_weights`` computes the weights and
``explorer_figure`` draws them; the widget only connects dropdowns and a
slider to these two functions, so tests can check them without a browser.
``Explorer`` and ``figure_output``, which every explorer of the course
shares, are in ``explorers``.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence, Union

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from course_lib.lab.explorers import Explorer, figure_output

__all__ = [
    "plot_attention",
    "plot_attention_bars",
    "explorer_weights",
    "explorer_figure",
    "AttentionExplorer",
    "attention_explorer",
    "plot_history",
    "Explorer",
    "figure_output",
]

# Word vectors for the explorer: a function from tokens to a (T, d) tensor
# (such as ``course_lib.lab.cooccurrence.WordVectors``) or a {word: (d,) tensor} mapping.
Vectors = Union[Callable[[Sequence[str]], torch.Tensor], Mapping[str, torch.Tensor]]

HIGHLIGHT_COLOR = "tab:orange"
BAR_COLOR = "tab:blue"


# ---------------------------------------------------------------------------
# Heatmaps and bars
# ---------------------------------------------------------------------------


def plot_attention(weights, query_tokens: Sequence[str], key_tokens: Sequence[str] | None = None,
                   heads: int | Sequence[int] | None = None, ax: Axes | Sequence[Axes] | None = None,
                   title: str | None = None, figsize: tuple[float, float] | None = None,
                   vmax: float | None = None) -> Figure:
    """Heatmap of attention weights: one row per query token, one column per key token.

    Args:
        weights: (Tq, Tk) for one head, or (H, Tq, Tk) for several heads,
            drawn side by side (a tensor or an array; for a batch such as
            ``MultiHeadAttention.attention_weights`` (B, H, Tq, Tk), pick
            one example: ``weights[0]``).
        query_tokens: the Tq labels of the rows.
        key_tokens: the Tk labels of the columns; defaults to
            ``query_tokens`` (self-attention).
        heads: which heads of a (H, Tq, Tk) input to draw (an index or a
            list of indices); all of them by default.
        ax: an Axes to draw one head into, or one Axes per head drawn.
        title: a title above the picture.
        figsize: (width, height) in inches of the figure drawn when no
            ``ax`` is given; by default about a quarter of an inch per token.
        vmax: the weight drawn in the brightest colour; by default the
            largest weight drawn. ``vmax=1`` puts figures of different
            models on one absolute scale: a head that spreads its weight
            thinly then looks dim, however its weights compare to each other.

    Returns:
        The Figure. All panels share one colour scale, from 0 to ``vmax``,
        so heads can be compared by eye.
    """
    array = _as_array(weights, "weights")
    if array.ndim not in (2, 3):
        hint = "; for a batch (B, H, Tq, Tk), pick one example: weights[0]" if array.ndim == 4 else ""
        raise ValueError("weights must have shape (Tq, Tk) for one head or (H, Tq, Tk) for several heads, "
                         f"got shape {array.shape}{hint}")
    query_tokens = _check_tokens(query_tokens, "query_tokens")
    key_tokens = query_tokens if key_tokens is None else _check_tokens(key_tokens, "key_tokens")
    Tq, Tk = array.shape[-2:]
    if Tq != len(query_tokens):
        raise ValueError(f"weights has Tq = {Tq} query rows (shape {array.shape}) but query_tokens has "
                         f"{len(query_tokens)} tokens; expected one token per row")
    if Tk != len(key_tokens):
        raise ValueError(f"weights has Tk = {Tk} key columns (shape {array.shape}) but key_tokens has "
                         f"{len(key_tokens)} tokens; expected one token per column")
    if array.ndim == 2:
        if heads is not None:
            raise ValueError(f"heads can only be chosen from (H, Tq, Tk) weights, got 2-D weights {array.shape}")
        panels, names = [array], [None]
    else:
        H = array.shape[0]
        chosen = list(range(H)) if heads is None else _check_indices(heads, H, "heads")
        panels, names = [array[h] for h in chosen], [f"head {h}" for h in chosen]

    if vmax is not None and not (isinstance(vmax, (int, float)) and 0 < vmax < math.inf):
        raise ValueError(f"vmax must be a positive number (the top of the colour scale), got {vmax!r}")
    fig, axes, owned = _figure_and_axes(ax, len(panels), width=0.27 * Tk + 1.2, height=0.27 * Tq + 1.0,
                                        figsize=figsize)
    vmax = vmax or max(float(panel.max()) for panel in panels) or 1.0
    for i, (axis, panel, name) in enumerate(zip(axes, panels, names)):
        image = axis.imshow(panel, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
        axis.set_xticks(range(Tk), labels=key_tokens, rotation=90)
        axis.set_yticks(range(Tq), labels=query_tokens if i == 0 else [""] * Tq)
        axis.set_xlabel("key (attended to)")
        if i == 0:
            axis.set_ylabel("query (attending)")
        if name is not None:
            axis.set_title(name)
    fig.colorbar(image, ax=list(axes), label="attention weight", shrink=0.9)
    if title is not None:
        if len(axes) == 1:
            axes[0].set_title(title)
        else:
            fig.suptitle(title)
    return _finish(fig, owned)


def plot_attention_bars(weights_row, tokens: Sequence[str], ax: Axes | None = None,
                        highlight: int | Iterable[int] | None = None, title: str | None = None) -> Figure:
    """Bar chart of one query's attention weights over a sentence.

    Args:
        weights_row: (T,) weights of one query, usually summing to 1.
        tokens: the T tokens the weights belong to, in order.
        ax: an Axes to draw into; a new figure by default.
        highlight: index or indices of tokens to colour differently (the
            query word, or the words that answer a question).
        title: a title above the bars.

    Returns:
        The Figure. The y-axis always runs from 0 to 1, so that a flatter or
        sharper distribution is visible from one picture to the next.
    """
    array = _as_array(weights_row, "weights_row")
    tokens = _check_tokens(tokens, "tokens")
    if array.ndim != 1:
        raise ValueError(f"weights_row must be one query's weights, shape (T,), got shape {array.shape}; "
                         "for a (Tq, Tk) matrix pick a row: weights[i]")
    if len(array) != len(tokens):
        raise ValueError(f"weights_row has {len(array)} weights but tokens has {len(tokens)} tokens; "
                         "expected one weight per token")
    marked = set(_check_indices(highlight, len(tokens), "highlight")) if highlight is not None else set()

    fig, (axis,), owned = _figure_and_axes(ax, 1, width=0.35 * len(tokens) + 1.5, height=2.6)
    colors = [HIGHLIGHT_COLOR if i in marked else BAR_COLOR for i in range(len(tokens))]
    axis.bar(range(len(tokens)), array, color=colors)
    axis.set_xticks(range(len(tokens)), labels=tokens, rotation=90)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("attention weight")
    axis.spines[["top", "right"]].set_visible(False)
    if title is not None:
        axis.set_title(title)
    return _finish(fig, owned)


# ---------------------------------------------------------------------------
# The attention explorer: two plain functions and a widget around them
# ---------------------------------------------------------------------------


def explorer_weights(tokens: Sequence[str], query: int | torch.Tensor, vectors: Vectors,
                     scale: float) -> torch.Tensor:
    """Attention weights of one query over a sentence whose keys are its word vectors.

        weights = softmax(scale * K q)

    K (T, d) holds the vectors of ``tokens`` (the keys, and in this simplest
    attention also the values); q (d,) is the query. With
    ``scale = 1 / sqrt(d)`` this is exactly ``scaled_dot_product_attention``;
    other scales show what the division does: a small scale flattens the
    weights, a large one piles them onto the best-matching word.

    Args:
        tokens: the T words of the sentence.
        query: the position of a word of the sentence (its vector is the
            query), or a query vector of shape (d,), such as a question.
        vectors: word vectors, a function tokens -> (T, d) tensor or a
            mapping word -> (d,) tensor.
        scale: the positive factor multiplying every dot product.

    Returns:
        (T,) float tensor of weights summing to 1.
    """
    tokens = _check_tokens(tokens, "tokens")
    keys = _key_vectors(tokens, vectors)  # (T, d)
    if isinstance(query, torch.Tensor):
        if query.shape != (keys.shape[1],):
            raise ValueError(f"query vector must have shape (d,) = ({keys.shape[1]},) like the word vectors, "
                             f"got shape {tuple(query.shape)}")
        q = query.to(keys.dtype)
    elif isinstance(query, int) and not isinstance(query, bool):
        if not 0 <= query < len(tokens):
            raise ValueError(f"query must be a position from 0 to {len(tokens) - 1} in tokens, got {query}")
        q = keys[query]
    else:
        raise TypeError(f"query must be a word position (int) or a query vector (torch.Tensor), "
                        f"got {type(query).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    scores = keys @ q * scale  # (T,)
    return torch.softmax(scores, dim=0)


def explorer_figure(tokens: Sequence[str], query: int | torch.Tensor, vectors: Vectors, scale: float,
                    query_label: str | None = None, highlight: int | Iterable[int] | None = None) -> Figure:
    """The explorer's picture: ``explorer_weights`` as bars, titled with the query and the scale.

    ``query_label`` names a query vector in the title (for a word position
    the word itself is used); ``highlight`` marks tokens (by default the
    query word, if the query is one).
    """
    weights = explorer_weights(tokens, query, vectors, scale)
    d_k = _key_vectors(tokens[:1], vectors).shape[1]
    return _draw_explorer(weights, list(tokens), query, scale, d_k, query_label, highlight)


def _draw_explorer(weights: torch.Tensor, tokens: list[str], query, scale: float, d_k: int,
                   query_label: str | None, highlight) -> Figure:
    if isinstance(query, int):
        query_label = query_label or f"the word {tokens[query]!r} (position {query})"
        highlight = query if highlight is None else highlight
    title = (f"query: {query_label or 'a vector'}   scale = {scale:.2f} (1/√d_k = {1 / math.sqrt(d_k):.2f})\n"
             f"largest weight {weights.max().item():.2f} on {tokens[int(weights.argmax())]!r}")
    return plot_attention_bars(weights, tokens, highlight=highlight, title=title)


class AttentionExplorer(Explorer):
    """The widget of ``attention_explorer``; display it in a notebook cell.

    Its controls are attributes, so code (and tests) can drive it like a
    learner would: ``explorer.scale.value = 2.0`` redraws the bars.

    story:  Dropdown choosing the story.
    query:  Dropdown choosing the query: a question (if any were given) or a
            word of the story.
    scale:  FloatSlider, the factor multiplying the dot products.
    output: Output widget showing the bars.
    weights: the (T,) weights drawn last.
    """

    NAME = "Attention explorer"

    def __init__(self, stories: Sequence, vectors: Vectors, questions: Mapping[str, torch.Tensor] | None = None,
                 scale: float | None = None):
        self.stories = _story_tokens(stories)
        self._annotated = [story if hasattr(story, "answer_spans") else None for story in stories]
        self.vectors = vectors
        self.questions = dict(questions or {})
        self.d_k = _key_vectors(self.stories[0], vectors).shape[1]
        for name, vector in self.questions.items():
            if not isinstance(vector, torch.Tensor) or vector.shape != (self.d_k,):
                raise ValueError(f"questions[{name!r}] must be a query vector of shape ({self.d_k},), "
                                 f"got {_describe(vector)}")
        default_scale = 1 / math.sqrt(self.d_k)
        self.story = widgets.Dropdown(
            options=[(_short(f"{i}: {' '.join(tokens)}"), i) for i, tokens in enumerate(self.stories)],
            value=0, description="story", layout=widgets.Layout(width="95%"))
        self.query = widgets.Dropdown(description="query")
        # Wide enough to aim (a step of 0.01 is about a pixel): notebook 01 sends the learner to 0.05, the left
        # end, to 1/sqrt(d_k) and to 3.
        self.scale = widgets.FloatSlider(
            value=default_scale if scale is None else scale, min=0.05, max=3.0, step=0.01,
            description="scale", readout_format=".2f", continuous_update=False, layout=widgets.Layout(width="70%"))
        self.reset = widgets.Button(description=f"1/√d_k = {default_scale:.3f}",
                                    tooltip="set the scale to 1/sqrt(d_k), as scaled dot-product attention does")
        self.output = widgets.Output()
        self.weights: torch.Tensor | None = None
        self._updating = False
        self._set_query_options()

        self.story.observe(self._on_story, names="value")
        self.query.observe(self._redraw, names="value")
        self.scale.observe(self._redraw, names="value")
        self.reset.on_click(lambda _: setattr(self.scale, "value", default_scale))
        self.widget = widgets.VBox([self.story, self.query, widgets.HBox([self.scale, self.reset]), self.output])
        self._redraw()

    def _set_query_options(self) -> None:
        tokens = self.stories[self.story.value]
        options = [(f"{name} (question)", name) for name in self.questions]
        options += [(f"{token} (word {i})", i) for i, token in enumerate(tokens)]
        keep = self.query.value if isinstance(self.query.value, str) else options[0][1]
        self.query.options = options
        self.query.value = keep

    def _on_story(self, change) -> None:
        # New options may or may not change the query's value: silence redraws, then draw once.
        self._updating = True
        try:
            self._set_query_options()
        finally:
            self._updating = False
        self._redraw()

    def _redraw(self, change=None) -> None:
        if self._updating:
            return
        tokens = self.stories[self.story.value]
        query = self.query.value
        vector = self.questions[query] if isinstance(query, str) else query
        label = query if isinstance(query, str) else None
        self.weights = explorer_weights(tokens, vector, self.vectors, self.scale.value)
        answers = _answer_positions(self._annotated[self.story.value], label) if label else None
        fig = _draw_explorer(self.weights, tokens, vector, self.scale.value, self.d_k, label, answers)
        # Replacing the outputs in one assignment avoids a flicker and needs no browser attached.
        self.output.outputs = (figure_output(fig),)


def attention_explorer(stories: Sequence, vectors: Vectors, questions: Mapping[str, torch.Tensor] | None = None,
                       scale: float | None = None) -> AttentionExplorer:
    """An interactive view of attention over the words of a story.

    Pick a story, a query (a question vector or one of the story's words)
    and a scale; the bars show ``explorer_weights``: softmax(scale * K q)
    over the story's words. For a question named after one of
    ``corpus.QUESTION_KINDS`` ("who?", "where?", ...) and ``Story`` objects,
    the words that answer it are drawn in orange; for a word query, the word.

    Args:
        stories: ``Story`` objects or token sequences.
        vectors: word vectors, a function tokens -> (T, d) tensor (such as
            ``course_lib.lab.cooccurrence.WordVectors``) or a mapping
            word -> (d,) tensor.
        questions: optional named query vectors, such as
            ``{"where?": the average place vector}``.
        scale: the slider's start; 1/sqrt(d) by default.
    """
    return AttentionExplorer(stories, vectors, questions, scale)


# ---------------------------------------------------------------------------
# Helpers: input checks and figure bookkeeping
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------


def plot_history(history, metrics: Sequence[str] | None = None, floor: float | None = None,
                 ax: Axes | None = None, title: str | None = None) -> Figure:
    """The training loss at every step and the evaluation metrics, from ``training.History``.

    metrics: names of evaluation metrics to draw (default: all of them). A
        metric with "loss" in its name shares the loss axis; the others
        (accuracies, rates) get a second axis on the right.
    floor: a horizontal line for the lowest reachable loss (the entropy floor).
    """
    if not hasattr(history, "train_loss") or not hasattr(history, "eval_metrics"):
        raise TypeError(f"history must be a course_lib.training.History, got {type(history).__name__}")
    names = list(history.eval_metrics) if metrics is None else list(metrics)
    unknown = [name for name in names if name not in history.eval_metrics]
    if unknown:
        raise ValueError(f"metrics {unknown} were not recorded; recorded: {sorted(history.eval_metrics)}")
    fig, (ax,), owned = _figure_and_axes(ax, 1, 6.5, 3.5)
    ax.plot(history.steps, history.train_loss, color=BAR_COLOR, alpha=0.5, linewidth=1, label="training loss")
    right = None
    for i, name in enumerate(names):
        values = history.eval_metrics[name]
        if "loss" in name:
            ax.plot(history.eval_steps, values, "o-", color=HIGHLIGHT_COLOR, label=_readable(name))
        else:
            right = right or ax.twinx()
            right.plot(history.eval_steps, values, "s--", color=f"C{i + 2}", label=_readable(name))
    if right is not None:
        others = [name for name in names if "loss" not in name]
        right.set_ylabel(", ".join(_readable(name) for name in others))
        if all(0 <= value <= 1 for name in others for value in history.eval_metrics[name]):
            right.set_ylim(0, 1.02)  # shares (accuracies, rates) on their whole scale: a rise reads at its true size
    if floor is not None:
        ax.axhline(floor, color="black", linestyle=":", label=f"entropy floor ({floor:.3f})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    # Below the plot, where no curve runs (loss falls and accuracy rises across the whole area).
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=min(len(labels), 4),
              fontsize="small", frameon=False)
    ax.set_title(title or "training")
    return _finish(fig, owned)


def _readable(metric: str) -> str:
    """A metric's name as a label: "masked_accuracy" -> "masked accuracy"."""
    return metric.replace("_", " ")


def _as_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        array = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a tensor or an array of numbers, got {type(x).__name__}") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite numbers, got NaN or infinity")
    return array


def _check_tokens(tokens, name: str) -> list[str]:
    if isinstance(tokens, str):
        raise TypeError(f"{name} must be a sequence of tokens, got a str; pass text.split()")
    tokens = list(tokens)
    if not tokens or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{name} must be a non-empty sequence of str, got {tokens[:5]!r}")
    return tokens


def _check_indices(indices, count: int, name: str) -> list[int]:
    """Indices into something of length ``count``; one int or an iterable of ints."""
    chosen = [indices] if isinstance(indices, int) else list(indices)
    for i in chosen:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < count:
            raise ValueError(f"{name} must be indices from 0 to {count - 1}, got {indices!r}")
    if not chosen:
        raise ValueError(f"{name} must not be empty")
    return chosen


def _key_vectors(tokens: list[str], vectors: Vectors) -> torch.Tensor:
    """The (T, d) vectors of ``tokens``, from a function or a mapping."""
    if isinstance(vectors, Mapping):
        missing = [t for t in tokens if t not in vectors]
        if missing:
            raise KeyError(f"vectors has no vector for {missing[0]!r}")
        keys = torch.stack([torch.as_tensor(vectors[t]) for t in tokens])
    elif callable(vectors):
        keys = vectors(tokens)
    else:
        raise TypeError("vectors must be a function tokens -> (T, d) tensor or a mapping word -> (d,) tensor, "
                        f"got {type(vectors).__name__}")
    if not isinstance(keys, torch.Tensor) or keys.shape[:1] != (len(tokens),) or keys.dim() != 2:
        raise ValueError(f"vectors must give a (T, d) tensor with T = {len(tokens)} for {len(tokens)} tokens, "
                         f"got {_describe(keys)}")
    return keys.float()


def _story_tokens(stories) -> list[list[str]]:
    if isinstance(stories, str) or not isinstance(stories, Sequence) or len(stories) == 0:
        raise ValueError("stories must be a non-empty list of stories (Story objects or token lists)")
    return [_check_tokens(getattr(story, "tokens", story), f"stories[{i}]") for i, story in enumerate(stories)]


def _answer_positions(story, question_name: str) -> list[int] | None:
    """Positions of the words answering a question named like "where?" (a Story's annotations), if known."""
    from course_lib.corpus import QUESTION_KINDS

    question = question_name.rstrip("?").strip()
    if story is None or question not in QUESTION_KINDS:
        return None
    return [i for start, end in story.answer_spans(question) for i in range(start, end)] or None


def _describe(x) -> str:
    return f"a tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _short(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _figure_and_axes(ax, n_panels: int, width: float, height: float,
                     figsize: tuple[float, float] | None = None):
    """(figure, list of axes, whether we created the figure) for ``n_panels`` panels.

    A new figure is ``figsize`` inches if given, else ``width`` x ``height`` per panel (at most 16 wide).
    """
    if ax is None:
        figsize = figsize or (min(width * n_panels, 16), height)
        fig, axes = plt.subplots(1, n_panels, figsize=figsize, squeeze=False, layout="constrained")
        return fig, list(axes[0]), True
    if figsize is not None:
        raise ValueError(f"figsize sizes a new figure; with ax given, size ax's own figure instead (got {figsize!r})")
    axes = [ax] if isinstance(ax, Axes) else list(ax)
    if len(axes) != n_panels or not all(isinstance(a, Axes) for a in axes):
        raise ValueError(f"ax must be one matplotlib Axes per panel drawn ({n_panels}), got {ax!r}")
    return axes[0].figure, axes, False


def _finish(fig: Figure, owned: bool) -> Figure:
    if owned:
        plt.close(fig)  # shown once, as the returned value, not again as pyplot's current figure
    return fig
