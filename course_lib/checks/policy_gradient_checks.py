"""Checks of exercise 10's policy gradients: REINFORCE with a KL penalty, and PPO's clipped surrogate.

A policy-gradient loss is read through its gradient: REINFORCE's loss has
the same value whether or not the shaped reward is taken as a constant, yet
only one of the two gradients trains the policy. The grader sees nothing but
the values a learner's function returned, so each case makes the gradient
show in a value: the check calls the function once, moves ``logprobs`` one
step against the gradient of the loss it returned, and calls it again. The
pair (loss, loss after the step) must match the reference's pair; a loss
with a wrong gradient, or none, lands somewhere else after the step.

* ``policy_gradient_loss``: masks of different lengths after a prompt and
  before padding (so a mean and a sum, or the mask forgotten, differ),
  log-probabilities that differ from the reference's (so the KL's sign
  shows), β of 0.1 and 0.5 and a baseline that is a number or one per
  answer (so a baseline left out shows).
* ``ppo_clip_loss``: ratios inside and outside 1 ± clip, advantages of both
  signs, so that each of the four corners of the clipped objective is met
  (two of them clip and pass no gradient), masks of different lengths, and
  clip at its default 0.2 and at 0.1 and 0.3.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from course_lib.alignment import policy_gradient_loss, ppo_clip_loss
from course_lib.checks.framework import Case, CheckResult, Mistake, check_function, describe_difference, \
    same_output_as_any_of

_GENERATOR = torch.Generator().manual_seed(1010)
# How far logprobs move against the gradient between the two calls: far enough that a wrong gradient
# changes the second loss by much more than the tolerance.
_STEP = 2.0


def _mask(rows: list[str]) -> torch.Tensor:
    """A (B, T) bool mask from strings such as "..###": '#' is an answer token."""
    return torch.tensor([[symbol == "#" for symbol in row] for row in rows])


def _log_probs(B: int, T: int) -> torch.Tensor:
    """(B, T) plausible log-probabilities of sampled tokens, from about -3 to -0.1."""
    return -0.1 - 2.9 * torch.rand(B, T, generator=_GENERATOR)


def _gradient(loss: Any, logprobs: torch.Tensor) -> torch.Tensor:
    """d loss / d logprobs; zeros for a loss that is not a number with a gradient to logprobs."""
    if isinstance(loss, torch.Tensor) and loss.requires_grad and loss.numel() == 1:
        (gradient,) = torch.autograd.grad(loss.sum(), logprobs, allow_unused=True)
        if gradient is not None:
            return gradient
    return torch.zeros_like(logprobs)


def _loss_and_next_loss(loss_fn: Callable) -> Callable:
    """``loss_fn`` called twice: as given, then with logprobs moved one step against its gradient."""
    def run(logprobs: torch.Tensor, *rest: Any, **kwargs: Any) -> tuple[Any, Any]:
        loss = loss_fn(logprobs, *rest, **kwargs)
        moved = (logprobs.detach() - _STEP * _gradient(loss, logprobs)).requires_grad_()
        return loss, loss_fn(moved, *rest, **kwargs)
    return run


def _judged_against(reference: Callable) -> Callable[[Any, Case], str | None]:
    """A ``verify`` judge of (loss, loss after one step): which of the two is off, in the learner's words."""
    expected_pair = _loss_and_next_loss(reference)

    def verify(received: Any, case: Case) -> str | None:
        expected_loss, expected_next = case.call(expected_pair)
        loss, next_loss = received
        difference = describe_difference(expected_loss, loss, atol=case.atol, rtol=case.rtol)
        if difference is not None:
            return f"the loss: {difference}"
        difference = describe_difference(expected_next, next_loss, atol=case.atol, rtol=case.rtol)
        if difference is not None:
            return (f"the loss is right, but its gradient is not: after one step of {_STEP} against it, "
                    f"the loss: {difference}")
        return None

    return verify


def _shows(*wrong_fns: Callable) -> Callable[[Any, Case], bool]:
    """A ``shows_in`` test on the (loss, loss after one step) pairs of the wrong functions."""
    return same_output_as_any_of(*(_loss_and_next_loss(wrong_fn) for wrong_fn in wrong_fns))


