"""Two explorers: fill in BERT's blanks (notebook 05) and sample GPT's stories (notebook 06).

``Explorer``, the base of every explorer of the course (the attention
explorer of ``viz`` too), and ``figure_output`` come first.

Each widget is a thin shell over plain functions that tests call directly:

* ``fill_in_the_blank`` gives BERT's top-k words for every ``[MASK]`` of a
  text, ``plot_fill_in_the_blank`` draws them as bars, and
  ``FillInTheBlankExplorer`` connects a text box to both.
* ``sample_with_settings`` lets GPT continue a prompt with a temperature,
  top-k and top-p; ``next_token_distribution`` and ``plot_next_token_filter``
  show what those settings do to the distribution of the prompt's next
  token; ``story_report`` marks each story with the grammar's verdict and
  says why a rejected one is wrong; ``SamplingExplorer`` connects three
  sliders and a button to all four.

Every function returns plain data or a matplotlib ``Figure`` (closed, so that
Jupyter shows it once, as the value of the cell).
"""
from __future__ import annotations

import base64
import io
from typing import Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from course_lib.corpus import StoryWorld, default_world
from course_lib.generation import filter_logits
from course_lib.models import BERT, GPT
from course_lib.tokenizer import MASK, Tokenizer
from course_lib.utils import check_positive_int, evaluating
from course_lib.lab.pretraining import sample_stories
from course_lib.lab.probes import diagnose_story

__all__ = ["fill_in_the_blank", "plot_fill_in_the_blank", "FillInTheBlankExplorer", "sample_with_settings",
           "next_token_distribution", "plot_next_token_filter", "story_report", "SamplingExplorer"]


# ---------------------------------------------------------------------------
# What every explorer shares
# ---------------------------------------------------------------------------


class Explorer:
    """The base of the course's explorers: a widget for a running notebook, one line of text otherwise.

    A subclass builds its controls into ``self.widget`` and names itself in
    ``NAME``. A saved notebook stores a text version next to every widget,
    and that text is what a reader sees wherever the widget cannot be drawn:
    in JupyterLab before the cells have run (the saved outputs of a notebook
    you did not run yourself are shown as text), on GitHub, in nbviewer.
    ipywidgets would store the widget's whole repr there
    (``VBox(children=(Dropdown(...``); an explorer stores what to do instead.
    """

    NAME = "Explorer"
    widget: widgets.Widget

    def __repr__(self) -> str:
        return f"{self.NAME}: run the cells above (Run > Run All Cells) to use it."

    def _repr_mimebundle_(self, **kwargs) -> dict:
        """The widget's own display data (the widget-view entry a live front-end draws), with our line as text."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle


def figure_output(fig: Figure) -> dict:
    """A Jupyter display_data message holding ``fig`` as a PNG, for an ``Output`` widget's ``outputs``.

    Setting ``output.outputs`` to such messages changes the picture in one
    step (no flicker), and tests can read it without a running front end.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"output_type": "display_data", "data": {"image/png": png, "text/plain": repr(fig)}, "metadata": {}}

BEFORE_COLOR = "lightgray"
AFTER_COLOR = "tab:blue"


# ---------------------------------------------------------------------------
# BERT: fill in the blanks
# ---------------------------------------------------------------------------


