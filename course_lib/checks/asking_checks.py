"""Checks of exercise 09: the best answer span, the verbalizer's scores, and the labels of supervised fine-tuning.

``best_span``'s mistakes all give an answer of the right shape that is
sometimes right, so the cases are built so that each one shows: a row
whose best start comes after its best end (independent argmaxes), rows
whose largest scores sit where the mask forbids an answer, and rows whose
best span is exactly one token too long, or exactly as long as allowed
(an off-by-one length limit).

``verbalizer_logits`` is judged as a classifier: a softmax over the C
scores decides, and adding one constant to a row changes nothing in it. So
an answer that takes a log-softmax over the vocabulary first (which adds
``-logsumexp`` to each row) is right too; reading the wrong position, or
normalising over the wrong axis, is not.

``sft_labels``'s cases hold distinct token ids, so that a label shifted
by one position too few or too many never equals the right one; rows of
different prompt and answer lengths, right-padded, so that counting the
prompt, the padding or losing the first answer token each shows; and a
row whose prompt fills it, with no answer at all.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from course_lib.answers import best_span, verbalizer_logits
from course_lib.objectives import IGNORE_INDEX, sft_labels
from course_lib.checks.framework import (Case, CheckResult, Mistake, check_function, describe_difference,
                                          same_output_as, same_output_as_any_of)

_GENERATOR = torch.Generator().manual_seed(9)


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_GENERATOR)


# ---------------------------------------------------------------------------
# Exercise 09.best_span: the best start <= end pair, inside the mask, not too long
# ---------------------------------------------------------------------------


def _independent_argmaxes(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    """The best start and the best end, each on its own (the mask respected): the end may come first."""
    if attention_mask is not None:
        start_logits = start_logits.masked_fill(~attention_mask, float("-inf"))
        end_logits = end_logits.masked_fill(~attention_mask, float("-inf"))
    return start_logits.argmax(dim=1), end_logits.argmax(dim=1)


def _independent_argmaxes_without_mask(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    return start_logits.argmax(dim=1), end_logits.argmax(dim=1)


def _chosen_separately(received: Any, case: Case) -> bool:
    """Independent argmaxes, with or without the mask: the first thing to fix, so it is named first."""
    return (same_output_as(_independent_argmaxes)(received, case)
            or same_output_as(_independent_argmaxes_without_mask)(received, case))


def _mask_ignored(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    return best_span(start_logits, end_logits, None, max_answer_len)


def _one_token_too_long(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    """``e - s <= max_answer_len``: a span of max_answer_len + 1 tokens gets through."""
    return best_span(start_logits, end_logits, attention_mask, None if max_answer_len is None else max_answer_len + 1)


def _one_token_too_short(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    """``e - s + 1 < max_answer_len``: a span of exactly max_answer_len tokens is refused."""
    if max_answer_len is None or max_answer_len == 1:
        return best_span(start_logits, end_logits, attention_mask, max_answer_len)
    return best_span(start_logits, end_logits, attention_mask, max_answer_len - 1)


def _exclusive_end(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    start, end = best_span(start_logits, end_logits, attention_mask, max_answer_len)
    return start, end + 1


def _start_and_end_swapped(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    start, end = best_span(start_logits, end_logits, attention_mask, max_answer_len)
    return end, start


def _best_pair_where(start_logits, end_logits, valid):
    """The best (start, end) of each row among the pairs where the (B, T, T) bool ``valid`` is True."""
    T = start_logits.shape[1]
    scores = start_logits[:, :, None] + end_logits[:, None, :]              # (B, T, T): row s, column e
    best = scores.masked_fill(~valid, float("-inf")).flatten(1).argmax(dim=1)
    return best // T, best % T


def _pairs_in_order(T, max_answer_len, shortest):
    """(T, T) bool: True where a span from s to e is at least ``shortest`` tokens long and within the limit."""
    starts, ends = torch.arange(T)[:, None], torch.arange(T)[None, :]
    valid = ends - starts + 1 >= shortest
    return valid if max_answer_len is None else valid & (ends - starts + 1 <= max_answer_len)


def _one_token_answer_refused(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    """``s < e`` instead of ``s <= e`` (``triu(1)`` instead of ``triu()``): start == end is never chosen."""
    valid = _pairs_in_order(start_logits.shape[1], max_answer_len, shortest=2)[None]
    if attention_mask is not None:
        valid = valid & attention_mask[:, :, None] & attention_mask[:, None, :]
    return _best_pair_where(start_logits, end_logits, valid)


def _mask_on_one_side_only(side):
    """The mask applied to the starts only (``side=1``) or to the ends only (``side=2``)."""

    def wrong_span(start_logits, end_logits, attention_mask=None, max_answer_len=None):
        valid = _pairs_in_order(start_logits.shape[1], max_answer_len, shortest=1)[None]
        if attention_mask is not None:
            valid = valid & attention_mask.unsqueeze(side)
        return _best_pair_where(start_logits, end_logits, valid)

    return wrong_span


def _logits_with_best_at(B: int, T: int, starts: list[int], ends: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (B, T) scores in [0, 1) with a score of 3 at ``starts[b]`` and ``ends[b]`` of each row."""
    start_logits, end_logits = torch.rand(B, T, generator=_GENERATOR), torch.rand(B, T, generator=_GENERATOR)
    start_logits[torch.arange(B), torch.tensor(starts)] = 3.0
    end_logits[torch.arange(B), torch.tensor(ends)] = 3.0
    return start_logits, end_logits