def _not_one_number(received: Any, case: Case) -> bool:
    loss = received[0]
    return isinstance(loss, torch.Tensor) and loss.dim() > 0 and loss.numel() > 1


def _check(learner_fn: Any, exercise: str, reference: Callable, cases: tuple[Case, ...],
           mistakes: tuple[Mistake, ...]) -> CheckResult:
    """``check_function`` on the learner's (loss, loss after one step), the learner's own object when not callable."""
    wrapped = _loss_and_next_loss(learner_fn) if callable(learner_fn) else learner_fn
    return check_function(wrapped, exercise=exercise, cases=cases, verify=_judged_against(reference),
                          mistakes=mistakes)


# ---------------------------------------------------------------------------
# Exercise 10.policy_gradient_loss: REINFORCE on the reward less a KL penalty
# ---------------------------------------------------------------------------

# The wrong implementations shorten the arguments: lp, ref, mask, r, beta, b.


def _answer_sums(lp, ref, mask):
    """(B,) Σ_t mask·lp and (B,) Σ_t mask·(lp − ref)."""
    return (lp * mask).sum(dim=1), ((lp - ref) * mask).sum(dim=1)


def _reinforce(log_prob, log_ratio, r, beta, b):
    return -((r - beta * log_ratio.detach() - b) * log_prob).mean()


def _shaped_with_gradient(lp, ref, mask, r, beta, b):
    log_prob, log_ratio = _answer_sums(lp, ref, mask)
    return -((r - beta * log_ratio - b) * log_prob).mean()


def _kl_added(lp, ref, mask, r, beta, b):
    log_prob, log_ratio = _answer_sums(lp, ref, mask)
    return _reinforce(log_prob, -log_ratio, r, beta, b)


def _baseline_ignored(lp, ref, mask, r, beta, b):
    log_prob, log_ratio = _answer_sums(lp, ref, mask)
    return _reinforce(log_prob, log_ratio, r, beta, 0.0)


def _token_means(lp, ref, mask, over_every_position: bool = False):
    count = mask.shape[1] if over_every_position else mask.sum(dim=1).clamp(min=1)
    log_prob, log_ratio = _answer_sums(lp, ref, mask)
    return log_prob / count, log_ratio / count


def _mean_over_tokens(lp, ref, mask, r, beta, b):
    log_prob, log_ratio = _token_means(lp, ref, mask)
    return _reinforce(log_prob, log_ratio, r, beta, b)


def _mean_over_tokens_of_the_log_prob(lp, ref, mask, r, beta, b):
    mean_log_prob, _ = _token_means(lp, ref, mask)
    return _reinforce(mean_log_prob, _answer_sums(lp, ref, mask)[1], r, beta, b)


def _mean_over_tokens_of_the_kl(lp, ref, mask, r, beta, b):
    _, mean_log_ratio = _token_means(lp, ref, mask)
    return _reinforce(_answer_sums(lp, ref, mask)[0], mean_log_ratio, r, beta, b)


def _mean_over_every_position(lp, ref, mask, r, beta, b):
    log_prob, log_ratio = _token_means(lp, ref, mask, over_every_position=True)
    return _reinforce(log_prob, log_ratio, r, beta, b)


def _mask_ignored(lp, ref, mask, r, beta, b):
    everywhere = torch.ones_like(mask)
    return policy_gradient_loss(lp, ref, everywhere, r, beta, b)


def _mask_ignored_in_the_log_prob(lp, ref, mask, r, beta, b):
    return _reinforce(lp.sum(dim=1), _answer_sums(lp, ref, mask)[1], r, beta, b)


def _mask_ignored_in_the_kl(lp, ref, mask, r, beta, b):
    return _reinforce(_answer_sums(lp, ref, mask)[0], (lp - ref).sum(dim=1), r, beta, b)


def _summed_over_the_batch(lp, ref, mask, r, beta, b):
    return policy_gradient_loss(lp, ref, mask, r, beta, b) * len(r)


def _without_the_minus(lp, ref, mask, r, beta, b):
    return -policy_gradient_loss(lp, ref, mask, r, beta, b)


