"""The checks of exercise 09: correct answers written several ways pass, known mistakes fail with their hint.

Every implementation here is written the way a learner might write it, not
copied from the checks, so a test fails when a check stops recognising a
real learner's answer.
"""
import pytest
import torch

from course_lib.answers import best_span, verbalizer_logits
from course_lib.checks import check_best_span, check_verbalizer_logits

from check_helpers import assert_fails_with_hint, assert_passes


# ---------------------------------------------------------------------------
# 09.best_span
# ---------------------------------------------------------------------------


def span_with_loops(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    B, T = start_logits.shape
    starts, ends = [], []
    for b in range(B):
        best, best_pair = None, None
        for s in range(T):
            for e in range(s, T):
                if attention_mask is not None and not (attention_mask[b, s] and attention_mask[b, e]):
                    continue
                if max_answer_len is not None and e - s + 1 > max_answer_len:
                    continue
                score = start_logits[b, s] + end_logits[b, e]
                if best is None or score > best:
                    best, best_pair = score, (s, e)
        starts.append(best_pair[0])
        ends.append(best_pair[1])
    return torch.tensor(starts), torch.tensor(ends)


def span_with_triu(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    T = start_logits.shape[1]
    scores = start_logits.unsqueeze(2) + end_logits.unsqueeze(1)            # (B, T, T)
    allowed = torch.ones(T, T, dtype=torch.bool).triu()
    if max_answer_len is not None:
        allowed = allowed & ~torch.ones(T, T, dtype=torch.bool).triu(diagonal=max_answer_len)
    if attention_mask is not None:
        allowed = allowed & attention_mask.unsqueeze(2) & attention_mask.unsqueeze(1)
    flat = torch.where(allowed, scores, torch.tensor(-1e9)).reshape(len(scores), -1).argmax(dim=-1)
    return flat // T, flat % T


def span_by_masking_logits_first(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    if attention_mask is not None:
        start_logits = start_logits.masked_fill(~attention_mask, -float("inf"))
        end_logits = end_logits.masked_fill(~attention_mask, -float("inf"))
    B, T = start_logits.shape
    length = T if max_answer_len is None else max_answer_len
    best_score = torch.full((B,), -float("inf"))
    start, end = torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long)
    for offset in range(min(length, T)):                                    # spans of offset + 1 tokens
        scores = start_logits[:, :T - offset] + end_logits[:, offset:]      # (B, T - offset)
        value, s = scores.max(dim=1)
        better = value > best_score
        best_score = torch.where(better, value, best_score)
        start = torch.where(better, s, start)
        end = torch.where(better, s + offset, end)
    return start, end


@pytest.mark.parametrize("best_span", [span_with_loops, span_with_triu, span_by_masking_logits_first])
def test_correct_best_spans_pass(best_span):
    assert_passes(check_best_span(best_span))


def independent_argmaxes(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    if attention_mask is not None:
        start_logits = start_logits.masked_fill(~attention_mask, -1e9)
        end_logits = end_logits.masked_fill(~attention_mask, -1e9)
    return start_logits.argmax(dim=1), end_logits.argmax(dim=1)


def independent_argmaxes_without_mask(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    return start_logits.argmax(dim=1), end_logits.argmax(dim=1)


def mask_ignored(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    return span_with_loops(start_logits, end_logits, None, max_answer_len)


def length_limit_too_loose(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    T = start_logits.shape[1]
    scores = start_logits[:, :, None] + end_logits[:, None, :]
    s, e = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = e >= s
    if max_answer_len is not None:
        allowed = allowed & (e - s <= max_answer_len)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, :, None] & attention_mask[:, None, :]
    flat = scores.masked_fill(~allowed, float("-inf")).flatten(1).argmax(dim=1)
    return flat // T, flat % T


def length_limit_too_strict(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    T = start_logits.shape[1]
    scores = start_logits[:, :, None] + end_logits[:, None, :]
    s, e = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = e >= s
    if max_answer_len is not None:
        allowed = allowed & ((e - s + 1 < max_answer_len) | (e == s))
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, :, None] & attention_mask[:, None, :]
    flat = scores.masked_fill(~allowed, float("-inf")).flatten(1).argmax(dim=1)
    return flat // T, flat % T


def masked_scores(start_logits, end_logits, attention_mask, mask_starts=True, mask_ends=True):
    if attention_mask is not None:
        if mask_starts:
            start_logits = start_logits.masked_fill(~attention_mask, -1e9)
        if mask_ends:
            end_logits = end_logits.masked_fill(~attention_mask, -1e9)
    return start_logits, end_logits


def start_strictly_before_end(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    T = start_logits.shape[1]
    start_logits, end_logits = masked_scores(start_logits, end_logits, attention_mask)
    scores = start_logits[:, :, None] + end_logits[:, None, :]
    allowed = torch.ones(T, T, dtype=torch.bool).triu(1)
    if max_answer_len is not None:
        allowed = allowed & ~torch.ones(T, T, dtype=torch.bool).triu(max_answer_len)
    flat = scores.masked_fill(~allowed, -1e9).flatten(1).argmax(dim=1)
    return flat // T, flat % T


def mask_on_the_starts_only(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    return span_with_loops(*masked_scores(start_logits, end_logits, attention_mask, mask_ends=False),
                           None, max_answer_len)


def mask_on_the_ends_only(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    return span_with_loops(*masked_scores(start_logits, end_logits, attention_mask, mask_starts=False),
                           None, max_answer_len)


def start_and_end_swapped(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    start, end = span_with_triu(start_logits, end_logits, attention_mask, max_answer_len)
    return end, start


def exclusive_end(start_logits, end_logits, attention_mask=None, max_answer_len=None):
    start, end = span_with_triu(start_logits, end_logits, attention_mask, max_answer_len)
    return start, end + 1


@pytest.mark.parametrize(
    "wrong_span, words_of_the_hint",
    [
        (independent_argmaxes, "chosen separately"),
        (independent_argmaxes_without_mask, "chosen separately"),
        (mask_ignored, "attention_mask is False"),
        (length_limit_too_loose, "one token too long"),
        (length_limit_too_strict, "refuses spans of exactly"),
        (start_strictly_before_end, "answer of one token is refused"),
        (mask_on_the_starts_only, "one end of the span only"),
        (mask_on_the_ends_only, "one end of the span only"),
        (start_and_end_swapped, "(end, start)"),
        (exclusive_end, "one past"),
    ],
    ids=["independent", "independent-no-mask", "mask-ignored", "limit-too-loose", "limit-too-strict", "strict-order",
         "mask-starts-only", "mask-ends-only", "swapped", "exclusive"],
)
def test_wrong_best_spans_fail_with_their_hint(wrong_span, words_of_the_hint):
    assert_fails_with_hint(check_best_span(wrong_span), words_of_the_hint)


def test_best_span_reference_checks_its_inputs():
    logits = torch.zeros(2, 4)
    with pytest.raises(TypeError, match="start_logits"):
        best_span(torch.zeros(2, 4, dtype=torch.long), logits)
    with pytest.raises(ValueError, match="same shape"):
        best_span(logits, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="attention_mask"):
        best_span(logits, logits, torch.ones(2, 4))
    with pytest.raises(ValueError, match="allows no position"):
        best_span(logits, logits, torch.tensor([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match="max_answer_len"):
        best_span(logits, logits, max_answer_len=0)


def test_unsolved_best_span_is_not_implemented():
    def unsolved(start_logits, end_logits, attention_mask=None, max_answer_len=None):
        raise NotImplementedError()

    assert check_best_span(unsolved).status == "not implemented"


# ---------------------------------------------------------------------------
# 09.verbalizer_logits
# ---------------------------------------------------------------------------


def verbalizer_with_arange(mlm_logits, mask_positions, verbalizer_ids):
    at_mask = mlm_logits[torch.arange(mlm_logits.shape[0]), mask_positions]  # (B, V)
    return at_mask[:, verbalizer_ids]


def verbalizer_with_gather(mlm_logits, mask_positions, verbalizer_ids):
    B, T, V = mlm_logits.shape
    at_mask = mlm_logits.gather(1, mask_positions.view(B, 1, 1).expand(B, 1, V)).squeeze(1)
    return at_mask.index_select(1, verbalizer_ids)


def verbalizer_with_a_loop(mlm_logits, mask_positions, verbalizer_ids):
    return torch.stack([mlm_logits[b, p, verbalizer_ids] for b, p in enumerate(mask_positions.tolist())])


def verbalizer_of_log_probabilities(mlm_logits, mask_positions, verbalizer_ids):
    log_probs = torch.log_softmax(mlm_logits, dim=-1)
    return log_probs[torch.arange(len(log_probs)), mask_positions][:, verbalizer_ids]


def verbalizer_normalised_over_labels(mlm_logits, mask_positions, verbalizer_ids):
    return verbalizer_with_arange(mlm_logits, mask_positions, verbalizer_ids).log_softmax(dim=-1)


@pytest.mark.parametrize("verbalizer_logits", [verbalizer_with_arange, verbalizer_with_gather, verbalizer_with_a_loop,
                                               verbalizer_of_log_probabilities, verbalizer_normalised_over_labels])
def test_correct_verbalizers_pass(verbalizer_logits):
    assert_passes(check_verbalizer_logits(verbalizer_logits))


def every_row_at_every_mask(mlm_logits, mask_positions, verbalizer_ids):
    return mlm_logits[:, mask_positions][:, :, verbalizer_ids]


def at_cls(mlm_logits, mask_positions, verbalizer_ids):
    return mlm_logits[:, 0, verbalizer_ids]


def at_last_position(mlm_logits, mask_positions, verbalizer_ids):
    return mlm_logits[:, -1][:, verbalizer_ids]


def log_softmax_over_positions(mlm_logits, mask_positions, verbalizer_ids):
    log_probs = torch.log_softmax(mlm_logits, dim=1)
    return log_probs[torch.arange(len(log_probs)), mask_positions][:, verbalizer_ids]


def axes_swapped(mlm_logits, mask_positions, verbalizer_ids):
    B = mlm_logits.shape[0]
    return torch.stack([mlm_logits[b, verbalizer_ids, mask_positions[b]] for b in range(B)])


def probabilities(mlm_logits, mask_positions, verbalizer_ids):
    probs = torch.softmax(mlm_logits, dim=-1)
    return probs[torch.arange(len(probs)), mask_positions][:, verbalizer_ids]


def probabilities_of_the_labels(mlm_logits, mask_positions, verbalizer_ids):
    return verbalizer_with_arange(mlm_logits, mask_positions, verbalizer_ids).softmax(dim=-1)


@pytest.mark.parametrize(
    "wrong_verbalizer, words_of_the_hint",
    [
        (every_row_at_every_mask, "(B, B, C)"),
        (at_cls, "position 0"),
        (at_last_position, "last position"),
        (log_softmax_over_positions, "over the positions"),
        (axes_swapped, "used as positions"),
        (probabilities, "probabilities, not scores"),
        (probabilities_of_the_labels, "softmax over the C label words"),
    ],
    ids=["every-row-every-mask", "cls", "last", "log-softmax-over-positions", "axes-swapped", "probabilities",
         "probabilities-of-the-labels"],
)
def test_wrong_verbalizers_fail_with_their_hint(wrong_verbalizer, words_of_the_hint):
    assert_fails_with_hint(check_verbalizer_logits(wrong_verbalizer), words_of_the_hint)


def test_verbalizer_check_is_not_fooled_by_a_constant_answer():
    def zeros(mlm_logits, mask_positions, verbalizer_ids):
        return torch.zeros(len(mask_positions), len(verbalizer_ids))

    assert not check_verbalizer_logits(zeros)


def test_verbalizer_reference_checks_its_inputs():
    logits = torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match="mlm_logits"):
        verbalizer_logits(torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([1]))
    with pytest.raises(ValueError, match="mask_positions"):
        verbalizer_logits(logits, torch.tensor([0, 1, 2]), torch.tensor([1]))
    with pytest.raises(ValueError, match="verbalizer_ids"):
        verbalizer_logits(logits, torch.tensor([0, 1]), torch.tensor([[1]]))
    torch.testing.assert_close(verbalizer_logits(logits + torch.arange(5.0), torch.tensor([0, 2]), torch.tensor([4, 1])),
                               torch.tensor([[4.0, 1.0], [4.0, 1.0]]))
