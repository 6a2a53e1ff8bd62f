"""Checks of exercise 10: an answer's log-probability, the reward model's loss, DPO's loss.

All three return numbers that still train when they are a little wrong, so
each known mistake is written here as a small wrong implementation, and the
cases are built so that the mistakes cannot be confused:

* ``sequence_log_prob``: B, T and V all differ, masks cover different
  stretches of each row (an answer after its prompt, padding after it, a row
  with nothing to count), and one case has confident logits for which
  ``log(softmax(x))`` underflows to ``-inf``.
* ``preference_loss``: margins of both signs, rewards near 1000 (``exp``
  overflows) with a small margin, and margins of ±200: ``log(sigmoid(-200))``
  is ``-inf``, but the right loss of that pair is about 200.
* ``dpo_loss``: β is 0.1 by default, 0.5 and 2 when given, so every misuse
  of β shows; one case starts where the policy is the reference (the loss
  is ln 2, whatever β), one has margins of about ±140 once β has scaled them.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from course_lib.alignment import dpo_loss, preference_loss, sequence_log_prob
from course_lib.checks.framework import (Case, CheckResult, Mistake, check_function, contains_nan_or_inf,
                                          same_output_as, same_output_as_any_of)

_GENERATOR = torch.Generator().manual_seed(10)


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_GENERATOR)


# ---------------------------------------------------------------------------
# Exercise 10.sequence_log_prob: sum of log p(target) where the mask is True
# ---------------------------------------------------------------------------


def _picked(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """values (B, T, V) at each position's target: (B, T)."""
    return values.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _raw_logits(logits, targets, loss_mask):
    return (_picked(logits, targets) * loss_mask).sum(dim=1)


def _probabilities(logits, targets, loss_mask):
    return (_picked(logits.softmax(dim=-1), targets) * loss_mask).sum(dim=1)


def _mask_ignored(logits, targets, loss_mask):
    return _picked(logits.log_softmax(dim=-1), targets).sum(dim=1)


def _mask_inverted(logits, targets, loss_mask):
    return sequence_log_prob(logits, targets, ~loss_mask)


def _mean_over_the_mask(logits, targets, loss_mask):
    return sequence_log_prob(logits, targets, loss_mask) / loss_mask.sum(dim=1)


def _mean_over_every_position(logits, targets, loss_mask):
    return sequence_log_prob(logits, targets, loss_mask) / loss_mask.shape[1]


def _shifted_again(logits, targets, loss_mask):
    """Logits of positions 0..T-2 against targets 1..T-1, the mask cut like the targets."""
    return sequence_log_prob(logits[:, :-1], targets[:, 1:], loss_mask[:, 1:])


def _shifted_again_mask_of_the_logits(logits, targets, loss_mask):
    return sequence_log_prob(logits[:, :-1], targets[:, 1:], loss_mask[:, :-1])


def _normalised_over_positions(logits, targets, loss_mask):
    return (_picked(logits.log_softmax(dim=1), targets) * loss_mask).sum(dim=1)


def _normalised_over_the_batch(logits, targets, loss_mask):
    return (_picked(logits.log_softmax(dim=0), targets) * loss_mask).sum(dim=1)


def _negated(logits, targets, loss_mask):
    return -sequence_log_prob(logits, targets, loss_mask)


def _one_value_per_position(received: Any, case: Case) -> bool:
    return isinstance(received, torch.Tensor) and received.shape == case.args[1].shape


def _one_number(received: Any, case: Case) -> bool:
    return isinstance(received, torch.Tensor) and received.dim() == 0


def _mask(rows: list[str]) -> torch.Tensor:
    """A (B, T) bool mask from strings such as "..###": '#' is True."""
    return torch.tensor([[symbol == "#" for symbol in row] for row in rows])


def _sequence_case(description: str, rows: list[str], V: int, scale: float = 1.0, **tolerances: float) -> Case:
    B, T = len(rows), len(rows[0])
    targets = torch.randint(0, V, (B, T), generator=_GENERATOR)
    return Case(description, (scale * _randn(B, T, V), targets, _mask(rows)), **tolerances)


_SEQUENCE_CASES = (
    _sequence_case("logits (2, 5, 7); each row's answer after its prompt: mask [..###], [...##]",
                   ["..###", "...##"], V=7),
    _sequence_case("logits (3, 6, 4); answers followed by padding: mask [.###..], [..####], [######]",
                   [".###..", "..####", "######"], V=4),
    _sequence_case("logits (4, 3, 5); one row with nothing to count (its sum is 0)",
                   ["###", ".#.", "...", "#.#"], V=5),
    _sequence_case("confident logits (2, 4, 6) scaled by 200; mask [.###], [##..]",
                   [".###", "##.."], V=6, scale=200.0, atol=1e-3),
)

