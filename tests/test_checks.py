"""The check framework and check_softmax: right answers pass, known mistakes fail with their hint."""
import json

import pytest
import torch
from IPython.core.formatters import DisplayFormatter

from course_lib.checks import (
    STATUSES,
    SUMMARY_MIME_TYPE,
    Case,
    CaseResult,
    CheckResult,
    Mistake,
    check_function,
    check_softmax,
    describe_difference,
    same_output_as,
)

from check_helpers import assert_fails_with_hint, assert_passes

# ---------------------------------------------------------------------------
# Correct softmax, written three different ways (and PyTorch's own)
# ---------------------------------------------------------------------------


def softmax_subtracting_the_max(x, dim=-1):
    shifted = x - x.max(dim=dim, keepdim=True).values
    exponentials = torch.exp(shifted)
    return exponentials / exponentials.sum(dim=dim, keepdim=True)


def softmax_with_logsumexp(x, dim=-1):
    return torch.exp(x - torch.logsumexp(x, dim=dim, keepdim=True))


def softmax_by_moving_dim_last(x, dim=-1):
    last = x.movedim(dim, -1)
    exponentials = (last - last.amax(-1, keepdim=True)).exp()
    return (exponentials / exponentials.sum(-1, keepdim=True)).movedim(-1, dim)


@pytest.mark.parametrize(
    "softmax",
    [
        softmax_subtracting_the_max,
        softmax_with_logsumexp,
        softmax_by_moving_dim_last,
        lambda x, dim=-1: torch.softmax(x, dim),
    ],
    ids=["subtract-max", "logsumexp", "movedim", "torch.softmax"],
)
def test_correct_softmax_passes(softmax):
    result = check_softmax(softmax)

    assert bool(result), result.report()
    assert result.status == "passed"
    assert result.n_passed == result.n_total >= 6
    assert "✗" not in result.report()


def test_float64_answer_to_float32_question_passes():
    result = check_softmax(lambda x, dim=-1: torch.softmax(x.double(), dim=dim))

    assert result, result.report()


# ---------------------------------------------------------------------------
# Known mistakes: each fails and its hint names it
# ---------------------------------------------------------------------------


def naive_softmax(x, dim=-1):
    exponentials = torch.exp(x)
    return exponentials / exponentials.sum(dim=dim, keepdim=True)


def softmax_ignoring_dim(x, dim=-1):
    return softmax_subtracting_the_max(x, dim=-1)


def softmax_over_dim_zero(x, dim=-1):
    return softmax_subtracting_the_max(x, dim=0)


def softmax_without_division(x, dim=-1):
    return torch.exp(x - x.amax(dim=dim, keepdim=True))


def softmax_subtracting_the_global_max(x, dim=-1):
    exponentials = torch.exp(x - x.max())
    return exponentials / exponentials.sum(dim=dim, keepdim=True)


@pytest.mark.parametrize(
    "wrong_softmax, words_of_the_hint",
    [
        (naive_softmax, "overflows"),
        (softmax_subtracting_the_global_max, "maximum along `dim`"),
        (softmax_ignoring_dim, "wrong dimension"),
        (softmax_over_dim_zero, "wrong dimension"),
        (softmax_without_division, "divide"),
    ],
    ids=["naive-overflow", "global-max", "ignores-dim", "always-dim-0", "no-division"],
)
def test_known_mistake_fails_with_its_hint(wrong_softmax, words_of_the_hint):
    result = check_softmax(wrong_softmax)

    assert not result
    assert result.status == "failed"
    assert result.n_passed < result.n_total
    assert words_of_the_hint in result.report()


def test_naive_softmax_passes_small_inputs_but_fails_large_ones():
    result = check_softmax(naive_softmax)
    verdicts = {case.description: case.passed for case in result.cases}

    assert verdicts["x of shape (2, 3), dim=0"]
    assert not verdicts["large values x = [1000, 1001, 1002]"]
    assert "received contains NaN or inf" in result.report()


def test_failed_case_shows_expected_and_received_values():
    report = check_softmax(softmax_without_division).report()

    assert "expected shape (3,): [0.09003, 0.2447, 0.6652]" in report
    assert "received shape (3,): [0.1353, 0.3679, 1]" in report