def fill_in_the_blank(model: BERT, tokenizer: Tokenizer, text: str, k: int = 5) -> list[list[tuple[str, float]]]:
    """BERT's ``k`` most likely words for every ``[MASK]`` of ``text``.

    The text is read whole, ``[CLS] text [SEP]``, so every blank is filled
    using the words on both sides of it. Unknown words are read as ``[UNK]``.

    Returns:
        One list per ``[MASK]``, left to right, of ``k`` pairs
        ``(token, probability)``, most likely first.
    """
    if not isinstance(model, BERT):
        raise TypeError(f"model must be a course_lib.models.BERT, got {type(model).__name__}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= tokenizer.vocab_size:
        raise ValueError(f"k must be an int from 1 to the vocabulary size {tokenizer.vocab_size}, got {k!r}")
    ids = tokenizer.encode(text, style="bert", max_len=model.config.max_len)  # raises on a text that is too long
    blanks = [i for i, token_id in enumerate(ids) if token_id == tokenizer.mask_id]
    if not blanks:
        raise ValueError(f"text must contain at least one {MASK}, got {text!r}")
    with evaluating(model):
        probabilities = torch.softmax(model(torch.tensor([ids]))[0, blanks], dim=-1)  # (n_blanks, vocab_size)
    top = probabilities.topk(k, dim=-1)
    return [[(tokenizer.id_to_token[int(i)], float(p)) for p, i in zip(values, indices)]
            for values, indices in zip(top.values, top.indices)]


def plot_fill_in_the_blank(predictions: list[list[tuple[str, float]]], text: str | None = None) -> Figure:
    """Bars of ``fill_in_the_blank``'s answer: one panel per ``[MASK]``, most likely word on top."""
    if not predictions or not all(predictions):
        raise ValueError("predictions must hold one non-empty list of (token, probability) per [MASK]")
    width, height = min(3.6 * len(predictions), 14), 0.4 * len(predictions[0]) + 1.2
    fig, axes = plt.subplots(1, len(predictions), figsize=(width, height), squeeze=False, layout="constrained")
    for number, (ax, candidates) in enumerate(zip(axes[0], predictions), start=1):
        tokens = [token for token, _ in candidates][::-1]  # barh draws from the bottom up
        probabilities = [probability for _, probability in candidates][::-1]
        ax.barh(tokens, probabilities, color=AFTER_COLOR)
        for y, probability in enumerate(probabilities):
            ax.text(probability, y, f" {probability:.0%}", va="center", fontsize="small")
        ax.set_xlim(0, 1.15)
        ax.set_xlabel("probability")
        ax.set_title(f"{MASK} number {number}" if len(predictions) > 1 else MASK)
    if text is not None:
        fig.suptitle(text, fontsize="medium")
    plt.close(fig)  # shown once, as the returned value
    return fig


class FillInTheBlankExplorer(Explorer):
    """Type a story with ``[MASK]`` in it; see BERT's top-k words for every blank.

    ``text`` (a Text box; the bars update when you press Enter or leave the
    box) and ``output`` are attributes, so code can drive it as a learner
    would: ``explorer.text.value = "[MASK] went home ."``. ``predictions``
    holds the answer drawn last (None after an error, which ``output`` shows).
    """

    NAME = "Fill-in-the-blank explorer"

    def __init__(self, model: BERT, tokenizer: Tokenizer, text: str, k: int = 5):
        self.model, self.tokenizer, self.k = model, tokenizer, k
        self.text = widgets.Text(value=text, description="story", continuous_update=False,
                                 layout=widgets.Layout(width="95%"))
        self.output = widgets.Output()
        self.predictions: list[list[tuple[str, float]]] | None = None
        self.text.observe(self._redraw, names="value")
        self.widget = widgets.VBox([self.text, self.output])
        self._redraw()

    def _redraw(self, change=None) -> None:
        try:
            self.predictions = fill_in_the_blank(self.model, self.tokenizer, self.text.value, self.k)
        except ValueError as error:
            self.predictions = None
            self.output.outputs = (_text_output(f"{error}\nWrite a story with {MASK} where a word should be."),)
            return
        unknown = [w for w in self.tokenizer.split(self.text.value) if w not in self.tokenizer.token_to_id]
        outputs = (figure_output(plot_fill_in_the_blank(self.predictions, self.text.value)),)
        if unknown:
            outputs += (_text_output(f"words the model never saw, read as [UNK]: {', '.join(unknown)}"),)
        self.output.outputs = outputs


# ---------------------------------------------------------------------------
# GPT: sampling with temperature, top-k and top-p
# ---------------------------------------------------------------------------


def sample_with_settings(model: GPT, tokenizer: Tokenizer, n: int, temperature: float = 1.0,
                         top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                         prompt: str = "") -> list[str]:
    """``n`` stories written by GPT with these sampling settings, each continuing ``prompt``.

    GPT reads ``[BOS] prompt`` and writes on until ``[EOS]``, so every story
    starts with the prompt's words (with the empty prompt, GPT writes the
    whole story). The same seed gives the same stories. A story that reaches
    the model's ``max_len`` before ``[EOS]`` ends with "(unfinished)".
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a course_lib.models.GPT, got {type(model).__name__}")
    check_positive_int("n", n)
    stories = sample_stories(model, tokenizer, n, temperature, seed, prompt=prompt, top_k=top_k, top_p=top_p)
    return [" ".join(tokens) for tokens in stories]


def story_report(stories: Sequence[str], world: StoryWorld | None = None) -> str:
    """The stories marked with the grammar's verdict, as the sampling explorer prints them.

    A story the story world's grammar accepts gets a ✓; any other gets a ✗
    and, on the next line, the first rule it breaks (``probes.diagnose_story``).
    The last line counts the valid stories.
    """
    lines, valid = [], 0
    for story in stories:
        diagnosis = diagnose_story(story, world)
        if diagnosis is None:
            valid += 1
            lines.append(f"✓ {story}")
        else:
            kind, explanation = diagnosis
            lines += [f"✗ {story}", f"      {kind}: {explanation}"]
    lines.append(f"{valid} of {len(stories)} stories valid")
    return "\n".join(lines)


def _prompt_ids(model: GPT, tokenizer: Tokenizer, prompt: str) -> list[int]:
    """``[BOS]`` and the prompt's ids; a ValueError if they do not fit in the model's ``max_len``."""
    ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
    if len(ids) > model.config.max_len:
        raise ValueError(f"prompt is {len(ids)} tokens long with [BOS], more than max_len={model.config.max_len}")
    return ids


def next_token_distribution(model: GPT, tokenizer: Tokenizer, prompt: str, temperature: float = 1.0,
                            top_k: int | None = None, top_p: float | None = None
                            ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """GPT's distribution of the token after ``[BOS] prompt``, before and after the sampling settings.

    Returns:
        tokens: the vocabulary, token i has id i.
        before: (vocab_size,) the model's own probabilities.
        after: (vocab_size,) the probabilities sampling uses: the logits
            divided by ``temperature``, then top-k, then top-p (0 for every
            removed token).
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a course_lib.models.GPT, got {type(model).__name__}")
    ids = _prompt_ids(model, tokenizer, prompt)
    with evaluating(model):
        logits = model(torch.tensor([ids]))[:, -1]  # (1, vocab_size): the next token's scores
    before = torch.softmax(logits, dim=-1)[0]
    after = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)[0]
    return list(tokenizer.id_to_token), before, after


