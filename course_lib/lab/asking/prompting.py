"""Prompt-based fine-tuning: notebook 08's coherence task asked through BERT's masked-LM head (notebook 09).

Notebook 08 put a new head on BERT's pooled features. Here the task is
rewritten as a fill-in-the-blank that BERT's own pretraining head can answer,
a *pattern* with one ``[MASK]`` and a *verbalizer*, a word per label
(Schick and Schütze, 2021, "pattern-verbalizer pairs")::

    [CLS] alice went to the library to swim in the morning . [MASK] [SEP]
    label 1 (coherent) -> "yes",  label 0 (corrupted) -> "no"

The class scores are the masked-LM logits of the label words at the mask
(``answers.verbalizer_logits``), and fine-tuning trains BERT with the
cross-entropy of those two scores: no new layer, the pretrained head reads
the answer. The label words are new to tiny-bert (``lab.asking.vocabulary``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.answers import verbalizer_logits
from course_lib.corpus import LabeledStory
from course_lib.hub import CHECKPOINT_DIR, load_pretrained
from course_lib.lab.finetuning import CoherenceData, FinetuneRecipe
from course_lib.lab.asking.vocabulary import add_words
from course_lib.models import BERT
from course_lib.tokenizer import MASK, Tokenizer
from course_lib.training import History, random_batches, train
from course_lib.utils import check_positive_int, evaluating


@dataclass(frozen=True)
class Prompt:
    """A pattern-verbalizer pair.

    pattern: the words that follow the story, ``[MASK]`` once among them.
    verbalizer: the word that stands for each label, label 0 (corrupted) first.
    """

    pattern: tuple[str, ...] = (MASK,)
    verbalizer: tuple[str, ...] = ("no", "yes")

    def __post_init__(self) -> None:
        if self.pattern.count(MASK) != 1:
            raise ValueError(f"pattern must hold {MASK} exactly once, got {self.pattern!r}")
        if len(self.verbalizer) != 2 or len(set(self.verbalizer)) != 2:
            raise ValueError(f"verbalizer must be two different words (corrupted, coherent), got {self.verbalizer!r}")

    def words(self) -> list[str]:
        """The words of the pattern and the verbalizer, to teach the model if it lacks them."""
        return [word for word in self.pattern + self.verbalizer if word != MASK]


PROMPT = Prompt()


def encode_prompts(examples: Sequence[LabeledStory], tokenizer: Tokenizer, prompt: Prompt = PROMPT,
                   max_len: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids (N, T), attention mask (N, T), mask positions (N,) and labels (N,) of ``[CLS] story pattern [SEP]``."""
    if not examples:
        raise ValueError("examples must not be empty")
    batch = tokenizer.encode_batch([(*e.tokens, *prompt.pattern) for e in examples], style="bert", max_len=max_len)
    mask_positions = torch.tensor([1 + len(e.tokens) + prompt.pattern.index(MASK) for e in examples])  # after [CLS]
    return batch.input_ids, batch.attention_mask, mask_positions, torch.tensor([e.label for e in examples])


class PromptClassifier(nn.Module):
    """BERT with its masked-LM head; the class scores are the label words' logits at the mask."""

    def __init__(self, bert: BERT, verbalizer_ids: torch.Tensor):
        super().__init__()
        if not isinstance(bert, BERT):
            raise TypeError(f"bert must be a course_lib.models.BERT, got {type(bert).__name__}")
        self.bert = bert
        self.register_buffer("verbalizer_ids", verbalizer_ids)  # (C,)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mask_positions: torch.Tensor) -> torch.Tensor:
        """Class logits (B, C) of (B, T) ids and mask with one ``[MASK]`` per row at ``mask_positions`` (B,)."""
        mlm_logits = self.bert(input_ids, attention_mask)                             # (B, T, vocab_size)
        return verbalizer_logits(mlm_logits, mask_positions, self.verbalizer_ids)     # (B, C)


def make_prompt_classifier(prompt: Prompt = PROMPT, seed: int = 0,
                           directory: Path = CHECKPOINT_DIR) -> tuple[PromptClassifier, Tokenizer]:
    """tiny-bert, taught the prompt's words, as a ``PromptClassifier``; and its tokenizer."""
    pretrained = load_pretrained("tiny-bert", directory)
    tokenizer = add_words(pretrained.model, pretrained.tokenizer, prompt.words(), seed)
    verbalizer_ids = torch.tensor([tokenizer.token_to_id[word] for word in prompt.verbalizer])
    return PromptClassifier(pretrained.model, verbalizer_ids), tokenizer


def prompt_loss(model: PromptClassifier, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Cross-entropy of the labels under the verbalizer's scores, on a batch of (ids, mask, positions, labels)."""
    ids, mask, mask_positions, labels = batch
    return F.cross_entropy(model(ids, mask, mask_positions), labels)


def prompt_accuracy(model: PromptClassifier, tokenizer: Tokenizer, examples: Sequence[LabeledStory],
                    prompt: Prompt = PROMPT, batch_size: int = 512) -> float:
    """Share of ``examples`` whose label word scores higher than the other at the mask."""
    ids, mask, mask_positions, labels = encode_prompts(examples, tokenizer, prompt, model.bert.config.max_len)
    correct = 0
    with evaluating(model):
        for start in range(0, len(labels), batch_size):
            rows = slice(start, start + batch_size)
            predictions = model(ids[rows], mask[rows], mask_positions[rows]).argmax(dim=-1)
            correct += (predictions == labels[rows]).sum().item()
    return correct / len(labels)


@dataclass
class PromptResult:
    """One prompt-based fine-tuning run: test accuracy, history and the fine-tuned classifier."""

    n_labels: int
    test_accuracy: float
    history: History
    model: PromptClassifier
    tokenizer: Tokenizer


# Chosen on the validation stories; see notebook 09.
PROMPT_RECIPE = FinetuneRecipe(lr=2e-3)


def finetune_prompt(train_examples: Sequence[LabeledStory], test_examples: Sequence[LabeledStory],
                    prompt: Prompt = PROMPT, recipe: FinetuneRecipe = PROMPT_RECIPE, seed: int = 0,
                    progress: bool = False, directory: Path = CHECKPOINT_DIR) -> PromptResult:
    """Fine-tune tiny-bert through its masked-LM head on ``train_examples``; its accuracy on ``test_examples``."""
    if not train_examples or not test_examples:
        raise ValueError("train_examples and test_examples must not be empty")
    model, tokenizer = make_prompt_classifier(prompt, seed, directory)
    tensors = encode_prompts(train_examples, tokenizer, prompt, model.bert.config.max_len)
    config = recipe.train_config(len(train_examples), seed)
    batches = random_batches(tensors, config.batch_size, torch.Generator().manual_seed(seed))
    history = train(model, batches, prompt_loss, config, progress=progress)
    accuracy = prompt_accuracy(model, tokenizer, test_examples, prompt)
    return PromptResult(len(train_examples), accuracy, history, model, tokenizer)


def prompt_full(n_labels: int = 256, data: CoherenceData | None = None, prompt: Prompt = PROMPT,
                recipe: FinetuneRecipe = PROMPT_RECIPE, seed: int = 0, directory: Path = CHECKPOINT_DIR) -> float:
    """``course bench``'s ``finetune.prompt_full``: test accuracy of prompt-based fine-tuning with ``n_labels`` labels."""
    check_positive_int("n_labels", n_labels)
    data = data or CoherenceData.build(seed=seed)
    return finetune_prompt(data.labeled_set(n_labels), data.test, prompt, recipe, seed,
                           directory=directory).test_accuracy