def test_a_hint_is_shown_once_even_when_several_cases_show_it():
    report = check_softmax(softmax_without_division).report()

    assert report.count("did you forget to divide") == 1


def test_the_hint_comes_right_under_the_headline_before_the_cases():
    lines = check_softmax(softmax_without_division).report().splitlines()

    assert lines[0].startswith("softmax (exercise 00.softmax): ")
    assert lines[1].startswith("  hint: ") and "did you forget to divide" in lines[1]
    assert not any(line.lstrip().startswith("hint:") for line in lines[2:])


def test_the_hint_follows_the_note_when_there_is_one():
    result = CheckResult(exercise="00.double", function_name="double", note="a note for the whole check",
                         cases=(CaseResult("x", passed=False, details="wrong", hint="multiply by 2"),))

    assert result.report().splitlines() == [
        "double (exercise 00.double): 0 of 1 cases passed.",
        "  a note for the whole check",
        "  hint: multiply by 2",
        "  ✗ x",
        "      wrong",
    ]


@pytest.mark.parametrize(
    "expected, index_changed, expected_lines",
    [
        # The first six values agree on both sides: the preview must show index 40.
        (torch.arange(64.0), (40,), [
            "values differ at 1 of 64 positions (first at index (40,))",
            "expected shape (64,), values [38:44]: [..., 38, 39, 40, 41, 42, 43, ...]",
            "received shape (64,), values [38:44]: [..., 38, 39, -1, 41, 42, 43, ...]",
        ]),
        # The last value of a matrix: the window stays inside the tensor and the flat index is given.
        (torch.zeros(4, 16, dtype=torch.long), (3, 15), [
            "values differ at 1 of 64 positions (first at index (3, 15), flat index 63)",
            "expected shape (4, 16), values [58:64]: [..., 0, 0, 0, 0, 0, 0]",
            "received shape (4, 16), values [58:64]: [..., 0, 0, 0, 0, 0, -1]",
        ]),
    ],
    ids=["vector", "matrix-last-value"],
)
def test_values_are_previewed_around_the_first_difference(expected, index_changed, expected_lines):
    received = expected.clone()
    received[index_changed] = -1

    assert describe_difference(expected, received, atol=0.0, rtol=0.0).splitlines() == expected_lines


def test_changing_the_input_in_place_fails_although_the_answer_is_right():
    def softmax_in_place(x, dim=-1):
        x -= x.amax(dim=dim, keepdim=True)
        x.exp_()
        return x / x.sum(dim=dim, keepdim=True)

    result = check_softmax(softmax_in_place)

    assert not result
    assert "changed its input in place" in result.report()
    assert "wrong dimension" not in result.report()


# ---------------------------------------------------------------------------
# The learner's function misbehaves: the check reports, never raises
# ---------------------------------------------------------------------------


def test_not_implemented_is_reported_as_such():
    def softmax(x, dim=-1):
        raise NotImplementedError()

    result = check_softmax(softmax)

    assert not result
    assert result.status == "not implemented"
    assert result.n_passed == 0
    assert "not implemented yet" in result.report()


def test_learner_exception_is_a_failed_case_with_its_message():
    def softmax(x, dim=-1):
        raise ZeroDivisionError("my own bug")

    result = check_softmax(softmax)

    assert not result
    assert result.status == "failed"
    assert "your function raised ZeroDivisionError: my own bug" in result.report()


def test_broadcasting_error_gets_the_keepdim_hint():
    def softmax_without_keepdim(x, dim=-1):
        exponentials = torch.exp(x - x.amax(dim=dim))
        return exponentials / exponentials.sum(dim=dim)

    result = check_softmax(softmax_without_keepdim)

    assert not result
    assert "keepdim=True" in result.report()


@pytest.mark.parametrize(
    "wrong_return, expected_words",
    [
        (lambda x, dim=-1: torch.softmax(x, dim).tolist(), "expected a torch.Tensor, received a list"),
        (lambda x, dim=-1: torch.softmax(x, dim).numpy(), "expected a torch.Tensor, received a ndarray"),
        (lambda x, dim=-1: None, "did you forget the `return` statement?"),
        (lambda x, dim=-1: torch.softmax(x, dim).sum(dim, keepdim=True), "received shape"),
        (lambda x, dim=-1: torch.softmax(x, dim).round().long(), "expected floating-point values"),
    ],
    ids=["list", "numpy", "none", "shape", "integer-dtype"],
)
def test_wrong_type_or_shape_fails_with_a_clear_message(wrong_return, expected_words):
    result = check_softmax(wrong_return)

    assert not result
    assert expected_words in result.report()


