"""Questions about stories, with their answers, built from the story world's annotations (notebook 09).

Every story of two visits or more can be asked about in five ways; the
question names a place, an activity or the order of the visits, and that
decides which sentence holds the answer:

==============  ==========================================  =========================
kind            question                                    answer (a span of the story)
==============  ==========================================  =========================
``where_next``  where did alice go after the cafe ?         the next place: ``park``
``where_to``    where did alice go to drink coffee ?        that visit's place
``what``        what did alice do at the park ?             ``walk the dog``
``who``         who did alice meet at the park ?            ``her sister``, ``noah``
``when``        when did alice go to the park ?             ``in the morning``
==============  ==========================================  =========================

The answer is always a span of the story's tokens, so BERT can point at it
and GPT can write it. A question is only asked when it has exactly one
answer: the place or activity it names occurs once in the story. The
question words ("where", "did", "go", "?", ...) are not in the story
world's vocabulary: the models learn them as new words (``lab.asking.vocabulary``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from course_lib.corpus import TIME, Sentence, Story, StoryWorld, default_world

KINDS = ("where_next", "where_to", "what", "who", "when")
# The words questions use that stories never do; the rest (names, places, "after", "the", ...) are story words.
QUESTION_WORDS = ("where", "what", "who", "when", "did", "go", "do", "?")
# Both models read at most 64 positions: BERT's "[CLS] question [SEP] story [SEP]" and GPT's longer
# "[BOS] story question : ... ? answer : ... . [EOS]" (lab.asking.instruction), which adds 7 tokens to the three parts.
MAX_LEN = 64
EXTRA_TOKENS = 7


@dataclass(frozen=True)
class Question:
    """A question about ``story`` and its answer, the half-open token span ``answer`` of ``story.tokens``."""

    story: Story
    kind: str
    tokens: tuple[str, ...]
    answer: tuple[int, int]

    @property
    def answer_tokens(self) -> tuple[str, ...]:
        start, end = self.answer
        return self.story.tokens[start:end]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def _visits(story: Story) -> list[tuple[int, Sentence]]:
    """Each sentence that goes somewhere, with the position of its first token in the story."""
    found, offset = [], 0
    for sentence in story.sentences:
        if sentence.kind in ("first", "then", "home"):
            found.append((offset, sentence))
        offset += len(sentence.words)
    return found


def _place_span(offset: int, sentence: Sentence) -> tuple[int, int]:
    position = offset + sentence.words.index("home" if sentence.kind == "home" else sentence.place)
    return position, position + 1


def _purpose_span(offset: int, sentence: Sentence) -> tuple[int, int]:
    start = offset + sentence.words.index("to", 4) + 1  # "went to the PLACE to" comes before the purpose
    return start, start + len(sentence.purpose)


def questions_about(story: Story) -> list[Question]:
    """Every question of ``KINDS`` that ``story`` answers exactly once (none for a story of one visit)."""
    visits = _visits(story)
    outings = [(offset, s) for offset, s in visits if s.kind != "home"]  # visits with a place and a purpose
    if len(outings) < 2:
        return []
    person = story.person
    places = [s.place for _, s in outings]
    purposes = [s.purpose for _, s in outings]
    time = story.spans(TIME)[0]  # the first sentence's "in the morning": the one time of the story
    questions = []
    for i, (offset, sentence) in enumerate(visits):
        if sentence.kind == "home" or places.count(sentence.place) > 1:
            continue
        at_place = ("at", "the", sentence.place, "?")
        if i + 1 < len(visits):
            questions.append(Question(story, "where_next", ("where", "did", person, "go", "after", "the",
                                                            sentence.place, "?"), _place_span(*visits[i + 1])))
        questions.append(Question(story, "what", ("what", "did", person, "do") + at_place,
                                  _purpose_span(offset, sentence)))
        if sentence.activity is None:  # a purpose "meet noah" or "meet her sister": who is the rest of it
            start, end = _purpose_span(offset, sentence)
            questions.append(Question(story, "who", ("who", "did", person, "meet") + at_place, (start + 1, end)))
        questions.append(Question(story, "when", ("when", "did", person, "go", "to", "the", sentence.place, "?"),
                                  time))
        if purposes.count(sentence.purpose) == 1:
            questions.append(Question(story, "where_to", ("where", "did", person, "go", "to") + sentence.purpose
                                      + ("?",), _place_span(offset, sentence)))
    return [q for q in questions if len(story.tokens) + len(q.tokens) + len(q.answer_tokens) + EXTRA_TOKENS <= MAX_LEN]


def interleave_kinds(questions: list[Question], seed: int) -> list[Question]:
    """The questions shuffled within each kind, then taken one kind after another.

    Any first ``n`` of the result hold the kinds in equal shares (while each
    kind lasts), so labeled sets of several sizes are balanced and nested.
    """
    rng = random.Random(seed)
    by_kind = [[q for q in questions if q.kind == kind] for kind in KINDS]
    for kind_questions in by_kind:
        rng.shuffle(kind_questions)
    longest = max(len(kind_questions) for kind_questions in by_kind)
    return [kind_questions[i] for i in range(longest) for kind_questions in by_kind if i < len(kind_questions)]


def answers_by_kind(questions: list[Question]) -> dict[str, set[tuple[str, ...]]]:
    """{kind: every answer a question of that kind has among ``questions``}: the places, the times, ...

    An answer written for a question is "of the right kind" when it is among
    its kind's answers: a place for *where*, a person for *who*, even if it
    is the wrong place or the wrong person.
    """
    answers: dict[str, set[tuple[str, ...]]] = {}
    for question in questions:
        answers.setdefault(question.kind, set()).add(question.answer_tokens)
    return answers


@dataclass
class QuestionData:
    """Questions about the world's train, validation and test stories (disjoint by text, as in pretraining).

    ``pool`` holds the questions about training stories, in the order
    ``labeled_set`` draws them; ``validation`` and ``test`` hold
    ``n_held_out`` questions each, the kinds in equal shares. Settings were
    chosen on the validation questions; the test questions only measure.
    """

    pool: list[Question]
    validation: list[Question]
    test: list[Question]

    @classmethod
    def build(cls, n_stories: int = 60_000, n_held_out: int = 1000, seed: int = 0,
              world: StoryWorld | None = None) -> "QuestionData":
        splits = (world or default_world()).splits(n_stories, seed=seed)
        asked = {name: interleave_kinds([q for story in stories for q in questions_about(story)], seed)
                 for name, stories in splits.items()}
        return cls(asked["train"], asked["validation"][:n_held_out], asked["test"][:n_held_out])

    def labeled_set(self, n: int, kinds: tuple[str, ...] = KINDS) -> list[Question]:
        """The first ``n`` questions of the pool whose kind is in ``kinds``: nested, kinds in equal shares."""
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"kinds must be some of {KINDS}, got {kinds!r}")
        questions = [q for q in self.pool if q.kind in kinds]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(questions):
            raise ValueError(f"n must be an int from 1 to {len(questions)}, got {n!r}")
        return questions[:n]
