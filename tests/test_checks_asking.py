"""The checks of exercise 09: correct answers written several ways pass, known mistakes fail with their hint.

Every implementation here is written the way a learner might write it, not
copied from the checks, so a test fails when a check stops recognising a
real learner's answer.
"""
import pytest
import torch
import torch.nn.functional as F

from course_lib.answers import best_span, verbalizer_logits
from course_lib.checks import check_best_span, check_sft_labels, check_verbalizer_logits
from course_lib.objectives import sft_labels

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


# ---------------------------------------------------------------------------
# 09.sft_labels
# ---------------------------------------------------------------------------


def labels_with_loops(input_ids, prompt_lengths, attention_mask):
    B, T = input_ids.shape
    labels = torch.full((B, T), -100, dtype=torch.long)
    for b in range(B):
        for t in range(T - 1):
            if t + 1 >= prompt_lengths[b] and attention_mask[b, t + 1]:
                labels[b, t] = input_ids[b, t + 1]
    return labels


def labels_with_where(input_ids, prompt_lengths, attention_mask):
    B, T = input_ids.shape
    positions = torch.arange(T).unsqueeze(0)                           # (1, T)
    is_answer = (positions >= prompt_lengths.unsqueeze(1)) & attention_mask
    labels = torch.where(is_answer[:, 1:], input_ids[:, 1:], -100)     # (B, T - 1)
    return torch.cat([labels, torch.full((B, 1), -100)], dim=1)


def labels_with_roll(input_ids, prompt_lengths, attention_mask):
    positions = torch.arange(input_ids.shape[1])
    is_answer = (positions[None, :] >= prompt_lengths[:, None]) & attention_mask.bool()
    next_is_answer = is_answer.roll(-1, dims=1)
    next_is_answer[:, -1] = False
    return torch.where(next_is_answer, input_ids.roll(-1, dims=1), torch.tensor(-100))


def labels_with_pad(input_ids, prompt_lengths, attention_mask):
    targets = F.pad(input_ids[:, 1:], (0, 1), value=-100)
    T = input_ids.shape[1]
    predicted_position = torch.arange(1, T + 1).expand_as(input_ids)   # position t predicts t + 1
    real_next = F.pad(attention_mask[:, 1:], (0, 1), value=False)
    keep = (predicted_position >= prompt_lengths.view(-1, 1)) & real_next
    return targets.masked_fill(~keep, -100)


def labels_with_a_float_mask(input_ids, prompt_lengths, attention_mask):
    T = input_ids.shape[1]
    after_prompt = (torch.arange(T)[None, :] >= prompt_lengths[:, None]).float()
    weight = after_prompt * attention_mask.float()                    # 1.0 on the answer's tokens
    labels = input_ids.clone()
    labels[weight == 0] = -100
    labels = labels[:, 1:]
    return torch.cat([labels, -100 * torch.ones_like(labels[:, :1])], dim=1)


def labels_from_next_token_targets(input_ids, prompt_lengths, attention_mask):
    targets = input_ids[:, 1:].clone()                                 # what positions 0..T-2 predict
    targets[attention_mask[:, 1:] == 0] = -100
    for b, length in enumerate(prompt_lengths.tolist()):
        targets[b, :max(length - 1, 0)] = -100                         # positions before the answer's first token
    return torch.cat([targets, torch.full_like(targets[:, :1], -100)], dim=1)


@pytest.mark.parametrize("sft_labels_fn", [labels_with_loops, labels_with_where, labels_with_roll, labels_with_pad,
                                           labels_with_a_float_mask, labels_from_next_token_targets, sft_labels],
                         ids=["loops", "where", "roll", "pad", "float-mask", "from-targets", "course_lib"])
def test_correct_sft_labels_pass(sft_labels_fn):
    assert_passes(check_sft_labels(sft_labels_fn))


def prompt_counted(input_ids, prompt_lengths, attention_mask):
    return labels_with_where(input_ids, torch.zeros_like(prompt_lengths), attention_mask)


def not_shifted(input_ids, prompt_lengths, attention_mask):
    positions = torch.arange(input_ids.shape[1])[None, :]
    is_answer = (positions >= prompt_lengths[:, None]) & attention_mask
    return torch.where(is_answer, input_ids, -100)


def shifted_backwards(input_ids, prompt_lengths, attention_mask):
    labels = torch.full_like(input_ids, -100)
    for b in range(input_ids.shape[0]):
        for t in range(1, input_ids.shape[1]):
            if t - 1 >= prompt_lengths[b] and attention_mask[b, t - 1]:
                labels[b, t] = input_ids[b, t - 1]
    return labels