def test_passing_a_tensor_instead_of_a_function_is_explained():
    result = check_softmax(torch.zeros(3))

    assert not result
    assert "pass the function itself" in result.report()


# ---------------------------------------------------------------------------
# The result object: display, determinism, machine-readable summary
# ---------------------------------------------------------------------------


def test_summary_is_machine_readable():
    summary = check_softmax(naive_softmax).summary()

    assert summary["exercise"] == "00.softmax"
    assert summary["status"] == "failed"
    assert summary["status"] in STATUSES
    assert 0 < summary["n_passed"] < summary["n_total"]
    assert json.loads(json.dumps(summary)) == summary


def test_verdict_text_is_deterministic_and_free_of_addresses():
    first = check_softmax(naive_softmax).report()
    second = check_softmax(naive_softmax).report()

    assert first == second
    assert " at 0x" not in first


def test_notebook_display_shows_text_html_and_summary():
    result = check_softmax(softmax_subtracting_the_max)

    data, _ = DisplayFormatter().format(result)

    assert data["text/plain"] == result.report()
    assert "all 10 cases passed" in data["text/html"]
    assert data[SUMMARY_MIME_TYPE] == result.summary()


def test_bool_is_true_only_when_every_case_passed():
    cases = [Case("positive", (2,)), Case("negative", (-2,))]

    assert check_function(abs, exercise="00.absolute", reference=abs, cases=cases)

    half = check_function(lambda n: n, exercise="00.absolute", reference=abs, cases=cases)
    assert not half
    assert (half.n_passed, half.n_total) == (1, 2)


# ---------------------------------------------------------------------------
# The framework itself: a new check in a few lines, with a wrong variant
# ---------------------------------------------------------------------------


def check_causal_mask(learner_fn):
    return check_function(
        learner_fn,
        exercise="04.causal_mask",
        reference=lambda T: torch.ones(T, T, dtype=torch.bool).tril(),
        cases=[Case("T=1", (1,)), Case("T=4", (4,))],
        mistakes=[
            Mistake(
                "True above the diagonal: use tril.",
                same_output_as(lambda T: torch.ones(T, T, dtype=torch.bool).triu()),
            ),
        ],
    )


def test_a_new_check_recognises_its_wrong_variant():
    assert check_causal_mask(lambda T: torch.tril(torch.ones(T, T)).bool())

    wrong = check_causal_mask(lambda T: torch.ones(T, T).triu().bool())
    assert not wrong
    assert "use tril" in wrong.report()

    float_mask = check_causal_mask(lambda T: torch.ones(T, T).tril())
    assert "expected dtype torch.bool, received dtype torch.float32" in float_mask.report()


def test_a_case_that_shows_two_mistakes_gets_the_hint_of_the_one_that_explains_the_others():
    def upper(T):
        return torch.ones(T, T, dtype=torch.bool).triu()

    def strictly_lower(T):
        return torch.ones(T, T, dtype=torch.bool).tril(-1)

    def check(learner_fn):
        # For T=1 both wrong masks are [[False]]: the case alone cannot tell them apart.
        return check_function(
            learner_fn, exercise="04.causal_mask", reference=lambda T: torch.ones(T, T, dtype=torch.bool).tril(),
            cases=[Case("T=1", (1,)), Case("T=3", (3,)), Case("T=4", (4,))],
            mistakes=[Mistake("inverted", same_output_as(lambda T: ~torch.ones(T, T, dtype=torch.bool).tril())),
                      Mistake("diagonal", same_output_as(strictly_lower)),
                      Mistake("upper", same_output_as(upper))],
        )

    assert {case.hint for case in check(strictly_lower).cases} == {"diagonal"}
    assert {case.hint for case in check(lambda T: ~torch.ones(T, T, dtype=torch.bool).tril()).cases} == {"inverted"}


