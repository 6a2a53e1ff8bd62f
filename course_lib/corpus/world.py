"""The story world: a tiny language whose every rule and every probability we know.

Every model of the course trains on stories this module writes, such as

    alice went to the park to walk the dog in the morning .
    then she went to the cafe to drink coffee .
    she was happy .

Because the generator is ours, we know things no real corpus tells us:

* the exact probability of every story, and so the **entropy floor**: the
  lowest average next-token loss any model could ever reach on it;
* which words depend on which others. The grammar holds four dependencies
  that only context can resolve:

  1. a pronoun agrees with the person it refers to (*left* context),
  2. the person at the start can be guessed from a later pronoun (*right*
     context: only a model that looks both ways can use it),
  3. a place constrains the activity, and the activity the place,
  4. the time of day constrains the activity (breakfast in the morning,
     the stars at night).

How a story is made, with the probability of each choice
-------------------------------------------------------
First sentence: ``PERSON went to the PLACE to PURPOSE TIME .``

* PERSON uniformly among the names;
* PLACE uniformly among the places;
* PURPOSE is ``meet COMPANION`` with probability ``p_meet`` (the companion
  uniformly among the other names and the relations, "her sister" agreeing
  with the person), otherwise an activity uniformly among the place's;
* TIME uniformly among the times the activity allows.

Then, while fewer than ``max_sentences`` sentences are written, one of:

* end the story (``[EOS]``),
* ``then PRONOUN went to the PLACE to PURPOSE .`` (the purpose must suit the
  time of the first sentence),
* ``PRONOUN was MOOD .`` (some moods only suit some times),
* ``after that PRONOUN went home .``, after which the story always ends.

A whole sentence is chosen at once from a precomputed table, which makes
sampling fast (one binary search per sentence) and lets the same tables
enumerate, parse and validate stories. Different choices never give the
same text (the tables refuse to be built otherwise), so the probability of a
text is the probability of the one path of choices that wrote it.
"""
from __future__ import annotations

import bisect
import math
import random
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate
from typing import Iterator, Sequence

from course_lib.corpus.story import (
    ACTIVITY, COMPANION, FUNCTION, MOOD, PERSON, PLACE, PRONOUN, TIME, Sentence, Story,
)
from course_lib.corpus.translation import SECOND_LANGUAGE, translate

END = "[EOS]"  # what the generator "writes" when it chooses to stop

SUBJECT_PRONOUN = {"female": "she", "male": "he"}
POSSESSIVE_PRONOUN = {"female": "her", "male": "his"}


@dataclass(frozen=True)
class Activity:
    """An activity: its words and the times of day it suits."""

    words: tuple[str, ...]
    times: tuple[str, ...]


