"""GPT answers by writing: supervised fine-tuning on questions and answers written as text (notebook 09).

BERT points at an answer in the story (``lab.asking.qa``); GPT can only continue a
text. So we write each example as one text, the answer at the end::

    [BOS] alice went to the cafe ... . question : where did alice go after the cafe ? answer : park . [EOS]
          |----------- prompt: what the model is given --------------------------------------|-answer-|

and fine-tune GPT on such texts with the next-token loss, counted on the
answer's tokens only (its words and the closing period): the story and the
question are given, the model should not spend its capacity learning to
write them. This is supervised fine-tuning (SFT), the first step from GPT to
an assistant: afterwards, given a prompt that ends with ``answer :``, the
model writes an answer and a period, and we read what it wrote.

The pretrained tiny-gpt is compared with the same model from scratch, on the
same examples, and with one kind of question held out of fine-tuning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from course_lib.generation import generate
from course_lib.hub import CHECKPOINT_DIR, load_pretrained
from course_lib.lab.finetuning import FinetuneRecipe
from course_lib.lab.asking.questions import KINDS, QUESTION_WORDS, Question, QuestionData
from course_lib.lab.asking.vocabulary import add_words
from course_lib.models import GPT
from course_lib.objectives import IGNORE_INDEX, next_token_loss, next_token_targets
from course_lib.tokenizer import BOS, EOS, Tokenizer
from course_lib.training import History, random_batches, train, trimmed_batches
from course_lib.utils import check_positive_int, evaluating

METHODS = ("pretrained", "scratch")
# The words of the format, besides the questions' own: "question :", "answer :".
FORMAT_WORDS = ("question", "answer", ":")
# The most tokens a model may write as its answer: the longest answers have 3 words and a period.
MAX_ANSWER_TOKENS = 5


def prompt_tokens(question: Question) -> tuple[str, ...]:
    """What the model is given: ``[BOS] story question : ... ? answer :``."""
    return (BOS, *question.story.tokens, "question", ":", *question.tokens, "answer", ":")


def answer_tokens(question: Question) -> tuple[str, ...]:
    """What the model should write after the prompt: the answer's words and a period."""
    return (*question.answer_tokens, ".")


@dataclass
class SFTBatch:
    """Examples encoded for GPT, N rows padded to T positions.

    input_ids, attention_mask: (N, T) the whole texts, prompt, answer and ``[EOS]``.
    answer_mask: (N, T) bool, True at the answer's tokens: the only targets the loss counts.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    answer_mask: torch.Tensor


def encode_examples(questions: Sequence[Question], tokenizer: Tokenizer, max_len: int = 64) -> SFTBatch:
    """Prompt, answer and ``[EOS]`` of each question as one padded row, and where the answer is."""
    if not questions:
        raise ValueError("questions must not be empty")
    texts = [(*prompt_tokens(q), *answer_tokens(q), EOS) for q in questions]
    batch = tokenizer.encode_batch(texts, max_len=max_len)                   # (N, T)
    positions = torch.arange(batch.input_ids.shape[1])[None, :]              # (1, T)
    answer_start = torch.tensor([len(prompt_tokens(q)) for q in questions])[:, None]
    answer_end = answer_start + torch.tensor([len(answer_tokens(q)) for q in questions])[:, None]
    answer_mask = (positions >= answer_start) & (positions < answer_end)     # (N, T)
    return SFTBatch(batch.input_ids, batch.attention_mask, answer_mask)


def answer_only_loss(model: GPT, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """GPT's next-token loss averaged over the answer's tokens only, on a batch of (ids, mask, answer_mask)."""
    ids, mask, answer_mask = batch
    inputs, targets = next_token_targets(ids, mask)                  # (B, T-1): position t predicts token t + 1
    targets = targets.masked_fill(~answer_mask[:, 1:], IGNORE_INDEX)  # the story and question are given, not learned
    return next_token_loss(model(inputs, mask[:, :-1]), targets)


# ---------------------------------------------------------------------------
# Asking: the model writes, we read the answer
# ---------------------------------------------------------------------------


def write_answers(model: GPT, tokenizer: Tokenizer, questions: Sequence[Question],
                  max_answer_tokens: int = MAX_ANSWER_TOKENS) -> list[tuple[str, ...]]:
    """What ``model`` writes after each question's prompt, greedily, up to its first period (not included).

    Prompts of the same length are generated together (``generate`` takes
    no padding mask). A model that writes no period within
    ``max_answer_tokens`` tokens gets what it wrote, with ``"..."`` at the end.
    """
    check_positive_int("max_answer_tokens", max_answer_tokens)
    written: list[tuple[str, ...]] = [()] * len(questions)
    by_length: dict[int, list[int]] = {}
    for row, question in enumerate(questions):
        by_length.setdefault(len(prompt_tokens(question)), []).append(row)
    with evaluating(model):
        for length, rows in by_length.items():
            prompts = torch.tensor([tokenizer.encode(prompt_tokens(questions[row])) for row in rows])  # (n, length)
            new_tokens = min(max_answer_tokens, model.config.max_len - length)
            output = generate(model, prompts, new_tokens, greedy=True)[:, length:]                      # (n, new)
            for row, ids in zip(rows, output.tolist()):
                words = tokenizer.convert_ids_to_tokens(ids)
                written[row] = tuple(words[:words.index(".")]) if "." in words else (*words, "...")
    return written


def answer_accuracy(model: GPT, tokenizer: Tokenizer, questions: Sequence[Question]) -> float:
    """Share of questions whose written answer is exactly the answer's words."""
    if not questions:
        raise ValueError("questions must not be empty")
    written = write_answers(model, tokenizer, questions)
    return sum(answer == q.answer_tokens for answer, q in zip(written, questions)) / len(questions)