_SEQUENCE_MISTAKES = (
    Mistake("you returned one value per position, shape (B, T): add them up along each row, .sum(dim=1), "
            "for one log-probability per answer, shape (B,).", _one_value_per_position),
    Mistake("you returned one number: sum along each row only, .sum(dim=1), for one log-probability per "
            "answer, shape (B,).", _one_number),
    Mistake("log(softmax(x)) underflowed to -inf for confident logits (and -inf times a mask's 0 is NaN). "
            "Use torch.log_softmax, which never forms the tiny probabilities.", contains_nan_or_inf),
    Mistake("these are the raw logits at the targets: a logit is not a log-probability. Take "
            "torch.log_softmax(logits, dim=-1) first, then pick the targets.", same_output_as(_raw_logits)),
    Mistake("you added probabilities: the probability of a sequence is the product of its tokens' "
            "probabilities, so its log is the sum of their log-probabilities. Use torch.log_softmax, not "
            "torch.softmax.", same_output_as(_probabilities)),
    Mistake("every position was counted: only the positions where loss_mask is True (the answer's tokens) "
            "belong in the sum. Set the others to 0 before adding up.", same_output_as(_mask_ignored)),
    Mistake("the positions where loss_mask is False were counted, and the True ones left out: the mask is "
            "True on the tokens that count.", same_output_as(_mask_inverted)),
    Mistake("you averaged the log-probabilities: the log-probability of a sequence is their sum (the chain "
            "rule), so a longer answer has a lower one. Use .sum(dim=1), not .mean or a division.",
            same_output_as_any_of(_mean_over_the_mask, _mean_over_every_position)),
    Mistake("the targets were shifted by one: here they are already aligned with the logits "
            "(logits[:, t] scores targets[:, t]). Do not cut off a position.",
            same_output_as_any_of(_shifted_again, _shifted_again_mask_of_the_logits)),
    Mistake("the log-softmax ran over the wrong dimension: the V tokens of one position compete with each "
            "other, not the positions (dim=1) or the rows (dim=0). Use dim=-1.",
            same_output_as_any_of(_normalised_over_positions, _normalised_over_the_batch)),
    Mistake("these are losses, -log p, which are positive: a log-probability is at most 0. If you used "
            "F.cross_entropy, negate it.", same_output_as(_negated)),
)


def check_sequence_log_prob(learner_fn: Any) -> CheckResult:
    """Check exercise 10: ``sequence_log_prob(logits, targets, loss_mask)``.

    logits (B, T, V) aligned with targets (B, T), loss_mask (B, T) bool ->
    (B,), the sum of log p(targets[b, t]) over the positions where the mask
    is True. The cases have B, T and V all different, masks on prompts'
    answers, padding, an empty row, and very confident logits.
    """
    return check_function(
        learner_fn,
        exercise="10.sequence_log_prob",
        reference=sequence_log_prob,
        cases=_SEQUENCE_CASES,
        mistakes=_SEQUENCE_MISTAKES,
    )


# ---------------------------------------------------------------------------
# Exercise 10.preference_loss: mean of -log sigmoid(r_chosen - r_rejected)
# ---------------------------------------------------------------------------


def _swapped(chosen_rewards, rejected_rewards):
    return -F.logsigmoid(rejected_rewards - chosen_rewards).mean()


def _summed(chosen_rewards, rejected_rewards):
    return -F.logsigmoid(chosen_rewards - rejected_rewards).sum()


def _without_the_minus(chosen_rewards, rejected_rewards):
    return F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def _probability_not_its_log(chosen_rewards, rejected_rewards):
    return -torch.sigmoid(chosen_rewards - rejected_rewards).mean()


def _each_answer_on_its_own(chosen_rewards, rejected_rewards):
    """Each reward as a yes/no logit: chosen should be 'good', rejected 'bad', whatever the other."""
    return (-F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards)).mean()


def _one_loss_per_pair(received: Any, case: Case) -> bool:
    return isinstance(received, torch.Tensor) and received.dim() == 1 and len(received) == len(case.args[0])


_PREFERENCE_CASES = (
    Case("4 pairs, rewards from a standard normal", (_randn(4), _randn(4))),
    Case("3 pairs, margins 2, -1 and 0.5", (torch.tensor([1.0, -0.5, 3.0]), torch.tensor([-1.0, 0.5, 2.5]))),
    Case("2 pairs whose rewards are both near 1000, margins 0.5 and -1.5",
         (torch.tensor([1000.5, 999.0]), torch.tensor([1000.0, 1000.5]))),
    Case("3 pairs, margins 2, -200 and 200 (right answer about 66.7)",
         (torch.tensor([3.0, -100.0, 100.0]), torch.tensor([1.0, 100.0, -100.0]))),
    Case("1 pair, margin 0.3", (torch.tensor([0.8]), torch.tensor([0.5]))),
)

