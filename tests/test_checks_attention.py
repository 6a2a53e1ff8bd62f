"""The checks of exercises 01 and 02: correct answers written several ways pass, known mistakes fail with their hint.

Every implementation here is written the way a learner might write it, not
copied from the checks, so a test fails when a check stops recognising a
real learner's answer.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import (
    check_attention_scores,
    check_scaled_dot_product_attention,
    check_sinusoidal_positional_encoding,
    check_split_heads,
)
from course_lib.checks.attention_checks import _ATTENTION_CASES

from check_helpers import assert_fails_with_hint, assert_passes


# ---------------------------------------------------------------------------
# 01.attention_scores
# ---------------------------------------------------------------------------


def scores_with_matmul(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])


def scores_with_einsum(q, k):
    return torch.einsum("...qd,...kd->...qk", q, k) / q.size(-1) ** 0.5


def scores_scaling_queries_first(q, k):
    return torch.matmul(q / math.sqrt(q.shape[-1]), k.mT)


@pytest.mark.parametrize("attention_scores", [scores_with_matmul, scores_with_einsum, scores_scaling_queries_first])
def test_correct_attention_scores_pass(attention_scores):
    assert_passes(check_attention_scores(attention_scores))


@pytest.mark.parametrize(
    "wrong_scores, words_of_the_hint",
    [
        (lambda q, k: q @ k.transpose(-2, -1), "were not scaled"),
        (lambda q, k: q @ k.transpose(-2, -1) / q.shape[-1], "divided by d_k itself"),
        (lambda q, k: q @ k.transpose(-2, -1) / math.sqrt(k.shape[-2]), "number of positions"),
        (lambda q, k: q @ k.transpose(-2, -1) / math.sqrt(q.shape[-2]), "number of positions"),
        (lambda q, k: k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1]), "scores are transposed"),
        (lambda q, k: q @ k.transpose(-2, -1) * math.sqrt(q.shape[-1]), "multiplied by sqrt(d_k)"),
        (lambda q, k: q @ k.transpose(-2, -1) / math.sqrt(q.shape[1]), "used q.shape[1]"),
    ],
    ids=["no-scaling", "d_k", "sqrt-Tk", "sqrt-Tq", "k-times-q", "times-sqrt-d_k", "second-dimension"],
)
def test_wrong_attention_scores_fail_with_their_hint(wrong_scores, words_of_the_hint):
    assert_fails_with_hint(check_attention_scores(wrong_scores), words_of_the_hint)


# ---------------------------------------------------------------------------
# 01.scaled_dot_product_attention: correct versions
# ---------------------------------------------------------------------------


def attention_with_einsum(q, k, v, mask=None):
    scores = torch.einsum("...id,...jd->...ij", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(float("-inf")))
    weights = scores.softmax(dim=-1)
    return torch.einsum("...ij,...jd->...id", weights, v), weights


def attention_with_minus_1e9(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e9)
    weights = F.softmax(scores, dim=-1)
    return weights @ v, weights


def attention_with_torch_softmax(q, k, v, mask=None):
    d_k = q.shape[-1]
    scores = torch.matmul(q, k.transpose(-1, -2)) / d_k**0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights, v), weights


def attention_with_pytorch_kernel(q, k, v, mask=None):
    """PyTorch's fused attention for the output; the weights computed on the side."""
    output = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return output, scores.softmax(-1)


@pytest.mark.parametrize(
    "attention",
    [attention_with_einsum, attention_with_minus_1e9, attention_with_torch_softmax, attention_with_pytorch_kernel],
    ids=["einsum", "minus-1e9", "torch.softmax", "F.scaled_dot_product_attention"],
)
def test_correct_attention_passes(attention):
    assert_passes(check_scaled_dot_product_attention(attention))


def test_attention_cases_cover_the_shapes_and_masks_the_exercise_promises():
    q_dims = {case.args[0].dim() for case in _ATTENTION_CASES}
    masks = [case.kwargs.get("mask") for case in _ATTENTION_CASES]

    assert q_dims == {2, 3, 4}
    assert all(case.args[2].shape[-1] != case.args[0].shape[-1] for case in _ATTENTION_CASES), "d_v != d_k everywhere"
    assert any(case.args[0].shape[-2] != case.args[1].shape[-2] for case in _ATTENTION_CASES), "some Tq != Tk"
    assert any(mask is None for mask in masks)
    for mask in masks:
        if mask is not None:
            assert mask.dtype == torch.bool
            assert mask.any(dim=-1).all(), "every query needs at least one key it may attend to"
    assert sum(mask is not None for mask in masks) >= 3  # causal, padding, random


