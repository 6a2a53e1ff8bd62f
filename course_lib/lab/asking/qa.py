"""BERT answers questions by pointing: extractive question answering (notebook 09, ``course bench``).

The question and the story go into BERT together, as two segments::

    [CLS] where did alice go after the cafe ? [SEP] alice went to the cafe ... [SEP]
    segment 0 ------------------------------------  segment 1 -----------------------

Segment embeddings (``BERT.segment_embedding``) tell every position which
part it belongs to; the original BERT used them for pairs of sentences, and
they are how the model can tell a word of the question from the same word
in the story. On top of BERT's final vectors ``h_i`` the head is the one of
Devlin et al. (2019, section 4.2): two learned vectors, a start vector ``S``
and an end vector ``E``, the only new parameters. Position ``i`` scores
``S · h_i`` as the *start* of the answer and ``E · h_i`` as its *end*, and a
softmax over the story's positions turns each row of scores into
probabilities. The answer is the best valid span (``answers.best_span``):
inside the story, start before end. Nothing is generated: the model can
only point at words of the story.

Three ways to learn it from the same labeled questions, as in notebook 08:

=====================  =======================================================
``pretrained_full``    tiny-bert and the head, everything trained
``pretrained_frozen``  tiny-bert unchanged, only the head learns
``scratch``            the same architecture, randomly initialised
=====================  =======================================================

The question words are new to tiny-bert; every method gets the same new
embedding rows (``lab.asking.vocabulary``). With a frozen body they stay as they
start: the frozen model reads the question through the story words in it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.answers import best_span
from course_lib.hub import CHECKPOINT_DIR, load_pretrained
from course_lib.lab.finetuning import FinetuneRecipe
from course_lib.lab.asking.questions import QUESTION_WORDS, Question, QuestionData
from course_lib.lab.asking.recipes import qa_recipe
from course_lib.lab.asking.vocabulary import add_words
from course_lib.models import BERT
from course_lib.tokenizer import CLS, SEP, Tokenizer
from course_lib.training import History, random_batches, train, trimmed_batches
from course_lib.utils import check_positive_int, evaluating

METHODS = ("pretrained_full", "pretrained_frozen", "scratch")
QUESTION_SEGMENT, STORY_SEGMENT = 0, 1


# ---------------------------------------------------------------------------
# Inputs: [CLS] question [SEP] story [SEP], segments, where the answer may be
# ---------------------------------------------------------------------------


@dataclass
class QABatch:
    """Questions encoded for BERT, N rows padded to T positions.

    input_ids, attention_mask, segment_ids: (N, T); segment 0 is
        ``[CLS] question [SEP]``, segment 1 ``story [SEP]``.
    story_mask: (N, T) bool, True at the story's words: where an answer may start and end.
    start, end: (N,) the answer's first and last position (end inclusive).
    story_start: (N,) the position of each story's first word.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    segment_ids: torch.Tensor
    story_mask: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor
    story_start: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.input_ids, self.attention_mask, self.segment_ids, self.story_mask, self.start, self.end)


def encode_questions(questions: Sequence[Question], tokenizer: Tokenizer, max_len: int = 64) -> QABatch:
    """``[CLS] question [SEP] story [SEP]`` for each question, with segments and the answer's positions."""
    if not questions:
        raise ValueError("questions must not be empty")
    rows = [(CLS, *q.tokens, SEP, *q.story.tokens, SEP) for q in questions]
    batch = tokenizer.encode_batch(rows, max_len=max_len)                # (N, T), padded with [PAD]
    N, T = batch.input_ids.shape
    story_start = torch.tensor([len(q.tokens) + 2 for q in questions])   # (N,): after [CLS] question [SEP]
    story_end = story_start + torch.tensor([len(q.story.tokens) for q in questions])
    positions = torch.arange(T)[None, :]                                 # (1, T)
    segment_ids = (positions >= story_start[:, None]).long() * batch.attention_mask  # (N, T): 1 from the story on
    story_mask = (positions >= story_start[:, None]) & (positions < story_end[:, None])
    start = story_start + torch.tensor([q.answer[0] for q in questions])
    end = story_start + torch.tensor([q.answer[1] - 1 for q in questions])  # the span is half-open, end inclusive here
    return QABatch(batch.input_ids, batch.attention_mask, segment_ids, story_mask, start, end, story_start)


