"""Probes: what a pretrained model learned about the story world, measured with its annotations.

The story world has two dependencies that a masked language model can only
solve with context:

* a pronoun agrees with the person of the story (*she* for Alice, *his* for
  Leo): the person stands to the **left** of the pronoun;
* the person can be guessed from a later pronoun: "[MASK] went to the park
  ... then she went home" asks for a woman's name, and the clue stands to the
  **right**.

``masked_pronoun_probe`` and ``masked_person_probe`` hide one such word at a
time and measure how often BERT fills it in exactly, and how often with the
right gender. ``pronoun_attention_scores`` looks inside: for every layer and
head, how much attention flows from a pronoun to its person.

These BERT probes read a ``pretraining.StoryData`` built with
``style="bert"``: position 0 is ``[CLS]``, so story token i sits at position i + 1.

For GPT, whose stories can be checked by the grammar, ``diagnose_story``
says which rule an invalid story broke first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from course_lib.corpus import PERSON, POSSESSIVE_PRONOUN, PRONOUN, SUBJECT_PRONOUN, StoryWorld, default_world
from course_lib.models import BERT
from course_lib.objectives import masked_one_at_a_time_log_probs
from course_lib.utils import evaluating
from course_lib.lab.pretraining import UNFINISHED, StoryData, positions_of_kind

__all__ = ["FillProbe", "fill_predictions", "masked_pronoun_probe", "masked_person_probe",
           "pronoun_attention_scores", "best_head", "attention_maps", "MISTAKE_KINDS", "diagnose_story"]


@dataclass(frozen=True)
class FillProbe:
    """How BERT filled one kind of masked word.

    exact:        share of predictions equal to the hidden word.
    same_gender:  share of predictions of the hidden word's gender (a name or
                  pronoun of the same gender, even if not the same word).
    n:            number of masked words scored.
    """

    exact: float
    same_gender: float
    n: int


def fill_predictions(model: BERT, data: StoryData, positions: Sequence[tuple[int, int]], split: str = "validation",
                     batch_size: int = 512) -> torch.Tensor:
    """BERT's most likely token at each ``(row, position)``, masked one at a time.

    Every pair becomes its own input: story ``row`` of ``split`` with only
    that position replaced by ``[MASK]``, so BERT sees all the other words
    (``objectives.masked_one_at_a_time_log_probs``).

    Returns:
        (N,) predicted token ids, in the order of ``positions``.
    """
    _check_bert_data(model, data, split)
    log_probs = masked_one_at_a_time_log_probs(model, data.ids[split], data.mask[split],
                                               mask_id=data.tokenizer.mask_id, positions=positions,
                                               batch_size=batch_size)  # (N, vocab_size)
    return log_probs.argmax(dim=-1)


def masked_pronoun_probe(model: BERT, data: StoryData, split: str = "validation", limit: int = 2000) -> FillProbe:
    """Mask each pronoun of the first ``limit`` stories in turn: does BERT agree with the person?

    A pronoun of the right gender (*she* or *her* for a woman) counts for
    ``same_gender`` even if it has the wrong case (*her* for *she*).
    """
    _check_bert_data(model, data, split)
    positions = positions_of_kind(data.stories[split][:limit], PRONOUN)
    if not positions:
        raise ValueError(f"the first {limit} stories of {split!r} hold no pronoun")
    answers = _tokens_at(data, split, positions)
    predicted = data.tokenizer.convert_ids_to_tokens(fill_predictions(model, data, positions, split))
    gender = _pronoun_genders()
    return _score(predicted, answers, lambda word: gender.get(word))


def masked_person_probe(model: BERT, data: StoryData, split: str = "validation", limit: int = 2000,
                        with_pronoun: bool = True, world: StoryWorld | None = None) -> FillProbe:
    """Mask the person, the first word of a story: can BERT tell who it is from what follows?

    with_pronoun: True scores the stories with a pronoun later on (the clue
        to the person's gender stands to the right of the mask); False scores
        those without, where no word tells the gender (chance: one half).
    """
    _check_bert_data(model, data, split)
    world = world or default_world()
    stories = data.stories[split][:limit]
    positions = [(row, 1) for row, story in enumerate(stories)  # position 1: the first word after [CLS]
                 if story.kinds[0] == PERSON and (PRONOUN in story.kinds) == with_pronoun]
    if not positions:
        raise ValueError(f"the first {limit} stories of {split!r} hold no story "
                         f"{'with' if with_pronoun else 'without'} a pronoun")
    answers = _tokens_at(data, split, positions)
    predicted = data.tokenizer.convert_ids_to_tokens(fill_predictions(model, data, positions, split))
    names = set(world.config.names)
    return _score(predicted, answers, lambda word: world.config.gender(word) if word in names else None)


def pronoun_attention_scores(model: BERT, data: StoryData, split: str = "validation", limit: int = 500,
                             batch_size: int = 256) -> torch.Tensor:
    """The average attention weight from a pronoun to its person, for every layer and head.

    The stories are read whole, nothing masked. For every pronoun of the
    first ``limit`` stories, each head's weight on the person's position is
    taken from its attention row; the average over all pronouns is the
    head's score. A head spreading its attention evenly would score about
    1 / (story length), roughly 0.03.

    Returns:
        (n_layers, n_heads) scores between 0 and 1.
    """
    _check_bert_data(model, data, split)
    stories = data.stories[split][:limit]
    links = [(row, pronoun + 1, person + 1) for row, story in enumerate(stories)
             for pronoun, person in story.pronoun_links]
    if not links:
        raise ValueError(f"the first {limit} stories of {split!r} hold no pronoun")
    config = model.config
    total = torch.zeros(config.n_layers, config.n_heads)
    for start in range(0, len(stories), batch_size):
        rows = range(start, min(start + batch_size, len(stories)))
        weights = attention_maps(model, data.ids[split][rows.start:rows.stop], data.mask[split][rows.start:rows.stop])
        for row, pronoun, person in (link for link in links if link[0] in rows):
            total += weights[:, row - start, :, pronoun, person]  # (n_layers, n_heads)
    return total / len(links)


def attention_maps(model: BERT, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Every head's attention weights on a batch: (n_layers, B, n_heads, T, T).

    The layers keep their weights only during this call; afterwards they go
    back to PyTorch's fast kernel, which never builds the weights.
    """
    attentions = [block.self_attention for block in model.body.blocks]
    for attention in attentions:
        attention.store_attention_weights = True
    try:
        with evaluating(model):
            model(input_ids, attention_mask)
        return torch.stack([attention.attention_weights for attention in attentions])
    finally:
        for attention in attentions:
            attention.store_attention_weights = False
            attention.attention_weights = None


def best_head(scores: torch.Tensor) -> tuple[int, int]:
    """``(layer, head)`` of the largest entry of a (n_layers, n_heads) score matrix."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError(f"scores must be a (n_layers, n_heads) tensor, got {getattr(scores, 'shape', scores)!r}")
    layer, head = divmod(int(scores.argmax()), scores.shape[1])
    return layer, head


# -- what went wrong in a generated story ---------------------------------------------------

# The rules a story can break, in the order ``diagnose_story`` looks for them.
MISTAKE_KINDS = ("unfinished", "too_long", "after_home", "pronoun", "meets_self", "place_activity", "time_activity",
                 "time_mood", "other")


def diagnose_story(tokens: Sequence[str] | str, world: StoryWorld | None = None) -> tuple[str, str] | None:
    """The first rule a story breaks: ``(kind, explanation)``, or None when the grammar accepts it.

    ``tokens`` are a story's words, as ``pretraining.sample_stories`` returns
    them (ending with "(unfinished)" when no ``[EOS]`` came).
    ``kind`` is one of ``MISTAKE_KINDS``: the story never ends (or stops
    mid-sentence), has too many
    sentences, goes on after "went home", a pronoun of the wrong gender, the
    person meets themselves, an activity the place does not offer, an activity or a mood at the wrong
    time of day, or ``"other"`` (words in an order the grammar never writes).
    """
    world = world or default_world()
    tokens = tokens.split() if isinstance(tokens, str) else list(tokens)
    if tokens and tokens[-1] == UNFINISHED:
        return "unfinished", "the story never ends: no [EOS] came before the model's max_len"
    if not tokens or tokens[-1] != ".":
        return "unfinished", "the story stops in the middle of a sentence: [EOS] came too early"
    if world.is_valid(tokens):
        return None
    sentences, start = [], 0
    for i, token in enumerate(tokens):
        if token == ".":
            sentences.append(tokens[start:i + 1])
            start = i + 1
    # Every prefix of a valid story is a valid story (it may always end after a sentence).
    broken = next(i for i in range(len(sentences)) if not world.is_valid(sum(sentences[:i + 1], [])))
    sentence, cfg = sentences[broken], world.config
    quoted = f"sentence {broken + 1}, {' '.join(sentence)!r}"
    if broken >= cfg.max_sentences:
        return "too_long", f"{quoted}: a story has at most {cfg.max_sentences} sentences"
    if broken > 0 and sentences[broken - 1][:2] == ["after", "that"]:
        return "after_home", f"{quoted}: nothing may follow 'went home'"

    person = tokens[0]
    if person in cfg.names:
        genders = _pronoun_genders()
        for word in sentence:
            if word in genders and genders[word] != cfg.gender(person):
                return "pronoun", f"{quoted}: {word!r} refers to {person}, who is {cfg.gender(person)}"
        if ("meet", person) in zip(sentence, sentence[1:]):
            return "meets_self", f"{quoted}: {person} cannot meet {person}"

    time = _time_of(sentences[0], world)
    place = sentence[sentence.index("the") + 1] if "the" in sentence and "went" in sentence else None
    activity = _activity_in(sentence, world)
    if activity is not None and place in cfg.places and activity not in cfg.places[place]:
        return "place_activity", f"{quoted}: the {place} offers no {activity!r}"
    if activity is not None and time is not None and time not in cfg.activities[activity].times:
        return "time_activity", f"{quoted}: nobody does {activity!r} {' '.join(cfg.times[time])} (the story's time)"
    mood = sentence[2] if len(sentence) == 4 and sentence[1] == "was" else None
    if mood in cfg.moods and time is not None and time not in cfg.moods[mood]:
        return "time_mood", f"{quoted}: nobody is {mood!r} {' '.join(cfg.times[time])} (the story's time)"
    return "other", f"{quoted}: a word out of place, the grammar never writes these words in this order"


def _time_of(first_sentence: list[str], world: StoryWorld) -> str | None:
    """The time of day a first sentence ends with ("in the morning ." -> "morning"), if any."""
    for time, words in world.config.times.items():
        if tuple(first_sentence[-len(words) - 1:-1]) == words:
            return time
    return None


def _activity_in(sentence: list[str], world: StoryWorld) -> str | None:
    """The activity a visit sentence names right after "to the PLACE to", if any."""
    for i in range(len(sentence) - 1):
        if sentence[i] == "to" and i >= 2 and sentence[i - 2] == "the":
            for name, activity in world.config.activities.items():
                if tuple(sentence[i + 1:i + 1 + len(activity.words)]) == activity.words:
                    return name
    return None


# -- helpers --------------------------------------------------------------------------------

def _check_bert_data(model, data: StoryData, split: str) -> None:
    if not isinstance(model, BERT):
        raise TypeError(f"model must be a course_lib.models.BERT, got {type(model).__name__}")
    if not isinstance(data, StoryData) or data.style != "bert":
        raise ValueError("data must be a StoryData built with style='bert' ([CLS] at position 0), got "
                         f"{getattr(data, 'style', type(data).__name__)!r}")
    if split not in data.ids:
        raise ValueError(f"split must be one of {sorted(data.ids)}, got {split!r}")


def _tokens_at(data: StoryData, split: str, positions: Sequence[tuple[int, int]]) -> list[str]:
    ids = data.ids[split]
    return data.tokenizer.convert_ids_to_tokens([int(ids[row, column]) for row, column in positions])


def _pronoun_genders() -> dict[str, str]:
    return {word: gender for table in (SUBJECT_PRONOUN, POSSESSIVE_PRONOUN) for gender, word in table.items()}


def _score(predicted: list[str], answers: list[str], gender_of) -> FillProbe:
    exact = sum(p == a for p, a in zip(predicted, answers))
    same_gender = sum(gender_of(p) is not None and gender_of(p) == gender_of(a) for p, a in zip(predicted, answers))
    return FillProbe(exact=exact / len(answers), same_gender=same_gender / len(answers), n=len(answers))
