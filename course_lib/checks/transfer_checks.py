"""Checks of exercises 07 and 08: the loss at every position, and GPT's fine-tuning loss.

Both exercises are small functions whose mistakes are easy to make and hard
to see: a loss that is a little too high because padding was counted, or a
weight on the wrong term, still trains. Each known mistake is written here
as a small wrong implementation; when the learner's answer equals what it
returns, the hint names the mistake.

The cases are chosen so that the mistakes cannot be confused: B != T, so a
transposed answer has the wrong shape; some targets are -100 in every row;
one case has logits so far apart that log(softmax(x)) underflows to -inf;
the weight of the language-modelling loss is never 1, so putting it on the
wrong term changes the answer.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from course_lib.checks.framework import (Case, CheckResult, Mistake, check_function, contains_nan_or_inf,
                                        same_output_as, same_output_as_any_of)
from course_lib.objectives import IGNORE_INDEX, gpt_finetune_loss, per_position_loss

_GENERATOR = torch.Generator().manual_seed(7)


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_GENERATOR)


def _targets(B: int, T: int, V: int, ignored: list[tuple[int, int]]) -> torch.Tensor:
    """Random targets (B, T) in 0..V-1, with -100 at the ``ignored`` (row, position) pairs."""
    targets = torch.randint(0, V, (B, T), generator=_GENERATOR)
    for row, position in ignored:
        targets[row, position] = IGNORE_INDEX
    return targets


def _is_ignored(case: Case) -> torch.Tensor:
    return case.args[1] == IGNORE_INDEX


# ---------------------------------------------------------------------------
# Exercise 07.per_position_loss: cross-entropy at every position, 0 where the target is -100
# ---------------------------------------------------------------------------


def _loss_of_probabilities(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-p(target) instead of -log p(target)."""
    probabilities = torch.softmax(logits, dim=-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return torch.where(targets == IGNORE_INDEX, 0.0, -probabilities)


def _loss_with_clamped_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-100 replaced by 0 and then scored as if token 0 were the target."""
    return per_position_loss(logits, targets.clamp(min=0))


def _log_probability_not_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -per_position_loss(logits, targets)


def _zero_where_target_is_token_0(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss set to 0 where the target is token 0 (a real token), -100 scored as token 0."""
    return per_position_loss(logits, targets.clamp(min=0)).masked_fill(targets == 0, 0.0)


def _zero_where_clamped_target_is_0(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-100 replaced by 0 first, then the loss set to 0 wherever the target is now 0: token 0 loses its loss too."""
    return per_position_loss(logits, targets).masked_fill(targets == 0, 0.0)


def _smoothed(label_smoothing: float):
    """The cross-entropy with label smoothing: part of the target's weight spread over every token."""

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none",
                               label_smoothing=label_smoothing)

    return loss


def _nonzero_where_ignored(received: Any, case: Case) -> bool:
    """The answer is right at the predicted positions but not 0 where the target is -100."""
    expected = per_position_loss(*case.args)
    ignored = _is_ignored(case)
    right_elsewhere = torch.allclose(received[~ignored].float(), expected[~ignored], atol=1e-4, rtol=1e-3)
    return right_elsewhere and bool((received[ignored] != 0).any())


def _one_number(received: Any, case: Case) -> bool:
    return isinstance(received, torch.Tensor) and received.dim() == 0


def _one_value_per_row_or_position(received: Any, case: Case) -> bool:
    B, T = case.args[1].shape
    return isinstance(received, torch.Tensor) and tuple(received.shape) in ((B,), (T,))


def _flat(received: Any, case: Case) -> bool:
    return isinstance(received, torch.Tensor) and tuple(received.shape) == (case.args[1].numel(),)


def _transposed(received: Any, case: Case) -> bool:
    B, T = case.args[1].shape
    return isinstance(received, torch.Tensor) and tuple(received.shape) == (T, B)


_PER_POSITION_CASES = (
    Case("logits (2, 5, 7), targets (2, 5), no -100", (_randn(2, 5, 7), _targets(2, 5, 7, []))),
    Case("logits (3, 4, 6), targets (3, 4) with -100 at the end of rows 1 and 2 (padding)",
         (_randn(3, 4, 6), _targets(3, 4, 6, [(1, 3), (2, 2), (2, 3)]))),
    Case("logits (2, 6, 5), targets (2, 6) with -100 in the middle (BERT: only masked positions count)",
         (_randn(2, 6, 5), _targets(2, 6, 5, [(0, 0), (0, 2), (0, 5), (1, 1), (1, 4)]))),
    Case("confident logits (2, 3, 4) scaled by 200, targets (2, 3) with one -100",
         (200 * _randn(2, 3, 4), _targets(2, 3, 4, [(0, 1)])), atol=1e-3),
)

_PER_POSITION_MISTAKES = (
    Mistake("you returned one number: the exercise asks for the loss at every position, shape (B, T). "
            "Do not average or sum; with F.cross_entropy use reduction='none'.", _one_number),
    Mistake("the answer has one value per row or per position: the loss was averaged or summed over a "
            "dimension. Keep both, shape (B, T).", _one_value_per_row_or_position),
    Mistake("the answer is flat, shape (B * T,): reshape it to the shape of targets, (B, T).", _flat),
    Mistake("the answer is transposed, (T, B): row b must hold the losses of sequence b, shape (B, T).",
            _transposed),
    Mistake("log(softmax(x)) underflowed to -inf for confident logits. Use torch.log_softmax (or "
            "F.cross_entropy), which computes the log of the probabilities without ever forming them.",
            contains_nan_or_inf),
    Mistake("positions whose target is -100 must get a loss of exactly 0: nothing is predicted there. "
            "Replacing -100 by a real token id (clamp) scores a token nobody asked for; set those "
            "positions to 0 afterwards, or pass ignore_index=-100 to F.cross_entropy.",
            _nonzero_where_ignored),
    Mistake("the loss used the probability of the target, -p, instead of its log: the cross-entropy is "
            "-log p(target). Use torch.log_softmax, not torch.softmax.", same_output_as(_loss_of_probabilities)),
    Mistake("the values are the log-probabilities of the targets, which are negative: the loss is their "
            "negative, -log p(target).", same_output_as(_log_probability_not_loss)),
    Mistake("the loss was set to 0 where the target is token 0, a real token the model must predict; the "
            "positions to zero are those whose target is -100: losses.masked_fill(targets == -100, 0.0).",
            same_output_as_any_of(_zero_where_target_is_token_0, _zero_where_clamped_target_is_0)),
    Mistake("label smoothing was applied: the exercise asks for the plain cross-entropy, -log p(target). "
            "Leave out label_smoothing (it is a training trick, not the loss we measure).",
            same_output_as_any_of(*(_smoothed(eps) for eps in (0.1, 0.05, 0.2)))),
)


def check_per_position_loss(learner_fn: Any) -> CheckResult:
    """Check exercise 07: ``per_position_loss(logits, targets)``.

    logits (B, T, V) and targets (B, T) -> the cross-entropy at every
    position (B, T), 0 where the target is -100. The cases have B != T,
    -100 at the end of rows (padding) and in the middle (BERT's unmasked
    positions), and very confident logits.
    """
    return check_function(
        learner_fn,
        exercise="07.per_position_loss",
        reference=per_position_loss,
        cases=_PER_POSITION_CASES,
        mistakes=_PER_POSITION_MISTAKES,
    )


# ---------------------------------------------------------------------------
# Exercise 08.gpt_finetune_loss: task cross-entropy + lm_weight * next-token cross-entropy
# ---------------------------------------------------------------------------


def _weight_on_the_task(task_logits, labels, lm_logits, lm_targets, lm_weight):
    return lm_weight * F.cross_entropy(task_logits, labels) + _lm_loss(lm_logits, lm_targets)


def _no_weight(task_logits, labels, lm_logits, lm_targets, lm_weight):
    return F.cross_entropy(task_logits, labels) + _lm_loss(lm_logits, lm_targets)


def _convex_mix(task_logits, labels, lm_logits, lm_targets, lm_weight):
    return (1 - lm_weight) * F.cross_entropy(task_logits, labels) + lm_weight * _lm_loss(lm_logits, lm_targets)


def _task_only(task_logits, labels, lm_logits, lm_targets, lm_weight):
    return F.cross_entropy(task_logits, labels)


def _padding_as_token_zero(task_logits, labels, lm_logits, lm_targets, lm_weight):
    lm = _lm_loss(lm_logits, lm_targets.clamp(min=0))
    return F.cross_entropy(task_logits, labels) + lm_weight * lm


def _padding_in_the_average(task_logits, labels, lm_logits, lm_targets, lm_weight):
    """Zero loss at padding, but the average divides by every position, padding included."""
    lm = per_position_loss(lm_logits, lm_targets).mean()
    return F.cross_entropy(task_logits, labels) + lm_weight * lm


def _targets_shifted_again(task_logits, labels, lm_logits, lm_targets, lm_weight):
    lm = _lm_loss(lm_logits[:, :-1], lm_targets[:, 1:])
    return F.cross_entropy(task_logits, labels) + lm_weight * lm


def _targets_shifted_the_wrong_way(task_logits, labels, lm_logits, lm_targets, lm_weight):
    """The logits of positions 1.. scored against the targets of positions ..T-2: each one a step behind."""
    lm = _lm_loss(lm_logits[:, 1:], lm_targets[:, :-1])
    return F.cross_entropy(task_logits, labels) + lm_weight * lm


def _mean_of_row_means(task_logits, labels, lm_logits, lm_targets, lm_weight):
    """The language-modelling loss averaged in each row over its real tokens, then over the rows."""
    real = (lm_targets != IGNORE_INDEX).sum(dim=1)
    lm = (per_position_loss(lm_logits, lm_targets).sum(dim=1) / real).mean()
    return F.cross_entropy(task_logits, labels) + lm_weight * lm


def _lm_loss_summed(task_logits, labels, lm_logits, lm_targets, lm_weight):
    lm = per_position_loss(lm_logits, lm_targets).sum()
    return F.cross_entropy(task_logits, labels) + lm_weight * lm


def _task_loss_summed(task_logits, labels, lm_logits, lm_targets, lm_weight):
    return F.cross_entropy(task_logits, labels, reduction="sum") + lm_weight * _lm_loss(lm_logits, lm_targets)


def _lm_loss(lm_logits: torch.Tensor, lm_targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(lm_logits.flatten(0, 1), lm_targets.flatten(), ignore_index=IGNORE_INDEX)


def _finetune_case(description: str, B: int, C: int, T: int, V: int, padding: list[tuple[int, int]],
                   lm_weight: float) -> Case:
    return Case(description, (_randn(B, C), torch.randint(0, C, (B,), generator=_GENERATOR), _randn(B, T, V),
                              _targets(B, T, V, padding), lm_weight))


_FINETUNE_CASES = (
    _finetune_case("B=3 stories, 2 classes, T=5, V=9, lm_weight=0.5, no padding", 3, 2, 5, 9, [], 0.5),
    _finetune_case("B=4, 2 classes, T=6, V=8, lm_weight=0.5, rows padded with -100 at the end",
                   4, 2, 6, 8, [(1, 5), (2, 4), (2, 5), (3, 3), (3, 4), (3, 5)], 0.5),
    _finetune_case("B=2, 3 classes, T=4, V=7, lm_weight=0.25, one row padded", 2, 3, 4, 7, [(0, 2), (0, 3)], 0.25),
    _finetune_case("B=3, 2 classes, T=5, V=6, lm_weight=0.0 (the task loss alone)", 3, 2, 5, 6, [(2, 4)], 0.0),
    _finetune_case("B=2, 2 classes, T=3, V=5, lm_weight=2.0", 2, 2, 3, 5, [(1, 2)], 2.0),
)

_FINETUNE_MISTAKES = (
    Mistake("the weight multiplies the task loss; it belongs to the language-modelling loss: "
            "task_loss + lm_weight * lm_loss.", same_output_as(_weight_on_the_task)),
    Mistake("the weights are (1 - lm_weight) and lm_weight; the recipe keeps the task loss whole: "
            "task_loss + lm_weight * lm_loss.", same_output_as(_convex_mix)),
    Mistake("the targets are already aligned with the logits (lm_targets[:, t] is the token that follows "
            "position t): do not shift them again.", same_output_as(_targets_shifted_again)),
    Mistake("padding was counted in the language-modelling loss: average over the positions whose target "
            "is not -100 only (F.cross_entropy(..., ignore_index=-100) does it).",
            same_output_as(_padding_as_token_zero)),
    Mistake("padding was counted in the language-modelling loss: average over the positions whose target "
            "is not -100 only (F.cross_entropy(..., ignore_index=-100) does it).",
            same_output_as(_padding_in_the_average)),
    Mistake("the targets were shifted the wrong way: lm_logits[:, 1:] against lm_targets[:, :-1] scores each "
            "position against the token before it. The targets are already aligned: score lm_logits against "
            "lm_targets as they are.", same_output_as(_targets_shifted_the_wrong_way)),
    Mistake("the language-modelling loss is a mean of per-row means, so a short row's tokens weigh more: take one "
            "mean over every real token of the batch, F.cross_entropy(lm_logits.flatten(0, 1), "
            "lm_targets.flatten(), ignore_index=-100).", same_output_as(_mean_of_row_means)),
    Mistake("the language-modelling loss was summed over the tokens; average it over the real tokens (the "
            "default reduction='mean' of F.cross_entropy with ignore_index=-100).", same_output_as(_lm_loss_summed)),
    Mistake("the task loss was summed over the batch; average it, F.cross_entropy(task_logits, labels) with its "
            "default reduction='mean'.", same_output_as(_task_loss_summed)),
    Mistake("lm_weight was not used: the language-modelling loss is multiplied by it.", same_output_as(_no_weight)),
    Mistake("the language-modelling loss is missing: add lm_weight times the next-token cross-entropy of "
            "lm_logits against lm_targets.", same_output_as(_task_only)),
)


def check_gpt_finetune_loss(learner_fn: Any) -> CheckResult:
    """Check exercise 08: ``gpt_finetune_loss(task_logits, labels, lm_logits, lm_targets, lm_weight)``.

    task_logits (B, C), labels (B,), lm_logits (B, T, V), lm_targets (B, T)
    already aligned, -100 for padding -> one number, the task cross-entropy
    plus lm_weight times the next-token cross-entropy. The cases use
    weights 0.5, 0.25, 0 and 2, padded and unpadded rows.
    """
    return check_function(
        learner_fn,
        exercise="08.gpt_finetune_loss",
        reference=gpt_finetune_loss,
        cases=_FINETUNE_CASES,
        mistakes=_FINETUNE_MISTAKES,
    )
