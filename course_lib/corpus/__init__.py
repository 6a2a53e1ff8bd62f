"""The story world: a tiny language whose every rule and every probability we know.

``course_lib.corpus`` is a public import path; its names live in four modules:

    story        the kinds of word, ``Sentence`` and ``Story`` with its annotations
    world        the grammar (``WorldConfig``), sampling, enumerating, parsing,
                 exact probabilities and the entropy floor; ``default_world``
    translation  the second language of notebook 04 and ``translate``
    tasks        the coherence task of notebook 08: ``LabeledStory``,
                 ``coherence_task`` and its corruptions
"""
from course_lib.corpus.story import (
    ACTIVITY, COMPANION, PERSON, PLACE, PRONOUN, QUESTION_KINDS, TIME, Sentence, Story,
)
from course_lib.corpus.translation import translate
from course_lib.corpus.world import (
    POSSESSIVE_PRONOUN, SUBJECT_PRONOUN, Activity, StoryWorld, WorldConfig, default_world, entropy_floor,
    generate_stories,
)
from course_lib.corpus.tasks import LabeledStory, coherence_task

__all__ = [
    "ACTIVITY", "COMPANION", "PERSON", "PLACE", "PRONOUN", "QUESTION_KINDS", "TIME", "Sentence", "Story",
    "translate",
    "POSSESSIVE_PRONOUN", "SUBJECT_PRONOUN", "Activity", "StoryWorld", "WorldConfig", "default_world",
    "entropy_floor", "generate_stories",
    "LabeledStory", "coherence_task",
]