def accuracy_by_kind(model: GPT, tokenizer: Tokenizer, questions: Sequence[Question]) -> dict[str, float]:
    """``answer_accuracy`` on each kind of question."""
    return {kind: answer_accuracy(model, tokenizer, [q for q in questions if q.kind == kind])
            for kind in KINDS if any(q.kind == kind for q in questions)}


# ---------------------------------------------------------------------------
# Fine-tuning: pretrained or from scratch
# ---------------------------------------------------------------------------

# The peak learning rate of each method at each size of notebook 09's sweep, the better of 3e-3 and 6e-3
# on the validation questions (seed 0). Each method gets its own best: with one rate for both, the
# comparison measures the rate. At 1e-3, our first choice, tiny-gpt was undertrained and seemed to
# lose to the model from scratch at 4,096 examples (0.59 against 0.78); tuned, the two are level.
SFT_LEARNING_RATES = {"pretrained": {256: 6e-3, 1024: 6e-3, 4096: 6e-3},
                      "scratch": {256: 6e-3, 1024: 6e-3, 4096: 3e-3}}
SFT_EPOCHS = 20


def sft_recipe(method: str, n_examples: int) -> FinetuneRecipe:
    """The recipe of ``method`` for ``n_examples``: the learning rate chosen at the nearest size (on a log scale)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_positive_int("n_examples", n_examples)
    rates = SFT_LEARNING_RATES[method]
    nearest = min(rates, key=lambda size: abs(math.log(size / n_examples)))
    return FinetuneRecipe(epochs=SFT_EPOCHS, lr=rates[nearest])


def make_writer(method: str, seed: int = 0, directory: Path = CHECKPOINT_DIR) -> tuple[GPT, Tokenizer]:
    """tiny-gpt (``"pretrained"``) or the same architecture at random (``"scratch"``), taught the new words."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    pretrained = load_pretrained("tiny-gpt", directory)
    tokenizer = add_words(pretrained.model, pretrained.tokenizer, QUESTION_WORDS + FORMAT_WORDS, seed)
    torch.manual_seed(seed)
    model = GPT(pretrained.model.config) if method == "scratch" else pretrained.model
    return model, tokenizer


@dataclass
class SFTResult:
    """One fine-tuning run: accuracy on the held-out questions, the history, the fine-tuned model."""

    method: str
    n_examples: int
    answer_accuracy: float
    history: History
    model: nn.Module
    tokenizer: Tokenizer


def finetune_writer(method: str, train_questions: Sequence[Question], test_questions: Sequence[Question],
                    recipe: FinetuneRecipe | None = None, seed: int = 0, progress: bool = False,
                    directory: Path = CHECKPOINT_DIR) -> SFTResult:
    """Fine-tune a fresh ``make_writer(method)`` on ``train_questions``; its accuracy on ``test_questions``.

    recipe: by default ``sft_recipe(method, len(train_questions))``.
    """
    if not train_questions or not test_questions:
        raise ValueError("train_questions and test_questions must not be empty")
    model, tokenizer = make_writer(method, seed, directory)
    if recipe is None:
        recipe = sft_recipe(method, len(train_questions))
    examples = encode_examples(train_questions, tokenizer, model.config.max_len)
    config = recipe.train_config(len(train_questions), seed)
    batches = random_batches((examples.input_ids, examples.attention_mask, examples.answer_mask), config.batch_size,
                             torch.Generator().manual_seed(seed))
    history = train(model, trimmed_batches(batches), answer_only_loss, config, progress=progress)
    accuracy = answer_accuracy(model, tokenizer, test_questions)
    return SFTResult(method, len(train_questions), accuracy, history, model, tokenizer)


SFT_TABLE_KEYS = ("n_examples", "answer_accuracy", "pretrained_before", "scratch_answer_accuracy")
SFT_BENCH_EXAMPLES = 4096


def sft_table(n_examples: int = SFT_BENCH_EXAMPLES, data: QuestionData | None = None,
              recipe: FinetuneRecipe | None = None, seed: int = 0, directory: Path = CHECKPOINT_DIR) -> dict[str, float]:
    """``course bench``'s ``sft``: exact answers on the test questions before and after fine-tuning.

    Returns {n_examples, answer_accuracy (the fine-tuned tiny-gpt),
    pretrained_before (tiny-gpt before fine-tuning, taught the new words
    only), scratch_answer_accuracy (the same fine-tuning from scratch)}.
    recipe: one for both methods; by default each method's own (``sft_recipe``).
    """
    check_positive_int("n_examples", n_examples)
    data = data or QuestionData.build(seed=seed)
    examples = data.labeled_set(n_examples)
    before, tokenizer = make_writer("pretrained", seed, directory)
    return {"n_examples": n_examples,
            "answer_accuracy": finetune_writer("pretrained", examples, data.test, recipe, seed,
                                               directory=directory).answer_accuracy,
            "pretrained_before": answer_accuracy(before, tokenizer, data.test),
            "scratch_answer_accuracy": finetune_writer("scratch", examples, data.test, recipe, seed,
                                                       directory=directory).answer_accuracy}