def _mask(B: int, T: int, allowed: list[tuple[int, int]]) -> torch.Tensor:
    """(B, T) bool, True on positions allowed[b][0] .. allowed[b][1] - 1 of row b."""
    mask = torch.zeros(B, T, dtype=torch.bool)
    for row, (first, stop) in enumerate(allowed):
        mask[row, first:stop] = True
    return mask


# Row 0's best end comes before its best start; row 1's best span is already valid.
_CROSSED = _logits_with_best_at(2, 6, starts=[4, 1], ends=[1, 3])
# Every row's largest scores are where the mask forbids an answer (a question, padding). Row 0's
# largest start, at 7, comes after its largest end: without the mask, the best span and the
# separate argmaxes differ there too.
_MASKED = _logits_with_best_at(3, 8, starts=[0, 1, 6], ends=[1, 2, 7])
_MASKED[0][0, 7] = 3.5
_MASK = _mask(3, 8, [(3, 7), (4, 8), (2, 6)])
# max_answer_len=3: row 0's best span has 4 tokens, row 1's exactly 3, row 2's best end comes before its start.
_LONG = _logits_with_best_at(3, 9, starts=[1, 2, 5], ends=[4, 4, 1])
# A mask and a limit of 2 at once; row 1's best allowed span has exactly 2 tokens.
_BOTH = _logits_with_best_at(2, 10, starts=[2, 5], ends=[8, 6])

_BEST_SPAN_CASES = (
    Case("B=2, T=6, no mask, no limit; row 0's best end comes before its best start", _CROSSED),
    Case("B=3, T=7, no mask, no limit, random scores", (_randn(3, 7), _randn(3, 7))),
    Case("B=3, T=8, attention_mask allowing 4 positions per row, no limit", _MASKED,
         {"attention_mask": _MASK}),
    Case("B=3, T=9, no mask, max_answer_len=3", _LONG, {"max_answer_len": 3}),
    Case("B=2, T=10, attention_mask and max_answer_len=2", _BOTH,
         {"attention_mask": _mask(2, 10, [(1, 9), (4, 10)]), "max_answer_len": 2}),
    Case("B=4, T=5, random scores, max_answer_len=1 (a single token)", (_randn(4, 5), _randn(4, 5)),
         {"max_answer_len": 1}),
)

