"""The checks of exercise 10: correct answers written several ways pass, known mistakes fail with their hint.

Every implementation here is written the way a learner might write it, not
copied from the checks, so a test fails when a check stops recognising a
real learner's answer.
"""
import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import check_dpo_loss, check_preference_loss, check_sequence_log_prob

from check_helpers import assert_fails_with_hint, assert_passes


# ---------------------------------------------------------------------------
# 10.sequence_log_prob
# ---------------------------------------------------------------------------


def log_prob_with_gather(logits, targets, loss_mask):
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs.gather(2, targets.unsqueeze(2)).squeeze(2)      # (B, T)
    return (picked * loss_mask).sum(dim=1)


def log_prob_with_cross_entropy(logits, targets, loss_mask):
    losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")   # (B, T)
    return -losses.masked_fill(~loss_mask, 0.0).sum(dim=1)


def log_prob_with_one_hot_in_float64(logits, targets, loss_mask):
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    one_hot = F.one_hot(targets, num_classes=logits.shape[-1]).double()
    return torch.where(loss_mask, (log_probs * one_hot).sum(dim=-1), 0.0).sum(dim=1)


def log_prob_with_loops(logits, targets, loss_mask):
    B, T, V = logits.shape
    totals = []
    for b in range(B):
        total = torch.tensor(0.0)
        for t in range(T):
            if loss_mask[b, t]:
                total = total + logits[b, t, targets[b, t]] - torch.logsumexp(logits[b, t], dim=0)
        totals.append(total)
    return torch.stack(totals)


def log_prob_with_indexing(logits, targets, loss_mask):
    B, T, _ = logits.shape
    log_probs = logits.log_softmax(dim=-1)[torch.arange(B)[:, None], torch.arange(T)[None, :], targets]
    rows = torch.arange(B)[:, None].expand(B, T)[loss_mask]
    return torch.zeros(B).index_add(0, rows, log_probs[loss_mask])


@pytest.mark.parametrize("sequence_log_prob", [
    log_prob_with_gather, log_prob_with_cross_entropy, log_prob_with_one_hot_in_float64, log_prob_with_loops,
    log_prob_with_indexing,
])
def test_correct_sequence_log_probs_pass(sequence_log_prob):
    assert_passes(check_sequence_log_prob(sequence_log_prob))


def per_position_log_probs(logits, targets, loss_mask):
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
    return log_probs * loss_mask


def summed_over_everything(logits, targets, loss_mask):
    return per_position_log_probs(logits, targets, loss_mask).sum()


def log_of_softmax(logits, targets, loss_mask):
    probabilities = torch.softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
    return (torch.log(probabilities) * loss_mask).sum(dim=1)


def raw_logits(logits, targets, loss_mask):
    return (logits.gather(-1, targets[..., None])[..., 0] * loss_mask).sum(dim=1)


def summed_probabilities(logits, targets, loss_mask):
    probabilities = torch.softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
    return torch.where(loss_mask, probabilities, 0.0).sum(dim=1)


def mask_ignored(logits, targets, loss_mask):
    return -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(dim=1)


def mask_inverted(logits, targets, loss_mask):
    return log_prob_with_gather(logits, targets, ~loss_mask)


def mean_over_the_answer(logits, targets, loss_mask):
    return per_position_log_probs(logits, targets, loss_mask).sum(dim=1) / loss_mask.sum(dim=1)


def mean_over_every_position(logits, targets, loss_mask):
    return per_position_log_probs(logits, targets, loss_mask).mean(dim=1)


def shifted_again(logits, targets, loss_mask):
    return log_prob_with_gather(logits[:, :-1], targets[:, 1:], loss_mask[:, 1:])


def shifted_again_with_the_logits_mask(logits, targets, loss_mask):
    return log_prob_with_gather(logits[:, :-1], targets[:, 1:], loss_mask[:, :-1])


