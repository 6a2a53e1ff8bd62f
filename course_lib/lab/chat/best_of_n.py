"""Best-of-n: no training at all, sample n answers and keep the one a scorer likes best (notebook 10).

The simplest way to optimise a reward: the starting model samples n answers
to a question and a scorer picks one. With the reward model as the scorer
it shows what the reward model prefers; with the exact judge it shows how
often the starting model finds a correct answer in n tries, the ceiling of
what reinforcement towards correct answers can find in what the model
already writes. A majority vote among the polite answers shows what the
model would say if it only became surer of its own favourite answer.

Best-of-n moves the answers' distribution away from the starting model by at
most log n − (n − 1)/n nats per answer (the bound Gao et al., 2023, use to
put best-of-n on the same axis as RL), without a single gradient step.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import torch

from course_lib.lab.asking.questions import Question
from course_lib.lab.chat.data import RUDE_WORDS, Answer, judged_rates, sample_answers, verifiable_reward
from course_lib.lab.chat.reward_model import RewardModel, rewards
from course_lib.models import GPT
from course_lib.tokenizer import Tokenizer
from course_lib.utils import check_positive_int


def sample_many(model: GPT, tokenizer: Tokenizer, questions: Sequence[Question], n: int, seed: int = 0
                ) -> list[list[Answer]]:
    """``n`` answers to each question, sampled at temperature 1: one list of n answers per question."""
    check_positive_int("n", n)
    asked = [q for q in questions for _ in range(n)]
    answers = sample_answers(model, tokenizer, asked, seed=seed)
    return [answers[i * n:(i + 1) * n] for i in range(len(questions))]


def pick_best(scores: torch.Tensor, n: int) -> torch.Tensor:
    """(Q,) which of the first ``n`` answers of each question scores highest; ``scores`` is (Q, N), N >= n.

    The first of equal scores wins, so a judge that calls two answers equal
    keeps the earlier sample: best-of-n then never looks at more than n samples.
    """
    if scores.dim() != 2 or not 1 <= n <= scores.shape[1]:
        raise ValueError(f"scores must be (Q, N) with N >= n = {n}, got shape {tuple(scores.shape)}")
    first_n = scores[:, :n]                                                                   # (Q, n)
    is_best = first_n == first_n.amax(dim=1, keepdim=True)
    return is_best.int().argmax(dim=1)                                                        # first True


def best_of_n_rates(questions: Sequence[Question], samples: Sequence[Sequence[Answer]], scores: torch.Tensor,
                    sizes: Sequence[int]) -> dict[int, dict[str, float]]:
    """For each n in ``sizes``: the judged rates of the answers that ``scores`` (Q, N) picks among the first n."""
    table = {}
    for n in sizes:
        picked = pick_best(scores, n).tolist()
        table[n] = judged_rates(questions, [answers[i] for answers, i in zip(samples, picked)])
    return table


def majority_rates(questions: Sequence[Question], samples: Sequence[Sequence[Answer]], sizes: Sequence[int]
                   ) -> dict[int, dict[str, float]]:
    """For each n in ``sizes``: the judged rates of the most frequent polite answer among the first n.

    Rude answers do not vote (the first sample is kept when all are rude); of equally frequent answers the
    one sampled first wins.
    """
    table = {}
    for n in sizes:
        picked = []
        for answers in samples:
            polite = [a for a in answers[:n] if not RUDE_WORDS.intersection(a)]
            picked.append(Counter(polite).most_common(1)[0][0] if polite else answers[0])
        table[n] = judged_rates(questions, picked)
    return table


def reward_model_scores(reward_model: RewardModel, tokenizer: Tokenizer, questions: Sequence[Question],
                        samples: Sequence[Sequence[Answer]]) -> torch.Tensor:
    """(Q, N) the reward model's score of every sampled answer."""
    n = len(samples[0])
    flat = [a for answers in samples for a in answers]
    return rewards(reward_model, tokenizer, [q for q in questions for _ in range(n)], flat).view(len(questions), n)


def judge_scores(questions: Sequence[Question], samples: Sequence[Sequence[Answer]]) -> torch.Tensor:
    """(Q, N) the exact judge's reward of every sampled answer (``data.verifiable_reward``)."""
    n = len(samples[0])
    flat = [a for answers in samples for a in answers]
    return verifiable_reward([q for q in questions for _ in range(n)], flat).view(len(questions), n)


def kl_bound(n: int) -> float:
    """The most best-of-n can move from the sampling model, log n − (n − 1)/n nats per answer."""
    check_positive_int("n", n)
    return math.log(n) - (n - 1) / n
