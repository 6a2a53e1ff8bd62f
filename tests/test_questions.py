"""Questions about stories (notebook 09): every answer is the span the annotations say, every question has one answer."""
import pytest

from course_lib.corpus import ACTIVITY, COMPANION, PLACE, TIME, default_world
from course_lib.lab.asking.questions import EXTRA_TOKENS, KINDS, MAX_LEN, QuestionData, answers_by_kind, questions_about


@pytest.fixture(scope="module")
def data():
    return QuestionData.build(n_stories=8000, n_held_out=100)


def test_answers_are_the_annotated_spans(data):
    answer_kinds = {"where_next": {PLACE}, "where_to": {PLACE}, "what": {ACTIVITY, COMPANION, "pronoun"},
                    "who": {COMPANION, "pronoun"}, "when": {TIME}}
    for question in data.pool[:500]:
        start, end = question.answer
        assert set(question.story.kinds[start:end]) <= answer_kinds[question.kind], question.text
        assert question.tokens[-1] == "?" and question.story.person in question.tokens
    when = next(q for q in data.pool if q.kind == "when")
    assert [when.answer] == when.story.spans(TIME)


def test_the_question_decides_the_sentence():
    story = default_world().parse("alice went to the cafe to drink coffee in the morning . "
                                  "then she went to the park to meet her sister . after that she went home .")
    asked = {q.text: " ".join(q.answer_tokens) for q in questions_about(story)}
    assert asked["where did alice go after the cafe ?"] == "park"
    assert asked["where did alice go after the park ?"] == "home"
    assert asked["what did alice do at the cafe ?"] == "drink coffee"
    assert asked["what did alice do at the park ?"] == "meet her sister"
    assert asked["who did alice meet at the park ?"] == "her sister"
    assert asked["where did alice go to drink coffee ?"] == "cafe"
    assert asked["when did alice go to the park ?"] == "in the morning"
    assert "who did alice meet at the cafe ?" not in asked  # she met nobody there


def test_no_question_about_a_place_visited_twice_or_a_story_of_one_visit():
    twice = default_world().parse("ben went to the gym to swim in the morning . then he went to the gym to "
                                  "lift weights . then he went to the park to play football .")
    assert not [q for q in questions_about(twice) if "gym" in q.tokens]
    assert questions_about(default_world().parse("ben went to the gym to swim in the morning .")) == []


def test_held_out_questions_are_balanced_and_from_their_own_stories(data):
    for held_out in (data.validation, data.test):
        assert len(held_out) == 100
        assert {kind: sum(q.kind == kind for q in held_out) for kind in KINDS} == dict.fromkeys(KINDS, 20)
    pool_texts = {q.story.text for q in data.pool}
    assert not pool_texts & {q.story.text for q in data.test + data.validation}
    assert all(len(q.story.tokens) + len(q.tokens) + len(q.answer_tokens) + EXTRA_TOKENS <= MAX_LEN
               for q in data.pool)


def test_labeled_sets_are_nested_and_balanced(data):
    small, large = data.labeled_set(10), data.labeled_set(50)
    assert large[:10] == small
    assert [q.kind for q in small] == list(KINDS) * 2
    without_who = data.labeled_set(8, kinds=("where_next", "what"))
    assert {q.kind for q in without_who} == {"where_next", "what"}
    for bad in (0, 10**7, 2.0):
        with pytest.raises(ValueError, match="n must be"):
            data.labeled_set(bad)
    with pytest.raises(ValueError, match="kinds"):
        data.labeled_set(4, kinds=("why",))


def test_the_answers_of_each_kind_are_the_worlds_places_times_and_people(data):
    answers = answers_by_kind(data.pool)
    world = default_world().config
    assert set(answers) == set(KINDS)
    assert {answer for (answer,) in answers["where_to"]} == set(world.places)
    assert answers["where_next"] >= {("home",)} and len(answers["where_next"]) == len(world.places) + 1
    assert all(answer[0] in ("in", "at") for answer in answers["when"])
    assert not answers["who"] & answers["when"]