_PREFERENCE_MISTAKES = (
    Mistake("you returned one loss per pair, shape (B,): the loss is their mean, one number.", _one_loss_per_pair),
    Mistake("log(sigmoid(x)) is -inf once sigmoid(x) rounds to 0 (x below about -104 in float32), and "
            "log(1 + exp(-x)) overflows the other way. Use F.logsigmoid(x) (or F.softplus(-x) for "
            "-log sigmoid(x)), which stays finite for any margin.", contains_nan_or_inf),
    Mistake("chosen and rejected are swapped: the loss is small when the chosen answer's reward is ahead, "
            "-log sigmoid(chosen_rewards - rejected_rewards). (F.softplus(x) is -log sigmoid(-x).)",
            same_output_as(_swapped)),
    Mistake("you summed over the pairs: take the mean, so that the loss does not grow with the batch.",
            same_output_as(_summed)),
    Mistake("the minus is missing: log sigmoid is negative, and the loss, its negative, is positive. "
            "Minimising log sigmoid would push the chosen answer behind.", same_output_as(_without_the_minus)),
    Mistake("you used the probability sigmoid(margin) instead of its log: Bradley-Terry's loss is the "
            "negative log-likelihood, -log sigmoid(margin).", same_output_as(_probability_not_its_log)),
    Mistake("each answer was judged on its own: only the difference of the two rewards matters, "
            "-log sigmoid(chosen_rewards - rejected_rewards).", same_output_as(_each_answer_on_its_own)),
)


def check_preference_loss(learner_fn: Any) -> CheckResult:
    """Check exercise 10: ``preference_loss(chosen_rewards, rejected_rewards)``.

    (B,) rewards of the chosen and of the rejected answers -> one number,
    the mean of -log sigmoid(chosen - rejected). The cases have margins of
    both signs, rewards near 1000, margins of ±200 and a single pair.
    """
    return check_function(
        learner_fn,
        exercise="10.preference_loss",
        reference=preference_loss,
        cases=_PREFERENCE_CASES,
        mistakes=_PREFERENCE_MISTAKES,
    )


# ---------------------------------------------------------------------------
# Exercise 10.dpo_loss: Bradley-Terry on beta * (policy - reference) log-ratios
# ---------------------------------------------------------------------------


# The wrong implementations shorten the four arguments: pc, pr for the policy's chosen and rejected
# answers, rc, rr for the reference's.