def _whitened(lp, ref, mask, r, beta, b):
    """The shaped rewards' spread divided out, as notebook 10's training step does outside the loss."""
    shaped = r - beta * _answer_sums(lp, ref, mask)[1].detach()
    return policy_gradient_loss(lp, ref, mask, r, beta, b) / (shaped.std() + 1e-6)


def _no_gradient(lp, ref, mask, r, beta, b):
    with torch.no_grad():
        return policy_gradient_loss(lp, ref, mask, r, beta, b)


def _policy_case(description: str, rows: list[str], beta: float, baseline: float | torch.Tensor) -> Case:
    B, T = len(rows), len(rows[0])
    logprobs = _log_probs(B, T).requires_grad_()
    rewards = torch.randn(B, generator=_GENERATOR)
    return Case(description, (logprobs, _log_probs(B, T), _mask(rows), rewards, beta, baseline))


_POLICY_CASES = (
    _policy_case("3 answers after their prompts, mask [..###], [.####], [...##]; beta=0.1, baseline 0.25",
                 ["..###", ".####", "...##"], beta=0.1, baseline=0.25),
    _policy_case("4 answers with padding after them, mask [.###..], [..##..], [######], [...###]; beta=0.5, "
                 "one baseline per answer", [".###..", "..##..", "######", "...###"], beta=0.5,
                 baseline=torch.tensor([0.3, -0.2, 0.1, 0.6])),
    _policy_case("2 answers, mask [.##], [###]; beta=0 (no leash), baseline 0", [".##", "###"], beta=0.0,
                 baseline=0.0),
    _policy_case("3 answers, one with no answer token, mask [.##.], [....], [####]; beta=0.2, baseline -0.5",
                 [".##.", "....", "####"], beta=0.2, baseline=-0.5),
)

_POLICY_MISTAKES = (
    Mistake("you returned one loss per answer: the loss is their mean over the batch, one number.", _not_one_number),
    Mistake("the loss carries no gradient to logprobs, so the policy could not learn from it: compute it from "
            "logprobs themselves, not under torch.no_grad() or from .detach()ed or .item() values.",
            _shows(_no_gradient)),
    Mistake("the value is right, but the gradient also flows through the shaped reward: compute "
            "R = rewards - beta * (KL sample) without gradient (.detach(), or under torch.no_grad()). REINFORCE "
            "treats R as a fixed weight on log pi(answer); only log pi(answer) carries the gradient.",
            _shows(_shaped_with_gradient)),
    Mistake("the KL penalty was added, not subtracted (or the log-ratio taken the other way round): "
            "R = rewards - beta * sum_t mask * (logprobs - ref_logprobs). Moving away from the reference must "
            "cost reward.", _shows(_kl_added)),
    Mistake("the baseline was left out: subtract it, (R - baseline) * log pi(answer). It is a number or one "
            "per answer; the cases give 0.25, -0.5 and a (B,) tensor.", _shows(_baseline_ignored)),
    Mistake("you averaged over the tokens: an answer's log-probability, and its log-ratio to the reference, "
            "are sums over its tokens (the chain rule). Use .sum(dim=1) over the masked tokens, not .mean() "
            "or a division by their number.",
            _shows(_mean_over_tokens, _mean_over_tokens_of_the_log_prob, _mean_over_tokens_of_the_kl,
                   _mean_over_every_position)),
    Mistake("tokens outside the mask were counted: only the answer's tokens (mask True) belong in log pi(answer) "
            "and in the log-ratio; the prompt's and the padding's values are not the policy's choices. "
            "Multiply by the mask, or torch.where(mask, ..., 0), before summing.",
            _shows(_mask_ignored, _mask_ignored_in_the_log_prob, _mask_ignored_in_the_kl)),
    Mistake("you summed over the answers of the batch: take the mean, so the loss does not grow with the batch.",
            _shows(_summed_over_the_batch)),
    Mistake("the minus is missing: minimising the loss must raise the log-probability of answers above the "
            "baseline, so loss = -mean((R - baseline) * log pi(answer)).", _shows(_without_the_minus)),
    Mistake("you divided by the spread of the shaped rewards: notebook 10's training step does that outside "
            "the loss. policy_gradient_loss itself is -mean((R - baseline) * log pi(answer)).", _shows(_whitened)),
)