def log_softmax_over_positions(logits, targets, loss_mask):
    log_probs = torch.log_softmax(logits, dim=1).gather(-1, targets[..., None])[..., 0]
    return (log_probs * loss_mask).sum(dim=1)


def log_softmax_over_the_batch(logits, targets, loss_mask):
    log_probs = torch.log_softmax(logits, dim=0).gather(-1, targets[..., None])[..., 0]
    return (log_probs * loss_mask).sum(dim=1)


def cross_entropy_not_negated(logits, targets, loss_mask):
    losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (losses * loss_mask).sum(dim=1)


@pytest.mark.parametrize(
    "wrong_log_prob, words_of_the_hint",
    [
        (per_position_log_probs, "one value per position"),
        (summed_over_everything, "you returned one number"),
        (log_of_softmax, "underflowed"),
        (raw_logits, "raw logits"),
        (summed_probabilities, "you added probabilities"),
        (mask_ignored, "every position was counted"),
        (mask_inverted, "the True ones left out"),
        (mean_over_the_answer, "you averaged"),
        (mean_over_every_position, "you averaged"),
        (shifted_again, "shifted by one"),
        (shifted_again_with_the_logits_mask, "shifted by one"),
        (log_softmax_over_positions, "wrong dimension"),
        (log_softmax_over_the_batch, "wrong dimension"),
        (cross_entropy_not_negated, "these are losses"),
    ],
    ids=["per-position", "one-number", "log-of-softmax", "raw-logits", "probabilities", "mask-ignored",
         "mask-inverted", "mean-over-answer", "mean-over-all", "shifted", "shifted-logits-mask",
         "over-positions", "over-batch", "not-negated"],
)
def test_wrong_sequence_log_probs_fail_with_their_hint(wrong_log_prob, words_of_the_hint):
    assert_fails_with_hint(check_sequence_log_prob(wrong_log_prob), words_of_the_hint)


# ---------------------------------------------------------------------------
# 10.preference_loss
# ---------------------------------------------------------------------------


def preference_with_logsigmoid(chosen_rewards, rejected_rewards):
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def preference_with_softplus(chosen_rewards, rejected_rewards):
    return F.softplus(rejected_rewards - chosen_rewards).mean()


def preference_with_bce(chosen_rewards, rejected_rewards):
    margin = chosen_rewards - rejected_rewards
    return F.binary_cross_entropy_with_logits(margin, torch.ones_like(margin))


def preference_with_logaddexp(chosen_rewards, rejected_rewards):
    # -log(e^c / (e^c + e^r)) = log(e^c + e^r) - c
    return (torch.logaddexp(chosen_rewards, rejected_rewards) - chosen_rewards).mean()


def preference_with_stable_hand_formula(chosen_rewards, rejected_rewards):
    margin = (chosen_rewards - rejected_rewards).double()
    return (torch.clamp(-margin, min=0) + torch.log1p(torch.exp(-margin.abs()))).mean()


@pytest.mark.parametrize("preference_loss", [
    preference_with_logsigmoid, preference_with_softplus, preference_with_bce, preference_with_logaddexp,
    preference_with_stable_hand_formula,
])
def test_correct_preference_losses_pass(preference_loss):
    assert_passes(check_preference_loss(preference_loss))


def per_pair(chosen_rewards, rejected_rewards):
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def log_of_sigmoid(chosen_rewards, rejected_rewards):
    return -torch.log(torch.sigmoid(chosen_rewards - rejected_rewards)).mean()


def log_of_one_plus_exp(chosen_rewards, rejected_rewards):
    return torch.log(1 + torch.exp(rejected_rewards - chosen_rewards)).mean()


def bradley_terry_with_exp(chosen_rewards, rejected_rewards):
    won = torch.exp(chosen_rewards) / (torch.exp(chosen_rewards) + torch.exp(rejected_rewards))
    return -torch.log(won).mean()


def swapped(chosen_rewards, rejected_rewards):
    return -F.logsigmoid(rejected_rewards - chosen_rewards).mean()