def plot_next_token_filter(tokens: list[str], before: torch.Tensor, after: torch.Tensor, top: int = 10,
                           ax: Axes | None = None, title: str | None = None) -> Figure:
    """Bars of the ``top`` most likely next tokens: the model's probability (grey) and after the filter (blue)."""
    if not len(tokens) == len(before) == len(after):
        raise ValueError(f"tokens, before and after must have one entry per token, got lengths "
                         f"{len(tokens)}, {len(before)} and {len(after)}")
    order = before.argsort(descending=True, stable=True)[:top].tolist()
    owned = ax is None
    if owned:
        fig, ax = plt.subplots(figsize=(6.5, 3), layout="constrained")
    positions = np.arange(len(order))
    ax.bar(positions - 0.2, before[order].tolist(), width=0.4, color=BEFORE_COLOR, label="model")
    ax.bar(positions + 0.2, after[order].tolist(), width=0.4, color=AFTER_COLOR, label="sampled from")
    ax.set_xticks(positions, [tokens[i] for i in order], rotation=45, ha="right")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    kept = int((after > 0).sum())
    ax.set_title(title or f"{kept} token{'s' if kept != 1 else ''} can be sampled", fontsize="medium")
    if owned:
        plt.close(fig)  # shown once, as the returned value
    return ax.figure


class SamplingExplorer(Explorer):
    """Sliders for temperature, top-k and top-p; GPT continues the prompt again whenever one moves.

    It shows the next-token distribution after ``prompt`` before and after
    the settings, and ``n`` continuations of the prompt marked ✓ when the
    story world's grammar accepts them, or ✗ with the reason
    (``story_report``). top_k = 0 and top_p = 1 mean "off". The controls
    (``temperature``, ``top_k``, ``top_p``, ``new_samples``) are attributes;
    ``stories`` holds the stories shown last and ``seed`` their seed.
    """

    NAME = "Sampling explorer"

    def __init__(self, model: GPT, tokenizer: Tokenizer, prompt: str = "alice went to the", n: int = 8,
                 world: StoryWorld | None = None):
        self.model, self.tokenizer, self.prompt, self.n = model, tokenizer, prompt, n
        self.world = world or default_world()
        self.temperature = widgets.FloatSlider(value=1.0, min=0.1, max=2.0, step=0.05, description="temperature",
                                               continuous_update=False)
        self.top_k = widgets.IntSlider(value=0, min=0, max=20, description="top_k (0: off)", continuous_update=False)
        self.top_p = widgets.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top_p (1: off)",
                                         continuous_update=False)
        self.new_samples = widgets.Button(description="new samples", tooltip="the same settings, another seed")
        self.output = widgets.Output()
        self.seed = 0
        self.stories: list[str] = []
        for slider in (self.temperature, self.top_k, self.top_p):
            slider.observe(self._redraw, names="value")
        self.new_samples.on_click(self._next_seed)
        style = {"description_width": "initial"}
        for control in (self.temperature, self.top_k, self.top_p):
            control.style = style
        self.widget = widgets.VBox([widgets.HBox([self.temperature, self.top_k]),
                                    widgets.HBox([self.top_p, self.new_samples]), self.output])
        self._redraw()

    def settings(self) -> dict:
        """The sliders as ``sample_with_settings`` arguments (None where a filter is off)."""
        return {"temperature": self.temperature.value, "top_k": self.top_k.value or None,
                "top_p": self.top_p.value if self.top_p.value < 1.0 else None}

    def _next_seed(self, button=None) -> None:
        self.seed += 1
        self._redraw()

    def _redraw(self, change=None) -> None:
        settings = self.settings()
        tokens, before, after = next_token_distribution(self.model, self.tokenizer, self.prompt, **settings)
        figure = plot_next_token_filter(tokens, before, after, title=f"next token after {self.prompt!r}: "
                                                                     f"{int((after > 0).sum())} can be sampled")
        self.stories = sample_with_settings(self.model, self.tokenizer, self.n, seed=self.seed, prompt=self.prompt,
                                            **settings)
        report = f"{story_report(self.stories, self.world)} (seed {self.seed})"
        self.output.outputs = (figure_output(figure), _text_output(report))


# ---------------------------------------------------------------------------
# Text in an Output widget (figures go in with ``figure_output``)
# ---------------------------------------------------------------------------


def _text_output(text: str) -> dict:
    """A Jupyter stream message printing ``text``, for an ``Output`` widget's ``outputs``."""
    return {"output_type": "stream", "name": "stdout", "text": text + "\n"}
