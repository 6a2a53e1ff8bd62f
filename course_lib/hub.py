"""A tiny model hub: the pretrained checkpoints shipped inside the package.

Real courses download BERT or GPT-2 from a hub. Ours must work offline, so
``course pretrain NAME`` trains the models with this package's own code and
saves them in ``course_lib/checkpoints/NAME/``:

    model.pt       the weights (a state dict)
    config.json    the TransformerConfig and the training recipe
    vocab.json     the tokenizer's vocabulary
    metrics.json   what the model reached when it was saved

``load_pretrained(NAME)`` loads them strictly: every weight must fit
today's classes exactly, so a renamed layer fails loudly instead of leaving
a randomly initialised one behind.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.lab.pretraining import (
    CHECKPOINT_STEPS, StoryData, evaluate_bert, evaluate_gpt, family_train_config, pretrain_bert, pretrain_gpt,
)
from course_lib.tokenizer import Tokenizer

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
MODELS = {"tiny-bert": BERT, "tiny-gpt": GPT}
FAMILIES = {"tiny-bert": "bert", "tiny-gpt": "gpt"}


@dataclass
class Pretrained:
    """A loaded checkpoint: the model (in eval mode), its tokenizer, config and recorded metrics."""

    name: str
    model: nn.Module
    tokenizer: Tokenizer
    config: TransformerConfig
    metrics: dict[str, float]


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"name must be one of {sorted(MODELS)}, got {name!r}")


def save_pretrained(name: str, model: nn.Module, tokenizer: Tokenizer, metrics: dict[str, float],
                    recipe: dict | None = None, directory: Path = CHECKPOINT_DIR) -> Path:
    """Write a checkpoint folder; returns its path."""
    _check_name(name)
    folder = Path(directory) / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    config = {"model": model.config.to_dict(), "recipe": recipe or {}}
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save(folder / "vocab.json")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return folder


def load_pretrained(name: str, directory: Path = CHECKPOINT_DIR) -> Pretrained:
    """Load a shipped checkpoint strictly, in eval mode."""
    _check_name(name)
    folder = Path(directory) / name
    if not (folder / "model.pt").exists():
        raise FileNotFoundError(f"no checkpoint {name!r} in {folder.parent}; create it with `course pretrain {name}`")
    config = TransformerConfig(**json.loads((folder / "config.json").read_text())["model"])
    model = MODELS[name](config)
    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    tokenizer = Tokenizer.load(folder / "vocab.json")
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"{name}: vocab.json has {tokenizer.vocab_size} tokens, the model {config.vocab_size}")
    metrics = json.loads((folder / "metrics.json").read_text())
    return Pretrained(name, model, tokenizer, config, metrics)


def evaluate_pretrained(pretrained: Pretrained, data: StoryData | None = None) -> dict[str, float]:
    """Measure a checkpoint again, the same way its recorded metrics were measured."""
    if pretrained.name == "tiny-gpt":
        return evaluate_gpt(pretrained.model, data or StoryData.build("gpt"))
    return evaluate_bert(pretrained.model, data or StoryData.build("bert"))


def pretrain(name: str, steps: int | None = None, progress: bool = True,
             directory: Path = CHECKPOINT_DIR) -> Pretrained:
    """Train a checkpoint from scratch with the course's recipe, measure it and save it.

    steps: optimizer steps; by default the shipped recipe's (``pretraining.CHECKPOINT_STEPS``).
    """
    _check_name(name)
    family = FAMILIES[name]
    train_config = family_train_config(family, steps or CHECKPOINT_STEPS)
    if name == "tiny-gpt":
        data = StoryData.build("gpt")
        model, history = pretrain_gpt(data, train_config, progress=progress)
        metrics = evaluate_gpt(model, data)
    else:
        data = StoryData.build("bert")
        model, history = pretrain_bert(data, train_config, progress=progress)
        metrics = evaluate_bert(model, data)
    metrics["train_seconds"] = round(history.seconds, 1)
    save_pretrained(name, model, data.tokenizer, metrics, {"train": asdict(train_config)}, directory)
    return load_pretrained(name, directory)