def softplus_of_the_margin(chosen_rewards, rejected_rewards):
    return F.softplus(chosen_rewards - rejected_rewards).mean()


def summed(chosen_rewards, rejected_rewards):
    return -F.logsigmoid(chosen_rewards - rejected_rewards).sum()


def without_the_minus(chosen_rewards, rejected_rewards):
    return F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def probability_not_its_log(chosen_rewards, rejected_rewards):
    return -torch.sigmoid(chosen_rewards - rejected_rewards).mean()


def each_answer_on_its_own(chosen_rewards, rejected_rewards):
    # A good answer and a bad answer, each classified on its own.
    good = F.binary_cross_entropy_with_logits(chosen_rewards, torch.ones_like(chosen_rewards))
    bad = F.binary_cross_entropy_with_logits(rejected_rewards, torch.zeros_like(rejected_rewards))
    return good + bad


@pytest.mark.parametrize(
    "wrong_preference, words_of_the_hint",
    [
        (per_pair, "one loss per pair"),
        (log_of_sigmoid, "F.logsigmoid(x)"),
        (log_of_one_plus_exp, "F.logsigmoid(x)"),
        (bradley_terry_with_exp, "F.logsigmoid(x)"),
        (swapped, "swapped"),
        (softplus_of_the_margin, "swapped"),
        (summed, "summed over the pairs"),
        (without_the_minus, "the minus is missing"),
        (probability_not_its_log, "instead of its log"),
        (each_answer_on_its_own, "on its own"),
    ],
    ids=["per-pair", "log-of-sigmoid", "log-one-plus-exp", "exp-ratio", "swapped", "softplus-of-margin", "summed",
         "no-minus", "probability", "each-on-its-own"],
)
def test_wrong_preference_losses_fail_with_their_hint(wrong_preference, words_of_the_hint):
    assert_fails_with_hint(check_preference_loss(wrong_preference), words_of_the_hint)


# ---------------------------------------------------------------------------
# 10.dpo_loss
# ---------------------------------------------------------------------------


def dpo_with_logsigmoid(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                        reference_rejected_logps, beta=0.1):
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def dpo_through_the_preference_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                                    reference_rejected_logps, beta=0.1):
    # The learner's own exercise 1, reused: DPO is Bradley-Terry on implicit rewards.
    return preference_with_softplus(beta * (policy_chosen_logps - reference_chosen_logps),
                                    beta * (policy_rejected_logps - reference_rejected_logps))


def dpo_as_in_the_paper(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                        reference_rejected_logps, beta=0.1):
    # Rafailov et al. group the policy's and the reference's margins: the same number.
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    logits = (pi_logratios - ref_logratios).double()
    return F.binary_cross_entropy_with_logits(beta * logits, torch.ones_like(logits))


@pytest.mark.parametrize("dpo_loss", [dpo_with_logsigmoid, dpo_through_the_preference_loss, dpo_as_in_the_paper])
def test_correct_dpo_losses_pass(dpo_loss):
    assert_passes(check_dpo_loss(dpo_loss))


# The wrong versions shorten the four arguments: pc, pr for the policy's chosen and rejected answers,
# rc, rr for the reference's.


def dpo_per_pair(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))


def dpo_log_of_sigmoid(pc, pr, rc, rr, beta=0.1):
    return -torch.log(torch.sigmoid(beta * ((pc - rc) - (pr - rr)))).mean()