# ---------------------------------------------------------------------------
# The model: BERT and a start/end head
# ---------------------------------------------------------------------------


class SpanQA(nn.Module):
    """BERT's body and Devlin et al.'s span head: a start vector S and an end vector E.

    ``head.weight`` is (2, d_model): row 0 is S, row 1 is E. A bias would add
    the same number to every position's score, which no softmax over the
    positions can see, so there is none.
    freeze_body: the body's weights never change and only S and E learn.
    """

    def __init__(self, bert: BERT, freeze_body: bool = False):
        super().__init__()
        if not isinstance(bert, BERT):
            raise TypeError(f"bert must be a course_lib.models.BERT, got {type(bert).__name__}")
        self.bert, self.freeze_body = bert, freeze_body
        self.bert.requires_grad_(not freeze_body)
        self.head = nn.Linear(bert.config.d_model, 2, bias=False)
        nn.init.normal_(self.head.weight, std=0.02)             # BERT's initialisation of new weights

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                segment_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end scores (B, T) each, for (B, T) ids, mask and segments."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_body):
            hidden = self.bert.encode(input_ids, attention_mask, segment_ids)  # (B, T, d_model)
        scores = self.head(hidden)                                             # (B, T, 2): S · h_i and E · h_i
        return scores[..., 0], scores[..., 1]


