"""A reward model: GPT's body and a scalar head, trained on people's comparisons (notebook 10).

People cannot score every answer a model writes during training, but a
model of their taste can. The reward model reads ``[BOS] story question :
... ? answer : ANSWER .`` and gives one number, the reward: GPT's body (a
copy of the starting model, which already reads stories and questions)
and a linear head on the hidden state of the answer's last token (its
period), the only position that has read the whole answer.

It learns from comparisons alone, with the Bradley–Terry model: the
chosen answer wins with probability σ(r_chosen − r_rejected), and the loss
(``alignment.preference_loss``) is −log of it. Only differences of rewards
are learned: adding a constant to every reward changes nothing.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from course_lib.alignment import preference_loss
from course_lib.hub import CHECKPOINT_DIR, Pretrained
from course_lib.lab.chat.data import RANK, VERDICTS, Answer, Comparison, encode_answers, judge
from course_lib.lab.chat.sft import load_chat_checkpoint, save_chat_checkpoint
from course_lib.lab.asking.questions import Question
from course_lib.models import GPT, TransformerConfig
from course_lib.tokenizer import Tokenizer
from course_lib.training import History, TrainConfig, random_batches, train, trim_padding
from course_lib.utils import check_positive_int, evaluating


class RewardModel(nn.Module):
    """GPT's body and a linear head: (B, T) ids, mask and answer mask -> (B,) rewards.

    The head reads the hidden state at each row's last answer token (the
    last True of ``answer_mask``); GPT's next-token head is kept but unused.
    """

    def __init__(self, gpt: GPT):
        super().__init__()
        if not isinstance(gpt, GPT):
            raise TypeError(f"gpt must be a course_lib.models.GPT, got {type(gpt).__name__}")
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.d_model, 1)
        nn.init.zeros_(self.head.weight)  # every answer starts at reward 0: no preference before training
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, answer_mask: torch.Tensor
                ) -> torch.Tensor:
        if answer_mask.shape != input_ids.shape:
            raise ValueError(f"answer_mask must have input_ids' shape {tuple(input_ids.shape)}, "
                             f"got {tuple(answer_mask.shape)}")
        hidden = self.gpt.encode(input_ids, attention_mask)                                  # (B, T, d_model)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)                # (T,)
        last = torch.where(answer_mask, positions, -1).amax(dim=1)                           # (B,) the period
        return self.head(hidden[torch.arange(len(input_ids)), last]).squeeze(-1)             # (B,)


@dataclass(frozen=True)
class RewardRecipe:
    """How the reward model trains on the comparisons: ``epochs`` passes, at least ``min_steps`` updates."""

    epochs: int = 2
    min_steps: int = 100
    batch_size: int = 32
    lr: float = 3e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "min_steps", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")

    def train_config(self, n_pairs: int) -> TrainConfig:
        batch_size = min(self.batch_size, n_pairs)
        steps = max(self.min_steps, self.epochs * n_pairs // batch_size)
        return TrainConfig(steps=steps, batch_size=batch_size, lr=self.lr, warmup_steps=steps // 10,
                           eval_every=steps, seed=self.seed)


REWARD_RECIPE = RewardRecipe()


def encode_pairs(comparisons: Sequence[Comparison], tokenizer: Tokenizer, max_len: int = 64
                 ) -> tuple[torch.Tensor, ...]:
    """Six (N, T) tensors: ids, mask, answer mask of the chosen answers, then of the rejected ones."""
    if not comparisons:
        raise ValueError("comparisons must not be empty")
    questions = [c.question for c in comparisons]
    chosen = encode_answers(questions, [c.chosen for c in comparisons], tokenizer, max_len)
    rejected = encode_answers(questions, [c.rejected for c in comparisons], tokenizer, max_len)
    return (chosen.input_ids, chosen.attention_mask, chosen.answer_mask,
            rejected.input_ids, rejected.attention_mask, rejected.answer_mask)


def bradley_terry_loss(model: RewardModel, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """−log σ(r_chosen − r_rejected), averaged over a batch of ``encode_pairs`` rows."""
    chosen, rejected = batch[:3], batch[3:]  # (ids, mask, answer_mask) of each side
    return preference_loss(model(*trim_padding(chosen, chosen[1])), model(*trim_padding(rejected, rejected[1])))


def train_reward_model(start: GPT, tokenizer: Tokenizer, comparisons: Sequence[Comparison],
                       recipe: RewardRecipe = REWARD_RECIPE, progress: bool = False) -> tuple[RewardModel, History]:
    """A ``RewardModel`` around a copy of ``start`` trained on ``comparisons``; returns it (eval mode), its history."""
    torch.manual_seed(recipe.seed)
    model = RewardModel(copy.deepcopy(start))
    pairs = encode_pairs(comparisons, tokenizer, start.config.max_len)
    config = recipe.train_config(len(comparisons))
    batches = random_batches(pairs, config.batch_size, torch.Generator().manual_seed(recipe.seed))
    history = train(model, batches, bradley_terry_loss, config, progress=progress)
    return model.eval(), history


def rewards(model: RewardModel, tokenizer: Tokenizer, questions: Sequence[Question], answers: Sequence[Answer],
            batch_size: int = 512) -> torch.Tensor:
    """(N,) the reward of each answer to its question."""
    values = []
    with evaluating(model):
        for start in range(0, len(questions), batch_size):
            batch = encode_answers(questions[start:start + batch_size], answers[start:start + batch_size], tokenizer,
                                   model.gpt.config.max_len)
            values.append(model(batch.input_ids, batch.attention_mask, batch.answer_mask))
    return torch.cat(values)


def truly_better(comparison: Comparison) -> tuple[Answer, Answer]:
    """(better, worse) by the judge's noise-free order, whatever the labeller chose."""
    if comparison.flipped:
        return comparison.rejected, comparison.chosen
    return comparison.chosen, comparison.rejected