def check_policy_gradient_loss(learner_fn: Any) -> CheckResult:
    """Check exercise 10: ``policy_gradient_loss(logprobs, ref_logprobs, mask, rewards, beta, baseline)``.

    logprobs (B, T) with gradient, ref_logprobs (B, T), mask (B, T) bool,
    rewards (B,), beta, baseline a number or (B,) -> one number,
    -mean_b((R_b - baseline_b) · Σ_t mask·logprobs), R_b = rewards_b −
    beta · Σ_t mask·(logprobs − ref_logprobs) taken without gradient. Each
    case checks the loss and the loss after one gradient step on logprobs.
    """
    return _check(learner_fn, "10.policy_gradient_loss", policy_gradient_loss, _POLICY_CASES, _POLICY_MISTAKES)


# ---------------------------------------------------------------------------
# Exercise 10.ppo_clip_loss: the clipped surrogate over the answer tokens
# ---------------------------------------------------------------------------

# The wrong implementations shorten the arguments: lp, old, A, mask, clip.


def _terms(lp, old, A, clip):
    """(B, T) ρ·A and clamp(ρ)·A, the two terms of the clipped objective."""
    ratio, advantage = torch.exp(lp - old), A[:, None]
    return ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage


def _masked_mean(values, mask):
    return values[mask].mean()


def _only_the_clipped_term(lp, old, A, mask, clip=0.2):
    return -_masked_mean(_terms(lp, old, A, clip)[1], mask)


def _no_clipping(lp, old, A, mask, clip=0.2):
    return -_masked_mean(_terms(lp, old, A, clip)[0], mask)


def _max_instead_of_min(lp, old, A, mask, clip=0.2):
    return -_masked_mean(torch.maximum(*_terms(lp, old, A, clip)), mask)


def _advantage_clipped(lp, old, A, mask, clip=0.2):
    ratio, advantage = torch.exp(lp - old), A[:, None]
    return -_masked_mean(torch.minimum(ratio * advantage, ratio * advantage.clamp(1 - clip, 1 + clip)), mask)


def _advantage_clipped_alone(lp, old, A, mask, clip=0.2):
    ratio, advantage = torch.exp(lp - old), A[:, None]
    return -_masked_mean(ratio * advantage.clamp(1 - clip, 1 + clip), mask)


def _advantage_clipped_near_zero(lp, old, A, mask, clip=0.2):
    ratio, advantage = torch.exp(lp - old), A[:, None]
    return -_masked_mean(torch.minimum(ratio * advantage, ratio * advantage.clamp(-clip, clip)), mask)


def _ppo_mask_ignored(lp, old, A, mask, clip=0.2):
    return ppo_clip_loss(lp, old, A, torch.ones_like(mask), clip)


def _ppo_mask_as_zeros(lp, old, A, mask, clip=0.2):
    """Tokens outside the mask set to 0, then the mean over every position."""
    return -(torch.minimum(*_terms(lp, old, A, clip)) * mask).mean()


def _mean_per_answer(lp, old, A, mask, clip=0.2):
    surrogate = torch.minimum(*_terms(lp, old, A, clip)) * mask
    return -(surrogate.sum(dim=1) / mask.sum(dim=1)).mean()


def _ppo_summed(lp, old, A, mask, clip=0.2):
    return -torch.minimum(*_terms(lp, old, A, clip))[mask].sum()


def _ppo_without_the_minus(lp, old, A, mask, clip=0.2):
    return -ppo_clip_loss(lp, old, A, mask, clip)


def _ratio_without_exp(lp, old, A, mask, clip=0.2):
    ratio, advantage = lp - old, A[:, None]
    return -_masked_mean(torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage), mask)


def _clip_fixed_at_its_default(lp, old, A, mask, clip=0.2):
    return ppo_clip_loss(lp, old, A, mask)


def _ppo_no_gradient(lp, old, A, mask, clip=0.2):
    with torch.no_grad():
        return ppo_clip_loss(lp, old, A, mask, clip)


