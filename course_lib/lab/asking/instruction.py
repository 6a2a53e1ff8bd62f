"""GPT answers by writing: supervised fine-tuning on questions and answers written as text (notebook 09).

BERT points at an answer in the story (``lab.asking.qa``); GPT can only continue a
text. So we write each example as one text, the answer at the end::

    [BOS] alice went to the cafe ... . question : where did alice go after the cafe ? answer : park . [EOS]
          |----------- prompt: what the model is given --------------------------------------|-answer-|

and fine-tune GPT on such texts with the next-token loss, counted only on
what follows the prompt (the answer's words, its period and ``[EOS]``,
``objectives.sft_labels``): the story and the question are given, the model
should not spend its capacity learning to write them. This is supervised
fine-tuning (SFT) on one task, the first step from GPT to an assistant:
afterwards, given a prompt that ends with ``answer :``, the model writes an
answer and a period, and we read what it wrote.

The pretrained tiny-gpt is compared with the same model from scratch, on the
same examples, and with one kind of question held out of fine-tuning. Two
variants measure what limits it: the question before the story
(``order="question_first"``) and a deeper model from scratch (``n_layers``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from course_lib.generation import generate
from course_lib.hub import CHECKPOINT_DIR, load_pretrained
from course_lib.lab.finetuning import FinetuneRecipe
from course_lib.lab.asking.questions import KINDS, QUESTION_WORDS, Question, QuestionData
from course_lib.lab.asking.recipes import sft_recipe
from course_lib.lab.asking.vocabulary import add_words
from course_lib.models import GPT
from course_lib.objectives import IGNORE_INDEX, next_token_loss, next_token_targets, sft_labels
from course_lib.tokenizer import BOS, EOS, Tokenizer
from course_lib.training import History, random_batches, train, trimmed_batches
from course_lib.utils import check_positive_int, evaluating

METHODS = ("pretrained", "scratch")
# The words of the format, besides the questions' own: "question :", "answer :".
FORMAT_WORDS = ("question", "answer", ":")
# The most tokens a model may write as its answer: the longest answers have 3 words and a period.
MAX_ANSWER_TOKENS = 5
# Where the question goes: after the story (the format of notebooks 09 and 10), or before it.
ORDERS = ("story_first", "question_first")


def prompt_tokens(question: Question, order: str = "story_first") -> tuple[str, ...]:
    """What the model is given: ``[BOS] story question : ... ? answer :``, or the question first.

    order: "story_first", or "question_first" for ``[BOS] question : ... ? story answer :``,
    the same tokens in another order.
    """
    asked = ("question", ":", *question.tokens)
    if order == "story_first":
        return (BOS, *question.story.tokens, *asked, "answer", ":")
    if order == "question_first":
        return (BOS, *asked, *question.story.tokens, "answer", ":")
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


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


def encode_examples(questions: Sequence[Question], tokenizer: Tokenizer, max_len: int = 64,
                    order: str = "story_first") -> SFTBatch:
    """Prompt, answer and ``[EOS]`` of each question as one padded row, and where the answer is."""
    if not questions:
        raise ValueError("questions must not be empty")
    texts = [(*prompt_tokens(q, order), *answer_tokens(q), EOS) for q in questions]
    batch = tokenizer.encode_batch(texts, max_len=max_len)                   # (N, T)
    positions = torch.arange(batch.input_ids.shape[1])[None, :]              # (1, T)
    answer_start = prompt_lengths(questions, order)[:, None]                 # (N, 1)
    answer_end = answer_start + torch.tensor([len(answer_tokens(q)) for q in questions])[:, None]
    answer_mask = (positions >= answer_start) & (positions < answer_end)     # (N, T)
    return SFTBatch(batch.input_ids, batch.attention_mask, answer_mask)


def prompt_lengths(questions: Sequence[Question], order: str = "story_first") -> torch.Tensor:
    """(N,) how many tokens of each question's text are its prompt: where its answer starts."""
    return torch.tensor([len(prompt_tokens(q, order)) for q in questions])


