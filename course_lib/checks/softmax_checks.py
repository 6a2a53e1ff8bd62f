"""Check of exercise 00: a numerically stable softmax."""
from __future__ import annotations

from typing import Any

import torch

from course_lib.checks.framework import Case, CheckResult, Mistake, check_function, contains_nan_or_inf, same_output_as


def _softmax_reference(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.softmax(x, dim=dim)


def _softmax_over_last_dim(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def _softmax_over_first_dim(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.softmax(x, dim=0)


def _does_not_sum_to_one(received: torch.Tensor, case: Case) -> bool:
    dim = case.kwargs.get("dim", -1)
    sums = received.sum(dim=dim)
    return not torch.allclose(sums, torch.ones_like(sums), atol=1e-4)


_SOFTMAX_2D = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]])
_SOFTMAX_3D = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))

_SOFTMAX_CASES = (
    Case("x of shape (4,), default dim", (torch.tensor([1.0, 2.0, 3.0, 4.0]),)),
    Case("x of shape (2, 3), dim=-1", (_SOFTMAX_2D,), {"dim": -1}),
    Case("x of shape (2, 3), dim=0", (_SOFTMAX_2D,), {"dim": 0}),
    Case("x of shape (2, 3), dim=1", (_SOFTMAX_2D,), {"dim": 1}),
    Case("x of shape (2, 3, 4), dim=1", (_SOFTMAX_3D,), {"dim": 1}),
    Case("x of shape (2, 3, 4), dim=-1", (_SOFTMAX_3D,), {"dim": -1}),
    Case("large values x = [1000, 1001, 1002]", (torch.tensor([1000.0, 1001.0, 1002.0]),)),
    Case("very negative values x = [-1000, -1001, -1002]", (torch.tensor([-1000.0, -1001.0, -1002.0]),)),
    Case("values far apart in one row, x = [0, 1000, -1000]", (torch.tensor([0.0, 1000.0, -1000.0]),)),
    Case(
        "rows on very different scales, dim=-1",
        (torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]]),),
        {"dim": -1},
    ),
)

_WRONG_DIM_HINT = (
    "the values were normalised over the wrong dimension. Use the `dim` argument in every "
    "reduction, e.g. x.max(dim=dim, keepdim=True) and .sum(dim=dim, keepdim=True)."
)

_SOFTMAX_MISTAKES = (
    Mistake(
        "exp() of a large number overflows to inf (and inf / inf is NaN), exp() of a very negative one "
        "underflows to 0 (and 0 / 0 is NaN). Subtract the maximum along `dim` before exponentiating: "
        "x - x.max(dim=dim, keepdim=True).values.",
        contains_nan_or_inf,
    ),
    Mistake(_WRONG_DIM_HINT, same_output_as(_softmax_over_last_dim)),
    Mistake(_WRONG_DIM_HINT, same_output_as(_softmax_over_first_dim)),
    Mistake(
        "the values along `dim` do not add up to 1: did you forget to divide the exponentials by their sum?",
        _does_not_sum_to_one,
    ),
)


def check_softmax(learner_fn: Any) -> CheckResult:
    """Check exercise 00: a numerically stable ``softmax(x, dim=-1)``.

    The cases cover 1-D, 2-D and 3-D inputs, the default ``dim`` and explicit
    ``dim`` = -1, 0 and 1, and inputs so large, so negative or so far apart
    that exp() alone overflows or underflows (subtracting the mean or the
    minimum instead of the maximum is not enough).
    """
    return check_function(
        learner_fn,
        exercise="00.softmax",
        reference=_softmax_reference,
        cases=_SOFTMAX_CASES,
        mistakes=_SOFTMAX_MISTAKES,
    )