def test_tuple_outputs_are_compared_item_by_item():
    def reference(x):
        return x * 2, x + 1

    result = check_function(
        lambda x: (x * 2, x), exercise="01.pair", reference=reference, cases=[Case("x", (torch.ones(2),))]
    )

    assert not result
    assert "item 1 of the tuple" in result.report()


def test_a_mistake_detector_that_raises_is_ignored():
    def broken_detector(received, case):
        raise RuntimeError("detector bug")

    result = check_function(
        lambda x: x, exercise="00.double", reference=lambda x: 2 * x,
        cases=[Case("x", (torch.ones(2),))], mistakes=[Mistake("never shown", broken_detector)],
    )

    assert not result
    assert "never shown" not in result.report()


# ---------------------------------------------------------------------------
# A verify judge instead of a reference: checks of random functions
# ---------------------------------------------------------------------------


def verify_a_permutation(received, case):
    """Right when the answer holds the same values as the input, in any order."""
    if not isinstance(received, torch.Tensor):
        return f"expected a tensor, received a {type(received).__name__}"
    if not torch.equal(received.sort().values, case.args[0].sort().values):
        return "the values are not those of x"
    return None


def check_shuffle(learner_fn):
    x = torch.arange(10)
    return check_function(
        learner_fn, exercise="00.shuffle", verify=verify_a_permutation,
        cases=[Case("10 values", (x,), {"generator": torch.Generator().manual_seed(0)}),
               Case("10 values, called twice", (x,), {"generator": torch.Generator().manual_seed(1)},
                    call_twice=True)],
        mistakes=[Mistake("keep every value exactly once.", lambda received, case: len(received) < 10)],
    )


def shuffle(x, generator=None):
    return x[torch.randperm(len(x), generator=generator)]


def test_a_verify_judge_accepts_every_right_answer():
    assert_passes(check_shuffle(shuffle))
    assert_passes(check_shuffle(lambda x, generator=None: x.flip(0)))


def test_a_verify_judge_shows_its_details_and_the_hint_of_a_known_mistake():
    result = check_shuffle(lambda x, generator=None: x[:5])

    assert_fails_with_hint(result, "keep every value exactly once")
    assert "the values are not those of x" in result.report()


def test_a_verify_check_reports_errors_not_implemented_and_odd_answers_without_raising():
    def unsolved(x, generator=None):
        raise NotImplementedError()

    def broken(x, generator=None):
        raise ValueError("my own bug")

    assert check_shuffle(unsolved).status == "not implemented"
    assert "your function raised ValueError: my own bug" in check_shuffle(broken).report()
    assert "expected a tensor, received a list" in check_shuffle(lambda x, generator=None: x.tolist()).report()


def test_a_case_called_twice_fails_when_the_generator_is_not_used():
    result = check_shuffle(lambda x, generator=None: shuffle(x))

    assert_fails_with_hint(result, "draw every random number from `generator`")
    assert [case.passed for case in result.cases] == [True, False]
    assert "two calls with generators seeded alike gave different answers" in result.report()


def test_a_verify_check_sees_an_input_changed_in_place():
    def shuffle_in_place(x, generator=None):
        x[:] = shuffle(x, generator)
        return x.clone()

    result = check_shuffle(shuffle_in_place)

    assert_fails_with_hint(result, "instead of writing into the caller's tensor")
    assert "changed its input in place" in result.report()


@pytest.mark.parametrize(
    "arguments, error",
    [
        ({"exercise": "softmax"}, ValueError),
        ({"reference": "not callable"}, TypeError),
        ({"reference": None, "verify": "not callable"}, TypeError),
        ({"verify": verify_a_permutation}, TypeError),
        ({"reference": None}, TypeError),
        ({"cases": []}, ValueError),
        ({"mistakes": ["a hint without a detector"]}, TypeError),
    ],
    ids=["exercise-id", "reference", "verify", "both-judges", "no-judge", "no-cases", "mistakes"],
)
def test_check_function_rejects_a_malformed_check(arguments, error):
    valid = {"exercise": "00.f", "reference": abs, "cases": [Case("a", (1,))], "mistakes": ()}

    with pytest.raises(error):
        check_function(abs, **{**valid, **arguments})
