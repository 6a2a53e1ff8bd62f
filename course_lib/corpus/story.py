"""What a story is: the kinds of word, a sentence and a story with its annotations.

The generator that writes stories is in ``world.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

# Kinds of word, used by the annotations and by later notebooks that measure
# a model's loss on each kind.
PERSON, COMPANION, PRONOUN, PLACE, ACTIVITY, TIME, MOOD, FUNCTION = (
    "person", "companion", "pronoun", "place", "activity", "time", "mood", "function")
WORD_KINDS = (PERSON, COMPANION, PRONOUN, PLACE, ACTIVITY, TIME, MOOD, FUNCTION)

# The questions of notebook 01 and the kinds of word that answer them.
QUESTION_KINDS = {"who": (PERSON, COMPANION), "what": (ACTIVITY,), "where": (PLACE,), "when": (TIME,)}


@dataclass(frozen=True)
class Sentence:
    """One row of a sentence table: the words, their kinds and the chosen slots."""

    words: tuple[str, ...]
    kinds: tuple[str, ...]
    log_prob: float
    kind: str                         # "first", "then", "mood", "home" or "end"
    place: str | None = None
    purpose: tuple[str, ...] = ()     # "meet her sister", "walk the dog", ...
    activity: str | None = None       # None when the purpose is to meet someone
    time: str | None = None           # set only on the first sentence


@dataclass(frozen=True)
class Story:
    """A story with its exact log-probability and its annotations.

    ``tokens`` holds words and punctuation only; a tokenizer adds the special
    tokens. ``kinds[i]`` is the kind of word of ``tokens[i]`` (person, place,
    ...). Every pronoun refers to the person, who is always ``tokens[0]``.
    """

    tokens: tuple[str, ...]
    kinds: tuple[str, ...]
    log_prob: float               # natural log, the end of the story included
    sentences: tuple[Sentence, ...]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    @property
    def person(self) -> str:
        return self.tokens[0]

    @property
    def time(self) -> str:
        return self.sentences[0].time

    @property
    def n_predicted_tokens(self) -> int:
        """Tokens a next-token model predicts: every word plus the end token."""
        return len(self.tokens) + 1

    def spans(self, kind: str) -> list[tuple[int, int]]:
        """Half-open token spans ``(start, end)`` of consecutive words of one kind."""
        if kind not in WORD_KINDS:
            raise ValueError(f"kind must be one of {WORD_KINDS}, got {kind!r}")
        found, start = [], None
        for i, word_kind in enumerate(self.kinds + ("",)):
            if word_kind == kind and start is None:
                start = i
            elif word_kind != kind and start is not None:
                found.append((start, i))
                start = None
        return found

    def answer_spans(self, question: str) -> list[tuple[int, int]]:
        """Spans that answer a who / what / where / when question, in order."""
        if question not in QUESTION_KINDS:
            raise ValueError(f"question must be one of {tuple(QUESTION_KINDS)}, got {question!r}")
        return sorted(span for kind in QUESTION_KINDS[question] for span in self.spans(kind))

    @property
    def pronoun_links(self) -> list[tuple[int, int]]:
        """``(pronoun index, person index)`` for every pronoun of the story."""
        return [(i, 0) for i, kind in enumerate(self.kinds) if kind == PRONOUN]

    def pretty(self) -> str:
        """The story as a person would write it: capitals, no space before a period."""
        words = []
        for i, (token, kind) in enumerate(zip(self.tokens, self.kinds)):
            is_name = kind == PERSON or (kind == COMPANION and self.kinds[i - 1] != PRONOUN)
            starts_sentence = i == 0 or self.tokens[i - 1] == "."
            words.append(token.capitalize() if is_name or starts_sentence else token)
        return " ".join(words).replace(" .", ".")