def shifted_twice(input_ids, prompt_lengths, attention_mask):
    shifted = labels_with_where(input_ids, prompt_lengths, attention_mask)
    return torch.cat([shifted[:, 1:], torch.full_like(shifted[:, :1], -100)], dim=1)


def padding_counted(input_ids, prompt_lengths, attention_mask):
    return labels_with_where(input_ids, prompt_lengths, torch.ones_like(attention_mask))


def first_answer_token_lost(input_ids, prompt_lengths, attention_mask):
    labels = torch.full_like(input_ids, -100)
    for b in range(input_ids.shape[0]):
        for t in range(input_ids.shape[1] - 1):
            if t >= prompt_lengths[b] and attention_mask[b, t + 1]:
                labels[b, t] = input_ids[b, t + 1]
    return labels


def condition_at_t(input_ids, prompt_lengths, attention_mask):
    positions = torch.arange(input_ids.shape[1])[None, :]
    is_answer = (positions >= prompt_lengths[:, None]) & attention_mask
    next_ids = torch.cat([input_ids[:, 1:], torch.full_like(input_ids[:, :1], -100)], dim=1)
    return torch.where(is_answer, next_ids, -100)


def rolled_with_wrap_round(input_ids, prompt_lengths, attention_mask):
    positions = torch.arange(input_ids.shape[1])[None, :]
    keep = (positions + 1 >= prompt_lengths[:, None]) & attention_mask.roll(-1, dims=1)
    return torch.where(keep, input_ids.roll(-1, dims=1), -100)


def one_column_short(input_ids, prompt_lengths, attention_mask):
    return labels_with_where(input_ids, prompt_lengths, attention_mask)[:, :-1]


def float_labels(input_ids, prompt_lengths, attention_mask):
    return labels_with_where(input_ids, prompt_lengths, attention_mask).float()


@pytest.mark.parametrize(
    "wrong_labels, words_of_the_hint",
    [
        (prompt_counted, "the prompt is counted"),
        (not_shifted, "not shifted"),
        (shifted_backwards, "the wrong way"),
        (shifted_twice, "shifted twice"),
        (padding_counted, "padding is counted"),
        (first_answer_token_lost, "first answer token is lost"),
        (condition_at_t, "tested at position t"),
        (rolled_with_wrap_round, "wraps round"),
        (one_column_short, "T - 1 columns"),
        (float_labels, "not integers"),
    ],
    ids=["prompt-counted", "not-shifted", "shifted-backwards", "shifted-twice", "padding-counted", "first-token-lost",
         "tested-at-t", "wrap-round", "one-column-short", "float"],
)
def test_wrong_sft_labels_fail_with_their_hint(wrong_labels, words_of_the_hint):
    assert_fails_with_hint(check_sft_labels(wrong_labels), words_of_the_hint)


def test_sft_labels_check_is_not_fooled_by_an_answer_of_minus_100_everywhere():
    def nothing_learned(input_ids, prompt_lengths, attention_mask):
        return torch.full_like(input_ids, -100)

    assert not check_sft_labels(nothing_learned)


def test_unsolved_sft_labels_is_not_implemented():
    def unsolved(input_ids, prompt_lengths, attention_mask):
        raise NotImplementedError()

    assert check_sft_labels(unsolved).status == "not implemented"


def test_sft_labels_on_one_example_by_hand():
    ids = torch.tensor([[11, 12, 13, 14, 15, 0], [21, 22, 23, 24, 25, 26]])   # (2, 6); row 0 ends in [PAD]
    mask = ids != 0
    labels = sft_labels(ids, torch.tensor([3, 2]), mask)
    assert labels.tolist() == [[-100, -100, 14, 15, -100, -100],              # predicts 14 and 15, not [PAD]
                               [-100, 23, 24, 25, 26, -100]]
    assert labels.dtype == torch.long
    torch.testing.assert_close(sft_labels(ids, torch.tensor([3, 2]), mask.long()), labels)  # a 0/1 mask is the same


def test_sft_labels_checks_its_inputs():
    ids, mask = torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(TypeError, match="input_ids"):
        sft_labels(ids.float(), torch.tensor([1, 2]), mask)
    with pytest.raises(ValueError, match=r"prompt_lengths must be \(2,\)"):
        sft_labels(ids, torch.tensor([1, 2, 3]), mask)
    with pytest.raises(TypeError, match="prompt_lengths"):
        sft_labels(ids, torch.tensor([1.0, 2.0]), mask)
    with pytest.raises(ValueError, match="attention_mask"):
        sft_labels(ids, torch.tensor([1, 2]), mask[:, :4])
    with pytest.raises(ValueError, match="input_ids must be"):
        sft_labels(ids[0], torch.tensor([1]), mask[0])
