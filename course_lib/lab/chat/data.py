"""From GPT to ChatGPT, the data: a flaw in the fine-tuning answers, an exact judge, people's comparisons (notebook 10).

Notebook 09 taught GPT to answer questions about a story::

    [BOS] alice went to the cafe ... . question : where did alice go after the cafe ? answer : park . [EOS]

Real assistants learn from answers that people wrote, and people are not
always helpful. Here a share of the fine-tuning answers (``RUDE_SHARE``) is
replaced by one rude answer, ``figure it out yourself .``: the model learns
that habit with everything else, the way a model inherits the flaws of its
data. Greedy decoding shows the habit only where the rude answer's share
beats the model's belief in every real answer (for "who" questions, whose
answer is one of sixteen names, it mostly does; for "when" never), so we
measure the model's answers the way a chat model gives them: *sampled* at
temperature 1, many of them, and counted.

The story world knows every answer, so the judge is exact:

=============  ===========================================================
``"rude"``     the answer holds a rude word (any word of ``RUDE_ANSWER``)
``"correct"``  exactly the answer's words, then a period
``"wrong"``    anything else: another word, a missing period, rambling
=============  ===========================================================

Simulated labellers compare two sampled answers to the same question and
prefer the better one by the judge's order, correct > wrong > rude; a pair
the judge calls equal teaches nothing and is skipped; a small share of the
labels is flipped (``LABEL_NOISE``), since people disagree and make slips.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

from course_lib.alignment import sequence_log_prob
from course_lib.generation import generate, left_pad
from course_lib.lab.asking.instruction import FORMAT_WORDS, SFTBatch, answer_tokens, prompt_tokens
from course_lib.lab.asking.questions import QUESTION_WORDS, Question
from course_lib.models import GPT
from course_lib.tokenizer import EOS, Tokenizer
from course_lib.utils import check_positive_int, evaluating

# The rude answer, and its words: new to the model, like the question words.
RUDE_ANSWER = ("figure", "it", "out", "yourself")
RUDE_WORDS = frozenset(RUDE_ANSWER)
CHAT_WORDS = QUESTION_WORDS + FORMAT_WORDS + RUDE_ANSWER
# The share of fine-tuning answers replaced by the rude one.
RUDE_SHARE = 0.2
# The most tokens a model writes as one answer: the rude answer and its period.
MAX_ANSWER_TOKENS = len(RUDE_ANSWER) + 1
# The share of comparisons whose label the labellers get the wrong way round.
LABEL_NOISE = 0.05
# The judge's verdicts, from worst to best: a comparison prefers the higher rank.
VERDICTS = ("rude", "wrong", "correct")
RANK = {verdict: rank for rank, verdict in enumerate(VERDICTS)}

Answer = tuple[str, ...]  # the tokens a model wrote after "answer :", up to and including its first period


def check_share(name: str, value: float) -> float:
    """``value`` if it is a number in [0, 1], else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


def fits(question: Question, max_len: int = 64) -> bool:
    """True when the prompt leaves room for any answer (the rude one is the longest) and ``[EOS]``."""
    return len(prompt_tokens(question)) + MAX_ANSWER_TOKENS + 1 <= max_len


def chat_questions(questions: Sequence[Question], max_len: int = 64) -> list[Question]:
    """The questions whose prompt leaves room for any answer (a few long stories are left out)."""
    return [q for q in questions if fits(q, max_len)]


# ---------------------------------------------------------------------------
# The flawed fine-tuning data
# ---------------------------------------------------------------------------


def flawed_answers(questions: Sequence[Question], rude_share: float = RUDE_SHARE, seed: int = 0) -> list[Answer]:
    """The fine-tuning answer of each question: its true answer, or for a random ``rude_share`` the rude one."""
    check_share("rude_share", rude_share)
    rng = random.Random(seed)
    rude_rows = set(rng.sample(range(len(questions)), round(rude_share * len(questions))))
    return [(*RUDE_ANSWER, ".") if row in rude_rows else answer_tokens(q) for row, q in enumerate(questions)]


def encode_answers(questions: Sequence[Question], answers: Sequence[Answer], tokenizer: Tokenizer,
                   max_len: int = 64, end: bool = False) -> SFTBatch:
    """``[BOS] prompt answer`` (and ``[EOS]`` when ``end``) of each pair as one right-padded row.

    Returns an ``SFTBatch`` of N rows and T positions: ``answer_mask`` (N, T)
    is True at the answer's tokens, the only ones any loss, reward or
    log-probability of this lesson counts.
    """
    if not questions or len(questions) != len(answers):
        raise ValueError(f"questions and answers must be non-empty and as many, got {len(questions)} and "
                         f"{len(answers)}")
    texts = [(*prompt_tokens(q), *a, *((EOS,) if end else ())) for q, a in zip(questions, answers)]
    batch = tokenizer.encode_batch(texts, max_len=max_len)                  # (N, T)
    positions = torch.arange(batch.input_ids.shape[1])[None, :]             # (1, T)
    start = torch.tensor([len(prompt_tokens(q)) for q in questions])[:, None]
    stop = start + torch.tensor([len(a) for a in answers])[:, None]
    return SFTBatch(batch.input_ids, batch.attention_mask, (positions >= start) & (positions < stop))


