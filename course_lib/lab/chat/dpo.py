"""DPO: learn the preferences directly, with no reward model and no sampling loop (notebook 10).

Direct Preference Optimization (Rafailov et al., 2023) starts from the
answer to RLHF's own problem: the policy that maximises reward − β·KL to
π_ref is π_ref reweighted by exp(reward / β). Read backwards, any policy
defines a reward, β · log(π(y | x) / π_ref(y | x)) plus a term that cancels
in a comparison, and the Bradley–Terry loss can train the policy on the
comparisons directly (``alignment.dpo_loss``). The same pairs as the
reward model; the reference's log-probabilities are computed once; then it
is supervised training, like fine-tuning: no answers are sampled.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch

from course_lib.alignment import dpo_loss
from course_lib.lab.chat.data import Comparison, answer_log_probs
from course_lib.lab.asking.instruction import SFTBatch
from course_lib.lab.chat.reward_model import RewardRecipe, encode_pairs
from course_lib.models import GPT
from course_lib.tokenizer import Tokenizer
from course_lib.training import History, random_batches, train, trim_padding
from course_lib.utils import evaluating


@dataclass(frozen=True)
class DPORecipe(RewardRecipe):
    """How the policy learns from the comparisons: the reward model's passes over the same pairs, and DPO's ``beta``."""

    lr: float = 1e-4
    beta: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"beta must be positive, got {self.beta!r}")


DPO_RECIPE = DPORecipe()


def _answers(ids, mask, answer_mask) -> SFTBatch:
    """One side of the pairs, (ids, mask, answer_mask), cut to its longest row."""
    return SFTBatch(*trim_padding((ids, mask, answer_mask), mask))


def reference_log_probs(reference: GPT, pairs: tuple[torch.Tensor, ...], batch_size: int = 512
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) and (N,): the reference's log-probabilities of the chosen and of the rejected answers, once."""
    chosen, rejected = [], []
    with evaluating(reference):
        for start in range(0, len(pairs[0]), batch_size):
            rows = [tensor[start:start + batch_size] for tensor in pairs]
            chosen.append(answer_log_probs(reference, _answers(*rows[:3])))
            rejected.append(answer_log_probs(reference, _answers(*rows[3:])))
    return torch.cat(chosen), torch.cat(rejected)


def dpo(start: GPT, tokenizer: Tokenizer, comparisons: Sequence[Comparison], recipe: DPORecipe = DPO_RECIPE,
        progress: bool = False) -> tuple[GPT, History]:
    """A copy of ``start`` trained on ``comparisons`` with the DPO loss, ``start`` the frozen reference.

    Returns the policy (eval mode) and the training history.
    """
    if not comparisons:
        raise ValueError("comparisons must not be empty")
    pairs = encode_pairs(comparisons, tokenizer, start.config.max_len)
    reference_chosen, reference_rejected = reference_log_probs(start, pairs)
    policy = copy.deepcopy(start)

    def loss(model: GPT, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return dpo_loss(answer_log_probs(model, _answers(*batch[0:3])), answer_log_probs(model, _answers(*batch[3:6])),
                        batch[6], batch[7], recipe.beta)

    config = recipe.train_config(len(comparisons))
    batches = random_batches((*pairs, reference_chosen, reference_rejected), config.batch_size,
                             torch.Generator().manual_seed(recipe.seed))
    history = train(policy, batches, loss, config, progress=progress)
    return policy.eval(), history
