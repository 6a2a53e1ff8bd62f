"""The downstream classification task: coherent versus corrupted stories (notebook 08)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from course_lib.corpus.story import PRONOUN, Story
from course_lib.corpus.world import StoryWorld


# -- the downstream classification task ---------------------------------------------------

@dataclass(frozen=True)
class LabeledStory:
    """A story for classification: ``label`` 1 if coherent, 0 if corrupted."""

    tokens: tuple[str, ...]
    label: int
    corruption: str | None  # "pronoun", "place_activity", "time_activity" or None
    story: Story            # the coherent original


def coherence_task(world: StoryWorld, stories: Sequence[Story], seed: int = 0) -> list[LabeledStory]:
    """Coherent versus corrupted stories, balanced, for fine-tuning (notebook 08).

    A corrupted story breaks exactly one rule of the world, in a way that
    keeps it looking like a story:

    * ``pronoun``: one pronoun takes the other gender ("alice ... his sister");
    * ``place_activity``: an activity moves to a place that does not offer it
      ("to swim" at the library), at a time that still suits it;
    * ``time_activity``: the first sentence's time no longer suits its
      activity ("eat breakfast at night").

    Deciding needs the story's dependencies, not a keyword: every word of a
    corrupted story also appears in coherent ones. Only stories that can be
    corrupted are used, so that "cannot be corrupted" never gives the label
    away; half of them (chosen by ``seed``) are corrupted.
    """
    rng = random.Random(seed)
    examples = []
    for story in stories:
        options = _corruptions(world, story)
        if not options:
            continue
        if rng.random() < 0.5:
            examples.append(LabeledStory(story.tokens, 1, None, story))
        else:
            kind = rng.choice(sorted(options))
            tokens = rng.choice(options[kind])
            examples.append(LabeledStory(tokens, 0, kind, story))
    return examples


def _corruptions(world: StoryWorld, story: Story) -> dict[str, list[tuple[str, ...]]]:
    """Every single-rule corruption of ``story``, grouped by kind; each is checked invalid."""
    cfg = world.config
    swap = {"she": "he", "he": "she", "her": "his", "his": "her"}
    found: dict[str, list[tuple[str, ...]]] = {"pronoun": [], "place_activity": [], "time_activity": []}
    tokens = list(story.tokens)
    for i, kind in enumerate(story.kinds):
        if kind == PRONOUN:
            found["pronoun"].append(tuple(tokens[:i] + [swap[tokens[i]]] + tokens[i + 1:]))
    offset = 0
    for sentence in story.sentences:
        if sentence.activity is not None:
            start = offset + sentence.words.index("to", 5) + 1
            old = sentence.purpose
            for name, activity in cfg.activities.items():
                if name not in cfg.places[sentence.place] and story.time in activity.times:
                    found["place_activity"].append(tuple(tokens[:start] + list(activity.words)
                                                         + tokens[start + len(old):]))
        offset += len(sentence.words)
    first = story.sentences[0]
    if first.activity is not None:
        allowed = cfg.activities[first.activity].times
        time_start = len(first.words) - 1 - len(cfg.times[first.time])
        for time, words in cfg.times.items():
            if time not in allowed:
                found["time_activity"].append(tuple(tokens[:time_start] + list(words)
                                                    + tokens[len(first.words) - 1:]))
    for kind, variants in found.items():
        if any(world.is_valid(v) for v in variants):
            raise AssertionError(f"a {kind} corruption of {story.text!r} is still a valid story")
    return {kind: variants for kind, variants in found.items() if variants}