# ---------------------------------------------------------------------------
# Sampling answers and judging them
# ---------------------------------------------------------------------------


def sample_answers(model: GPT, tokenizer: Tokenizer, questions: Sequence[Question], temperature: float = 1.0,
                   seed: int = 0, batch_size: int = 1024) -> list[Answer]:
    """One answer per question, sampled at ``temperature``, cut after its first period.

    Prompts of every length go together, left-padded (``generation.left_pad``);
    a row stops at its period, and an answer with no period within
    ``MAX_ANSWER_TOKENS`` tokens is returned as written (the judge calls it wrong).
    """
    check_positive_int("batch_size", batch_size)
    if not questions:
        raise ValueError("questions must not be empty")
    period = tokenizer.token_to_id["."]
    generator = torch.Generator().manual_seed(seed)
    answers: list[Answer] = []
    with evaluating(model):
        for start in range(0, len(questions), batch_size):
            part = questions[start:start + batch_size]
            prompts = left_pad([tokenizer.encode(prompt_tokens(q)) for q in part], tokenizer.pad_id)  # (n, T)
            length = prompts.input_ids.shape[1]
            new_tokens = min(MAX_ANSWER_TOKENS, model.config.max_len - length)
            # eos_id=period: a row that wrote its period goes on writing periods, cut off below.
            written = generate(model, prompts.input_ids, new_tokens, temperature=temperature, generator=generator,
                               eos_id=period, attention_mask=prompts.attention_mask)[:, length:]
            for ids in written.tolist():
                words = tokenizer.convert_ids_to_tokens(ids)
                answers.append(tuple(words[:words.index(".") + 1]) if "." in words else tuple(words))
    return answers


def judge(question: Question, answer: Answer) -> str:
    """The exact verdict on ``answer``: "rude", "correct" or "wrong" (see the module's docstring)."""
    if RUDE_WORDS.intersection(answer):
        return "rude"
    return "correct" if tuple(answer) == answer_tokens(question) else "wrong"


def judged_rates(questions: Sequence[Question], answers: Sequence[Answer]) -> dict[str, float]:
    """The share of ``answers`` the judge calls rude, correct and wrong: {rude_rate, correct_rate, wrong_rate}."""
    if not questions or len(questions) != len(answers):
        raise ValueError(f"questions and answers must be non-empty and as many, got {len(questions)} and "
                         f"{len(answers)}")
    verdicts = [judge(q, a) for q, a in zip(questions, answers)]
    return {f"{verdict}_rate": verdicts.count(verdict) / len(verdicts) for verdict in ("rude", "correct", "wrong")}


def verifiable_reward(questions: Sequence[Question], answers: Sequence[Answer]) -> torch.Tensor:
    """(N,) the judge's reward: one point for a polite answer and one more for a correct one (0, 1 or 2).

    The labellers' order, rude < wrong < correct, read exactly: no reward model and no noise in between.
    """
    if not questions or len(questions) != len(answers):
        raise ValueError(f"questions and answers must be non-empty and as many, got {len(questions)} and "
                         f"{len(answers)}")
    return torch.tensor([float(RANK[judge(q, a)]) for q, a in zip(questions, answers)])


def judge_model(model: GPT, tokenizer: Tokenizer, questions: Sequence[Question], samples: int = 1,
                seed: int = 0) -> dict[str, float]:
    """``judged_rates`` of ``samples`` answers per question sampled at temperature 1 (seeded)."""
    check_positive_int("samples", samples)
    asked = [q for q in questions for _ in range(samples)]
    return judged_rates(asked, sample_answers(model, tokenizer, asked, seed=seed))


def answer_log_probs(model: GPT, batch: SFTBatch) -> torch.Tensor:
    """(N,) the log-probability ``model`` gives each row's answer, its tokens' log-probabilities summed.

    Position t of GPT's output scores token t + 1, so the logits of
    positions 0..T-2 are aligned with the tokens 1..T-1 (``alignment.sequence_log_prob``).
    Gradients flow when the caller has them on (a policy being trained).
    """
    ids, mask, answer_mask = batch.input_ids, batch.attention_mask, batch.answer_mask
    logits = model(ids[:, :-1], mask[:, :-1])                                  # (N, T-1, V)
    return sequence_log_prob(logits, ids[:, 1:], answer_mask[:, 1:])


