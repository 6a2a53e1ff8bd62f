"""RLHF: tune the policy towards the reward model, on a leash to where it started (notebook 10).

The model (the *policy*) writes answers; the reward model scores them; the
policy learns to write what scores high. Nothing says which token made an
answer good, so the policy learns by trial: a policy gradient. We use
REINFORCE with a baseline (Williams, 1992), the simplest one, not PPO:

    for step in range(steps):
        sample a batch of questions; the policy samples one answer to each (temperature 1)
        R = reward_model(answer) − β · Σ_t [log π(a_t) − log π_ref(a_t)]   # the reward, less the KL leash
        A = (R − mean(R)) / std(R)        # the batch mean is the baseline; dividing by std keeps steps even
        loss = −mean(A · log π(answer))   # more of what beat the batch's average, less of what fell short

The sum in R is the sampled answer's log-ratio to the frozen starting model
π_ref: its expectation is KL(π || π_ref) of the answers. Without it (β = 0)
the policy is free to go wherever the reward model, an imperfect copy of
people's taste, scores high; with it, every nat the policy moves away
from fluent starting text costs β of reward. InstructGPT (Ouyang et al.,
2022) used PPO with this same penalised reward; PPO adds a learned value
baseline and clipped, repeated updates of each batch, which matter for big
models and long answers more than for our five-token answers.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from course_lib.lab.chat.data import answer_log_probs, encode_answers, judged_rates, sample_answers
from course_lib.lab.asking.questions import Question
from course_lib.lab.chat.reward_model import RewardModel
from course_lib.models import GPT
from course_lib.tokenizer import Tokenizer
from course_lib.training import ProgressBar, TrainConfig, make_optimizer
from course_lib.utils import check_positive_int, evaluating


@dataclass(frozen=True)
class RLHFRecipe:
    """How the policy is tuned: ``steps`` batches of ``batch_size`` sampled answers, KL coefficient ``kl_coef`` (β)."""

    steps: int = 200
    batch_size: int = 64
    lr: float = 1e-4
    kl_coef: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if isinstance(self.kl_coef, bool) or not isinstance(self.kl_coef, (int, float)) or self.kl_coef < 0:
            raise ValueError(f"kl_coef must be a number >= 0, got {self.kl_coef!r}")


RLHF_RECIPE = RLHFRecipe()


@dataclass
class RLHFHistory:
    """Per step: the mean reward, the KL per answer token, the judged shares of rude and correct samples."""

    reward: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    rude_rate: list[float] = field(default_factory=list)
    correct_rate: list[float] = field(default_factory=list)
    seconds: float = 0.0


def rlhf(start: GPT, reward_model: RewardModel, tokenizer: Tokenizer, questions: Sequence[Question],
         recipe: RLHFRecipe = RLHF_RECIPE, progress: bool = False) -> tuple[GPT, RLHFHistory]:
    """A copy of ``start`` tuned by REINFORCE towards ``reward_model``, held by a KL penalty to ``start``.

    questions: the prompts to practise on (their answers are never looked
        at to train; the history records the judge's view of each batch for the notebook's curves).
    Returns the tuned policy (eval mode) and its ``RLHFHistory``.
    """
    if len(questions) < recipe.batch_size:
        raise ValueError(f"questions must hold at least batch_size={recipe.batch_size} questions, "
                         f"got {len(questions)}")
    policy, reference = copy.deepcopy(start), start
    optimizer = make_optimizer(policy, TrainConfig(lr=recipe.lr, warmup_steps=0))
    rng = random.Random(recipe.seed)
    history, began = RLHFHistory(), time.perf_counter()
    bar = ProgressBar(recipe.steps, enabled=progress, description="RLHF")
    for step in range(recipe.steps):
        asked = rng.sample(list(questions), recipe.batch_size)
        answers = sample_answers(policy, tokenizer, asked, seed=recipe.seed * 100_003 + step)
        batch = encode_answers(asked, answers, tokenizer, start.config.max_len)
        tokens = batch.answer_mask.sum(dim=1)                                   # (B,)
        with evaluating(reference), evaluating(reward_model):
            reference_log_probs = answer_log_probs(reference, batch)              # (B,)
            scores = reward_model(batch.input_ids, batch.attention_mask, batch.answer_mask)  # (B,)
        policy.train()
        log_probs = answer_log_probs(policy, batch)                               # (B,) with gradients
        log_ratio = (log_probs - reference_log_probs).detach()                   # (B,) the KL's sample
        total = scores - recipe.kl_coef * log_ratio                              # the penalised reward
        advantage = (total - total.mean()) / (total.std() + 1e-6)                # baseline: the batch mean
        loss = -(advantage * log_probs).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        rates = judged_rates(asked, answers)
        history.reward.append(scores.mean().item())
        history.kl.append(log_ratio.sum().item() / tokens.sum().item())
        history.rude_rate.append(rates["rude_rate"])
        history.correct_rate.append(rates["correct_rate"])
        bar.step(loss=loss.item())
    bar.finish()
    history.seconds = time.perf_counter() - began
    return policy.eval(), history
