"""The framework of the learner-facing checks: cases, known mistakes, verdicts.

A check calls the learner's function on a few cases, judges every answer
and shows one line per case. Usually the judge is a comparison with a
reference implementation; a random function, which has no single right
answer, is judged instead by a ``verify`` function that measures whether the
answer follows the recipe (see ``pretraining_checks.py``). When a wrong
answer looks like a mistake we know (normalising over the wrong dimension,
forgetting to divide, ...), the verdict names it in a hint.

Every check keeps one promise: ``check_<function>(learner_fn)`` returns a
:class:`CheckResult` whose ``bool()`` is True only when every case passed,
and it never raises, whatever the learner's function does. Ending a notebook
cell with ``check_softmax(softmax)`` shows the verdict; the verdict text holds
no timings or memory addresses, so notebooks can pin it with
``# NBVAL_CHECK_OUTPUT``.

A new check is a reference, a few cases and the known mistakes::

    def check_causal_mask(learner_fn):
        \"\"\"Check exercise 04: ``causal_mask(T)``.\"\"\"
        return check_function(
            learner_fn,
            exercise="04.causal_mask",
            reference=lambda T: torch.ones(T, T, dtype=torch.bool).tril(),
            cases=[Case("T=1", (1,)), Case("T=5", (5,))],
            mistakes=[
                Mistake(
                    "True above the diagonal: position i would see the future. Use tril, not triu.",
                    same_output_as(lambda T: torch.ones(T, T, dtype=torch.bool).triu()),
                ),
            ],
        )
"""
from __future__ import annotations

import copy
import html
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch

from course_lib.verdicts import STATUSES, SUMMARY_MIME_TYPE  # shared with the torch-free tools

_EXERCISE_ID = re.compile(r"^\d\d\.[A-Za-z_]\w*$")
# A preview of differing tensors shows this many values, starting this many before the first difference:
# enough to see where the two sides stop agreeing, short enough to read.
_PREVIEW_VALUES = 6
_PREVIEW_BEFORE = 2


# ---------------------------------------------------------------------------
# Describing a check: cases and known mistakes
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One call of the learner's function: ``fn(*args, **kwargs)``.

    ``description`` is what the learner reads on the verdict line, so write
    it for them ("x of shape (2, 3), dim=0"). ``atol`` and ``rtol`` are the
    tolerances of the comparison with the reference (as in ``torch.isclose``).
    The defaults absorb float32 rounding, which differs between correct
    methods (logsumexp near 1000 is off by about 1e-5 relative), and are far
    tighter than the difference any real mistake makes.

    With ``call_twice``, the function is called a second time on fresh
    copies of the inputs, generators seeded alike, and both answers must be
    equal: a random function must draw every random number from its
    ``generator`` argument, so that its results can be reproduced.
    """

    description: str
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    atol: float = 1e-5
    rtol: float = 1e-4
    call_twice: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.description, str) or not self.description:
            raise ValueError(f"description must be a non-empty str, got {self.description!r}")
        if not isinstance(self.args, tuple):
            raise TypeError(f"args must be a tuple, got {type(self.args).__name__}")
        if not isinstance(self.kwargs, Mapping):
            raise TypeError(f"kwargs must be a mapping, got {type(self.kwargs).__name__}")

    def fresh_inputs(self) -> tuple[tuple, dict]:
        """Deep copies of the inputs (tensors and generators included).

        Every call gets its own copy, so a function that changes its input in
        place, or draws from a generator, cannot change what the next call sees.
        """
        return copy.deepcopy((self.args, dict(self.kwargs)))

    def call(self, fn: Callable) -> Any:
        """``fn`` applied to fresh copies of the inputs."""
        args, kwargs = self.fresh_inputs()
        return fn(*args, **kwargs)


@dataclass(frozen=True)
class Mistake:
    """A known wrong pattern and the hint shown when a wrong answer shows it.

    ``shows_in(received, case)`` says whether the output ``received`` of a
    failed case looks like this mistake. It may raise: an exception simply
    means "no".
    """

    hint: str
    shows_in: Callable[[Any, Case], bool]


def same_output_as(wrong_fn: Callable) -> Callable[[Any, Case], bool]:
    """A ``shows_in`` test: the answer equals what ``wrong_fn`` returns on the same case.

    ``wrong_fn`` is a known-wrong implementation, e.g. softmax over the wrong
    dimension. NaN matches NaN here, so an implementation that overflows is
    recognised by its NaNs.
    """
    if not callable(wrong_fn):
        raise TypeError(f"wrong_fn must be callable, got {type(wrong_fn).__name__}")

    difference_from_wrong_fn = _compared_with(wrong_fn)

    def shows_in(received: Any, case: Case) -> bool:
        return difference_from_wrong_fn(received, case) is None

    return shows_in


def same_output_as_any_of(*wrong_fns: Callable) -> Callable[[Any, Case], bool]:
    """A ``shows_in`` test: the answer equals what one of ``wrong_fns`` returns (variants of one mistake)."""
    tests = [same_output_as(wrong_fn) for wrong_fn in wrong_fns]
    return lambda received, case: any(test(received, case) for test in tests)


def contains_nan_or_inf(received: Any, case: Case) -> bool:
    """A ``shows_in`` test: the answer is a floating tensor with a NaN or an infinity."""
    return isinstance(received, torch.Tensor) and received.is_floating_point() and not received.isfinite().all()


# ---------------------------------------------------------------------------
# Comparing an answer with the expected output
# ---------------------------------------------------------------------------


def _compared_with(reference: Callable) -> Callable[[Any, Case], str | None]:
    """A ``verify`` judge: what differs between the answer and ``reference``'s output on the same case, or None."""

    def verify(received: Any, case: Case) -> str | None:
        return describe_difference(case.call(reference), received, atol=case.atol, rtol=case.rtol)

    return verify