_BEST_SPAN_MISTAKES = (
    Mistake("the best start and the best end were chosen separately, so an end can come before its start. "
            "Score every pair at once, start_logits[:, s] + end_logits[:, e], and keep only pairs with s <= e.",
            _chosen_separately),
    Mistake("the answer starts or ends where attention_mask is False: a span is valid only when both of its "
            "positions are allowed. Give the forbidden pairs a score of -inf before taking the best.",
            same_output_as(_mask_ignored)),
    Mistake("the mask was applied to one end of the span only: a span is valid only when its start and its "
            "end are both allowed, attention_mask[b, s] and attention_mask[b, e].",
            same_output_as_any_of(_mask_on_one_side_only(2), _mask_on_one_side_only(1))),
    Mistake("an answer of one token is refused: a span from s to e (both included) may start and end at the "
            "same position, so keep the pairs with s <= e (triu(), not triu(1)).",
            same_output_as(_one_token_answer_refused)),
    Mistake("the length limit lets through spans one token too long: a span from s to e (both included) has "
            "e - s + 1 tokens, and that must be <= max_answer_len.", same_output_as(_one_token_too_long)),
    Mistake("the length limit refuses spans of exactly max_answer_len tokens: a span from s to e (both "
            "included) has e - s + 1 tokens, and e - s + 1 == max_answer_len is allowed.",
            same_output_as(_one_token_too_short)),
    Mistake("the answer is (end, start): return the start first, then the end.",
            same_output_as(_start_and_end_swapped)),
    Mistake("end is one past the answer's last token: here end is inclusive, the position of the last "
            "token itself (a one-token answer has start == end).", same_output_as(_exclusive_end)),
)


def check_best_span(learner_fn: Any) -> CheckResult:
    """Check exercise 09: ``best_span(start_logits, end_logits, attention_mask=None, max_answer_len=None)``.

    (B, T) start and end scores -> (start, end), two (B,) long tensors: the
    pair with the highest ``start_logits[b, s] + end_logits[b, e]`` such that
    s <= e, both positions allowed by the (B, T) bool mask, and
    e - s + 1 <= max_answer_len when a limit is given.
    """
    return check_function(
        learner_fn,
        exercise="09.best_span",
        reference=best_span,
        cases=_BEST_SPAN_CASES,
        mistakes=_BEST_SPAN_MISTAKES,
    )


# ---------------------------------------------------------------------------
# Exercise 09.verbalizer_logits: the masked-LM scores of the label words at each row's [MASK]
# ---------------------------------------------------------------------------


def _up_to_a_constant_per_row(reference: Callable) -> Callable[[Any, Case], str | None]:
    """A judge: the answer equals ``reference``'s output once each row is shifted by its own constant.

    Two class-score tables that differ by one constant per row make the same
    classifier: the softmax over the classes is the same.
    """

    def verify(received: Any, case: Case) -> str | None:
        expected = case.call(reference)
        if not (isinstance(received, torch.Tensor) and received.shape == expected.shape
                and received.is_floating_point()):
            return describe_difference(expected, received, atol=case.atol, rtol=case.rtol)
        shift = (received.detach().to(expected.dtype) - expected).mean(dim=1, keepdim=True)  # (B, 1)
        difference = describe_difference(expected, received.detach().to(expected.dtype) - shift,
                                         atol=case.atol, rtol=case.rtol)
        return None if difference is None else "(each row compared up to a constant)\n" + difference

    return verify


def _same_classifier_as(wrong_fn: Callable) -> Callable[[Any, Case], bool]:
    judge = _up_to_a_constant_per_row(wrong_fn)
    return lambda received, case: judge(received, case) is None


def _at_cls(mlm_logits, mask_positions, verbalizer_ids):
    return mlm_logits[:, 0][:, verbalizer_ids]


def _at_last_position(mlm_logits, mask_positions, verbalizer_ids):
    return mlm_logits[:, -1][:, verbalizer_ids]


def _normalised_over_positions(mlm_logits, mask_positions, verbalizer_ids):
    return verbalizer_logits(mlm_logits.log_softmax(dim=1), mask_positions, verbalizer_ids)


