"""Tiny random tiny-bert and tiny-gpt checkpoints, for tests that fine-tune quickly without the shipped ones."""
import torch

from course_lib.hub import save_pretrained
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