def span_loss(model: SpanQA, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Cross-entropy of the true start and of the true end, each over the story's positions only."""
    ids, mask, segments, story_mask, start, end = batch
    start_logits, end_logits = model(ids, mask, segments)                   # (B, T) each
    outside = ~story_mask                                                   # the question and padding are never answers
    start_loss = F.cross_entropy(start_logits.masked_fill(outside, float("-inf")), start)
    end_loss = F.cross_entropy(end_logits.masked_fill(outside, float("-inf")), end)
    return (start_loss + end_loss) / 2


def predict_spans(model: SpanQA, batch: QABatch, max_answer_len: int | None = None,
                  batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The best valid span of each question: start and end positions (N,) each, end inclusive."""
    starts, ends = [], []
    with evaluating(model):
        for first in range(0, len(batch.input_ids), batch_size):
            rows = slice(first, first + batch_size)
            start_logits, end_logits = model(batch.input_ids[rows], batch.attention_mask[rows], batch.segment_ids[rows])
            start, end = best_span(start_logits, end_logits, batch.story_mask[rows], max_answer_len)
            starts.append(start)
            ends.append(end)
    return torch.cat(starts), torch.cat(ends)


# ---------------------------------------------------------------------------
# Scores: exact match and token F1
# ---------------------------------------------------------------------------


def token_f1(predicted: Sequence[str], answer: Sequence[str]) -> float:
    """The harmonic mean of precision and recall of the predicted words against the answer's (SQuAD's F1).

    Partial credit: "the dog" against "walk the dog" has precision 1,
    recall 2/3 and F1 0.8.
    """
    common = sum((Counter(predicted) & Counter(answer)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(answer)
    return 2 * precision * recall / (precision + recall)


def span_scores(questions: Sequence[Question], start: torch.Tensor, end: torch.Tensor,
                story_start: torch.Tensor) -> dict[str, float]:
    """Exact match (the predicted words are the answer's) and mean token F1 of predicted spans.

    start, end: (N,) predicted input positions (end inclusive); story_start: (N,) where each story begins.
    """
    exact = f1 = 0.0
    for question, s, e in zip(questions, (start - story_start).tolist(), (end - story_start).tolist()):
        predicted = question.story.tokens[s:e + 1]
        exact += predicted == question.answer_tokens
        f1 += token_f1(predicted, question.answer_tokens)
    return {"exact_match": exact / len(questions), "f1": f1 / len(questions)}


# ---------------------------------------------------------------------------
# Fine-tuning and measuring
# ---------------------------------------------------------------------------

# The longest answer ``best_span`` may give, in tokens: the world's longest answers have 3
# ("walk the dog", "in the morning"); a little more lets a wrong answer look wrong instead of being cut.
MAX_ANSWER_LEN = 5


def make_qa_model(method: str, seed: int = 0, directory: Path = CHECKPOINT_DIR) -> tuple[SpanQA, Tokenizer]:
    """A fresh question-answering model for ``method`` (one of ``METHODS``) and its tokenizer.

    tiny-bert is loaded from ``directory`` every time and taught the
    question words (the same new rows for every method, from ``seed``); the
    head, and scratch's whole body, are initialised from ``seed``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    pretrained = load_pretrained("tiny-bert", directory)
    tokenizer = add_words(pretrained.model, pretrained.tokenizer, QUESTION_WORDS, seed)
    torch.manual_seed(seed)
    body = BERT(pretrained.model.config) if method == "scratch" else pretrained.model
    return SpanQA(body, freeze_body=method == "pretrained_frozen"), tokenizer


def evaluate_qa(model: SpanQA, tokenizer: Tokenizer, questions: Sequence[Question],
                max_answer_len: int | None = MAX_ANSWER_LEN) -> dict[str, float]:
    """Exact match and token F1 of ``model``'s answers to ``questions``."""
    batch = encode_questions(questions, tokenizer, model.bert.config.max_len)
    start, end = predict_spans(model, batch, max_answer_len)
    return span_scores(questions, start, end, batch.story_start)


def exact_match_by_kind(model: SpanQA, tokenizer: Tokenizer, questions: Sequence[Question]) -> dict[str, float]:
    """Exact match on each kind of question ("where_next", "what", ...)."""
    kinds = sorted({q.kind for q in questions})
    return {kind: evaluate_qa(model, tokenizer, [q for q in questions if q.kind == kind])["exact_match"]
            for kind in kinds}


@dataclass
class QAResult:
    """One fine-tuning run: exact match and F1 on the held-out questions, the history, the trained model."""

    method: str
    n_labels: int
    exact_match: float
    f1: float
    history: History
    model: SpanQA
    tokenizer: Tokenizer


def finetune_qa(method: str, train_questions: Sequence[Question], test_questions: Sequence[Question],
                recipe: FinetuneRecipe | None = None, seed: int = 0, progress: bool = False,
                directory: Path = CHECKPOINT_DIR) -> QAResult:
    """Fine-tune a fresh model of ``method`` on ``train_questions``; measure it on ``test_questions``.

    recipe: by default the method's own (``recipes.qa_recipe(method, len(train_questions))``).
    """
    if not train_questions or not test_questions:
        raise ValueError("train_questions and test_questions must not be empty")
    model, tokenizer = make_qa_model(method, seed, directory)
    if recipe is None:
        recipe = qa_recipe(method, len(train_questions))
    labeled = encode_questions(train_questions, tokenizer, model.bert.config.max_len)
    config = recipe.train_config(len(train_questions), seed)
    batches = trimmed_batches(random_batches(labeled.tensors(), config.batch_size, torch.Generator().manual_seed(seed)))
    history = train(model, batches, span_loss, config, progress=progress)
    scores = evaluate_qa(model, tokenizer, test_questions)
    return QAResult(method, len(train_questions), scores["exact_match"], scores["f1"], history, model, tokenizer)


QA_TABLE_KEYS = ("n_labels", "pretrained_full", "pretrained_frozen", "scratch", "transfer_gain")
QA_BENCH_LABELS = 4096


def qa_table(n_labels: int = QA_BENCH_LABELS, data: QuestionData | None = None, recipe: FinetuneRecipe | None = None,
             seed: int = 0, directory: Path = CHECKPOINT_DIR) -> dict[str, float]:
    """``course bench``'s ``qa``: exact match of each method on the test questions, and the gain of pretraining.

    Returns {n_labels, pretrained_full, pretrained_frozen, scratch,
    transfer_gain = pretrained_full - scratch}.
    recipe: one for every method; by default each method's own (``recipes.qa_recipe``).
    """
    check_positive_int("n_labels", n_labels)
    data = data or QuestionData.build(seed=seed)
    labeled = data.labeled_set(n_labels)
    table = {"n_labels": n_labels}
    for method in METHODS:
        table[method] = finetune_qa(method, labeled, data.test, recipe, seed, directory=directory).exact_match
    table["transfer_gain"] = table["pretrained_full"] - table["scratch"]
    return {key: table[key] for key in QA_TABLE_KEYS}