def _probabilities(mlm_logits, mask_positions, verbalizer_ids):
    return verbalizer_logits(mlm_logits.softmax(dim=-1), mask_positions, verbalizer_ids)


def _softmax_over_the_labels(mlm_logits, mask_positions, verbalizer_ids):
    return verbalizer_logits(mlm_logits, mask_positions, verbalizer_ids).softmax(dim=-1)


def _axes_swapped(mlm_logits, mask_positions, verbalizer_ids):
    """The word ids used as positions and the mask positions as word ids."""
    return mlm_logits[torch.arange(len(mlm_logits))[:, None], verbalizer_ids[None, :], mask_positions[:, None]]


def _every_row_at_every_mask(received: Any, case: Case) -> bool:
    B = case.args[0].shape[0]
    C = case.args[2].shape[0]
    return isinstance(received, torch.Tensor) and tuple(received.shape) == (B, B, C)


_VERBALIZER_CASES = (
    Case("B=3, T=5, V=11, two label words, masks at positions 1, 3, 4",
         (_randn(3, 5, 11), torch.tensor([1, 3, 4]), torch.tensor([9, 4]))),
    Case("B=2, T=6, V=9, three label words in no particular order",
         (_randn(2, 6, 9), torch.tensor([5, 2]), torch.tensor([7, 2, 5]))),
    Case("B=4, T=9, V=7 (more positions than words), two label words",
         (_randn(4, 9, 7), torch.tensor([6, 2, 5, 3]), torch.tensor([1, 6]))),
    Case("B=2, T=4, V=8, confident logits scaled by 20",
         (20 * _randn(2, 4, 8), torch.tensor([2, 1]), torch.tensor([3, 0])), atol=1e-3),
)

_VERBALIZER_MISTAKES = (
    Mistake("the scores are (B, B, C): mlm_logits[:, mask_positions] gives every row at every row's mask. Pair "
            "each row with its own position: mlm_logits[torch.arange(B), mask_positions].",
            _every_row_at_every_mask),
    Mistake("the scores were read at position 0 ([CLS]), not at each row's [MASK]: use mask_positions.",
            _same_classifier_as(_at_cls)),
    Mistake("the scores were read at the last position, not at each row's [MASK]: use mask_positions.",
            _same_classifier_as(_at_last_position)),
    Mistake("the log-softmax ran over the positions (dim=1), not over the vocabulary (dim=-1): the words of "
            "one position compete with each other, the positions do not.",
            _same_classifier_as(_normalised_over_positions)),
    Mistake("the word ids were used as positions and the mask positions as word ids: mlm_logits is "
            "(B, T, V), positions on axis 1, words on axis 2.", _same_classifier_as(_axes_swapped)),
    Mistake("these are probabilities, not scores: a softmax over the classes of probabilities is not the "
            "classifier. Return the logits (or log-probabilities) of the label words.",
            _same_classifier_as(_probabilities)),
    Mistake("these are the classes' probabilities, a softmax over the C label words: return their scores "
            "(logits or log-probabilities). The classifier's loss, cross-entropy, takes its own softmax; a "
            "second one would flatten every prediction.", _same_classifier_as(_softmax_over_the_labels)),
)


def check_verbalizer_logits(learner_fn: Any) -> CheckResult:
    """Check exercise 09: ``verbalizer_logits(mlm_logits, mask_positions, verbalizer_ids)``.

    mlm_logits (B, T, V), mask_positions (B,), verbalizer_ids (C,) -> (B, C),
    the logits of each label word at each row's mask, judged up to one
    constant per row (a log-softmax over the vocabulary first is right too).
    """
    return check_function(
        learner_fn,
        exercise="09.verbalizer_logits",
        verify=_up_to_a_constant_per_row(verbalizer_logits),
        cases=_VERBALIZER_CASES,
        mistakes=_VERBALIZER_MISTAKES,
    )


# ---------------------------------------------------------------------------
# Exercise 09.sft_labels: the next token where it belongs to the answer, -100 elsewhere
# ---------------------------------------------------------------------------