def _dpo_from_margin(margin: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(margin).mean()


def _reference_forgotten(pc, pr, rc, rr, beta=0.1):
    return _dpo_from_margin(beta * (pc - pr))


def _reference_added(pc, pr, rc, rr, beta=0.1):
    """The reference's margin added instead of subtracted (or the two references swapped)."""
    return _dpo_from_margin(beta * ((pc + rc) - (pr + rr)))


def _ratio_of_log_probs(pc, pr, rc, rr, beta=0.1):
    return _dpo_from_margin(beta * (pc / rc - pr / rr))


def _margin_negated(pc, pr, rc, rr, beta=0.1):
    """Chosen and rejected swapped, or reference minus policy: the same margin with the other sign."""
    return _dpo_from_margin(-beta * ((pc - rc) - (pr - rr)))


def _beta_forgotten(pc, pr, rc, rr, beta=0.1):
    return _dpo_from_margin((pc - rc) - (pr - rr))


def _beta_on_the_chosen_only(pc, pr, rc, rr, beta=0.1):
    return _dpo_from_margin(beta * (pc - rc) - (pr - rr))


def _beta_on_the_rejected_only(pc, pr, rc, rr, beta=0.1):
    return _dpo_from_margin((pc - rc) - beta * (pr - rr))


def _beta_on_the_policy_only(pc, pr, rc, rr, beta=0.1):
    """``beta * pc - rc``: the parentheses around the difference forgotten."""
    return _dpo_from_margin((beta * pc - rc) - (beta * pr - rr))


def _beta_outside_the_log_sigmoid(pc, pr, rc, rr, beta=0.1):
    return beta * _dpo_from_margin((pc - rc) - (pr - rr))


def _divided_by_beta(pc, pr, rc, rr, beta=0.1):
    return _dpo_from_margin(((pc - rc) - (pr - rr)) / beta)


def _beta_fixed_at_its_default(pc, pr, rc, rr, beta=0.1):
    return dpo_loss(pc, pr, rc, rr)


def _dpo_summed(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).sum()


def _dpo_without_the_minus(pc, pr, rc, rr, beta=0.1):
    return -dpo_loss(pc, pr, rc, rr, beta)


def _mean_margin(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid((beta * ((pc - rc) - (pr - rr))).mean())


def _log_probs(B: int) -> torch.Tensor:
    """(B,) sequence log-probabilities of a plausible size: about -10, give or take a few."""
    return -10.0 + 3.0 * _randn(B)


def _dpo_case(description: str, B: int, **kwargs: float) -> Case:
    return Case(description, tuple(_log_probs(B) for _ in range(4)), kwargs)


_POLICY_IS_REFERENCE = (_log_probs(3), _log_probs(3))  # the chosen and the rejected answers' log-probabilities

_DPO_CASES = (
    _dpo_case("4 pairs, beta left at its default 0.1", 4),
    _dpo_case("3 pairs, beta=0.5", 3, beta=0.5),
    _dpo_case("5 pairs, beta=2.0", 5, beta=2.0),
    Case("3 pairs, the policy is still the reference, beta=0.5: the loss is ln 2",
         (*_POLICY_IS_REFERENCE, *_POLICY_IS_REFERENCE), {"beta": 0.5}),
    Case("2 pairs, beta=0.5, log-ratio margins of +275 and -275 (right answer about 68.8)",
         (torch.tensor([-5.0, -300.0]), torch.tensor([-300.0, -5.0]), torch.tensor([-40.0, -60.0]),
          torch.tensor([-60.0, -40.0])), {"beta": 0.5}),
)

_DPO_MISTAKES = (
    Mistake("you returned one loss per pair, shape (B,): the loss is their mean, one number.", _one_loss_per_pair),
    Mistake("log(sigmoid(x)) is -inf once sigmoid(x) rounds to 0 (x below about -104 in float32). Use "
            "F.logsigmoid(x), or your preference_loss, which stay finite for any margin.", contains_nan_or_inf),
    Mistake("the reference is missing: DPO's reward is the policy's log-probability minus the reference's, "
            "beta * (policy_chosen_logps - reference_chosen_logps), and the same for the rejected answer.",
            same_output_as(_reference_forgotten)),
    Mistake("the reference was added, not subtracted: each answer's reward is beta * (policy logp - "
            "reference logp), the log of the ratio pi / pi_ref, for the chosen and the rejected answer alike.",
            same_output_as(_reference_added)),
    Mistake("you divided the log-probabilities: the log of a ratio is a difference, "
            "log(pi / pi_ref) = policy_logps - reference_logps.", same_output_as(_ratio_of_log_probs)),
    Mistake("the margin has the wrong sign: it is the chosen answer's reward minus the rejected one's, each "
            "reward policy minus reference, beta * ((pi_c - ref_c) - (pi_r - ref_r)).",
            same_output_as(_margin_negated)),
    Mistake("beta is not used: the loss is -log sigmoid(beta * margin), and the cases give beta=0.5 and 2.",
            same_output_as(_beta_forgotten)),
    Mistake("beta is always 0.1: use the beta argument (0.1 is only its default).",
            same_output_as(_beta_fixed_at_its_default)),
    Mistake("beta multiplies only part of the margin: it scales both rewards, each a whole difference "
            "policy minus reference. Mind the parentheses: beta * ((pi_c - ref_c) - (pi_r - ref_r)).",
            same_output_as_any_of(_beta_on_the_chosen_only, _beta_on_the_rejected_only, _beta_on_the_policy_only)),
    Mistake("beta multiplies the loss, not the margin: it belongs inside the sigmoid, "
            "-log sigmoid(beta * margin). Outside, it only rescales the loss; inside, it decides how far the "
            "policy may move from the reference.", same_output_as(_beta_outside_the_log_sigmoid)),
    Mistake("you divided by beta: multiply. A small beta must make small rewards, so that the policy "
            "has to move far from the reference before the loss is satisfied.", same_output_as(_divided_by_beta)),
    Mistake("you summed over the pairs: take the mean, so that the loss does not grow with the batch.",
            same_output_as(_dpo_summed)),
    Mistake("the minus is missing: the loss is -log sigmoid(beta * margin), which is positive.",
            same_output_as(_dpo_without_the_minus)),
    Mistake("you averaged the margins before the log-sigmoid: compute one loss per pair, then take the "
            "mean of the losses.", same_output_as(_mean_margin)),
)


def check_dpo_loss(learner_fn: Any) -> CheckResult:
    """Check exercise 10: ``dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
    reference_rejected_logps, beta=0.1)``.

    Four (B,) sequence log-probabilities -> one number, the mean of
    -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))). The cases use
    the default beta and beta = 0.5 and 2, a policy equal to its reference
    (loss ln 2), and margins of about ±140 once beta has scaled them.
    """
    return check_function(
        learner_fn,
        exercise="10.dpo_loss",
        reference=dpo_loss,
        cases=_DPO_CASES,
        mistakes=_DPO_MISTAKES,
    )
