"""The losses of preference learning: PyTorch's own losses agree, huge margins stay finite, bad inputs are named."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from course_lib.alignment import dpo_loss, policy_gradient_loss, ppo_clip_loss, preference_loss, sequence_log_prob
from course_lib.models import GPT, TransformerConfig
from course_lib.objectives import IGNORE_INDEX, gpt_token_losses


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


# ---------------------------------------------------------------------------
# sequence_log_prob
# ---------------------------------------------------------------------------


def test_sequence_log_prob_is_minus_the_cross_entropy_summed_over_the_mask(generator):
    logits = torch.randn(3, 6, 11, generator=generator)
    targets = torch.randint(0, 11, (3, 6), generator=generator)
    loss_mask = torch.rand(3, 6, generator=generator) < 0.6
    cross_entropy = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)

    torch.testing.assert_close(sequence_log_prob(logits, targets, loss_mask),
                               -(cross_entropy * loss_mask).sum(dim=1))


def test_sequence_log_prob_of_a_gpt_is_its_log_probability_of_the_answer(generator):
    # Aligned as in training: the logits of positions 0..T-2 score the tokens of positions 1..T-1.
    config = TransformerConfig(vocab_size=13, max_len=16, d_model=16, n_heads=2, n_layers=1, d_ff=32, dropout=0.0)
    gpt = GPT(config).eval()
    input_ids = torch.randint(0, 13, (2, 9), generator=generator)
    with torch.no_grad():
        logits = gpt(input_ids[:, :-1])
    answer = torch.zeros(2, 8, dtype=torch.bool)
    answer[:, 5:] = True                                    # the last three tokens are the answer

    expected = -(gpt_token_losses(gpt, input_ids) * answer).sum(dim=1)
    torch.testing.assert_close(sequence_log_prob(logits, input_ids[:, 1:], answer), expected)


def test_targets_outside_the_mask_are_never_read(generator):
    logits = torch.randn(2, 4, 5, generator=generator)
    targets = torch.tensor([[1, 2, 3, 4], [0, 1, 2, 3]])
    loss_mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    padded = targets.masked_fill(~loss_mask, IGNORE_INDEX)

    torch.testing.assert_close(sequence_log_prob(logits, padded, loss_mask),
                               sequence_log_prob(logits, targets, loss_mask))


def test_an_empty_answer_is_zero_even_where_a_token_is_impossible():
    logits = torch.zeros(2, 3, 4)
    logits[:, :, 2] = float("-inf")                         # token 2 can never be written
    targets = torch.full((2, 3), 2)
    loss_mask = torch.zeros(2, 3, dtype=torch.bool)

    assert sequence_log_prob(logits, targets, loss_mask).tolist() == [0.0, 0.0]


def test_sequence_log_prob_keeps_float64_and_lifts_half_precision(generator):
    logits = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    targets = torch.zeros(2, 3, dtype=torch.long)
    loss_mask = torch.ones(2, 3, dtype=torch.bool)

    assert sequence_log_prob(logits, targets, loss_mask).dtype == torch.float64
    assert sequence_log_prob(logits.to(torch.bfloat16), targets, loss_mask).dtype == torch.float32


def test_sequence_log_prob_passes_gradients_to_the_logits_of_the_answer_only(generator):
    logits = torch.randn(1, 4, 6, generator=generator, requires_grad=True)
    loss_mask = torch.tensor([[False, False, True, True]])

    sequence_log_prob(logits, torch.tensor([[0, 1, 2, 3]]), loss_mask).sum().backward()

    assert logits.grad[0, :2].abs().sum() == 0
    assert logits.grad[0, 2:].abs().sum() > 0


@pytest.mark.parametrize("logits, targets, loss_mask, error, words", [
    (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool),
     TypeError, r"logits must be a \(B, T, V\) floating-point tensor, got a torch.float32 tensor of shape \(2, 3\)"),
    (torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool),
     TypeError, "logits must be .* got a torch.int64 tensor"),
    (torch.zeros(2, 3, 4), torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool),
     TypeError, r"targets must be a \(B, T\) tensor of token ids"),
    (torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3),
     TypeError, r"loss_mask must be a \(B, T\) bool tensor .* loss_mask.bool\(\)"),
    (torch.zeros(2, 3, 4), torch.zeros(3, 2, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool),
     ValueError, r"targets must have the shape \(B, T\) = \(2, 3\) .* got \(3, 2\)"),
    (torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool),
     ValueError, r"loss_mask must have the shape \(B, T\) = \(2, 3\) .* got \(2, 4\)"),
    (torch.zeros(2, 3, 4), torch.tensor([[0, 1, 4], [0, 0, 0]]), torch.ones(2, 3, dtype=torch.bool),
     ValueError, "targets must be token ids from 0 to V - 1 = 3 where loss_mask is True, got values from 0 to 4"),
    (torch.zeros(2, 3, 4), torch.tensor([[0, 1, -100], [0, 0, 0]]), torch.ones(2, 3, dtype=torch.bool),
     ValueError, "got values from -100 to 1"),
], ids=["logits-2d", "logits-int", "targets-float", "mask-float", "targets-shape", "mask-shape", "id-too-big",
        "minus-100-counted"])
def test_sequence_log_prob_names_a_bad_argument(logits, targets, loss_mask, error, words):
    with pytest.raises(error, match=words):
        sequence_log_prob(logits, targets, loss_mask)


# ---------------------------------------------------------------------------
# preference_loss
# ---------------------------------------------------------------------------


def test_preference_loss_is_binary_cross_entropy_on_the_margin(generator):
    chosen, rejected = torch.randn(8, generator=generator), torch.randn(8, generator=generator)
    margin = chosen - rejected

    torch.testing.assert_close(preference_loss(chosen, rejected),
                               F.binary_cross_entropy_with_logits(margin, torch.ones_like(margin)))


def test_preference_loss_depends_on_the_margin_only(generator):
    chosen, rejected = torch.randn(5, generator=generator), torch.randn(5, generator=generator)

    torch.testing.assert_close(preference_loss(chosen + 100.0, rejected + 100.0), preference_loss(chosen, rejected))
    torch.testing.assert_close(preference_loss(torch.zeros(3), torch.zeros(3)), torch.tensor(math.log(2)))


def test_preference_loss_and_its_gradient_stay_finite_for_huge_margins():
    chosen = torch.tensor([1000.0, -1000.0], requires_grad=True)
    rejected = torch.tensor([-1000.0, 1000.0])

    loss = preference_loss(chosen, rejected)
    loss.backward()

    torch.testing.assert_close(loss, torch.tensor(1000.0))     # (0 + 2000) / 2
    torch.testing.assert_close(chosen.grad, torch.tensor([0.0, -0.5]))  # only the pair ranked wrong is pushed


@pytest.mark.parametrize("chosen, rejected, error, words", [
    ([1.0, 2.0], torch.zeros(2), TypeError, r"chosen_rewards must be a \(B,\) floating-point tensor.* got a list"),
    (torch.zeros(2), torch.zeros(2, dtype=torch.long), TypeError, "rejected_rewards must be .* got a torch.int64"),
    (torch.zeros(2, 1), torch.zeros(2, 1), ValueError, r"chosen_rewards must have shape \(B,\) .* got \(2, 1\)"),
    (torch.zeros(0), torch.zeros(0), ValueError, r"B >= 1"),
    (torch.zeros(3), torch.zeros(2), ValueError,
     r"rejected_rewards \(2,\) and chosen_rewards \(3,\) must have the same shape"),
], ids=["list", "integers", "column", "empty", "different-lengths"])
def test_preference_loss_names_a_bad_argument(chosen, rejected, error, words):
    with pytest.raises(error, match=words):
        preference_loss(chosen, rejected)


# ---------------------------------------------------------------------------
# dpo_loss
# ---------------------------------------------------------------------------


def logps(generator, B=4):
    return -10.0 + 3.0 * torch.randn(B, generator=generator)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_loss_is_binary_cross_entropy_on_the_difference_of_log_ratios(generator, beta):
    pc, pr, rc, rr = (logps(generator) for _ in range(4))
    margin = beta * ((pc - pr) - (rc - rr))

    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, beta=beta),
                               F.binary_cross_entropy_with_logits(margin, torch.ones_like(margin)))


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 10.0])
def test_dpo_loss_starts_at_ln_2_whatever_beta(generator, beta):
    chosen, rejected = logps(generator), logps(generator)

    torch.testing.assert_close(dpo_loss(chosen, rejected, chosen, rejected, beta), torch.tensor(math.log(2)))


def test_dpo_loss_default_beta_is_a_tenth(generator):
    pc, pr, rc, rr = (logps(generator) for _ in range(4))

    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr), dpo_loss(pc, pr, rc, rr, beta=0.1))


def test_dpo_loss_stays_finite_for_huge_margins():
    policy_chosen = torch.tensor([-1.0, -5000.0], requires_grad=True)
    loss = dpo_loss(policy_chosen, torch.tensor([-5000.0, -1.0]), torch.full((2,), -50.0), torch.full((2,), -50.0),
                    beta=1.0)
    loss.backward()

    assert torch.isfinite(loss) and torch.isfinite(policy_chosen.grad).all()
    torch.testing.assert_close(loss, torch.tensor(4999.0 / 2))


@pytest.mark.parametrize("beta", [0, -0.1, float("inf"), float("nan"), True, "0.1", torch.tensor(0.1)])
def test_dpo_loss_refuses_a_beta_that_is_not_a_positive_number(generator, beta):
    pc, pr, rc, rr = (logps(generator) for _ in range(4))
    with pytest.raises(ValueError, match=re.escape(f"beta must be a positive number, got {beta!r}")):
        dpo_loss(pc, pr, rc, rr, beta=beta)


def test_dpo_loss_names_the_bad_one_of_its_four_log_probabilities(generator):
    pc, pr, rc, rr = (logps(generator) for _ in range(4))
    with pytest.raises(ValueError, match=r"reference_chosen_logps \(3,\) and policy_chosen_logps \(4,\)"):
        dpo_loss(pc, pr, rc[:3], rr)
    with pytest.raises(TypeError, match="reference_rejected_logps must be .* got a torch.int64"):
        dpo_loss(pc, pr, rc, rr.long())
    with pytest.raises(ValueError, match=r"policy_rejected_logps must have shape \(B,\)"):
        dpo_loss(pc, pr[:, None], rc, rr)


# ---------------------------------------------------------------------------
# policy_gradient_loss
# ---------------------------------------------------------------------------


def sampled_tokens(generator, B=3, T=5):
    """(logprobs with gradient, ref_logprobs, mask, rewards) of B answers after prompts of different lengths."""
    logprobs = (-3.0 * torch.rand(B, T, generator=generator)).requires_grad_()
    ref_logprobs = -3.0 * torch.rand(B, T, generator=generator)
    mask = torch.arange(T)[None, :] >= torch.tensor([1, 2, 4])[:B, None]
    return logprobs, ref_logprobs, mask, torch.randn(B, generator=generator)


@pytest.mark.parametrize("baseline", [0.0, 0.7, torch.tensor([0.2, -0.4, 1.0])])
def test_policy_gradient_loss_is_reinforce_on_the_penalised_reward(generator, baseline):
    logprobs, ref_logprobs, mask, rewards = sampled_tokens(generator)
    beta = 0.3
    loss = policy_gradient_loss(logprobs, ref_logprobs, mask, rewards, beta, baseline)
    loss.backward()

    log_ratio = ((logprobs - ref_logprobs) * mask).sum(dim=1).detach()
    advantage = rewards - beta * log_ratio - baseline                               # (B,)
    torch.testing.assert_close(loss, -(advantage * (logprobs * mask).sum(dim=1)).mean())
    # REINFORCE: each answer token's log-probability is pushed by its answer's advantage, nothing else.
    torch.testing.assert_close(logprobs.grad, -advantage[:, None] * mask / len(rewards))


def test_the_expected_policy_gradient_is_the_gradient_of_reward_less_beta_kl():
    # A policy over 5 one-token answers, every answer weighted by its probability: the exact expectation of
    # REINFORCE's gradient is the gradient of E[r] - beta * KL(pi || pi_ref), whatever the baseline.
    theta = torch.tensor([0.3, -1.0, 0.8, 0.0, -0.5], dtype=torch.float64, requires_grad=True)
    ref_log_probs = torch.log_softmax(torch.tensor([0.0, 0.5, -0.5, 1.0, 0.2], dtype=torch.float64), dim=0)
    reward, beta = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0], dtype=torch.float64), 0.4
    log_probs = torch.log_softmax(theta, dim=0)
    probs = log_probs.exp().detach()
    every_answer = (log_probs[:, None], ref_log_probs[:, None], torch.ones(5, 1, dtype=torch.bool))
    surrogate = sum(probs[y] * policy_gradient_loss(every_answer[0][y:y + 1], every_answer[1][y:y + 1],
                                                    every_answer[2][y:y + 1], reward[y:y + 1], beta, baseline=1.5)
                    for y in range(5))
    (expected_gradient,) = torch.autograd.grad(surrogate, theta)

    log_probs = torch.log_softmax(theta, dim=0)
    objective = (log_probs.exp() * reward).sum() - beta * (log_probs.exp() * (log_probs - ref_log_probs)).sum()
    (true_gradient,) = torch.autograd.grad(objective, theta)
    torch.testing.assert_close(expected_gradient, -true_gradient)


def test_policy_gradient_loss_never_reads_outside_the_mask(generator):
    logprobs, ref_logprobs, mask, rewards = sampled_tokens(generator)
    garbage = logprobs.detach().masked_fill(~mask, -math.inf).requires_grad_()
    loss = policy_gradient_loss(garbage, ref_logprobs.masked_fill(~mask, math.inf), mask, rewards, 0.1, 0.0)
    loss.backward()

    torch.testing.assert_close(loss, policy_gradient_loss(logprobs, ref_logprobs, mask, rewards, 0.1, 0.0))
    assert torch.isfinite(garbage.grad).all() and (garbage.grad[~mask] == 0).all()


@pytest.mark.parametrize("change, error, words", [
    (lambda a: {**a, "mask": a["mask"].float()}, TypeError, "mask must be a .B, T. bool tensor"),
    (lambda a: {**a, "ref_logprobs": a["ref_logprobs"][:, :4]}, ValueError, r"ref_logprobs \(3, 4\) and logprobs"),
    (lambda a: {**a, "rewards": a["rewards"][:2]}, ValueError, r"rewards must have shape \(B,\) = \(3,\)"),
    (lambda a: {**a, "beta": -0.1}, ValueError, "beta must be a number >= 0, got -0.1"),
    (lambda a: {**a, "baseline": torch.zeros(4)}, ValueError, r"baseline must have shape \(B,\) = \(3,\)"),
    (lambda a: {**a, "baseline": "mean"}, TypeError, "baseline must be a number or a"),
    (lambda a: {**a, "logprobs": a["logprobs"][0]}, TypeError, "logprobs must be a .B, T. floating-point tensor"),
])
def test_policy_gradient_loss_names_a_bad_argument(generator, change, error, words):
    logprobs, ref_logprobs, mask, rewards = sampled_tokens(generator)
    arguments = dict(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask, rewards=rewards, beta=0.1, baseline=0.0)
    with pytest.raises(error, match=words):
        policy_gradient_loss(**change(arguments))


# ---------------------------------------------------------------------------
# ppo_clip_loss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [0.1, 0.2, 0.3])
def test_ppo_clip_loss_is_the_clipped_surrogate_over_the_answer_tokens(generator, clip):
    logprobs, old_logprobs, mask, _ = sampled_tokens(generator)
    advantages = torch.tensor([1.0, -0.5, 2.0])
    loss = ppo_clip_loss(logprobs, old_logprobs, advantages, mask, clip)

    terms = []
    for b, t in mask.nonzero().tolist():
        ratio = math.exp(logprobs[b, t].item() - old_logprobs[b, t].item())
        A = advantages[b].item()
        terms.append(-min(ratio * A, min(max(ratio, 1 - clip), 1 + clip) * A))
    torch.testing.assert_close(loss.item(), sum(terms) / len(terms))


def test_ppo_passes_no_gradient_where_the_ratio_has_moved_past_the_clip_in_the_advantages_direction():
    old = torch.zeros(1, 4)
    # ratios 1.5 and 0.6 with a positive advantage, then the same with a negative one
    logprobs = torch.log(torch.tensor([[1.5, 0.6, 1.5, 0.6]])).requires_grad_()
    mask = torch.ones(1, 4, dtype=torch.bool)
    ppo_clip_loss(logprobs[:, :2], old[:, :2], torch.tensor([1.0]), mask[:, :2]).backward()
    ppo_clip_loss(logprobs[:, 2:], old[:, 2:], torch.tensor([-1.0]), mask[:, 2:]).backward()

    clipped = logprobs.grad[0] == 0
    assert clipped.tolist() == [True, False, False, True]


def test_at_the_first_step_ppo_is_the_policy_gradient(generator):
    # Every ratio is 1 before the policy moves: the gradient is REINFORCE's, averaged over the answer tokens.
    logprobs, _, mask, _ = sampled_tokens(generator)
    advantages = torch.tensor([0.5, -1.0, 2.0])
    ppo_clip_loss(logprobs, logprobs.detach(), advantages, mask).backward()

    torch.testing.assert_close(logprobs.grad, -advantages[:, None] * mask / mask.sum())


@pytest.mark.parametrize("change, error, words", [
    (lambda a: {**a, "clip": 1.5}, ValueError, "clip must be a number between 0 and 1, got 1.5"),
    (lambda a: {**a, "mask": torch.zeros(3, 5, dtype=torch.bool)}, ValueError, "mask must be True at one token"),
    (lambda a: {**a, "advantages": a["advantages"][:, None]}, ValueError, r"advantages must have shape \(B,\)"),
    (lambda a: {**a, "old_logprobs": a["old_logprobs"].long()}, TypeError, "old_logprobs must be a .B, T."),
])
def test_ppo_clip_loss_names_a_bad_argument(generator, change, error, words):
    logprobs, old_logprobs, mask, advantages = sampled_tokens(generator)
    arguments = dict(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    with pytest.raises(error, match=words):
        ppo_clip_loss(**change(arguments))