def describe_difference(expected: Any, received: Any, *, atol: float, rtol: float) -> str | None:
    """``None`` when ``received`` matches ``expected``, otherwise what differs, for a learner.

    Tensors must have the expected shape; floating tensors must be close
    (NaN counts as equal to NaN), other dtypes must be the same dtype and
    equal. Tuples are compared item by item; anything else with ``==``.
    """
    if received is None and expected is not None:
        return "received None: did you forget the `return` statement?"
    if isinstance(expected, tuple):
        return _describe_tuple_difference(expected, received, atol=atol, rtol=rtol)
    if isinstance(expected, torch.Tensor):
        return _describe_tensor_difference(expected, received, atol=atol, rtol=rtol)
    if type(received) is not type(expected):
        return f"expected a {type(expected).__name__}, received a {type(received).__name__}"
    if expected != received:
        return f"expected {expected!r}, received {received!r}"
    return None


def _describe_tuple_difference(expected: tuple, received: Any, *, atol: float, rtol: float) -> str | None:
    if not isinstance(received, (tuple, list)):
        return f"expected a tuple of {len(expected)} items, received a {type(received).__name__}"
    if len(received) != len(expected):
        return f"expected a tuple of {len(expected)} items, received {len(received)} items"
    for position, (expected_item, received_item) in enumerate(zip(expected, received)):
        difference = describe_difference(expected_item, received_item, atol=atol, rtol=rtol)
        if difference is not None:
            return f"item {position} of the tuple: {difference}"
    return None


def _describe_tensor_difference(expected: torch.Tensor, received: Any, *, atol: float, rtol: float) -> str | None:
    if not isinstance(received, torch.Tensor):
        return f"expected a torch.Tensor, received a {type(received).__name__}"
    if received.shape != expected.shape:
        return f"expected shape {tuple(expected.shape)}, received shape {tuple(received.shape)}"
    received = received.detach().cpu()
    if expected.is_floating_point():
        # Any floating dtype is accepted: float64 answers to float32 questions are fine.
        if not received.is_floating_point():
            return f"expected floating-point values, received dtype {received.dtype}"
        matches = torch.isclose(received.to(expected.dtype), expected, rtol=rtol, atol=atol, equal_nan=True)
    else:
        if received.dtype != expected.dtype:
            return f"expected dtype {expected.dtype}, received dtype {received.dtype}"
        matches = received == expected
    if matches.all():
        return None
    return _describe_value_difference(expected, received, matches)