# ---------------------------------------------------------------------------
# 01.scaled_dot_product_attention: known mistakes
# ---------------------------------------------------------------------------


def attention_scaled_by(scale):
    """An otherwise correct attention dividing the scores by scale(q, k, v)."""

    def attention(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / scale(q, k, v)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return weights @ v, weights

    return attention


def attention_softmax_over(dim):
    def attention(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=dim)
        return weights @ v, weights

    return attention


def attention_with_inverted_mask(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def attention_with_inverted_mask_and_minus_1e9(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, -1e9)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def attention_masking_scores_to_zero(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores * mask  # hidden scores become 0, not -inf
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def attention_returning_scores(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v, scores


def attention_ignoring_mask(q, k, v, mask=None):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v, weights


def attention_masking_after_softmax(q, k, v, mask=None):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if mask is not None:
        weights = weights * mask
    return weights @ v, weights


def attention_returning_weights_first(q, k, v, mask=None):
    output, weights = attention_with_torch_softmax(q, k, v, mask)
    return weights, output


@pytest.mark.parametrize(
    "wrong_attention, words_of_the_hint",
    [
        (attention_scaled_by(lambda q, k, v: 1.0), "were not scaled"),
        (attention_scaled_by(lambda q, k, v: q.shape[-1]), "divided by d_k itself"),
        (attention_scaled_by(lambda q, k, v: math.sqrt(v.shape[-1])), "value dimension d_v"),
        (attention_scaled_by(lambda q, k, v: v.shape[-1]), "value dimension d_v"),
        (attention_scaled_by(lambda q, k, v: math.sqrt(k.shape[-2])), "number of positions"),
        (attention_softmax_over(-2), "wrong dimension"),
        (attention_softmax_over(1), "wrong dimension"),
        (attention_with_inverted_mask, "mask is inverted"),
        (attention_with_inverted_mask_and_minus_1e9, "mask is inverted"),
        (attention_masking_scores_to_zero, "score of 0 still gets weight"),
        (attention_returning_scores, "looks like the scores"),
        (attention_ignoring_mask, "mask had no effect"),
        (attention_masking_after_softmax, "rows no longer sum to 1"),
        (attention_returning_weights_first, "return the output first"),
        (attention_scaled_by(lambda q, k, v: 1 / math.sqrt(q.shape[-1])), "multiplied by sqrt(d_k)"),
        (attention_scaled_by(lambda q, k, v: math.sqrt(q.shape[1])), "used q.shape[1]"),
    ],
    ids=[
        "no-scaling", "d_k", "sqrt-d_v", "d_v", "sqrt-Tk", "softmax-dim-2", "softmax-dim-1",
        "inverted-mask", "inverted-mask-1e9", "masked-to-zero", "returns-scores", "ignores-mask",
        "mask-after-softmax", "swapped-return", "times-sqrt-d_k", "second-dimension",
    ],
)
def test_wrong_attention_fails_with_its_hint(wrong_attention, words_of_the_hint):
    assert_fails_with_hint(check_scaled_dot_product_attention(wrong_attention), words_of_the_hint)


@pytest.mark.parametrize(
    "mask_mistake",
    [attention_with_inverted_mask, attention_masking_scores_to_zero, attention_ignoring_mask],
    ids=["inverted-mask", "masked-to-zero", "ignores-mask"],
)
def test_a_mask_mistake_fails_exactly_the_cases_with_a_mask(mask_mistake):
    result = check_scaled_dot_product_attention(mask_mistake)

    assert [case.passed for case in result.cases] == [case.kwargs.get("mask") is None for case in _ATTENTION_CASES]


def test_both_output_and_weights_are_compared():
    def wrong_output_right_weights(q, k, v, mask=None):
        output, weights = attention_with_torch_softmax(q, k, v, mask)
        return output + 1.0, weights

    result = check_scaled_dot_product_attention(wrong_output_right_weights)

    assert not result
    assert "item 0 of the tuple" in result.report()
    assert "item 1 of the tuple" in check_scaled_dot_product_attention(attention_returning_scores).report()


def test_returning_only_the_output_is_explained():
    def attention_returning_only_the_output(q, k, v, mask=None):
        return attention_with_torch_softmax(q, k, v, mask)[0]

    result = check_scaled_dot_product_attention(attention_returning_only_the_output)

    assert not result
    assert "expected a tuple of 2 items, received a Tensor" in result.report()


# ---------------------------------------------------------------------------
# 02.split_heads
# ---------------------------------------------------------------------------


def split_heads_with_view_and_transpose(x, n_heads):
    *leading, T, d_model = x.shape
    return x.view(*leading, T, n_heads, d_model // n_heads).transpose(-3, -2)


def split_heads_with_unflatten_and_movedim(x, n_heads):
    return x.unflatten(-1, (n_heads, -1)).movedim(-2, -3)


def split_heads_by_chunks(x, n_heads):
    return torch.stack(x.chunk(n_heads, dim=-1), dim=-3)


def split_heads_by_flattening_the_leading_dimensions(x, n_heads):
    leading, (T, d_model) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape(-1, T, d_model)                                   # (B, T, d_model) with B = prod(leading)
    heads = flat.reshape(-1, T, n_heads, d_model // n_heads).permute(0, 2, 1, 3)
    return heads.reshape(*leading, n_heads, T, d_model // n_heads)


@pytest.mark.parametrize(
    "split_heads",
    [split_heads_with_view_and_transpose, split_heads_with_unflatten_and_movedim, split_heads_by_chunks,
     split_heads_by_flattening_the_leading_dimensions],
    ids=["view-transpose", "unflatten-movedim", "chunk-stack", "flatten-leading"],
)
def test_correct_split_heads_passes(split_heads):
    assert_passes(check_split_heads(split_heads))


def reshape_without_transpose(x, n_heads):
    *leading, T, d_model = x.shape
    return x.reshape(*leading, n_heads, T, d_model // n_heads)


def view_without_transpose(x, n_heads):
    *leading, T, d_model = x.shape
    return x.view(*leading, T, n_heads, d_model // n_heads)


def view_then_transpose(dim0, dim1):
    return lambda x, n_heads: view_without_transpose(x, n_heads).transpose(dim0, dim1)


def heads_of_strided_features(x, n_heads):
    *leading, T, d_model = x.shape
    return x.view(*leading, T, d_model // n_heads, n_heads).movedim(-1, -3)


def the_lessons_three_dimensional_split(x, n_heads):
    B, T, d_model = x.shape
    return x.reshape(B, T, n_heads, d_model // n_heads).transpose(1, 2)


@pytest.mark.parametrize(
    "wrong_split_heads, words_of_the_hint",
    [
        (reshape_without_transpose, "right shape but the wrong contents"),
        (view_without_transpose, "must come before T"),
        (view_then_transpose(1, 2), "only when x has exactly one leading dimension"),
        (view_then_transpose(-2, -1), "wrong dimensions were swapped"),
        (view_then_transpose(-3, -1), "wrong dimensions were swapped"),
        (heads_of_strided_features, "contiguous block of features"),
    ],
    ids=["reshape-no-transpose", "view-no-transpose", "transpose-1-2", "transpose-last-two", "transpose-T-d_head",
         "strided"],
)
def test_wrong_split_heads_fails_with_its_hint(wrong_split_heads, words_of_the_hint):
    assert_fails_with_hint(check_split_heads(wrong_split_heads), words_of_the_hint)


def test_the_three_dimensional_split_fails_only_the_other_shapes():
    result = check_split_heads(the_lessons_three_dimensional_split)

    assert [case.passed for case in result.cases] == [True, True, True, True, False, False]
    assert "your function raised ValueError" in result.report()


def test_forgotten_transpose_shows_the_shape_it_returned():
    report = check_split_heads(view_without_transpose).report()

    assert "expected shape (2, 3, 5, 4), received shape (2, 5, 3, 4)" in report


# ---------------------------------------------------------------------------
# 02.sinusoidal_positional_encoding
# ---------------------------------------------------------------------------


def encoding_with_exp_and_log(max_len, d_model):
    """The float32 way of many tutorials: 1 / 10000^(2i/d) as exp(-2i * ln(10000) / d)."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * frequencies)
    pe[:, 1::2] = torch.cos(position * frequencies[: d_model // 2])  # an odd d_model has one cosine fewer
    return pe


def encoding_with_loops(max_len, d_model):
    pe = torch.zeros(max_len, d_model)
    for pos in range(max_len):
        for i in range((d_model + 1) // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            pe[pos, 2 * i] = math.sin(angle)
            if 2 * i + 1 < d_model:
                pe[pos, 2 * i + 1] = math.cos(angle)
    return pe


def encoding_by_stacking(max_len, d_model):
    i = torch.arange((d_model + 1) // 2)
    angles = torch.arange(max_len)[:, None] / torch.pow(10000.0, 2 * i / d_model)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(max_len, -1)[:, :d_model]


def encoding_of_pairs_only(max_len, d_model):
    """The lesson's code, generalised by cutting to d_model // 2 pairs: an odd width's last column stays 0."""
    pe = torch.zeros(max_len, d_model)
    pairs = d_model // 2
    angles = torch.arange(max_len)[:, None] / 10000 ** (torch.arange(0, 2 * pairs, 2) / d_model)
    pe[:, 0:2 * pairs:2] = torch.sin(angles)
    pe[:, 1:2 * pairs:2] = torch.cos(angles)
    return pe


def the_lessons_even_encoding(max_len, d_model):
    angles = torch.arange(max_len)[:, None] / 10000 ** (torch.arange(0, d_model, 2) / d_model)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe


def test_the_lessons_even_encoding_fails_the_odd_widths_only():
    result = check_sinusoidal_positional_encoding(the_lessons_even_encoding)

    assert [case.passed for case in result.cases] == [True] * 5 + [False] * 2
    assert "your function raised RuntimeError" in result.report()


@pytest.mark.parametrize(
    "encoding",
    [encoding_with_exp_and_log, encoding_with_loops, encoding_by_stacking],
    ids=["exp-log-float32", "loops", "stack"],
)
def test_correct_encoding_passes(encoding):
    assert_passes(check_sinusoidal_positional_encoding(encoding))


def encoding_from_angles(angles_of, arrange):
    """An encoding built as arrange(sin, cos) of the angles angles_of(pos, i, d_model); i counts pairs."""

    def encoding(max_len, d_model):
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        i = torch.arange(d_model // 2, dtype=torch.float32)
        angles = angles_of(pos, i, d_model)
        return arrange(torch.sin(angles), torch.cos(angles))

    return encoding


def interleave(sines, cosines):
    return torch.stack([sines, cosines], dim=-1).flatten(1)


def one_frequency_per_column(exponent):
    """Column j uses pos / 10000^exponent(j, d_model), so the two columns of a pair turn at different speeds."""

    def encoding(max_len, d_model):
        pe = torch.zeros(max_len, d_model)
        for pos in range(max_len):
            for j in range(d_model):
                angle = pos / 10000 ** exponent(j, d_model)
                pe[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
        return pe

    return encoding


@pytest.mark.parametrize(
    "wrong_encoding, words_of_the_hint",
    [
        (encoding_from_angles(lambda pos, i, d: pos / 10000 ** (2 * i / d), lambda s, c: interleave(c, s)),
         "sine and cosine are swapped"),
        (encoding_from_angles(lambda pos, i, d: pos / 10000 ** (i / d), interleave), "you used i/d_model"),
        (one_frequency_per_column(lambda j, d: 2 * j / d), "share one frequency"),
        (one_frequency_per_column(lambda j, d: j / d), "share one frequency"),
        (encoding_from_angles(lambda pos, i, d: pos / 10000 ** (2 * i / d), lambda s, c: torch.cat([s, c], dim=1)),
         "all sines came first"),
        (encoding_from_angles(lambda pos, i, d: pos * 10000 ** (2 * i / d), interleave), "do not multiply"),
        (lambda max_len, d_model: encoding_with_loops(max_len, d_model).T, "transposed"),
        (encoding_of_pairs_only, "with an odd d_model the last column"),
    ],
    ids=["sin-cos-swapped", "i-over-d", "2j-over-d-per-column", "j-over-d-per-column", "halves", "multiplied",
         "transposed", "odd-column-empty"],
)
def test_wrong_encoding_fails_with_its_hint(wrong_encoding, words_of_the_hint):
    assert_fails_with_hint(check_sinusoidal_positional_encoding(wrong_encoding), words_of_the_hint)


# ---------------------------------------------------------------------------
# Every check: not implemented yet, and a learner's exception
# ---------------------------------------------------------------------------

ALL_CHECKS = [
    check_attention_scores,
    check_scaled_dot_product_attention,
    check_split_heads,
    check_sinusoidal_positional_encoding,
]


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda check: check.__name__)
def test_not_implemented_is_reported_as_such(check):
    def not_written_yet(*args, **kwargs):
        raise NotImplementedError()

    result = check(not_written_yet)

    assert not result
    assert result.status == "not implemented"
    assert "not implemented yet" in result.report()


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda check: check.__name__)
def test_a_learner_exception_is_a_failed_case(check):
    def buggy(*args, **kwargs):
        raise IndexError("my own bug")

    result = check(buggy)

    assert result.status == "failed"
    assert "your function raised IndexError: my own bug" in result.report()
