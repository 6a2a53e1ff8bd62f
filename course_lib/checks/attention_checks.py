"""Checks of exercises 01 and 02: attention scores and attention, heads.

Each check compares the learner's function with a reference (course_lib's
own function, where the package has one) on a few cases and knows the usual
ways to get it wrong. A known mistake is written here as a small wrong
implementation; when the learner's answer equals what it returns, the hint
names the mistake.

The cases are chosen so that the mistakes cannot be confused: in every
attention case d_k, d_v and Tk differ, so scaling by the wrong one of them
gives a different answer; split_heads sees inputs whose values are 0, 1,
2, ... so a learner can read in the preview which feature went where.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from course_lib.attention import scaled_dot_product_attention, split_heads
from course_lib.checks.framework import Case, CheckResult, Mistake, check_function, describe_difference, same_output_as

_MINUS_INFINITY = float("-inf")
_GENERATOR = torch.Generator().manual_seed(1)


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_GENERATOR)


# ---------------------------------------------------------------------------
# Exercise 01.attention_scores: q @ k^T / sqrt(d_k)
# ---------------------------------------------------------------------------


def _attention_scores_reference(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def _scores_scaled_by(scale: Callable[[torch.Tensor, torch.Tensor], float]) -> Callable:
    """A scores function that divides by ``scale(q, k)`` instead of sqrt(d_k)."""

    def scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return q @ k.transpose(-2, -1) / scale(q, k)

    return scores


def _keys_times_queries(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return _attention_scores_reference(q, k).transpose(-2, -1)


_NO_SCALING_HINT = (
    "the scores were not scaled: divide q @ k^T by sqrt(d_k), the square root of the last "
    "dimension of q and k."
)
_SCALED_BY_D_K_HINT = (
    "the scores were divided by d_k itself; divide by its square root, math.sqrt(d_k) or d_k ** 0.5."
)
_MULTIPLIED_BY_SQRT_D_K_HINT = (
    "the scores were multiplied by sqrt(d_k); divide them: the scale shrinks the dot products, whose spread "
    "grows with d_k, back to about 1."
)
_SCALED_BY_SECOND_DIMENSION_HINT = (
    "the scale used q.shape[1], which is d_k only for 2-D inputs: with a batch it is the number of queries, "
    "with heads the number of heads. Count from the end: d_k = q.shape[-1]."
)
_SCALED_BY_SEQUENCE_LENGTH_HINT = (
    "the scale used a number of positions (Tq = q.shape[-2] or Tk = k.shape[-2]); it must use "
    "d_k = q.shape[-1], the length of the vectors in each dot product."
)

_SCORES_CASES = (
    Case("2-D: q (3, 4), k (5, 4)", (_randn(3, 4), _randn(5, 4))),
    Case("3-D, a batch of 2: q (2, 4, 8), k (2, 6, 8)", (_randn(2, 4, 8), _randn(2, 6, 8))),
    Case("4-D, batch and heads: q (2, 3, 5, 16), k (2, 3, 7, 16)", (_randn(2, 3, 5, 16), _randn(2, 3, 7, 16))),
)

_SCORES_MISTAKES = (
    Mistake(_NO_SCALING_HINT, same_output_as(_scores_scaled_by(lambda q, k: 1.0))),
    Mistake(_SCALED_BY_D_K_HINT, same_output_as(_scores_scaled_by(lambda q, k: q.shape[-1]))),
    Mistake(_MULTIPLIED_BY_SQRT_D_K_HINT,
            same_output_as(_scores_scaled_by(lambda q, k: 1 / math.sqrt(q.shape[-1])))),
    Mistake(_SCALED_BY_SECOND_DIMENSION_HINT, same_output_as(_scores_scaled_by(lambda q, k: math.sqrt(q.shape[1])))),
    Mistake(_SCALED_BY_SEQUENCE_LENGTH_HINT, same_output_as(_scores_scaled_by(lambda q, k: math.sqrt(k.shape[-2])))),
    Mistake(_SCALED_BY_SEQUENCE_LENGTH_HINT, same_output_as(_scores_scaled_by(lambda q, k: math.sqrt(q.shape[-2])))),
    Mistake(
        "the scores are transposed: row i must hold query i's scores against every key, shape (..., Tq, Tk). "
        "Compute q @ k^T, not k @ q^T.",
        same_output_as(_keys_times_queries),
    ),
)


def check_attention_scores(learner_fn: Any) -> CheckResult:
    """Check exercise 01: ``attention_scores(q, k)``, the scaled dot products q @ k^T / sqrt(d_k).

    The cases are 2-D, 3-D (batch) and 4-D (batch and heads) with Tq != Tk,
    so scaling by a sequence length instead of d_k is told apart.
    """
    return check_function(
        learner_fn,
        exercise="01.attention_scores",
        reference=_attention_scores_reference,
        cases=_SCORES_CASES,
        mistakes=_SCORES_MISTAKES,
    )


# ---------------------------------------------------------------------------
# Exercise 01.scaled_dot_product_attention: softmax(q k^T / sqrt(d_k)) v, with a mask
# ---------------------------------------------------------------------------


def _sqrt_d_k(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> float:
    return math.sqrt(q.shape[-1])


def _attention_variant(
    *,
    scale: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float] = _sqrt_d_k,
    masked_score: float = _MINUS_INFINITY,
    invert_mask: bool = False,
    ignore_mask: bool = False,
    softmax_dim: int = -1,
) -> Callable:
    """Attention with one choice made differently from the reference: one known mistake per setting.

    With the defaults it is the reference itself; ``scale`` receives (q, k, v).
    """

    def attention(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / scale(q, k, v)
        if mask is not None and not ignore_mask:
            hidden = mask if invert_mask else ~mask
            scores = scores.masked_fill(hidden, masked_score)
        weights = torch.softmax(scores, dim=softmax_dim)
        return weights @ v, weights

    return attention


def _mask_applied_after_softmax(q, k, v, mask=None):
    """Zeroes the weights of hidden keys but does not renormalise: rows no longer sum to 1."""
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


def _weights_then_output(q, k, v, mask=None):
    output, weights = scaled_dot_product_attention(q, k, v, mask)
    return weights, output


def _second_item_is_the_scores(received: Any, case: Case) -> bool:
    """Whether the learner returned the scores (scaled, masked or not) where the weights belong."""
    q, k, _ = case.args
    mask = case.kwargs.get("mask")
    scores = _attention_scores_reference(q, k)
    candidates = [scores]
    if mask is not None:
        candidates += [scores.masked_fill(~mask, fill) for fill in (_MINUS_INFINITY, -1e9)]
    return any(
        describe_difference(candidate, received[1], atol=case.atol, rtol=case.rtol) is None for candidate in candidates
    )


def _random_mask(*shape: int) -> torch.Tensor:
    """A random boolean mask whose every row allows at least one key, as attention requires."""
    mask = torch.rand(*shape, generator=_GENERATOR) < 0.5
    always_allowed = torch.randint(shape[-1], shape[:-1], generator=_GENERATOR)
    mask.scatter_(-1, always_allowed.unsqueeze(-1), True)
    return mask


def _attention_case(description: str, q_shape, k_shape, v_shape, mask: torch.Tensor | None = None) -> Case:
    kwargs = {} if mask is None else {"mask": mask}
    return Case(description, (_randn(*q_shape), _randn(*k_shape), _randn(*v_shape)), kwargs)


# Sequences of length 6 and 4, padded to 6: the last two keys of the second one are padding.
_PADDING_MASK = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:, None, None, :]  # (B, 1, 1, Tk)

_ATTENTION_CASES = (
    _attention_case("2-D: q (3, 4), k (5, 4), v (5, 6), no mask", (3, 4), (5, 4), (5, 6)),
    _attention_case(
        "3-D, a batch of 2: q (2, 4, 8), k (2, 6, 8), v (2, 6, 3), no mask",
        (2, 4, 8), (2, 6, 8), (2, 6, 3),
    ),
    _attention_case(
        "4-D, batch and heads: q, k (2, 3, 5, 4), v (2, 3, 5, 3), causal mask (5, 5)",
        (2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 3),
        mask=torch.ones(5, 5, dtype=torch.bool).tril(),
    ),
    _attention_case(
        "4-D: q (2, 2, 3, 8), k (2, 2, 6, 8), v (2, 2, 6, 5), padding mask (2, 1, 1, 6)",
        (2, 2, 3, 8), (2, 2, 6, 8), (2, 2, 6, 5),
        mask=_PADDING_MASK,
    ),
    _attention_case(
        "3-D: q (2, 4, 16), k (2, 7, 16), v (2, 7, 10), random mask (2, 4, 7)",
        (2, 4, 16), (2, 7, 16), (2, 7, 10),
        mask=_random_mask(2, 4, 7),
    ),
)

_WRONG_SOFTMAX_DIM_HINT = (
    "the softmax normalised the wrong dimension: each query's weights over the keys must sum to 1, "
    "so take it over the last dimension (dim=-1) of the (..., Tq, Tk) scores."
)
_INVERTED_MASK_HINT = (
    "the mask is inverted: True means \"may attend\", so hide the keys where the mask is False, "
    "e.g. scores.masked_fill(~mask, float('-inf'))."
)
_SCALED_BY_D_V_HINT = (
    "the scale used the value dimension d_v = v.shape[-1]; it must use d_k = q.shape[-1], "
    "the length of the vectors in each dot product."
)

_ATTENTION_MISTAKES = (
    Mistake(
        "return the output first and the weights second: return output, weights.",
        same_output_as(_weights_then_output),
    ),
    Mistake(
        "the second item you returned looks like the scores before the softmax; return the weights "
        "softmax(scores), whose rows sum to 1.",
        _second_item_is_the_scores,
    ),
    Mistake(
        "the mask had no effect: before the softmax, set the scores where the mask is False to "
        "float('-inf'), so that those keys get weight exactly 0.",
        same_output_as(_attention_variant(ignore_mask=True)),
    ),
    Mistake(_INVERTED_MASK_HINT, same_output_as(_attention_variant(invert_mask=True))),
    Mistake(_INVERTED_MASK_HINT, same_output_as(_attention_variant(invert_mask=True, masked_score=-1e9))),
    Mistake(
        "hidden scores were set to 0, but a score of 0 still gets weight exp(0) > 0 after the softmax, "
        "so masked keys are still attended to. Set them to float('-inf') instead.",
        same_output_as(_attention_variant(masked_score=0.0)),
    ),
    Mistake(
        "the weights of hidden keys were set to 0 after the softmax, so the rows no longer sum to 1. "
        "Mask the scores before the softmax, with float('-inf').",
        same_output_as(_mask_applied_after_softmax),
    ),
    Mistake(_NO_SCALING_HINT, same_output_as(_attention_variant(scale=lambda q, k, v: 1.0))),
    Mistake(_SCALED_BY_D_K_HINT, same_output_as(_attention_variant(scale=lambda q, k, v: q.shape[-1]))),
    Mistake(_MULTIPLIED_BY_SQRT_D_K_HINT,
            same_output_as(_attention_variant(scale=lambda q, k, v: 1 / math.sqrt(q.shape[-1])))),
    Mistake(_SCALED_BY_SECOND_DIMENSION_HINT,
            same_output_as(_attention_variant(scale=lambda q, k, v: math.sqrt(q.shape[1])))),
    Mistake(_SCALED_BY_D_V_HINT, same_output_as(_attention_variant(scale=lambda q, k, v: math.sqrt(v.shape[-1])))),
    Mistake(_SCALED_BY_D_V_HINT, same_output_as(_attention_variant(scale=lambda q, k, v: v.shape[-1]))),
    Mistake(
        _SCALED_BY_SEQUENCE_LENGTH_HINT,
        same_output_as(_attention_variant(scale=lambda q, k, v: math.sqrt(k.shape[-2]))),
    ),
    # Over the queries (dim=-2), or over a batch or head dimension counted from the front.
    *(
        Mistake(_WRONG_SOFTMAX_DIM_HINT, same_output_as(_attention_variant(softmax_dim=dim)))
        for dim in (-2, 0, 1)
    ),
)


def check_scaled_dot_product_attention(learner_fn: Any) -> CheckResult:
    """Check exercise 01: ``scaled_dot_product_attention(q, k, v, mask=None)`` -> ``(output, weights)``.

    The cases cover 2-D, 3-D and 4-D inputs, Tq != Tk and d_v != d_k, no
    mask, a causal mask, a padding mask and a random one. Both the output and
    the weights are compared. Hidden keys may be filled with -inf or with a
    large negative number such as -1e9: both give them weight 0.
    """
    return check_function(
        learner_fn,
        exercise="01.scaled_dot_product_attention",
        reference=scaled_dot_product_attention,
        cases=_ATTENTION_CASES,
        mistakes=_ATTENTION_MISTAKES,
    )


# ---------------------------------------------------------------------------
# Exercise 02.split_heads: (..., T, d_model) -> (..., n_heads, T, d_head), any number of leading dimensions
# ---------------------------------------------------------------------------


def _split_heads_reference(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """course_lib's split_heads for (B, T, d_model), generalised to any number of leading dimensions."""
    if x.dim() == 3:
        return split_heads(x, n_heads)
    return _heads_after_time(x, n_heads).transpose(-3, -2)