def _ppo_case(description: str, rows: list[str], log_ratios: list[list[float]], advantages: list[float],
              **kwargs: float) -> Case:
    """``log_ratios`` (B, T): logprobs − old_logprobs, written out so that the ratios fall where the case says."""
    B, T = len(rows), len(rows[0])
    old_logprobs = _log_probs(B, T)
    logprobs = (old_logprobs + torch.tensor(log_ratios)).requires_grad_()
    return Case(description, (logprobs, old_logprobs, torch.tensor(advantages), _mask(rows)), kwargs)


_PPO_CASES = (
    _ppo_case("2 answers, advantages +1 and -0.5, ratios from 0.55 to 1.65 (both inside and outside 1 ± 0.2), "
              "clip left at its default 0.2, mask [.###.], [..###]",
              [".###.", "..###"], [[0.0, 0.5, -0.6, 0.1, 0.0], [0.0, 0.3, 0.4, -0.3, -0.5]], [1.0, -0.5]),
    _ppo_case("3 answers, advantages 2, -1 and 0.5, clip=0.1, mask [.##], [###], [..#]",
              [".##", "###", "..#"], [[0.0, 0.2, -0.05], [-0.3, 0.05, 0.25], [0.0, 0.0, -0.2]], [2.0, -1.0, 0.5],
              clip=0.1),
    _ppo_case("2 answers at the first step of a batch (every ratio 1), advantages -1 and 3, clip=0.3, "
              "mask [.###], [.#..]", [".###", ".#.."], [[0.0] * 4, [0.0] * 4], [-1.0, 3.0], clip=0.3),
)

_PPO_MISTAKES = (
    Mistake("you returned more than one number: the loss is the mean over every answer token of the batch.",
            _not_one_number),
    Mistake("the loss carries no gradient to logprobs, so the policy could not learn from it: compute the ratio "
            "from logprobs themselves, torch.exp(logprobs - old_logprobs), without torch.no_grad() or .detach().",
            _shows(_ppo_no_gradient)),
    Mistake("max instead of min: PPO keeps the smaller of the two terms, so that moving the ratio past "
            "1 ± clip never earns more (a pessimistic bound).", _shows(_max_instead_of_min)),
    Mistake("the min of the two terms is missing: take torch.minimum(ratio * A, ratio.clamp(1 - clip, "
            "1 + clip) * A). The clipped term alone also stops the gradient where the ratio moved the wrong "
            "way; the unclipped term alone is not clipped at all.", _shows(_only_the_clipped_term, _no_clipping)),
    Mistake("you clipped the advantage: clip the ratio, ratio.clamp(1 - clip, 1 + clip), and multiply it by "
            "the advantage as it is.",
            _shows(_advantage_clipped, _advantage_clipped_alone, _advantage_clipped_near_zero)),
    Mistake("the mask was ignored: the mean runs over the answer tokens only (mask True), "
            "surrogate[mask].mean(), not over every position.", _shows(_ppo_mask_ignored, _ppo_mask_as_zeros)),
    Mistake("you averaged each answer first, then the answers: the loss is one mean over all the answer tokens "
            "of the batch, so a long answer counts with every one of its tokens.", _shows(_mean_per_answer)),
    Mistake("you summed over the tokens: take the mean over the answer tokens.", _shows(_ppo_summed)),
    Mistake("the minus is missing: PPO maximises the clipped surrogate, so the loss is its negative.",
            _shows(_ppo_without_the_minus)),
    Mistake("the ratio is pi / pi_old = exp(logprobs - old_logprobs): the arguments are log-probabilities, so "
            "their difference is the log of the ratio.", _shows(_ratio_without_exp)),
    Mistake("clip is always 0.2: use the clip argument (0.2 is only its default).",
            _shows(_clip_fixed_at_its_default)),
)


def check_ppo_clip_loss(learner_fn: Any) -> CheckResult:
    """Check exercise 10: ``ppo_clip_loss(logprobs, old_logprobs, advantages, mask, clip=0.2)``.

    logprobs and old_logprobs (B, T), advantages (B,), mask (B, T) bool ->
    one number, the mean over masked tokens of −min(ρ·A, clamp(ρ, 1 − clip,
    1 + clip)·A), ρ = exp(logprobs − old_logprobs). Each case checks the loss
    and the loss after one gradient step on logprobs.
    """
    return _check(learner_fn, "10.ppo_clip_loss", ppo_clip_loss, _PPO_CASES, _PPO_MISTAKES)