def _labels_where(targets: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
    """(B, T) long: ``targets`` where the (B, T) bool ``learned`` is True, -100 elsewhere."""
    return torch.where(learned, targets, torch.full_like(targets, IGNORE_INDEX))


def _next(input_ids: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """(B, T): the token ``steps`` positions ahead of each position, -100 past the end."""
    ahead = torch.full_like(input_ids, IGNORE_INDEX)
    ahead[:, :input_ids.shape[1] - steps] = input_ids[:, steps:]
    return ahead


def _answer_tokens(input_ids, prompt_lengths, attention_mask):
    """(B, T) bool: True at the real tokens that come after each row's prompt."""
    positions = torch.arange(input_ids.shape[1])[None, :]
    return (positions >= prompt_lengths[:, None]) & attention_mask


def _prompt_counted(input_ids, prompt_lengths, attention_mask):
    return _labels_where(_next(input_ids), _next(attention_mask.long()) == 1)


def _padding_counted(input_ids, prompt_lengths, attention_mask):
    everything = torch.ones_like(attention_mask)
    return _labels_where(_next(input_ids), _next(_answer_tokens(input_ids, prompt_lengths, everything).long()) == 1)


def _not_shifted(input_ids, prompt_lengths, attention_mask):
    return _labels_where(input_ids, _answer_tokens(input_ids, prompt_lengths, attention_mask))


def _shifted_backwards(input_ids, prompt_lengths, attention_mask):
    """labels[b, t] = input_ids[b, t - 1]: the token before, not the one after."""
    behind = torch.full_like(input_ids, IGNORE_INDEX)
    behind[:, 1:] = input_ids[:, :-1]
    learned = torch.zeros_like(attention_mask)
    learned[:, 1:] = _answer_tokens(input_ids, prompt_lengths, attention_mask)[:, :-1]
    return _labels_where(behind, learned)


def _shifted_twice(input_ids, prompt_lengths, attention_mask):
    answer = _answer_tokens(input_ids, prompt_lengths, attention_mask).long()
    return _labels_where(_next(input_ids, 2), _next(answer, 2) == 1)


def _first_answer_token_lost(input_ids, prompt_lengths, attention_mask):
    """``t + 1 > prompt_lengths`` instead of ``>=``: the position before the answer predicts nothing."""
    return _labels_where(_next(input_ids), _next(_answer_tokens(input_ids, prompt_lengths + 1, attention_mask).long())
                         == 1)


def _tested_at_t(input_ids, prompt_lengths, attention_mask):
    """The prompt and the mask tested at position t, not at the token t + 1 that it predicts."""
    return _labels_where(_next(input_ids), _answer_tokens(input_ids, prompt_lengths, attention_mask))


def _wrapped_round(input_ids, prompt_lengths, attention_mask):
    """``torch.roll`` with the test made on t + 1 alone: the last column wraps round to token 0."""
    positions = torch.arange(input_ids.shape[1])[None, :]
    learned = (positions + 1 >= prompt_lengths[:, None]) & attention_mask.roll(-1, dims=1)
    return _labels_where(input_ids.roll(-1, dims=1), learned)


def _one_column_short(received: Any, case: Case) -> bool:
    input_ids = case.args[0]
    return (isinstance(received, torch.Tensor)
            and tuple(received.shape) == (input_ids.shape[0], input_ids.shape[1] - 1))


def _right_values_not_long(received: Any, case: Case) -> bool:
    expected = case.call(sft_labels)
    return (isinstance(received, torch.Tensor) and received.dtype != torch.long and received.shape == expected.shape
            and torch.equal(received.detach().cpu().to(torch.float64), expected.to(torch.float64)))


def _ids(B: int, T: int) -> torch.Tensor:
    """(B, T) token ids, all different, from 5 on (ids 0 to 4 are the special tokens; 0 is [PAD])."""
    return 5 + torch.randperm(B * T, generator=_GENERATOR).reshape(B, T)


def _right_padded(input_ids: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` with [PAD] (id 0) after ``lengths[b]`` tokens of row b, and its (B, T) bool mask."""
    mask = torch.arange(input_ids.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    return input_ids.masked_fill(~mask, 0), mask


_FULL = _ids(2, 8)
_PADDED, _PADDED_MASK = _right_padded(_ids(3, 9), [9, 6, 4])
_SHORT, _SHORT_MASK = _right_padded(_ids(3, 7), [5, 7, 3])

_SFT_LABELS_CASES = (
    Case("B=2, T=8, no padding, prompts of 3 and 5 tokens",
         (_FULL, torch.tensor([3, 5]), torch.ones(2, 8, dtype=torch.bool))),
    Case("B=3, T=9, rows of 9, 6 and 4 real tokens then [PAD], prompts of 4, 2 and 3 tokens",
         (_PADDED, torch.tensor([4, 2, 3]), _PADDED_MASK)),
    Case("B=3, T=7, a one-token answer, a prompt of 1 token, a prompt that fills its row (no answer)",
         (_SHORT, torch.tensor([4, 1, 3]), _SHORT_MASK)),
)

_SFT_LABELS_MISTAKES = (
    Mistake("the labels have T - 1 columns: keep all T, the last one -100 (nothing follows it), so that they line "
            "up with the model's (B, T, V) logits.", _one_column_short),
    Mistake("the labels are right but not integers: return them as a long tensor (.long()), the type "
            "F.cross_entropy expects for class indices.", _right_values_not_long),
    Mistake("the prompt is counted: the story and the question are given, not learned. Position t gets a label "
            "only when the token it predicts, t + 1, belongs to the answer: t + 1 >= prompt_lengths[b].",
            same_output_as(_prompt_counted)),
    Mistake("the labels are not shifted: position t sees tokens 0..t and must predict the NEXT one, so "
            "labels[b, t] = input_ids[b, t + 1] (and the test is made on t + 1 too).",
            same_output_as(_not_shifted)),
    Mistake("the labels are shifted the wrong way: labels[b, t] is the token AFTER position t, input_ids[b, t + 1], "
            "not the one before it.", same_output_as(_shifted_backwards)),
    Mistake("the labels are shifted twice: labels[b, t] is input_ids[b, t + 1], one step ahead, not two. If you "
            "built the shifted ids and then shifted again (or sliced [:, 2:]), shift once.",
            same_output_as(_shifted_twice)),
    Mistake("padding is counted: where the next token is [PAD] (attention_mask[b, t + 1] False) the label must be "
            "-100, or the model learns to write [PAD] after its answer.", same_output_as(_padding_counted)),
    Mistake("the first answer token is lost: the position just before the answer, t = prompt_lengths[b] - 1, is "
            "the one that predicts it. Test t + 1 >= prompt_lengths[b], not t >= prompt_lengths[b].",
            same_output_as(_first_answer_token_lost)),
    Mistake("the prompt and the mask were tested at position t: test them on the token that position t predicts, "
            "t + 1. As written, the first answer token is lost and the [PAD] after the last token is learned.",
            same_output_as(_tested_at_t)),
    Mistake("the last column is not -100: with torch.roll, position T - 1 wraps round to token 0. Nothing follows "
            "the last position, so set its label to -100.", same_output_as(_wrapped_round)),
)


def check_sft_labels(learner_fn: Any) -> CheckResult:
    """Check exercise 09: ``sft_labels(input_ids, prompt_lengths, attention_mask)``.

    input_ids (B, T), prompt_lengths (B,), attention_mask (B, T) bool ->
    (B, T) long: ``input_ids[b, t + 1]`` where ``t + 1 >= prompt_lengths[b]``
    and ``attention_mask[b, t + 1]``, -100 elsewhere and in the last column.
    """
    return check_function(
        learner_fn,
        exercise="09.sft_labels",
        reference=sft_labels,
        cases=_SFT_LABELS_CASES,
        mistakes=_SFT_LABELS_MISTAKES,
    )
