"""A tiny model hub: saving and loading the pretrained checkpoints shipped inside the package.

Real courses download BERT or GPT-2 from a hub. Ours must work offline, so
``course pretrain NAME`` (``lab.pretraining.pretrain``) trains the models
with this package's own code and saves them in ``course_lib/checkpoints/NAME/``:

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
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.tokenizer import Tokenizer

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
MODELS = {"tiny-bert": BERT, "tiny-gpt": GPT}
# BERT's masked-LM head reads the token embedding backwards: one tensor that
# state_dict() lists under two names. A checkpoint stores it once, under the
# embedding's name; loading gives the head's name the same tensor again.
TIED_WEIGHTS = {"mlm_head.token_embedding.weight": "body.token_embedding.weight"}


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
    state = {key: weights for key, weights in model.state_dict().items() if key not in TIED_WEIGHTS}
    torch.save(state, folder / "model.pt")
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
    for tied, embedding in TIED_WEIGHTS.items():
        if tied in model.state_dict() and embedding in state:
            state[tied] = state[embedding]
    model.load_state_dict(state, strict=True)
    model.eval()
    tokenizer = Tokenizer.load(folder / "vocab.json")
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"{name}: vocab.json has {tokenizer.vocab_size} tokens, the model {config.vocab_size}")
    metrics = json.loads((folder / "metrics.json").read_text())
    return Pretrained(name, model, tokenizer, config, metrics)
