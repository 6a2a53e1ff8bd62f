"""From GPT to an assistant: the losses of preference learning (notebook 10).

People compare two answers to the same prompt and say which they prefer.
Three formulas turn such comparisons into training signals:

* ``sequence_log_prob``: how likely a model finds a whole answer, the sum
  of its tokens' log-probabilities. The reward model reads answers, RLHF's
  KL penalty compares two models on them, DPO compares them directly.
* ``preference_loss``: the Bradley–Terry model (1952) says the chosen
  answer wins with probability σ(r_chosen − r_rejected); a reward model
  learns its scalar rewards ``r`` by maximising that probability
  (Ouyang et al., 2022, equation 1).
* ``dpo_loss``: Direct Preference Optimization (Rafailov et al., 2023,
  equation 7) puts the policy's own log-probability ratio to a frozen
  reference in the place of the reward, so the preferences train the
  policy with no reward model and no sampling.

Two more turn sampled answers and their rewards into training signals:

* ``policy_gradient_loss``: REINFORCE (Williams, 1992) on a reward less a
  KL penalty to a frozen reference, the objective of RLHF (Ouyang et al.,
  2022, equation 2, without its pretraining term); minimising it raises the
  log-probability of the answers that scored above the baseline.
* ``ppo_clip_loss``: PPO's clipped surrogate (Schulman et al., 2017,
  equation 7), which lets a batch of samples be used for several steps
  without the policy running away from the one that sampled them.

All five take and return plain tensors; ``lab.chat`` runs them on models.
They are the exercises of notebook 10.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def sequence_log_prob(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """The log-probability of each row's targets where ``loss_mask`` is True, summed per row.

    Args:
        logits: (B, T, V) scores already aligned with ``targets``: ``logits[:, t]`` scores ``targets[:, t]``
            (for GPT, the logits of positions 0..T-1 and the tokens of positions 1..T).
        targets: (B, T) token ids. Where ``loss_mask`` is False they are never read, so padding or -100
            may stand there.
        loss_mask: (B, T) bool, True at the tokens that count (an answer's, never its prompt's or padding).

    Returns:
        (B,) the sum of log p(targets[b, t]) over the positions t where ``loss_mask[b, t]``; 0 for a row
        whose mask is all False. Float32 at least, float64 for float64 logits.
    """
    _check_sequence_inputs(logits, targets, loss_mask)
    # Half-precision log-probabilities would lose digits when many of them are added up.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    log_probs = F.log_softmax(logits, dim=-1)                                        # (B, T, V)
    readable_targets = targets.masked_fill(~loss_mask, 0)                            # any valid id: not counted
    target_log_probs = log_probs.gather(-1, readable_targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    # masked_fill rather than a product with the mask: 0 * -inf would be NaN where a token is impossible.
    return target_log_probs.masked_fill(~loss_mask, 0.0).sum(dim=1)                  # (B,)


def preference_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """The Bradley–Terry loss: the mean over B pairs of −log σ(r_chosen − r_rejected).

    Args:
        chosen_rewards: (B,) the reward of the answer people preferred, one per pair.
        rejected_rewards: (B,) the reward of the other answer of the same pair.

    Returns:
        A scalar tensor, ln 2 when the rewards cannot tell the answers apart, near 0 when every chosen
        answer is far ahead, about r_rejected − r_chosen when it is far behind.

    ``logsigmoid`` keeps it finite for any margin: ``-torch.log(torch.sigmoid(x))``
    gives ``inf`` once σ(x) rounds to 0 (x below about −104 in float32).
    """
    _check_pairs(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
             beta: float = 0.1) -> torch.Tensor:
    """DPO: the Bradley–Terry loss with the implicit reward β · log(π(y | x) / π_ref(y | x)).

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) ``sequence_log_prob`` of the chosen and the
            rejected answer under the policy being trained.
        reference_chosen_logps, reference_rejected_logps: (B,) the same under the frozen reference
            (the model before alignment).
        beta: a positive number, how far the policy may move from the reference: a small β lets it
            move far.

    Returns:
        A scalar tensor, the mean over the B pairs of
        −log σ(β · ((π_c − ref_c) − (π_r − ref_r))). While the policy is the
        reference, every log-ratio is 0 and the loss is ln 2, whatever β.
    """
    _check_pairs(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (0 < beta < math.inf):
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    chosen_reward = beta * (policy_chosen_logps - reference_chosen_logps)        # (B,)
    rejected_reward = beta * (policy_rejected_logps - reference_rejected_logps)  # (B,)
    return preference_loss(chosen_reward, rejected_reward)


def policy_gradient_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                         rewards: torch.Tensor, beta: float, baseline: float | torch.Tensor) -> torch.Tensor:
    """REINFORCE with a KL penalty: −mean_b((R_b − baseline_b) · log π(answer_b)), R_b taken as a constant.

    Args:
        logprobs: (B, T) log π(y_t) of each sampled token under the policy, with the gradient that trains it.
        ref_logprobs: (B, T) the same tokens' log-probabilities under the frozen reference.
        mask: (B, T) bool, True at the answer's tokens; every other position is ignored.
        rewards: (B,) the reward of each answer (a reward model's score, or a judge's verdict).
        beta: a number >= 0, the KL penalty's weight.
        baseline: a number (or a 0-dimensional tensor), or (B,) one per answer: subtracted from the shaped rewards, it changes the
            gradient's noise, not its expectation, as long as it does not depend on the answer it is paired with.

    Returns:
        A scalar tensor. The shaped reward of answer b is
        R_b = rewards_b − beta · Σ_t mask·(logprobs − ref_logprobs), the sampled answer's log-ratio to the
        reference standing in for the KL divergence; it is a constant of the loss (no gradient flows through
        it), whose gradient is therefore −mean_b((R_b − baseline_b) · ∇ Σ_t mask·logprobs[b, t]).
    """
    _check_token_inputs(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    B = logprobs.shape[0]
    _check_per_sequence("rewards", rewards, B)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (0 <= beta < math.inf):
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")
    if isinstance(baseline, torch.Tensor) and baseline.dim() > 0:
        _check_per_sequence("baseline", baseline, B)
    elif isinstance(baseline, bool) or not isinstance(baseline, (int, float, torch.Tensor)):
        raise TypeError(f"baseline must be a number or a (B,) = ({B},) tensor, got {_described(baseline)}")
    answer_log_probs = logprobs.masked_fill(~mask, 0.0).sum(dim=1)                        # (B,) log π(answer)
    with torch.no_grad():
        log_ratio = (logprobs - ref_logprobs).masked_fill(~mask, 0.0).sum(dim=1)          # (B,) the KL's sample
        shaped = rewards - beta * log_ratio                                               # (B,) a constant
    return -((shaped - baseline) * answer_log_probs).mean()


def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
    """PPO's clipped surrogate: the mean over answer tokens of −min(ρ·A, clamp(ρ, 1 − clip, 1 + clip)·A).

    Args:
        logprobs: (B, T) log-probabilities of the sampled tokens under the policy being trained (with gradient).
        old_logprobs: (B, T) the same under the policy that sampled them, a constant.
        advantages: (B,) how much better than expected each answer was; every token of an answer shares it.
        mask: (B, T) bool, True at the answer's tokens; at least one must be True.
        clip: a number in (0, 1), how far the ratio ρ = π / π_old may move before a token stops pulling.

    Returns:
        A scalar tensor: the mean over the tokens where ``mask`` is True. Where the ratio has already moved
        past 1 ± clip in the advantage's direction the clipped term is the smaller one and its gradient is 0:
        a batch cannot push the policy further than that, however many steps reuse it.
    """
    _check_token_inputs(logprobs=logprobs, old_logprobs=old_logprobs, mask=mask)
    _check_per_sequence("advantages", advantages, logprobs.shape[0])
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < clip < 1:
        raise ValueError(f"clip must be a number between 0 and 1, got {clip!r}")
    if not mask.any():
        raise ValueError("mask must be True at one token at least: the loss is a mean over the answer tokens")
    ratio = torch.exp(logprobs - old_logprobs)                                             # (B, T)
    advantage = advantages[:, None]                                                       # (B, 1): per token
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)  # (B, T)
    return -surrogate[mask].mean()


# ---------------------------------------------------------------------------
# Checking the inputs
# ---------------------------------------------------------------------------


def _described(x: Any) -> str:
    """What was received, for an error message: a tensor's dtype and shape, or another object's type."""
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


def _check_sequence_inputs(logits: Any, targets: Any, loss_mask: Any) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 3:
        raise TypeError(f"logits must be a (B, T, V) floating-point tensor, got {_described(logits)}")
    B, T, V = logits.shape
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be a (B, T) tensor of token ids (integers), got {_described(targets)}")
    if not isinstance(loss_mask, torch.Tensor) or loss_mask.dtype != torch.bool:
        raise TypeError(f"loss_mask must be a (B, T) bool tensor (True = the token counts), got "
                        f"{_described(loss_mask)}; for a 0/1 mask, pass loss_mask.bool()")
    for name, x in (("targets", targets), ("loss_mask", loss_mask)):
        if x.shape != (B, T):
            raise ValueError(f"{name} must have the shape (B, T) = ({B}, {T}) of logits' first two dimensions, "
                             f"got {tuple(x.shape)}")
    counted = targets[loss_mask]
    if counted.numel() and (counted.min() < 0 or counted.max() >= V):
        raise ValueError(f"targets must be token ids from 0 to V - 1 = {V - 1} where loss_mask is True, got "
                         f"values from {int(counted.min())} to {int(counted.max())}")


def _check_pairs(**named: Any) -> None:
    """Every argument a (B,) floating-point tensor, all of the same shape, with one pair at least."""
    first_name, first = next(iter(named.items()))
    for name, x in named.items():
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a (B,) floating-point tensor, one number per pair, got {_described(x)}")
        if x.dim() != 1 or len(x) == 0:
            raise ValueError(f"{name} must have shape (B,) with B >= 1, one number per pair, got {tuple(x.shape)}")
        if x.shape != first.shape:
            raise ValueError(f"{name} {tuple(x.shape)} and {first_name} {tuple(first.shape)} must have the same "
                             "shape (B,): one number per pair")


def _check_token_inputs(mask: Any, **named: Any) -> None:
    """Every named argument a (B, T) floating-point tensor, ``mask`` a (B, T) bool tensor of the same shape."""
    first_name, first = next(iter(named.items()))
    for name, x in named.items():
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 2:
            raise TypeError(f"{name} must be a (B, T) floating-point tensor, one value per token, got {_described(x)}")
        if x.shape != first.shape:
            raise ValueError(f"{name} {tuple(x.shape)} and {first_name} {tuple(first.shape)} must have the same "
                             "shape (B, T)")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a (B, T) bool tensor (True = an answer token), got {_described(mask)}; "
                        "for a 0/1 mask, pass mask.bool()")
    if mask.shape != first.shape:
        raise ValueError(f"mask must have the shape {tuple(first.shape)} of {first_name}, got {tuple(mask.shape)}")


def _check_per_sequence(name: str, x: Any, B: int) -> None:
    """``x`` a (B,) floating-point tensor: one number per answer."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a (B,) floating-point tensor, one number per answer, got {_described(x)}")
    if x.shape != (B,):
        raise ValueError(f"{name} must have shape (B,) = ({B},), one number per answer, got {tuple(x.shape)}")