def reward_accuracy(model: RewardModel, tokenizer: Tokenizer, comparisons: Sequence[Comparison]) -> float:
    """Share of comparisons where the judge's better answer (not the noisy label) gets the higher reward."""
    return float(_wins(model, tokenizer, comparisons).float().mean())


def _wins(model, tokenizer, comparisons) -> torch.Tensor:
    if not comparisons:
        raise ValueError("comparisons must not be empty")
    questions = [c.question for c in comparisons]
    better, worse = zip(*(truly_better(c) for c in comparisons))
    return rewards(model, tokenizer, questions, better) > rewards(model, tokenizer, questions, worse)  # (N,)


def accuracy_by_kind(model: RewardModel, tokenizer: Tokenizer, comparisons: Sequence[Comparison]
                     ) -> dict[str, tuple[float, int]]:
    """Where the reward model is right and wrong: {"correct>rude": (accuracy, count), ...}."""
    wins = _wins(model, tokenizer, comparisons).tolist()
    by_kind: dict[str, list[bool]] = {}
    for c, win in zip(comparisons, wins):
        high, low = sorted(c.verdicts, key=RANK.__getitem__, reverse=True)
        by_kind.setdefault(f"{high}>{low}", []).append(win)
    return {kind: (sum(w) / len(w), len(w)) for kind, w in sorted(by_kind.items())}


def rewards_by_verdict(model: RewardModel, tokenizer: Tokenizer, questions: Sequence[Question],
                       answers: Sequence[Answer]) -> dict[str, list[float]]:
    """The rewards of ``answers`` grouped by the judge's verdict: what the reward model learned."""
    values = rewards(model, tokenizer, questions, answers).tolist()
    grouped: dict[str, list[float]] = {verdict: [] for verdict in VERDICTS}
    for q, a, value in zip(questions, answers, values):
        grouped[judge(q, a)].append(value)
    return grouped


def save_reward_model(model: RewardModel, tokenizer: Tokenizer, metrics: dict[str, float], recipe: dict,
                      directory: Path = CHECKPOINT_DIR) -> Path:
    """Ship ``model`` as the checkpoint ``chat-reward``."""
    return save_chat_checkpoint("chat-reward", model, tokenizer, metrics, recipe, directory)


def load_reward_model(directory: Path = CHECKPOINT_DIR) -> Pretrained:
    """The shipped ``chat-reward``, in eval mode."""
    config_file = Path(directory) / "chat-reward" / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"no checkpoint 'chat-reward' in {directory}; create it with "
                                "`course pretrain chat-reward`")
    config = TransformerConfig(**json.loads(config_file.read_text())["model"])
    return load_chat_checkpoint("chat-reward", RewardModel(GPT(config)), directory)