def _describe_value_difference(expected: torch.Tensor, received: torch.Tensor, matches: torch.Tensor) -> str:
    """Where the values differ, and both tensors' values around the first difference.

    The first values of a tensor often agree on both sides; what the learner
    needs to see is where they stop agreeing, so the preview shows a few
    values (in flattened order) from just before the first difference.
    """
    wrong = ~matches
    first_wrong = tuple(int(i) for i in wrong.nonzero()[0])
    first_wrong_flat = int(wrong.flatten().nonzero()[0])
    window = _preview_window(first_wrong_flat, matches.numel())
    cut = window.stop - window.start < matches.numel()
    where = f"first at index {first_wrong}"
    if cut and expected.dim() > 1 and first_wrong_flat > 0:
        # The preview numbers the values in flattened order: say where the first difference lies in that order.
        where += f", flat index {first_wrong_flat}"
    lines = [f"values differ at {int(wrong.sum())} of {matches.numel()} positions ({where})"]
    if received.is_floating_point() and not received.isfinite().all() and expected.isfinite().all():
        lines.append("received contains NaN or inf")
    window_label = f", values [{window.start}:{window.stop}]" if cut else ""
    lines.append(f"expected shape {tuple(expected.shape)}{window_label}: {_preview(expected, window)}")
    lines.append(f"received shape {tuple(received.shape)}{window_label}: {_preview(received, window)}")
    return "\n".join(lines)


def _preview_window(first_wrong_flat: int, numel: int) -> slice:
    """About six flat positions, starting a little before ``first_wrong_flat`` and staying inside the tensor."""
    start = max(0, min(first_wrong_flat - _PREVIEW_BEFORE, numel - _PREVIEW_VALUES))
    return slice(start, min(start + _PREVIEW_VALUES, numel))