def _heads_after_time(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The features cut into heads, but the heads still after T: (..., T, n_heads, d_head)."""
    *leading, T, d_model = x.shape
    return x.reshape(*leading, T, n_heads, d_model // n_heads)


def _heads_without_transpose(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The right shape from a single reshape, which mixes positions into heads."""
    *leading, T, d_model = x.shape
    return x.reshape(*leading, n_heads, T, d_model // n_heads)


def _heads_with_strided_features(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Head h gets every n_heads-th feature (h, h + n_heads, ...) instead of a contiguous block."""
    *leading, T, d_model = x.shape
    return x.reshape(*leading, T, d_model // n_heads, n_heads).movedim(-1, -3)


def _heads_transposed(dim0: int, dim1: int) -> Callable:
    """(..., T, n_heads, d_head) with dimensions dim0 and dim1 swapped instead of T and the heads."""
    return lambda x, n_heads: _heads_after_time(x, n_heads).transpose(dim0, dim1)


def _counting_tensor(*shape: int) -> torch.Tensor:
    """Values 0, 1, 2, ... in order, so a preview shows which features ended up where."""
    return torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)


_SPLIT_HEADS_CASES = (
    Case("x (1, 3, 4) holding 0, 1, ..., 11, n_heads=2 -> (1, 2, 3, 2)", (_counting_tensor(1, 3, 4), 2)),
    Case("x (2, 5, 12), n_heads=3 -> (2, 3, 5, 4)", (_counting_tensor(2, 5, 12), 3)),
    Case("x (3, 4, 8), n_heads=1 -> (3, 1, 4, 8)", (_counting_tensor(3, 4, 8), 1)),
    Case("x (1, 3, 6), n_heads=6 -> (1, 6, 3, 1)", (_counting_tensor(1, 3, 6), 6)),
    Case("one sequence without a batch dimension: x (5, 6), n_heads=3 -> (3, 5, 2)", (_counting_tensor(5, 6), 3)),
    Case("two leading dimensions: x (2, 2, 3, 8), n_heads=4 -> (2, 2, 4, 3, 2)", (_counting_tensor(2, 2, 3, 8), 4)),
)

_SPLIT_HEADS_MISTAKES = (
    Mistake(
        "x.reshape(..., n_heads, T, d_head) has the right shape but the wrong contents: the features of one "
        "position are stored side by side, so this cuts across positions. First reshape to "
        "(..., T, n_heads, d_head), then swap T and the heads.",
        same_output_as(_heads_without_transpose),
    ),
    Mistake(
        "this is (..., T, n_heads, d_head): the heads are cut correctly but must come before T. "
        "Swap the two with .transpose(-3, -2).",
        same_output_as(_heads_after_time),
    ),
    Mistake(
        "transpose(1, 2) swaps T and the heads only when x has exactly one leading dimension (B). Count from "
        "the end, which is the same for every input: .transpose(-3, -2).",
        same_output_as(_heads_transposed(1, 2)),
    ),
    *(
        Mistake(
            "the wrong dimensions were swapped: after reshaping to (..., T, n_heads, d_head), swap T and the "
            "heads, the third and second dimensions from the end: .transpose(-3, -2).",
            same_output_as(_heads_transposed(dim0, dim1)),
        )
        for dim0, dim1 in ((0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (-2, -1), (-3, -1))
    ),
    Mistake(
        "head h must get the contiguous block of features h*d_head to (h+1)*d_head; it got every "
        "n_heads-th feature instead. Reshape to (..., T, n_heads, d_head), not (..., T, d_head, n_heads).",
        same_output_as(_heads_with_strided_features),
    ),
)


def check_split_heads(learner_fn: Any) -> CheckResult:
    """Check exercise 02: ``split_heads(x, n_heads)``, (..., T, d_model) -> (..., n_heads, T, d_head).

    The general version of the lesson's (B, T, d_model) case: any number of
    leading dimensions, none included. Inputs count 0, 1, 2, ... so that a
    wrong answer's preview shows which features went where. The cases
    include one head and d_head = 1. None has T == n_heads: there
    x.reshape(..., n_heads, T, d_head) and x.reshape(..., T, n_heads, d_head)
    are the same tensor, and the hint could not tell which of the two
    mistakes was made.
    """
    return check_function(
        learner_fn,
        exercise="02.split_heads",
        reference=_split_heads_reference,
        cases=_SPLIT_HEADS_CASES,
        mistakes=_SPLIT_HEADS_MISTAKES,
    )