@dataclass(frozen=True)
class WorldConfig:
    """Everything the grammar may say, and how likely each choice is.

    The default is the course's world; tests build smaller ones to enumerate
    every story.
    """

    female_names: tuple[str, ...] = ("alice", "anna", "emma", "lucy", "mia", "nora", "sara", "zoe")
    male_names: tuple[str, ...] = ("ben", "jack", "leo", "max", "noah", "omar", "sam", "tom")
    relations: tuple[str, ...] = ("friend", "sister", "brother", "mother", "father", "cousin")
    times: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "morning": ("in", "the", "morning"),
        "noon": ("at", "noon"),
        "afternoon": ("in", "the", "afternoon"),
        "evening": ("in", "the", "evening"),
        "night": ("at", "night"),
    })
    activities: dict[str, Activity] = field(default_factory=lambda: {
        "eat breakfast": Activity(("eat", "breakfast"), ("morning",)),
        "eat lunch": Activity(("eat", "lunch"), ("noon",)),
        "eat dinner": Activity(("eat", "dinner"), ("evening",)),
        "eat cake": Activity(("eat", "cake"), ("afternoon", "evening")),
        "drink coffee": Activity(("drink", "coffee"), ("morning", "afternoon")),
        "play football": Activity(("play", "football"), ("morning", "afternoon")),
        "walk the dog": Activity(("walk", "the", "dog"), ("morning", "afternoon", "evening")),
        "have a picnic": Activity(("have", "a", "picnic"), ("noon", "afternoon")),
        "read a book": Activity(("read", "a", "book"), ("morning", "noon", "afternoon", "evening", "night")),
        "study history": Activity(("study", "history"), ("morning", "afternoon", "evening")),
        "swim": Activity(("swim",), ("morning", "noon", "afternoon")),
        "build a sandcastle": Activity(("build", "a", "sandcastle"), ("morning", "afternoon")),
        "watch the sunset": Activity(("watch", "the", "sunset"), ("evening",)),
        "watch the stars": Activity(("watch", "the", "stars"), ("night",)),
        "watch a film": Activity(("watch", "a", "film"), ("afternoon", "evening", "night")),
        "lift weights": Activity(("lift", "weights"), ("morning", "afternoon", "evening")),
        "buy bread": Activity(("buy", "bread"), ("morning",)),
        "buy fruit": Activity(("buy", "fruit"), ("morning", "afternoon")),
    })
    places: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "cafe": ("eat breakfast", "drink coffee", "eat cake", "read a book"),
        "park": ("play football", "walk the dog", "have a picnic", "watch the stars"),
        "library": ("read a book", "study history"),
        "beach": ("swim", "build a sandcastle", "watch the sunset", "have a picnic"),
        "cinema": ("watch a film",),
        "restaurant": ("eat lunch", "eat dinner", "eat cake"),
        "gym": ("lift weights", "swim", "play football"),
        "market": ("buy bread", "buy fruit", "drink coffee"),
    })
    moods: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "happy": ("morning", "noon", "afternoon", "evening", "night"),
        "tired": ("morning", "noon", "afternoon", "evening", "night"),
        "hungry": ("morning", "noon", "afternoon", "evening", "night"),
        "calm": ("morning", "noon", "afternoon", "evening", "night"),
        "sleepy": ("evening", "night"),
    })
    p_meet: float = 0.25
    # How a story goes on after each sentence (the probabilities sum to 1).
    p_next: dict[str, float] = field(default_factory=lambda: {"end": 0.4, "then": 0.3, "mood": 0.2, "home": 0.1})
    max_sentences: int = 4

    def __post_init__(self) -> None:
        if not math.isclose(sum(self.p_next.values()), 1.0):
            raise ValueError(f"p_next must sum to 1, got {self.p_next}")
        if set(self.p_next) != {"end", "then", "mood", "home"}:
            raise ValueError(f"p_next must have the keys end, then, mood, home; got {sorted(self.p_next)}")
        if not 0 < self.p_meet < 1:
            raise ValueError(f"p_meet must be strictly between 0 and 1, got {self.p_meet}")
        if self.max_sentences < 1:
            raise ValueError(f"max_sentences must be at least 1, got {self.max_sentences}")
        for place, names in self.places.items():
            for name in names:
                if name not in self.activities:
                    raise ValueError(f"place {place!r} lists unknown activity {name!r}")
        for name, activity in self.activities.items():
            for time in activity.times:
                if time not in self.times:
                    raise ValueError(f"activity {name!r} lists unknown time {time!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return self.female_names + self.male_names

    def gender(self, name: str) -> str:
        return "female" if name in self.female_names else "male"



class StoryWorld:
    """Samples, enumerates, parses and scores the stories of one configuration."""

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        self._first = _SentenceTable(self._first_sentences())
        self._continuations: dict[tuple[str, str, bool], _SentenceTable] = {}

    # -- the grammar, sentence by sentence ------------------------------------------------

    def _purposes(self, person: str, place: str, time: str | None):
        """Yield ``(words, kinds, log_prob, activity)`` for every purpose at ``place``.

        With ``time`` given (a later sentence) only activities suiting that
        time are allowed, and they share the probability of not meeting.
        """
        cfg = self.config
        activities = [a for a in cfg.places[place] if time is None or time in cfg.activities[a].times]
        p_meet = cfg.p_meet if activities else 1.0
        companions = [(n,) for n in cfg.names if n != person]
        possessive = POSSESSIVE_PRONOUN[cfg.gender(person)]
        companions += [(possessive, relation) for relation in cfg.relations]
        for companion in companions:
            kinds = (ACTIVITY,) + ((COMPANION,) if len(companion) == 1 else (PRONOUN, COMPANION))
            yield ("meet",) + companion, kinds, math.log(p_meet / len(companions)), None
        for name in activities:
            words = cfg.activities[name].words
            yield words, (ACTIVITY,) * len(words), math.log((1 - p_meet) / len(activities)), name

    def _first_sentences(self) -> list[Sentence]:
        cfg = self.config
        rows = []
        log_p_person, log_p_place = -math.log(len(cfg.names)), -math.log(len(cfg.places))
        for person in cfg.names:
            for place in cfg.places:
                for purpose, purpose_kinds, log_p_purpose, activity in self._purposes(person, place, None):
                    times = cfg.activities[activity].times if activity else tuple(cfg.times)
                    for time in times:
                        words = (person, "went", "to", "the", place, "to") + purpose + cfg.times[time] + (".",)
                        kinds = ((PERSON,) + (FUNCTION,) * 3 + (PLACE, FUNCTION) + purpose_kinds
                                 + (TIME,) * len(cfg.times[time]) + (FUNCTION,))
                        log_p = log_p_person + log_p_place + log_p_purpose - math.log(len(times))
                        rows.append(Sentence(words, kinds, log_p, "first", place, purpose, activity, time))
        return rows

    def _continuation(self, person: str, time: str, may_continue: bool) -> _SentenceTable:
        """The table of what may follow, given the person, the time and the length so far."""
        key = (person, time, may_continue)
        if key not in self._continuations:
            self._continuations[key] = _SentenceTable(self._next_sentences(person, time, may_continue))
        return self._continuations[key]

    def _next_sentences(self, person: str, time: str, may_continue: bool) -> list[Sentence]:
        cfg = self.config
        if not may_continue:
            return [Sentence((END,), (FUNCTION,), 0.0, "end")]
        pronoun = SUBJECT_PRONOUN[cfg.gender(person)]
        rows = [Sentence((END,), (FUNCTION,), math.log(cfg.p_next["end"]), "end")]
        log_p_then = math.log(cfg.p_next["then"]) - math.log(len(cfg.places))
        for place in cfg.places:
            for purpose, purpose_kinds, log_p_purpose, activity in self._purposes(person, place, time):
                words = ("then", pronoun, "went", "to", "the", place, "to") + purpose + (".",)
                kinds = (FUNCTION, PRONOUN, FUNCTION, FUNCTION, FUNCTION, PLACE, FUNCTION) + purpose_kinds + (FUNCTION,)
                rows.append(Sentence(words, kinds, log_p_then + log_p_purpose, "then", place, purpose, activity))
        moods = [m for m, times in cfg.moods.items() if time in times]
        for mood in moods:
            log_p = math.log(cfg.p_next["mood"] / len(moods))
            rows.append(Sentence((pronoun, "was", mood, "."), (PRONOUN, FUNCTION, MOOD, FUNCTION), log_p, "mood"))
        rows.append(Sentence(("after", "that", pronoun, "went", "home", "."),
                             (FUNCTION, FUNCTION, PRONOUN, FUNCTION, PLACE, FUNCTION),
                             math.log(cfg.p_next["home"]), "home"))
        return rows

    def _after(self, story_so_far: Sequence[Sentence]) -> _SentenceTable:
        first = story_so_far[0]
        may_continue = len(story_so_far) < self.config.max_sentences and story_so_far[-1].kind != "home"
        return self._continuation(first.words[0], first.time, may_continue)

    @staticmethod
    def _story(sentences: Sequence[Sentence], end_log_prob: float) -> Story:
        tokens, kinds = [], []
        for sentence in sentences:
            tokens.extend(sentence.words)
            kinds.extend(sentence.kinds)
        log_prob = sum(s.log_prob for s in sentences) + end_log_prob
        return Story(tuple(tokens), tuple(kinds), log_prob, tuple(sentences))

    # -- sampling, enumerating, parsing -----------------------------------------------------

    def sample(self, n: int, seed: int = 0) -> list[Story]:
        """``n`` independent stories; the same seed gives the same stories."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        rng = random.Random(seed)
        stories = []
        for _ in range(n):
            sentences = [self._first.sample(rng)]
            while True:
                following = self._after(sentences).sample(rng)
                if following.kind == "end":
                    break
                sentences.append(following)
            stories.append(self._story(sentences, following.log_prob))
        return stories

    def enumerate(self) -> Iterator[Story]:
        """Every story the grammar can write (only sensible for small configurations)."""
        def extend(sentences):
            for following in self._after(sentences).rows:
                if following.kind == "end":
                    yield self._story(sentences, following.log_prob)
                else:
                    yield from extend(sentences + [following])

        for first in self._first.rows:
            yield from extend([first])

    def parse(self, tokens: Sequence[str] | str) -> Story | None:
        """The story behind ``tokens`` (words and periods, no special tokens), or None.

        None means the grammar cannot write this sequence: a word out of
        place, a broken dependency, a missing period, too many sentences.
        """
        if isinstance(tokens, str):
            tokens = tokens.split()
        tokens = [t for t in tokens if t != END]
        if not tokens or tokens[-1] != ".":
            return None
        pieces, start = [], 0
        for i, token in enumerate(tokens):
            if token == ".":
                pieces.append(tuple(tokens[start:i + 1]))
                start = i + 1
        first = self._first.by_words.get(pieces[0])
        if first is None:
            return None
        sentences = [first]
        for words in pieces[1:]:
            following = self._after(sentences).by_words.get(words)
            if following is None:
                return None
            sentences.append(following)
        end = self._after(sentences).by_words.get((END,))
        return None if end is None else self._story(sentences, end.log_prob)

    def is_valid(self, tokens: Sequence[str] | str) -> bool:
        """True when the grammar can write exactly this token sequence."""
        return self.parse(tokens) is not None

    def log_prob(self, tokens: Sequence[str] | str) -> float:
        """Natural log-probability of a whole story (``-inf`` if the grammar cannot write it)."""
        story = self.parse(tokens)
        return -math.inf if story is None else story.log_prob

    # -- exact expectations ------------------------------------------------------------

    def exact_entropy_floor(self) -> float:
        """The entropy floor computed exactly: E[-log p(story)] / E[predicted tokens].

        A model that knew the generator would pay on average this many nats
        per predicted token; no model can do better in expectation. The
        expectation is taken by recursion over the sentence tables, so it is
        exact even though the world has far too many stories to list.
        """
        memo: dict[tuple[str, str, int, bool], tuple[float, float]] = {}

        def expected_after(first: Sentence, n_sentences: int, last_kind: str) -> tuple[float, float]:
            """(E[-log p], E[tokens]) of what follows, the end token included."""
            may_continue = n_sentences < self.config.max_sentences and last_kind != "home"
            key = (first.words[0], first.time, n_sentences, may_continue)
            if key not in memo:
                nll = tokens = 0.0
                for row in self._continuation(first.words[0], first.time, may_continue).rows:
                    p = math.exp(row.log_prob)
                    if row.kind == "end":
                        nll, tokens = nll + p * -row.log_prob, tokens + p
                    else:
                        rest_nll, rest_tokens = expected_after(first, n_sentences + 1, row.kind)
                        nll += p * (-row.log_prob + rest_nll)
                        tokens += p * (len(row.words) + rest_tokens)
                memo[key] = (nll, tokens)
            return memo[key]

        total_nll = total_tokens = 0.0
        for first in self._first.rows:
            p = math.exp(first.log_prob)
            rest_nll, rest_tokens = expected_after(first, 1, "first")
            total_nll += p * (-first.log_prob + rest_nll)
            total_tokens += p * (len(first.words) + rest_tokens)
        return total_nll / total_tokens

    # -- exact conditionals, word by word --------------------------------------------------

    def next_word_log_probs(self, story: Story) -> list[float]:
        """log p(token | every token before it) for each token of ``story``, then for its end.

        The generator's own next-token predictions: at each position, the
        best any left-to-right model could do. By the chain rule they add up
        to ``story.log_prob``.
        """
        tables = [self._first] + [self._after(story.sentences[:k]) for k in range(1, len(story.sentences) + 1)]
        written = [sentence.words for sentence in story.sentences] + [(END,)]
        log_probs = []
        for table, words in zip(tables, written):
            if words not in table.by_words:
                raise ValueError(f"story is not one this world can write: {story.text!r}")
            # Within a sentence, p(next word | words so far) is the share of the
            # table's probability held by the rows that also start with it.
            for j in range(len(words)):
                log_probs.append(math.log(table.prefix_prob[words[:j + 1]] / table.prefix_prob[words[:j]]))
        return log_probs

    def masked_word_log_probs(self, story: Story) -> list[float]:
        """log p(token | every other token of ``story``) for each token, the length known.

        The exact answer to a one-``[MASK]`` question: at each position, the
        best any model that sees both sides could do. Every word of the
        vocabulary is tried in the blank; the stories the grammar can write
        share the probability in proportion to their own.
        """
        parsed = self.parse(story.tokens)
        if parsed is None:
            raise ValueError(f"story is not one this world can write: {story.text!r}")
        tokens = list(story.tokens)
        log_probs = []
        for i, word in enumerate(story.tokens):
            alternatives = []
            for candidate in self.vocabulary:
                tokens[i] = candidate
                alternatives.append(self.log_prob(tokens))
            tokens[i] = word
            largest = max(alternatives)  # at least the story itself, so finite
            log_total = largest + math.log(sum(math.exp(a - largest) for a in alternatives))
            log_probs.append(parsed.log_prob - log_total)  # this world's probability, whoever made the story
        return log_probs

    # -- vocabularies and the second language ------------------------------------------------

    @cached_property
    def vocabulary(self) -> list[str]:
        """Every word the grammar can write, sorted (special tokens not included)."""
        words = {w for row in self._first.rows for w in row.words}
        for person in self.config.names:
            for time in self.config.times:
                words.update(w for row in self._continuation(person, time, True).rows for w in row.words)
        words.discard(END)
        return sorted(words)

    @cached_property
    def target_vocabulary(self) -> list[str]:
        """Every word of the second language that ``translate`` can write, sorted."""
        words = set(self.config.names) | set(SECOND_LANGUAGE.values()) | {"ad", "ivit", "erat", "deinde", "postea", "."}
        return sorted(words)

    def translate(self, story: Story) -> tuple[str, ...]:
        """The same story in the second language (see ``SECOND_LANGUAGE``)."""
        return translate(story)

    # -- splits ---------------------------------------------------------------------------

    def splits(self, n_stories: int = 50_000, seed: int = 0, validation_share: float = 0.1,
               test_share: float = 0.1) -> dict[str, list[Story]]:
        """Train, validation and test stories, disjoint by text.

        ``n_stories`` are sampled; each distinct text goes to one split by a
        hash of the text, so a story can never leak from train into test,
        whatever the seed. Repeated texts stay in their split (the frequent
        short stories really are frequent).
        """
        if not (0 <= validation_share and 0 <= test_share and validation_share + test_share < 1):
            raise ValueError("validation_share and test_share must be >= 0 and sum to less than 1, "
                             f"got {validation_share} and {test_share}")
        result = {"train": [], "validation": [], "test": []}
        for story in self.sample(n_stories, seed):
            bucket = zlib.crc32(story.text.encode()) / 2**32
            if bucket < test_share:
                result["test"].append(story)
            elif bucket < test_share + validation_share:
                result["validation"].append(story)
            else:
                result["train"].append(story)
        return result


class _SentenceTable:
    """Sentences with their probabilities: sampled by binary search, looked up by text."""

    def __init__(self, rows: list[Sentence]):
        self.rows = rows
        self.cumulative = list(accumulate(math.exp(row.log_prob) for row in rows))
        if not math.isclose(self.cumulative[-1], 1.0, rel_tol=1e-9):
            raise ValueError(f"sentence probabilities sum to {self.cumulative[-1]}, not 1")
        self.by_words = {}
        for row in rows:
            if row.words in self.by_words:
                raise ValueError(f"two choices write the same sentence: {' '.join(row.words)!r}")
            self.by_words[row.words] = row

    @cached_property
    def prefix_prob(self) -> dict[tuple[str, ...], float]:
        """{words: total probability of the rows that start with them}; the empty prefix holds 1."""
        totals: dict[tuple[str, ...], float] = {}
        for row in self.rows:
            p = math.exp(row.log_prob)
            for j in range(len(row.words) + 1):
                totals[row.words[:j]] = totals.get(row.words[:j], 0.0) + p
        return totals

    def sample(self, rng: random.Random) -> Sentence:
        index = bisect.bisect_right(self.cumulative, rng.random() * self.cumulative[-1])
        return self.rows[min(index, len(self.rows) - 1)]


# -- the entropy floor ---------------------------------------------------------------------

def entropy_floor(stories: Sequence[Story]) -> float:
    """The average next-token loss (nats per token) of the true generator on ``stories``.

    It is the total negative log-probability divided by the number of
    predicted tokens (each story's words plus its end token). No model can
    beat it in expectation: it is the loss of knowing the rules exactly.
    """
    if not stories:
        raise ValueError("stories must not be empty")
    total_nll = sum(-story.log_prob for story in stories)
    total_tokens = sum(story.n_predicted_tokens for story in stories)
    return total_nll / total_tokens


# -- module-level shortcuts for the default world -----------------------------------------

_DEFAULT_WORLD: StoryWorld | None = None


def default_world() -> StoryWorld:
    """The course's story world (built once, then shared)."""
    global _DEFAULT_WORLD
    if _DEFAULT_WORLD is None:
        _DEFAULT_WORLD = StoryWorld()
    return _DEFAULT_WORLD


def generate_stories(n: int, seed: int = 0) -> list[Story]:
    """``n`` stories of the default world."""
    return default_world().sample(n, seed)
