"""RLHF and RLVR: tune the policy towards a reward, on a leash to where it started (notebook 10).

The model (the *policy*) writes answers; a reward scores them; the policy
learns to write what scores high. Nothing says which token made an answer
good, so the policy learns by trial: a policy gradient. We use REINFORCE
with a baseline (Williams, 1992), the simplest one, not PPO. One step:

    sample a batch of questions; the policy samples one answer to each (temperature 1)
    R = reward(answer) − β · Σ_t [log π(a_t) − log π_ref(a_t)]   # the reward, less the KL leash
    loss = −mean((R − mean(R)) · log π(answer)) / std(R)          # alignment.policy_gradient_loss

The sum in R is the sampled answer's log-ratio to the frozen starting model
π_ref: its expectation is KL(π || π_ref) of the answers, though one sample
of it can be negative. InstructGPT (Ouyang et al., 2022) charges the same
penalty token by token and adds the reward at the answer's last token;
summed over the answer, that is R. Without it (β = 0) the policy is free to
go wherever the reward is high, also where the reward is wrong; with it,
every nat the policy moves away from its starting text costs β of reward.
The batch mean is the baseline; dividing by the spread keeps the steps of
even size while the rewards' scale changes (it whitens the advantages).

Two rewards, one loop (``policy_gradient``):

* ``rlhf``: a reward model, trained on people's comparisons;
* ``rlvr``: the story world's exact judge (``data.verifiable_reward``), a
  verifiable reward, as reasoning models are trained on answers a program
  can check (Lambert et al., 2024, Tülu 3; DeepSeek-AI, 2025, DeepSeek-R1).
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from course_lib.alignment import policy_gradient_loss
from course_lib.lab.asking.instruction import SFTBatch
from course_lib.lab.asking.questions import Question
from course_lib.lab.chat.data import Answer, answer_token_log_probs, encode_answers, judged_rates, sample_answers, \
    verifiable_reward
from course_lib.lab.chat.reward_model import RewardModel
from course_lib.models import GPT
from course_lib.tokenizer import Tokenizer
from course_lib.training import ProgressBar, TrainConfig, make_optimizer
from course_lib.utils import check_positive_int, evaluating

# A reward: the questions, the sampled answers and their encoded batch -> (B,) one number per answer.
Reward = Callable[[Sequence[Question], Sequence[Answer], SFTBatch], torch.Tensor]


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
    """Per step: the mean reward, the KL per answer token, the judged shares of rude and correct samples.

    ``kl`` is the one-sample estimate of each batch (its answers' log-ratios
    summed, divided by their tokens): it can be a little below 0.
    """

    reward: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    rude_rate: list[float] = field(default_factory=list)
    correct_rate: list[float] = field(default_factory=list)
    seconds: float = 0.0


def reward_model_reward(reward_model: RewardModel) -> Reward:
    """The reward model's score of each answer, read from the encoded batch."""
    def reward(questions: Sequence[Question], answers: Sequence[Answer], batch: SFTBatch) -> torch.Tensor:
        with evaluating(reward_model):
            return reward_model(batch.input_ids, batch.attention_mask, batch.answer_mask)  # (B,)
    return reward


def judge_reward(questions: Sequence[Question], answers: Sequence[Answer], batch: SFTBatch) -> torch.Tensor:
    """The exact judge's reward of each answer (``data.verifiable_reward``): (B,)."""
    return verifiable_reward(questions, answers)


def reinforce_step(policy: GPT, reference: GPT, reward: Reward, tokenizer: Tokenizer, asked: Sequence[Question],
                   optimizer: torch.optim.Optimizer, kl_coef: float, seed: int) -> tuple[list[Answer], dict]:
    """One step of REINFORCE with a KL penalty: sample, score, push. Returns the answers and the step's figures."""
    answers = sample_answers(policy, tokenizer, asked, seed=seed)                  # one answer per question
    batch = encode_answers(asked, answers, tokenizer, policy.config.max_len)
    with torch.no_grad(), evaluating(reference):
        scores = reward(asked, answers, batch)                                     # (B,)
        ref_log_probs, mask = answer_token_log_probs(reference, batch)            # (B, T-1)
    policy.train()
    log_probs, _ = answer_token_log_probs(policy, batch)                           # (B, T-1), with gradients
    log_ratio = (log_probs.detach() - ref_log_probs).sum(dim=1)                   # (B,) the KL's one sample
    shaped = scores - kl_coef * log_ratio                                          # (B,) the penalised reward
    loss = policy_gradient_loss(log_probs, ref_log_probs, mask, scores, kl_coef, baseline=shaped.mean())
    loss = loss / (shaped.std() + 1e-6)   # the same step size whatever the rewards' scale
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    optimizer.step()
    figures = {"loss": loss.item(), "reward": scores.mean().item(),
               "kl": log_ratio.sum().item() / mask.sum().item()}                 # nats per answer token
    return answers, figures


def policy_gradient(start: GPT, reward: Reward, tokenizer: Tokenizer, questions: Sequence[Question],
                    recipe: RLHFRecipe = RLHF_RECIPE, progress: bool = False, description: str = "RLHF"
                    ) -> tuple[GPT, RLHFHistory]:
    """A copy of ``start`` tuned by ``recipe.steps`` REINFORCE steps towards ``reward``, held near ``start``.

    questions: the prompts to practise on (their answers are never looked
        at to train, unless ``reward`` is the judge's; the history records
        the judge's view of each batch for the notebook's curves).
    Returns the tuned policy (eval mode) and its ``RLHFHistory``.
    """
    if len(questions) < recipe.batch_size:
        raise ValueError(f"questions must hold at least batch_size={recipe.batch_size} questions, "
                         f"got {len(questions)}")
    policy = copy.deepcopy(start)
    optimizer = make_optimizer(policy, TrainConfig(lr=recipe.lr, warmup_steps=0))
    rng = random.Random(recipe.seed)
    history, began = RLHFHistory(), time.perf_counter()
    bar = ProgressBar(recipe.steps, enabled=progress, description=description)
    for step in range(recipe.steps):
        asked = rng.sample(list(questions), recipe.batch_size)
        answers, figures = reinforce_step(policy, start, reward, tokenizer, asked, optimizer, recipe.kl_coef,
                                          seed=recipe.seed * 100_003 + step)
        rates = judged_rates(asked, answers)
        history.reward.append(figures["reward"])
        history.kl.append(figures["kl"])
        history.rude_rate.append(rates["rude_rate"])
        history.correct_rate.append(rates["correct_rate"])
        bar.step(loss=figures["loss"])
    bar.finish()
    history.seconds = time.perf_counter() - began
    return policy.eval(), history


def rlhf(start: GPT, reward_model: RewardModel, tokenizer: Tokenizer, questions: Sequence[Question],
         recipe: RLHFRecipe = RLHF_RECIPE, progress: bool = False) -> tuple[GPT, RLHFHistory]:
    """RLHF: ``policy_gradient`` towards ``reward_model``'s scores."""
    return policy_gradient(start, reward_model_reward(reward_model), tokenizer, questions, recipe, progress)


def rlvr(start: GPT, tokenizer: Tokenizer, questions: Sequence[Question], recipe: RLHFRecipe = RLHF_RECIPE,
         progress: bool = False) -> tuple[GPT, RLHFHistory]:
    """RL from verifiable rewards: ``policy_gradient`` towards the exact judge's reward, the same leash."""
    return policy_gradient(start, judge_reward, tokenizer, questions, recipe, progress, description="RLVR")