def reference_forgotten(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(beta * (pc - pr)).mean()


def reference_added(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(beta * ((pc + rc) - (pr + rr))).mean()


def references_swapped(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(beta * ((pc - rr) - (pr - rc))).mean()


def ratio_of_log_probs(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(beta * (pc / rc - pr / rr)).mean()


def chosen_and_rejected_swapped(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(beta * ((pr - rr) - (pc - rc))).mean()


def reference_minus_policy(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(beta * ((rc - pc) - (rr - pr))).mean()


def beta_forgotten(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid((pc - rc) - (pr - rr)).mean()


def beta_hard_coded(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(0.1 * ((pc - rc) - (pr - rr))).mean()


def beta_on_the_chosen_only(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(beta * (pc - rc) - (pr - rr)).mean()


def beta_on_the_rejected_only(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid((pc - rc) - beta * (pr - rr)).mean()


def parentheses_forgotten(pc, pr, rc, rr, beta=0.1):
    chosen_reward = beta * pc - rc
    rejected_reward = beta * pr - rr
    return -F.logsigmoid(chosen_reward - rejected_reward).mean()


def divided_by_beta(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(((pc - rc) - (pr - rr)) / beta).mean()


def dpo_summed(pc, pr, rc, rr, beta=0.1):
    return F.softplus(-beta * ((pc - rc) - (pr - rr))).sum()


def dpo_without_the_minus(pc, pr, rc, rr, beta=0.1):
    return F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def beta_outside_the_log_sigmoid(pc, pr, rc, rr, beta=0.1):
    return -beta * F.logsigmoid((pc - rc) - (pr - rr)).mean()


def mean_margin(pc, pr, rc, rr, beta=0.1):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)).mean())


@pytest.mark.parametrize(
    "wrong_dpo, words_of_the_hint",
    [
        (dpo_per_pair, "one loss per pair"),
        (dpo_log_of_sigmoid, "F.logsigmoid(x)"),
        (reference_forgotten, "the reference is missing"),
        (reference_added, "added, not subtracted"),
        (references_swapped, "added, not subtracted"),
        (ratio_of_log_probs, "the log of a ratio is a difference"),
        (chosen_and_rejected_swapped, "the margin has the wrong sign"),
        (reference_minus_policy, "the margin has the wrong sign"),
        (beta_forgotten, "beta is not used"),
        (beta_hard_coded, "beta is always 0.1"),
        (beta_on_the_chosen_only, "only part of the margin"),
        (beta_on_the_rejected_only, "only part of the margin"),
        (parentheses_forgotten, "only part of the margin"),
        (divided_by_beta, "divided by beta"),
        (beta_outside_the_log_sigmoid, "beta multiplies the loss, not the margin"),
        (dpo_summed, "summed over the pairs"),
        (dpo_without_the_minus, "the minus is missing"),
        (mean_margin, "averaged the margins"),
    ],
    ids=["per-pair", "log-of-sigmoid", "no-reference", "reference-added", "references-swapped", "ratio",
         "swapped", "reference-minus-policy", "no-beta", "beta-hard-coded", "beta-chosen-only",
         "beta-rejected-only", "parentheses", "divided-by-beta", "beta-outside", "summed", "no-minus", "mean-margin"],
)
def test_wrong_dpo_losses_fail_with_their_hint(wrong_dpo, words_of_the_hint):
    assert_fails_with_hint(check_dpo_loss(wrong_dpo), words_of_the_hint)


# ---------------------------------------------------------------------------
# All three
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("check", [check_sequence_log_prob, check_preference_loss, check_dpo_loss])
def test_unsolved_exercises_are_not_implemented(check):
    def unsolved(*args, **kwargs):
        raise NotImplementedError()

    assert check(unsolved).status == "not implemented"


@pytest.mark.parametrize("check", [check_sequence_log_prob, check_preference_loss, check_dpo_loss])
def test_answers_that_cannot_even_be_judged_fail_without_raising(check):
    for answer in (None, "a string", torch.zeros(7, 3), [1.0, 2.0]):
        result = check(lambda *args, answer=answer, **kwargs: answer)
        assert result.status == "failed", result.report()


@pytest.mark.parametrize("check", [check_sequence_log_prob, check_preference_loss, check_dpo_loss])
def test_a_learners_exception_is_a_failed_case(check):
    def buggy(*args, **kwargs):
        raise IndexError("my own bug")

    result = check(buggy)

    assert result.status == "failed"
    assert "your function raised IndexError: my own bug" in result.report()
