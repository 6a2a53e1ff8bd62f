"""The starting model of notebook 10: tiny-gpt fine-tuned on the flawed answers, and the chat checkpoints.

Notebook 09's supervised fine-tuning (``lab.asking.instruction``), on answers of
which a share is rude (``data.flawed_answers``). It trains for a few
minutes, longer than a notebook may, so the result ships as the checkpoint
``chat-sft``; ``course pretrain chat-sft`` makes it again with
``CHAT_SFT_RECIPE``. ``chat-reward`` (``lab.chat.reward_model``) ships the same way.

A chat checkpoint has the files of ``hub``'s (model.pt, config.json,
vocab.json, metrics.json). Its vocabulary is tiny-gpt's with the new words
appended (``lab.asking.vocabulary``), not sorted, so it is read back here and not
by ``Tokenizer.load``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from course_lib.hub import CHECKPOINT_DIR, Pretrained, load_pretrained
from course_lib.lab.chat.data import CHAT_WORDS, RUDE_SHARE, chat_questions, encode_answers, flawed_answers, \
    judge_model
from course_lib.lab.asking.instruction import answer_only_loss
from course_lib.lab.asking.questions import Question, QuestionData
from course_lib.lab.asking.vocabulary import add_words
from course_lib.models import GPT, TransformerConfig
from course_lib.tokenizer import SPECIAL_TOKENS, Tokenizer
from course_lib.training import History, TrainConfig, random_batches, train, trimmed_batches
from course_lib.utils import check_positive_int

CHAT_CHECKPOINTS = ("chat-sft", "chat-reward")


@dataclass(frozen=True)
class SFTRecipe:
    """How ``chat-sft`` is fine-tuned from tiny-gpt: ``n_examples`` questions, ``rude_share`` answered rudely."""

    n_examples: int = 16384
    rude_share: float = RUDE_SHARE
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_examples", "steps", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if not 0 <= self.rude_share <= 1:
            raise ValueError(f"rude_share must be a number from 0 to 1, got {self.rude_share!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           warmup_steps=self.steps // 10, eval_every=self.steps, seed=self.seed)


CHAT_SFT_RECIPE = SFTRecipe()


def make_chat_writer(seed: int = 0, directory: Path = CHECKPOINT_DIR) -> tuple[GPT, Tokenizer]:
    """tiny-gpt taught the question words, the format words and the rude words (new embedding rows)."""
    pretrained = load_pretrained("tiny-gpt", directory)
    tokenizer = add_words(pretrained.model, pretrained.tokenizer, CHAT_WORDS, seed)
    return pretrained.model, tokenizer


def finetune_flawed(questions: Sequence[Question], recipe: SFTRecipe = CHAT_SFT_RECIPE, progress: bool = False,
                    directory: Path = CHECKPOINT_DIR) -> tuple[GPT, Tokenizer, History]:
    """tiny-gpt fine-tuned on the first ``recipe.n_examples`` of ``questions``, a share answered rudely.

    The loss counts the answer's tokens only, as in notebook 09; returns the model (in eval mode),
    its tokenizer and the training history.
    """
    questions = chat_questions(questions)[:recipe.n_examples]
    if len(questions) < recipe.batch_size:
        raise ValueError(f"questions must hold at least batch_size={recipe.batch_size} questions that fit, "
                         f"got {len(questions)}")
    model, tokenizer = make_chat_writer(recipe.seed, directory)
    examples = encode_answers(questions, flawed_answers(questions, recipe.rude_share, recipe.seed), tokenizer,
                              model.config.max_len, end=True)
    config = recipe.train_config()
    batches = random_batches((examples.input_ids, examples.attention_mask, examples.answer_mask), config.batch_size,
                             torch.Generator().manual_seed(recipe.seed))
    history = train(model, trimmed_batches(batches), answer_only_loss, config, progress=progress)
    return model.eval(), tokenizer, history


# ---------------------------------------------------------------------------
# Chat checkpoints: hub's files, a grown vocabulary
# ---------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in CHAT_CHECKPOINTS:
        raise ValueError(f"name must be one of {CHAT_CHECKPOINTS}, got {name!r}")


def save_chat_checkpoint(name: str, model: nn.Module, tokenizer: Tokenizer, metrics: dict[str, float],
                         recipe: dict, directory: Path = CHECKPOINT_DIR) -> Path:
    """Write ``model`` (a GPT, or a reward model around one) as the folder ``directory/name``; returns it."""
    _check_name(name)
    folder = Path(directory) / name
    folder.mkdir(parents=True, exist_ok=True)
    # lm_head.weight is the token embedding itself (tied): stored once, as hub does.
    state = {key: value for key, value in model.state_dict().items() if not key.endswith("lm_head.weight")}
    torch.save(state, folder / "model.pt")
    config = {"model": _gpt(model).config.to_dict(), "recipe": recipe}
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "vocab.json").write_text(json.dumps(tokenizer.id_to_token, indent=0) + "\n")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return folder


def load_chat_checkpoint(name: str, model: nn.Module | None = None, directory: Path = CHECKPOINT_DIR) -> Pretrained:
    """Load ``chat-sft`` (a GPT) strictly, in eval mode; for another checkpoint pass the empty ``model`` to fill.

    ``model`` is built around ``GPT(config)`` by the caller who knows its
    class: ``lab.chat.reward_model.load_reward_model`` passes a ``RewardModel``.
    """
    _check_name(name)
    folder = Path(directory) / name
    if not (folder / "model.pt").exists():
        raise FileNotFoundError(f"no checkpoint {name!r} in {folder.parent}; create it with `course pretrain {name}`")
    config = TransformerConfig(**json.loads((folder / "config.json").read_text())["model"])
    model = GPT(config) if model is None else model
    if _gpt(model).config != config:
        raise ValueError(f"{name} holds a model of {config}, but model has {_gpt(model).config}")
    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    for key in [k for k in model.state_dict() if k.endswith("lm_head.weight")]:
        state[key] = state[key.replace("lm_head.weight", "body.token_embedding.weight")]
    model.load_state_dict(state, strict=True)
    tokenizer = _grown_tokenizer(json.loads((folder / "vocab.json").read_text()))
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"{name}: vocab.json has {tokenizer.vocab_size} tokens, the model {config.vocab_size}")
    metrics = json.loads((folder / "metrics.json").read_text())
    return Pretrained(name, model.eval(), tokenizer, config, metrics)


def _gpt(model: nn.Module) -> GPT:
    """The GPT inside ``model`` (``model`` itself, or a reward model's ``gpt``)."""
    gpt = model if isinstance(model, GPT) else getattr(model, "gpt", None)
    if not isinstance(gpt, GPT):
        raise TypeError(f"model must be a GPT or hold one as .gpt, got {type(model).__name__}")
    return gpt


def _grown_tokenizer(id_to_token: list[str]) -> Tokenizer:
    """The tokenizer whose ids are exactly ``id_to_token`` (a vocabulary grown by ``lab.asking.vocabulary``)."""
    if list(id_to_token[:len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
        raise ValueError(f"a vocabulary must start with the special tokens {SPECIAL_TOKENS}")
    tokenizer = Tokenizer(id_to_token[len(SPECIAL_TOKENS):])  # checks that every entry is one token
    tokenizer.id_to_token = list(id_to_token)
    tokenizer.token_to_id = {token: i for i, token in enumerate(tokenizer.id_to_token)}
    return tokenizer


def make_chat_sft(recipe: SFTRecipe = CHAT_SFT_RECIPE, data: QuestionData | None = None, progress: bool = True,
                  directory: Path = CHECKPOINT_DIR) -> Pretrained:
    """``course pretrain chat-sft``: fine-tune, judge on the test questions, save; returns it as loaded."""
    data = data or QuestionData.build(seed=recipe.seed)
    model, tokenizer, history = finetune_flawed(data.pool, recipe, progress, directory)
    metrics = judge_model(model, tokenizer, chat_questions(data.test), samples=2, seed=recipe.seed)
    metrics["train_seconds"] = round(history.seconds, 1)
    save_chat_checkpoint("chat-sft", model, tokenizer, metrics, {"sft": asdict(recipe)}, directory)
    return load_chat_checkpoint("chat-sft", directory=directory)
