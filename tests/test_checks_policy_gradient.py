"""The checks of exercise 10's policy gradients: right answers written several ways pass, each mistake gets its hint.

Every implementation here is written the way a learner might write it, not
copied from the checks; and the verdicts must follow from the returned
values alone, as the grader replays them.
"""
import pytest
import torch

from course_lib.checks import check_policy_gradient_loss, check_ppo_clip_loss

from check_helpers import assert_fails_with_hint, assert_passes


# ---------------------------------------------------------------------------
# 10.policy_gradient_loss: right ways
# ---------------------------------------------------------------------------


def reinforce_with_detach(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    m = mask.float()
    answer_log_prob = (logprobs * m).sum(dim=1)
    kl = ((logprobs - ref_logprobs) * m).sum(dim=1)
    shaped = (rewards - beta * kl).detach()
    return -((shaped - baseline) * answer_log_prob).mean()


def reinforce_under_no_grad(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    with torch.no_grad():
        log_ratio = torch.where(mask, logprobs - ref_logprobs, torch.zeros_like(logprobs)).sum(-1)
        advantage = rewards - beta * log_ratio - baseline
    return -(advantage * torch.where(mask, logprobs, 0.0).sum(-1)).mean()


def reinforce_per_token(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    """The advantage spread over the tokens: the same sum, written token by token."""
    kl_per_token = (logprobs.detach() - ref_logprobs).masked_fill(~mask, 0)
    advantage = rewards - beta * kl_per_token.sum(1) - baseline                     # (B,)
    per_token = -advantage[:, None] * logprobs.masked_fill(~mask, 0)                # (B, T)
    return per_token.sum() / logprobs.shape[0]


def reinforce_with_loops(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    B, T = logprobs.shape
    baselines = baseline if isinstance(baseline, torch.Tensor) and baseline.dim() == 1 else [baseline] * B
    total = 0.0
    for b in range(B):
        log_prob, kl = 0.0, 0.0
        for t in range(T):
            if mask[b, t]:
                log_prob = log_prob + logprobs[b, t]
                kl += logprobs[b, t].item() - ref_logprobs[b, t].item()
        weight = float(rewards[b]) - beta * kl - float(baselines[b])
        total = total - weight * log_prob
    return total / B


def reinforce_in_float64(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    lp, ref = logprobs.double(), ref_logprobs.double()
    shaped = rewards.double() - beta * torch.einsum("bt,bt->b", (lp - ref).detach(), mask.double())
    return -torch.mean((shaped - baseline) * torch.einsum("bt,bt->b", lp, mask.double()))


@pytest.mark.parametrize("policy_gradient_loss", [
    reinforce_with_detach, reinforce_under_no_grad, reinforce_per_token, reinforce_with_loops, reinforce_in_float64,
])
def test_right_policy_gradient_losses_pass(policy_gradient_loss):
    assert_passes(check_policy_gradient_loss(policy_gradient_loss))


# ---------------------------------------------------------------------------
# 10.policy_gradient_loss: the mistakes, each with its hint
# ---------------------------------------------------------------------------


def gradient_through_the_shaped_reward(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    m = mask.float()
    shaped = rewards - beta * ((logprobs - ref_logprobs) * m).sum(dim=1)
    return -((shaped - baseline) * (logprobs * m).sum(dim=1)).mean()


def kl_added(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    m = mask.float()
    shaped = (rewards + beta * ((logprobs - ref_logprobs) * m).sum(dim=1)).detach()
    return -((shaped - baseline) * (logprobs * m).sum(dim=1)).mean()


def log_ratio_reversed(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    m = mask.float()
    shaped = (rewards - beta * ((ref_logprobs - logprobs) * m).sum(dim=1)).detach()
    return -((shaped - baseline) * (logprobs * m).sum(dim=1)).mean()


def baseline_ignored(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    m = mask.float()
    shaped = (rewards - beta * ((logprobs - ref_logprobs) * m).sum(dim=1)).detach()
    return -(shaped * (logprobs * m).sum(dim=1)).mean()


def mean_over_tokens(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    m = mask.float()
    count = m.sum(dim=1).clamp(min=1)
    shaped = (rewards - beta * ((logprobs - ref_logprobs) * m).sum(dim=1) / count).detach()
    return -((shaped - baseline) * (logprobs * m).sum(dim=1) / count).mean()


def mean_of_the_log_probs_only(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    m = mask.float()
    shaped = (rewards - beta * ((logprobs - ref_logprobs) * m).sum(dim=1)).detach()
    return -((shaped - baseline) * (logprobs * m).mean(dim=1)).mean()


def tokens_outside_the_mask(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    shaped = (rewards - beta * (logprobs - ref_logprobs).sum(dim=1)).detach()
    return -((shaped - baseline) * logprobs.sum(dim=1)).mean()


def mask_only_in_the_kl(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    shaped = (rewards - beta * ((logprobs - ref_logprobs) * mask).sum(dim=1)).detach()
    return -((shaped - baseline) * logprobs.sum(dim=1)).mean()


def summed_over_the_batch(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    shaped = (rewards - beta * ((logprobs - ref_logprobs) * mask).sum(dim=1)).detach()
    return -((shaped - baseline) * (logprobs * mask).sum(dim=1)).sum()


def plus_instead_of_minus(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    return -reinforce_with_detach(logprobs, ref_logprobs, mask, rewards, beta, baseline)


def whitened(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    shaped = (rewards - beta * ((logprobs - ref_logprobs) * mask).sum(dim=1)).detach()
    return -((shaped - baseline) / (shaped.std() + 1e-6) * (logprobs * mask).sum(dim=1)).mean()


def detached_everything(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    return reinforce_with_detach(logprobs.detach(), ref_logprobs, mask, rewards, beta, baseline)


def one_loss_per_answer(logprobs, ref_logprobs, mask, rewards, beta, baseline):
    shaped = (rewards - beta * ((logprobs - ref_logprobs) * mask).sum(dim=1)).detach()
    return -(shaped - baseline) * (logprobs * mask).sum(dim=1)


@pytest.mark.parametrize("wrong, words", [
    (gradient_through_the_shaped_reward, "gradient also flows through the shaped reward"),
    (kl_added, "added, not subtracted"),
    (log_ratio_reversed, "added, not subtracted"),
    (baseline_ignored, "baseline was left out"),
    (mean_over_tokens, "averaged over the tokens"),
    (mean_of_the_log_probs_only, "averaged over the tokens"),
    (tokens_outside_the_mask, "outside the mask were counted"),
    (mask_only_in_the_kl, "outside the mask were counted"),
    (summed_over_the_batch, "summed over the answers of the batch"),
    (plus_instead_of_minus, "minus is missing"),
    (whitened, "spread of the shaped rewards"),
    (detached_everything, "carries no gradient"),
    (one_loss_per_answer, "one loss per answer"),
])
def test_policy_gradient_mistakes_fail_with_their_hint(wrong, words):
    assert_fails_with_hint(check_policy_gradient_loss(wrong), words)


# ---------------------------------------------------------------------------
# 10.ppo_clip_loss: right ways
# ---------------------------------------------------------------------------


def ppo_with_minimum(logprobs, old_logprobs, advantages, mask, clip=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    A = advantages.unsqueeze(1).expand_as(ratio)
    surrogate = torch.minimum(ratio * A, torch.clamp(ratio, 1 - clip, 1 + clip) * A)
    return -surrogate[mask].mean()


def ppo_with_where(logprobs, old_logprobs, advantages, mask, clip=0.2):
    ratio = (logprobs - old_logprobs).exp()
    A = advantages[:, None]
    unclipped, clipped = ratio * A, ratio.clip(1 - clip, 1 + clip) * A
    surrogate = torch.where(unclipped < clipped, unclipped, clipped)
    m = mask.float()
    return -(surrogate * m).sum() / m.sum()


def ppo_as_a_maximum_of_losses(logprobs, old_logprobs, advantages, mask, clip=0.2):
    """The form of many codebases: the larger of the two losses, -rA and -clip(r)A."""
    ratio = torch.exp(logprobs - old_logprobs)
    losses = torch.max(-advantages[:, None] * ratio, -advantages[:, None] * torch.clamp(ratio, 1 - clip, 1 + clip))
    return torch.masked_select(losses, mask).mean()


def ppo_with_loops(logprobs, old_logprobs, advantages, mask, clip=0.2):
    total, count = 0.0, 0
    for b in range(logprobs.shape[0]):
        for t in range(logprobs.shape[1]):
            if mask[b, t]:
                ratio = torch.exp(logprobs[b, t] - old_logprobs[b, t])
                A = advantages[b]
                total = total - torch.min(ratio * A, torch.clamp(ratio, 1 - clip, 1 + clip) * A)
                count += 1
    return total / count


@pytest.mark.parametrize("ppo_clip_loss", [ppo_with_minimum, ppo_with_where, ppo_as_a_maximum_of_losses,
                                           ppo_with_loops])
def test_right_ppo_losses_pass(ppo_clip_loss):
    assert_passes(check_ppo_clip_loss(ppo_clip_loss))


# ---------------------------------------------------------------------------
# 10.ppo_clip_loss: the mistakes, each with its hint
# ---------------------------------------------------------------------------


def no_min_clipped_only(logprobs, old_logprobs, advantages, mask, clip=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    return -(ratio.clamp(1 - clip, 1 + clip) * advantages[:, None])[mask].mean()


def no_min_no_clip(logprobs, old_logprobs, advantages, mask, clip=0.2):
    return -(torch.exp(logprobs - old_logprobs) * advantages[:, None])[mask].mean()


def advantage_clipped(logprobs, old_logprobs, advantages, mask, clip=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    A = advantages[:, None]
    return -torch.min(ratio * A, ratio * A.clamp(1 - clip, 1 + clip))[mask].mean()


def max_instead_of_min(logprobs, old_logprobs, advantages, mask, clip=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    A = advantages[:, None]
    return -torch.max(ratio * A, ratio.clamp(1 - clip, 1 + clip) * A)[mask].mean()


def mask_ignored(logprobs, old_logprobs, advantages, mask, clip=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    A = advantages[:, None]
    return -torch.min(ratio * A, ratio.clamp(1 - clip, 1 + clip) * A).mean()


def mask_multiplied_then_mean_everywhere(logprobs, old_logprobs, advantages, mask, clip=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    A = advantages[:, None]
    return -(torch.min(ratio * A, ratio.clamp(1 - clip, 1 + clip) * A) * mask).mean()


def mean_per_answer(logprobs, old_logprobs, advantages, mask, clip=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    A = advantages[:, None]
    surrogate = torch.min(ratio * A, ratio.clamp(1 - clip, 1 + clip) * A) * mask
    return -(surrogate.sum(1) / mask.sum(1)).mean()


def ratio_detached(logprobs, old_logprobs, advantages, mask, clip=0.2):
    return ppo_with_minimum(logprobs.detach(), old_logprobs, advantages, mask, clip)


def clip_ignored(logprobs, old_logprobs, advantages, mask, clip=0.2):
    return ppo_with_minimum(logprobs, old_logprobs, advantages, mask)


@pytest.mark.parametrize("wrong, words", [
    (no_min_clipped_only, "min of the two terms is missing"),
    (no_min_no_clip, "min of the two terms is missing"),
    (advantage_clipped, "clipped the advantage"),
    (max_instead_of_min, "max instead of min"),
    (mask_ignored, "mask was ignored"),
    (mask_multiplied_then_mean_everywhere, "mask was ignored"),
    (mean_per_answer, "averaged each answer first"),
    (ratio_detached, "carries no gradient"),
    (clip_ignored, "clip is always 0.2"),
])
def test_ppo_mistakes_fail_with_their_hint(wrong, words):
    assert_fails_with_hint(check_ppo_clip_loss(wrong), words)


# ---------------------------------------------------------------------------
# What the grader sees: the returned values, replayed
# ---------------------------------------------------------------------------


def recorded_answers(check, learner_fn):
    """Every value ``learner_fn`` returned while ``check`` ran it, detached as the grader's recorder saves them."""
    answers = []

    def recording(*args, **kwargs):
        returned = learner_fn(*args, **kwargs)
        answers.append(returned.detach().clone())
        return returned

    check(recording)
    return answers


@pytest.mark.parametrize("check, learner_fn", [
    (check_policy_gradient_loss, reinforce_with_detach),
    (check_policy_gradient_loss, gradient_through_the_shaped_reward),
    (check_policy_gradient_loss, baseline_ignored),
    (check_ppo_clip_loss, ppo_with_where),
    (check_ppo_clip_loss, no_min_clipped_only),
])
def test_the_replayed_values_reach_the_same_verdict(check, learner_fn):
    answers = recorded_answers(check, learner_fn)

    def replay(*args, **kwargs):
        return answers.pop(0)

    assert check(replay).report() == check(learner_fn).report()
    assert not answers


def test_unsolved_and_not_a_function():
    def unsolved(*args, **kwargs):
        raise NotImplementedError()

    for check in (check_policy_gradient_loss, check_ppo_clip_loss):
        assert check(unsolved).status == "not implemented"
        verdict = check(torch.zeros(1))
        assert not verdict and "should be a function" in verdict.report()