def _preview(tensor: torch.Tensor, window: slice) -> str:
    """The flattened values in ``window``, 4 significant digits, with "..." where values are cut."""
    values = tensor.flatten()[window].tolist()
    if tensor.is_floating_point():
        shown = [f"{value:.4g}" for value in values]
    else:
        shown = [str(value) for value in values]
    before = ["..."] if window.start > 0 else []
    after = ["..."] if window.stop < tensor.numel() else []
    return "[" + ", ".join(before + shown + after) + "]"


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    """The verdict on one case. ``details`` says what went wrong; ``hint`` names a known mistake."""

    description: str
    passed: bool
    details: str = ""
    hint: str = ""
    not_implemented: bool = False


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one exercise: truthy only when every case passed.

    Displayed in a notebook (or printed) it shows one line per case; its
    :meth:`summary` is the machine-readable version for a grader.
    """

    exercise: str
    function_name: str
    cases: tuple[CaseResult, ...]
    note: str = ""

    @property
    def n_total(self) -> int:
        return len(self.cases)

    @property
    def n_passed(self) -> int:
        return sum(case.passed for case in self.cases)

    @property
    def status(self) -> str:
        """One of ``STATUSES``: "not implemented" when every case raised NotImplementedError."""
        if self.cases and all(case.not_implemented for case in self.cases):
            return "not implemented"
        if self.cases and self.n_passed == self.n_total:
            return "passed"
        return "failed"

    def __bool__(self) -> bool:
        return self.status == "passed"

    def summary(self) -> dict:
        """What a grader needs: exercise id, function, status and counts (JSON-serialisable)."""
        return {
            "exercise": self.exercise,
            "function": self.function_name,
            "status": self.status,
            "n_passed": self.n_passed,
            "n_total": self.n_total,
        }

    def report(self) -> str:
        """The verdict as text: a headline, the hints, then one line per case with its details."""
        headline = f"{self.function_name} (exercise {self.exercise}): "
        if self.status == "not implemented":
            return headline + (
                "not implemented yet.\n"
                "  Replace `raise NotImplementedError()` with your code, run that cell, then run this check again."
            )
        if self.status == "passed":
            headline += f"all {self.n_total} cases passed."
        else:
            headline += f"{self.n_passed} of {self.n_total} cases passed."
        lines = [headline]
        if self.note:
            lines.append(f"  {self.note}")
        # The hint is what the learner acts on: right under the headline, above the numbers. One mistake
        # usually fails several cases, so each hint is named once.
        hints = list(dict.fromkeys(case.hint for case in self.cases if case.hint))
        lines.extend(f"  hint: {hint}" for hint in hints)
        for case in self.cases:
            lines.append(f"  {'✓' if case.passed else '✗'} {case.description}")
            lines.extend(f"      {detail_line}" for detail_line in case.details.splitlines())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    # The full report as repr: a notebook cell or a REPL ending with a
    # check call shows the verdict, not an opaque object.
    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = {"passed": "#2e7d32", "failed": "#c62828", "not implemented": "#9e6a03"}[self.status]
        return (
            f'<pre style="border-left: 4px solid {colour}; padding-left: 0.75em">'
            f"{html.escape(self.report())}</pre>"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        return {SUMMARY_MIME_TYPE: self.summary()}


# ---------------------------------------------------------------------------
# Running a check
# ---------------------------------------------------------------------------


def check_function(
    learner_fn: Any,
    *,
    exercise: str,
    cases: Sequence[Case],
    reference: Callable | None = None,
    verify: Callable[[Any, Case], str | None] | None = None,
    mistakes: Sequence[Mistake] = (),
) -> CheckResult:
    """Judge ``learner_fn`` on every case; never raises because of ``learner_fn``.

    ``exercise`` is the id ``"NN.function_name"``. Give exactly one judge:
    ``reference``, a correct implementation whose output every answer must
    match, or ``verify(received, case)``, which returns None for a right
    answer and otherwise the details to show (what a random function's
    check measures, for example).

    ``mistakes`` are tried in order on each failed case; the first one that
    shows gives the hint, so put the most specific first. A small case can
    look like two mistakes at once (a 1 x 1 causal mask is the same inverted
    or without its diagonal); it then gets the hint of the one that shows in
    the most failed cases, so that one wrong answer is not blamed on two
    mistakes.
    """
    if not isinstance(exercise, str) or not _EXERCISE_ID.match(exercise):
        raise ValueError(
            f"exercise must look like '00.softmax' (notebook number, dot, function name), got {exercise!r}"
        )
    if (reference is None) == (verify is None):
        raise TypeError(
            f"give exactly one of reference and verify, got reference={reference!r} and verify={verify!r}"
        )
    for name, judge in (("reference", reference), ("verify", verify)):
        if judge is not None and not callable(judge):
            raise TypeError(f"{name} must be callable, got {type(judge).__name__}")
    if not cases or not all(isinstance(case, Case) for case in cases):
        raise ValueError(f"cases must be a non-empty sequence of Case, got {cases!r}")
    if not all(isinstance(mistake, Mistake) for mistake in mistakes):
        raise TypeError(f"mistakes must be a sequence of Mistake, got {mistakes!r}")

    judge = verify if reference is None else _compared_with(reference)
    function_name = exercise.split(".", 1)[1]
    note = ""
    if not callable(learner_fn):
        note = (
            f"{function_name} should be a function, but a {type(learner_fn).__name__} was given: "
            f"pass the function itself, check_{function_name}({function_name}), without calling it."
        )
    results = _consistent_hints([_run_case(learner_fn, judge, case, mistakes) for case in cases])
    return CheckResult(exercise=exercise, function_name=function_name, cases=results, note=note)


def _run_case(learner_fn: Any, judge: Callable[[Any, Case], str | None], case: Case,
              mistakes: Sequence[Mistake]) -> tuple[CaseResult, tuple[str, ...]]:
    """The verdict on one case, and the hints of every known mistake the answer shows (in order)."""
    args, kwargs = case.fresh_inputs()
    try:
        received = learner_fn(*args, **kwargs)
        second_answer = case.call(learner_fn) if case.call_twice else None
    except NotImplementedError:
        return CaseResult(case.description, passed=False, details="not implemented yet", not_implemented=True), ()
    except Exception as error:  # the learner's bug is a failed case, never a crash of the check
        return CaseResult(
            case.description,
            passed=False,
            details=f"your function raised {_describe_error(error)}",
            hint=_hint_for_error(error),
        ), ()

    try:
        details = judge(received, case)
    except Exception as error:  # an answer so odd that it cannot even be judged
        details = f"could not check your answer: {_describe_error(error)}"
    if details is not None:
        hints = _matching_hints(mistakes, received, case)
        return CaseResult(case.description, passed=False, details=details, hint=hints[0] if hints else ""), hints
    if case.call_twice and _answers_differ(received, second_answer):
        return CaseResult(
            case.description,
            passed=False,
            details="two calls with generators seeded alike gave different answers",
            hint="draw every random number from `generator` (torch.rand(..., generator=generator), "
                 "torch.multinomial(..., generator=generator)); without it PyTorch's global generator "
                 "is used and nobody can reproduce your results.",
        ), ()
    if _inputs_changed(case, args, kwargs):
        # The answer is right, but a caller's tensor was overwritten: later cells would compute on garbage.
        return CaseResult(
            case.description,
            passed=False,
            details="the answer is right, but your function changed its input in place",
            hint="compute new tensors instead of writing into the caller's tensor: the caller still needs it. "
                 "x - ..., torch.where(...) and x.clone() give new tensors; x -= ..., x.sub_(...) and "
                 "x[...] = ... overwrite x.",
        ), ()
    return CaseResult(case.description, passed=True), ()


def _matching_hints(mistakes: Sequence[Mistake], received: Any, case: Case) -> tuple[str, ...]:
    hints = []
    for mistake in mistakes:
        try:
            if mistake.shows_in(received, case) and mistake.hint not in hints:
                hints.append(mistake.hint)
        except Exception:  # a detector that cannot handle this answer just does not recognise it
            continue
    return tuple(hints)


def _consistent_hints(outcomes: Sequence[tuple[CaseResult, tuple[str, ...]]]) -> tuple[CaseResult, ...]:
    """Each case's hint: of the mistakes it shows, the one that shows in the most cases (the first on a tie)."""
    shown_in = Counter(hint for _, hints in outcomes for hint in hints)
    return tuple(replace(result, hint=max(hints, key=shown_in.__getitem__)) if len(hints) > 1 else result
                 for result, hints in outcomes)