def sft_loss(model: GPT, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """GPT's next-token loss on what follows each prompt, on a batch of (ids (B, T), mask (B, T), prompt lengths (B,)).

    The answer's words, its period and ``[EOS]`` are learned; the story and the question are given.
    """
    ids, mask, lengths = batch
    labels = sft_labels(ids, lengths, mask)                          # (B, T): -100 on the prompt and the padding
    return next_token_loss(model(ids, mask), labels)


def answer_only_loss(model: GPT, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """GPT's next-token loss averaged over the tokens an answer mask marks, on a batch of (ids, mask, answer_mask).

    Notebook 10's batches (``lab.chat``) mark their answers with a mask, ``[EOS]`` left out.
    """
    ids, mask, answer_mask = batch
    inputs, targets = next_token_targets(ids, mask)                  # (B, T-1): position t predicts token t + 1
    targets = targets.masked_fill(~answer_mask[:, 1:], IGNORE_INDEX)  # the story and question are given, not learned
    return next_token_loss(model(inputs, mask[:, :-1]), targets)


# ---------------------------------------------------------------------------
# Asking: the model writes, we read the answer
# ---------------------------------------------------------------------------


def write_answers(model: GPT, tokenizer: Tokenizer, questions: Sequence[Question],
                  max_answer_tokens: int = MAX_ANSWER_TOKENS, order: str = "story_first") -> list[tuple[str, ...]]:
    """What ``model`` writes after each question's prompt, greedily, up to its first period (not included).

    Prompts of the same length are generated together (``generate`` takes
    no padding mask). A model that writes no period within
    ``max_answer_tokens`` tokens gets what it wrote, with ``"..."`` at the end.
    """
    check_positive_int("max_answer_tokens", max_answer_tokens)
    written: list[tuple[str, ...]] = [()] * len(questions)
    by_length: dict[int, list[int]] = {}
    for row, question in enumerate(questions):
        by_length.setdefault(len(prompt_tokens(question, order)), []).append(row)
    with evaluating(model):
        for length, rows in by_length.items():
            prompts = torch.tensor([tokenizer.encode(prompt_tokens(questions[row], order)) for row in rows])  # (n, length)
            new_tokens = min(max_answer_tokens, model.config.max_len - length)
            output = generate(model, prompts, new_tokens, greedy=True)[:, length:]                      # (n, new)
            for row, ids in zip(rows, output.tolist()):
                words = tokenizer.convert_ids_to_tokens(ids)
                written[row] = tuple(words[:words.index(".")]) if "." in words else (*words, "...")
    return written


def answer_accuracy(model: GPT, tokenizer: Tokenizer, questions: Sequence[Question],
                    order: str = "story_first") -> float:
    """Share of questions whose written answer is exactly the answer's words."""
    if not questions:
        raise ValueError("questions must not be empty")
    written = write_answers(model, tokenizer, questions, order=order)
    return sum(answer == q.answer_tokens for answer, q in zip(written, questions)) / len(questions)


def accuracy_by_kind(model: GPT, tokenizer: Tokenizer, questions: Sequence[Question],
                     order: str = "story_first") -> dict[str, float]:
    """``answer_accuracy`` on each kind of question."""
    return {kind: answer_accuracy(model, tokenizer, [q for q in questions if q.kind == kind], order)
            for kind in KINDS if any(q.kind == kind for q in questions)}


# ---------------------------------------------------------------------------
# Fine-tuning: pretrained or from scratch
# ---------------------------------------------------------------------------

def make_writer(method: str, seed: int = 0, directory: Path = CHECKPOINT_DIR,
                n_layers: int | None = None) -> tuple[GPT, Tokenizer]:
    """tiny-gpt (``"pretrained"``) or the same architecture at random (``"scratch"``), taught the new words.

    n_layers: for ``"scratch"`` only, a deeper or shallower model than tiny-gpt, every other size kept.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n_layers is not None and method != "scratch":
        raise ValueError(f"n_layers is for method 'scratch' only (a pretrained model keeps its layers), "
                         f"got n_layers={n_layers!r} with method {method!r}")
    pretrained = load_pretrained("tiny-gpt", directory)
    tokenizer = add_words(pretrained.model, pretrained.tokenizer, QUESTION_WORDS + FORMAT_WORDS, seed)
    torch.manual_seed(seed)
    if method == "pretrained":
        return pretrained.model, tokenizer
    config = pretrained.model.config
    if n_layers is not None:
        check_positive_int("n_layers", n_layers)
        config = replace(config, n_layers=n_layers)
    return GPT(config), tokenizer


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
                    directory: Path = CHECKPOINT_DIR, order: str = "story_first",
                    n_layers: int | None = None) -> SFTResult:
    """Fine-tune a fresh ``make_writer(method)`` on ``train_questions``; its accuracy on ``test_questions``.

    recipe: by default the method's own (``recipes.sft_recipe(method, len(train_questions))``).
    order: where the question goes in every prompt (``prompt_tokens``), in training and in testing.
    n_layers: the depth of a model from scratch (``make_writer``).
    """
    if not train_questions or not test_questions:
        raise ValueError("train_questions and test_questions must not be empty")
    model, tokenizer = make_writer(method, seed, directory, n_layers)
    if recipe is None:
        recipe = sft_recipe(method, len(train_questions))
    examples = encode_examples(train_questions, tokenizer, model.config.max_len, order)
    config = recipe.train_config(len(train_questions), seed)
    batches = random_batches((examples.input_ids, examples.attention_mask, prompt_lengths(train_questions, order)),
                             config.batch_size, torch.Generator().manual_seed(seed))
    history = train(model, trimmed_batches(batches), sft_loss, config, progress=progress)
    accuracy = answer_accuracy(model, tokenizer, test_questions, order)
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