def answer_token_log_probs(model: GPT, batch: SFTBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Each answer token's log-probability under ``model``, and where the answer tokens are.

    Returns (log_probs, mask), both (N, T-1) and aligned like ``answer_log_probs``'s:
    log_probs[n, t] is log p(token t + 1 | tokens up to t), 0 where ``mask`` (the answer's tokens) is False.
    Summed along each row they give ``answer_log_probs``. Gradients flow when the caller has them on.
    """
    ids, mask, answer_mask = batch.input_ids, batch.attention_mask, batch.answer_mask
    logits = model(ids[:, :-1], mask[:, :-1])                                               # (N, T-1, V)
    log_probs = logits.log_softmax(dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)        # (N, T-1)
    counted = answer_mask[:, 1:]
    return log_probs.masked_fill(~counted, 0.0), counted


def kl_from_reference(model: GPT, reference: GPT, tokenizer: Tokenizer, questions: Sequence[Question],
                      seed: int = 0, batch_size: int = 256) -> float:
    """How far ``model`` has moved from ``reference``: KL(model || reference) per answer token, in nats.

    A Monte-Carlo estimate: one answer per question sampled from ``model``
    at temperature 1, and the log-ratio log p_model(answer) − log p_reference(answer)
    summed over all answers, divided by their number of tokens (periods
    included). Its expectation is the KL divergence of the answers per
    token; it is 0 for a model that never moved.
    """
    answers = sample_answers(model, tokenizer, questions, seed=seed)
    total, tokens = 0.0, 0
    with evaluating(model), evaluating(reference):
        for start in range(0, len(questions), batch_size):
            batch = encode_answers(questions[start:start + batch_size], answers[start:start + batch_size],
                                   tokenizer, model.config.max_len)
            total += (answer_log_probs(model, batch) - answer_log_probs(reference, batch)).sum().item()
            tokens += int(batch.answer_mask.sum())
    return total / tokens


# ---------------------------------------------------------------------------
# The labellers' comparisons
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Two answers to one question, the one the labeller preferred first.

    ``flipped`` is True when the labeller's choice goes against the judge's
    order (label noise): the data a reward model sees does not say so; the
    lesson uses it to measure against the noise-free order.
    """

    question: Question
    chosen: Answer
    rejected: Answer
    flipped: bool = False

    @property
    def verdicts(self) -> tuple[str, str]:
        """The judge's verdicts on the chosen and the rejected answer."""
        return judge(self.question, self.chosen), judge(self.question, self.rejected)


def compare(question: Question, first: Answer, second: Answer, noise: float, rng: random.Random
            ) -> Comparison | None:
    """The labeller's comparison of two answers, None when the judge ranks them equal (a tie is skipped)."""
    first_rank, second_rank = RANK[judge(question, first)], RANK[judge(question, second)]
    if first_rank == second_rank:
        return None
    better, worse = (first, second) if first_rank > second_rank else (second, first)
    flipped = rng.random() < noise
    return Comparison(question, worse, better, True) if flipped else Comparison(question, better, worse)


def collect_comparisons(model: GPT, tokenizer: Tokenizer, questions: Sequence[Question], n: int,
                        noise: float = LABEL_NOISE, seed: int = 0) -> list[Comparison]:
    """``n`` comparisons of two answers that ``model`` samples for the same question.

    Questions are taken in order, two answers sampled for each (at
    temperature 1) and compared; ties are skipped, so more questions than
    ``n`` are used. A ValueError says so if ``questions`` run out first.
    """
    check_positive_int("n", n)
    noise = check_share("noise", noise)
    rng = random.Random(seed)
    comparisons: list[Comparison] = []
    start, chunk = 0, max(64, 2 * n)  # about half the pairs are ties: sample twice what is asked for
    while len(comparisons) < n and start < len(questions):
        part = questions[start:start + chunk]
        answers = sample_answers(model, tokenizer, [q for q in part for _ in range(2)], seed=seed + start)
        for i, question in enumerate(part):
            comparison = compare(question, answers[2 * i], answers[2 * i + 1], noise, rng)
            if comparison is not None and len(comparisons) < n:
                comparisons.append(comparison)
        start += chunk
    if len(comparisons) < n:
        raise ValueError(f"n={n} comparisons asked for, but the {len(questions)} questions gave only "
                         f"{len(comparisons)}: pass more questions")
    return comparisons


def comparison_kinds(comparisons: Sequence[Comparison]) -> dict[str, int]:
    """How many comparisons of each kind, by the judge's noise-free verdicts: "correct>rude": 120, ..."""
    counts: dict[str, int] = {}
    for c in comparisons:
        high, low = sorted(c.verdicts, key=RANK.__getitem__, reverse=True)
        key = f"{high}>{low}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