def _inputs_changed(case: Case, args: tuple, kwargs: dict) -> bool:
    """Whether the learner's copies of the input tensors differ from the case's originals."""
    originals = list(case.args) + [case.kwargs[name] for name in sorted(case.kwargs)]
    after_call = list(args) + [kwargs[name] for name in sorted(kwargs)]
    for original, after in zip(originals, after_call):
        if isinstance(original, torch.Tensor) and describe_difference(original, after, atol=0.0, rtol=0.0) is not None:
            return True
    return False


def _answers_differ(first: Any, second: Any) -> bool:
    """Whether two answers to the same call differ in any value (a list is compared like a tuple)."""
    as_tuple = [tuple(answer) if isinstance(answer, list) else answer for answer in (first, second)]
    try:
        return describe_difference(*as_tuple, atol=0.0, rtol=0.0) is not None
    except Exception:  # two answers that cannot even be compared are not the same answer
        return True


def _describe_error(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _hint_for_error(error: Exception) -> str:
    """A hint for the one error almost everyone meets in tensor code: shapes that do not broadcast."""
    if isinstance(error, RuntimeError) and "must match the size of tensor" in str(error):
        return (
            "two tensors' shapes do not broadcast: print the shapes of the tensors on the failing line "
            "and compare them with the docstring's. A common cause: a reduction such as .sum(dim) or "
            ".max(dim) drops that dimension unless you pass keepdim=True."
        )
    return ""
