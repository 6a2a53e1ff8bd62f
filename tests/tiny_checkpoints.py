"""Tiny random tiny-bert and tiny-gpt checkpoints, for tests that fine-tune quickly without the shipped ones.

The question tests (QA and instruction tuning) share the fixtures below: a
module imports ``data`` and ``checkpoints`` from here, and ``QUICK``.
"""
import pytest
import torch

from course_lib.hub import save_pretrained
from course_lib.lab.finetuning import FinetuneRecipe
from course_lib.lab.asking.questions import QuestionData
from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.tokenizer import Tokenizer


def save_tiny_checkpoints(folder):
    """Write random one-layer, 16-wide tiny-bert and tiny-gpt checkpoints of the story world into ``folder``."""
    tokenizer = Tokenizer.for_story_world()
    config = TransformerConfig(vocab_size=tokenizer.vocab_size, max_len=64, d_model=16, n_heads=2, n_layers=1,
                               d_ff=32, dropout=0.0)
    torch.manual_seed(1)  # not the methods' seed 0, so "scratch" differs from "pretrained" here
    save_pretrained("tiny-bert", BERT(config), tokenizer, {}, directory=folder)
    save_pretrained("tiny-gpt", GPT(config), tokenizer, {}, directory=folder)
    return folder


# One epoch and a few steps: enough to check what a fine-tuning run computes, not how well it learns.
QUICK = FinetuneRecipe(epochs=1, min_steps=3, batch_size=8)


@pytest.fixture(scope="module")
def data():
    return QuestionData.build(n_stories=6000, n_held_out=40)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return save_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))
