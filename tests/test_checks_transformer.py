"""Checks of exercises 03-04: right answers written in several ways pass, known mistakes fail with their hint."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import merge_heads, scaled_dot_product_attention, split_heads
from course_lib.checks import check_causal_mask, check_cross_attention, check_encoder_block_forward, check_layer_norm

from check_helpers import assert_fails_with_hint, assert_passes



# ---------------------------------------------------------------------------
# 03.layer_norm
# ---------------------------------------------------------------------------


def dims_of(weight):
    return tuple(range(-weight.dim(), 0))  # the trailing dimensions that weight covers


def layer_norm_with_var(x, weight, bias, eps=1e-5):
    dims = dims_of(weight)
    mean = x.mean(dim=dims, keepdim=True)
    variance = x.var(dim=dims, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


def layer_norm_by_hand(x, weight, bias, eps=1e-5):
    flat = x.flatten(start_dim=x.dim() - weight.dim())                 # (..., n) with n = weight.numel()
    centred = flat - flat.sum(-1, keepdim=True) / flat.shape[-1]
    variance = (centred ** 2).mean(-1, keepdim=True)
    return weight * (centred * torch.rsqrt(variance + eps)).reshape(x.shape) + bias


def layer_norm_in_float64(x, weight, bias, eps=1e-5):
    return layer_norm_with_var(x.double(), weight.double(), bias.double(), eps)


@pytest.mark.parametrize(
    "layer_norm",
    [layer_norm_with_var, layer_norm_by_hand, layer_norm_in_float64,
     lambda x, weight, bias, eps=1e-5: F.layer_norm(x, weight.shape, weight, bias, eps)],
    ids=["var", "by-hand-rsqrt", "float64", "F.layer_norm"],
)
def test_correct_layer_norm_passes(layer_norm):
    assert_passes(check_layer_norm(layer_norm))


def layer_norm_unbiased(x, weight, bias, eps=1e-5):
    dims = dims_of(weight)
    mean = x.mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(x.var(dim=dims, keepdim=True) + eps) * weight + bias


def layer_norm_over_first_dim(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=0, keepdim=True)
    variance = x.var(dim=0, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


def layer_norm_over_everything(x, weight, bias, eps=1e-5):
    return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) * weight + bias


def layer_norm_over_the_last_dimension(x, weight, bias, eps=1e-5):
    """The lesson's layer norm: right for a (d,) weight only."""
    mean = x.mean(dim=-1, keepdim=True)
    variance = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


def layer_norm_eps_outside(x, weight, bias, eps=1e-5):
    dims = dims_of(weight)
    mean = x.mean(dim=dims, keepdim=True)
    std = x.var(dim=dims, unbiased=False, keepdim=True).sqrt()
    return (x - mean) / (std + eps) * weight + bias


def layer_norm_without_any_eps(x, weight, bias, eps=1e-5):
    dims = dims_of(weight)
    mean = x.mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(x.var(dim=dims, unbiased=False, keepdim=True)) * weight + bias


def layer_norm_eps_squared(x, weight, bias, eps=1e-5):
    return layer_norm_with_var(x, weight, bias, eps ** 2)


def layer_norm_by_the_variance(x, weight, bias, eps=1e-5):
    dims = dims_of(weight)
    mean = x.mean(dim=dims, keepdim=True)
    return (x - mean) / (x.var(dim=dims, unbiased=False, keepdim=True) + eps) * weight + bias


def layer_norm_by_the_variance_without_eps(x, weight, bias, eps=1e-5):
    dims = dims_of(weight)
    return (x - x.mean(dim=dims, keepdim=True)) / x.var(dim=dims, unbiased=False, keepdim=True) * weight + bias


def layer_norm_bias_before_weight(x, weight, bias, eps=1e-5):
    dims = dims_of(weight)
    x_hat = (x - x.mean(dim=dims, keepdim=True)) / torch.sqrt(x.var(dim=dims, unbiased=False, keepdim=True) + eps)
    return (x_hat + bias) * weight


def layer_norm_without_centring(x, weight, bias, eps=1e-5):
    dims = dims_of(weight)
    return x / torch.sqrt(x.var(dim=dims, unbiased=False, keepdim=True) + eps) * weight + bias


def rms_norm(x, weight, bias, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(dim=dims_of(weight), keepdim=True) + eps) * weight + bias


@pytest.mark.parametrize(
    "wrong_layer_norm, words_of_the_hint",
    [
        (layer_norm_unbiased, "unbiased"),
        (layer_norm_over_first_dim, "wrong dimension"),
        (layer_norm_over_everything, "wrong dimension"),
        (lambda x, weight, bias, eps=1e-5: layer_norm_with_var(x, torch.ones_like(weight), 0 * bias, eps),
         "weight and bias are missing"),
        (lambda x, weight, bias, eps=1e-5: layer_norm_with_var(x, weight, torch.zeros_like(bias), eps),
         "bias is missing"),
        (lambda x, weight, bias, eps=1e-5: layer_norm_with_var(x, torch.ones_like(weight), bias, eps),
         "weight is missing"),
        (layer_norm_eps_outside, "inside the square root"),
        (layer_norm_over_the_last_dimension, "over the last dimension only"),
        (lambda x, weight, bias, eps=1e-5: layer_norm_with_var(x, weight, bias), "eps argument was ignored"),
        (layer_norm_without_any_eps, "eps is missing"),
        (layer_norm_eps_squared, "eps was squared"),
        (layer_norm_by_the_variance, "divided by the variance"),
        (layer_norm_by_the_variance_without_eps, "divided by the variance"),
        (layer_norm_bias_before_weight, "bias was added before scaling"),
        (layer_norm_without_centring, "mean was not subtracted"),
        (rms_norm, "mean was not subtracted"),
    ],
    ids=["unbiased", "first-dim", "all-dims", "no-weight-no-bias", "no-bias", "no-weight", "eps-outside",
         "last-dim-only", "ignores-eps", "no-eps", "eps-squared", "by-variance", "by-variance-no-eps",
         "bias-before-weight", "not-centred", "rms-norm"],
)
def test_layer_norm_mistake_fails_with_its_hint(wrong_layer_norm, words_of_the_hint):
    assert_fails_with_hint(check_layer_norm(wrong_layer_norm), words_of_the_hint)


def test_layer_norm_that_divides_by_zero_fails():
    def layer_norm_without_eps(x, weight, bias, eps=1e-5):
        mean = x.mean(dim=-1, keepdim=True)
        return (x - mean) / x.var(dim=-1, unbiased=False, keepdim=True).sqrt() * weight + bias

    result = check_layer_norm(layer_norm_without_eps)

    assert not result
    assert "constant row" in result.report()
    assert "received contains NaN or inf" in result.report()


# ---------------------------------------------------------------------------
# 03.encoder_block_forward
# ---------------------------------------------------------------------------


def forward_with_branches(x, block, mask=None):
    if block.norm_first:
        x = x + block.self_attention(block.norm1(x), mask=mask)
        return x + block.feed_forward(block.norm2(x))
    x = block.norm1(x + block.self_attention(x, mask=mask))
    return block.norm2(x + block.feed_forward(x))


def forward_with_a_helper(x, block, mask=None):
    def sublayer(x, norm, function):
        return x + function(norm(x)) if block.norm_first else norm(x + function(x))

    x = sublayer(x, block.norm1, lambda h: block.self_attention(h, h, h, mask=mask))
    return sublayer(x, block.norm2, block.feed_forward)


def forward_with_dropout_and_explicit_layers(x, block, mask=None):
    ff = block.feed_forward
    feed_forward = lambda h: ff.linear2(ff.dropout(ff.activation(ff.linear1(h))))  # noqa: E731
    attention = lambda h: block.dropout1(block.self_attention(h, mask=mask))  # noqa: E731
    if block.norm_first:
        x = x + attention(block.norm1(x))
        return x + block.dropout2(feed_forward(block.norm2(x)))
    x = block.norm1(x + attention(x))
    return block.norm2(x + block.dropout2(feed_forward(x)))


@pytest.mark.parametrize("forward", [forward_with_branches, forward_with_a_helper,
                                     forward_with_dropout_and_explicit_layers])
def test_correct_encoder_block_forward_passes(forward):
    assert_passes(check_encoder_block_forward(forward))


def forward_norms_swapped(x, block, mask=None):
    if not block.norm_first:
        x = x + block.self_attention(block.norm1(x), mask=mask)
        return x + block.feed_forward(block.norm2(x))
    x = block.norm1(x + block.self_attention(x, mask=mask))
    return block.norm2(x + block.feed_forward(x))


def forward_always_post_norm(x, block, mask=None):
    x = block.norm1(x + block.self_attention(x, mask=mask))
    return block.norm2(x + block.feed_forward(x))


def forward_without_residuals(x, block, mask=None):
    if block.norm_first:
        x = block.self_attention(block.norm1(x), mask=mask)
        return block.feed_forward(block.norm2(x))
    x = block.norm1(block.self_attention(x, mask=mask))
    return block.norm2(block.feed_forward(x))


def forward_without_feed_forward_residual(x, block, mask=None):
    if block.norm_first:
        x = x + block.self_attention(block.norm1(x), mask=mask)
        return block.feed_forward(block.norm2(x))
    x = block.norm1(x + block.self_attention(x, mask=mask))
    return block.norm2(block.feed_forward(x))


def forward_without_feed_forward(x, block, mask=None):
    if block.norm_first:
        return x + block.self_attention(block.norm1(x), mask=mask)
    return block.norm1(x + block.self_attention(x, mask=mask))


def forward_ignoring_the_mask(x, block, mask=None):
    return forward_with_branches(x, block, mask=None)


def forward_normalising_the_stream(x, block, mask=None):
    if block.norm_first:
        x = block.norm1(x)
        x = x + block.self_attention(x, mask=mask)
        x = block.norm2(x)
        return x + block.feed_forward(x)
    return forward_with_branches(x, block, mask)


def forward_with_causal_attention(x, block, mask=None):
    if block.norm_first:
        x = x + block.self_attention(block.norm1(x), mask=mask, is_causal=True)
        return x + block.feed_forward(block.norm2(x))
    x = block.norm1(x + block.self_attention(x, mask=mask, is_causal=True))
    return block.norm2(x + block.feed_forward(x))


def forward_with_a_tril_mask(x, block, mask=None):
    causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
    return forward_with_branches(x, block, causal if mask is None else mask & causal)


def forward_with_the_mask_inverted(x, block, mask=None):
    return forward_with_branches(x, block, None if mask is None else ~mask)


def forward_with_norm1_twice(x, block, mask=None):
    if block.norm_first:
        x = x + block.self_attention(block.norm1(x), mask=mask)
        return x + block.feed_forward(block.norm1(x))
    x = block.norm1(x + block.self_attention(x, mask=mask))
    return block.norm1(x + block.feed_forward(x))


def forward_with_a_final_norm(x, block, mask=None):
    if block.norm_first:
        x = x + block.self_attention(block.norm1(x), mask=mask)
        x = x + block.feed_forward(block.norm2(x))
        return block.norm2(x)
    return forward_with_branches(x, block, mask)


@pytest.mark.parametrize(
    "wrong_forward, words_of_the_hint",
    [
        (forward_norms_swapped, "other placement"),
        (forward_always_post_norm, "other placement"),
        (forward_without_residuals, "residual connection is missing"),
        (forward_without_feed_forward_residual, "residual connection is missing"),
        (forward_without_feed_forward, "feed-forward sub-layer is missing"),
        (forward_ignoring_the_mask, "mask was not passed on"),
        (forward_normalising_the_stream, "residual path skips the norm"),
        (forward_with_causal_attention, "the self-attention was causal"),
        (forward_with_a_tril_mask, "the self-attention was causal"),
        (forward_with_the_mask_inverted, "padding mask is inverted"),
        (forward_with_norm1_twice, "norm1 was used for both"),
        (forward_with_a_final_norm, "without normalising it again"),
    ],
    ids=["norms-swapped", "always-post-norm", "no-residuals", "no-ff-residual", "no-feed-forward", "no-mask",
         "normalised-stream", "causal", "tril-mask", "inverted-mask", "norm1-twice", "final-norm"],
)
def test_encoder_block_mistake_fails_with_its_hint(wrong_forward, words_of_the_hint):
    assert_fails_with_hint(check_encoder_block_forward(wrong_forward), words_of_the_hint)


def test_calling_the_whole_block_is_refused_with_an_explanation():
    result = check_encoder_block_forward(lambda x, block, mask=None: block(x, mask=mask))

    assert not result
    assert "write its forward pass yourself" in result.report()


# ---------------------------------------------------------------------------
# 04.causal_mask
# ---------------------------------------------------------------------------


def causal_mask_by_comparison(T, n_past=0):
    queries = torch.arange(n_past, n_past + T)   # the positions of the new tokens in the whole sequence
    keys = torch.arange(n_past + T)
    return keys[None, :] <= queries[:, None]     # key j allowed for query i when j <= its position


def causal_mask_by_loops(T, n_past=0):
    mask = torch.zeros(T, n_past + T, dtype=torch.bool)
    for i in range(T):
        mask[i, : n_past + i + 1] = True
    return mask


def causal_mask_cut_from_the_full_square(T, n_past=0):
    return torch.ones(n_past + T, n_past + T, dtype=torch.bool).tril()[n_past:]  # the rows of the new positions


@pytest.mark.parametrize(
    "causal_mask",
    [causal_mask_by_comparison, causal_mask_by_loops, causal_mask_cut_from_the_full_square,
     lambda T, n_past=0: ~torch.ones(T, n_past + T, dtype=torch.bool).triu(n_past + 1),
     lambda T, n_past=0: torch.tril(torch.ones(T, T + n_past), diagonal=n_past).bool()],
    ids=["comparison", "loops", "cut-square", "not-triu", "tril-then-bool"],
)
def test_correct_causal_mask_passes(causal_mask):
    assert_passes(check_causal_mask(causal_mask))


def ones(T, n_past):
    return torch.ones(T, n_past + T, dtype=torch.bool)


@pytest.mark.parametrize(
    "wrong_mask, words_of_the_hint",
    [
        (lambda T, n_past=0: ones(T, n_past).triu(n_past), "above the diagonal"),
        (lambda T, n_past=0: ones(T, n_past).tril(n_past - 1), "the diagonal is False"),
        (lambda T, n_past=0: ones(T, n_past).triu(n_past + 1), "inverted"),
        (lambda T, n_past=0: torch.ones(T, n_past + T).tril(n_past), "bool tensor"),
        (lambda T, n_past=0: torch.full((T, n_past + T), float("-inf")).triu(n_past + 1), "bool tensor"),
        (lambda T, n_past=0: ones(T, n_past).tril(), "the cached positions were hidden"),
        (lambda T, n_past=0: torch.ones(T, T, dtype=torch.bool).tril(), "one column per new position only"),
        (lambda T, n_past=0: torch.ones(n_past + T, n_past + T, dtype=torch.bool).tril(), "a row for every position"),
        (lambda T, n_past=0: ones(T, n_past).tril(n_past + 1), "also sees the next one"),
        (lambda T, n_past=0: ones(T, n_past).tril(n_past).fliplr(), "mirrored"),
        (lambda T, n_past=0: torch.flip(ones(T, n_past).tril(n_past), dims=[0]), "mirrored"),
    ],
    ids=["upper-triangular", "diagonal-excluded", "inverted", "float-0-1", "additive-minus-inf", "past-hidden",
         "square", "full-square", "one-too-far", "flipped-left-right", "flipped-upside-down"],
)
def test_causal_mask_mistake_fails_with_its_hint(wrong_mask, words_of_the_hint):
    assert_fails_with_hint(check_causal_mask(wrong_mask), words_of_the_hint)


def test_the_square_mask_of_the_lesson_passes_without_a_past_only():
    result = check_causal_mask(lambda T: torch.ones(T, T, dtype=torch.bool).tril())

    assert [case.passed for case in result.cases] == [True] * 4 + [False] * 3
    assert "unexpected keyword argument 'n_past'" in result.report()


# ---------------------------------------------------------------------------
# 04.cross_attention
# ---------------------------------------------------------------------------


def cross_attention_by_hand(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    q = decoder_states @ w_q
    k = encoder_states @ w_k
    v = encoder_states @ w_v
    scores = q @ k.transpose(1, 2) / math.sqrt(k.shape[-1])
    if encoder_mask is not None:
        scores = scores.masked_fill(~encoder_mask[:, None, :], float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def cross_attention_with_course_lib(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    mask = None if encoder_mask is None else encoder_mask.unsqueeze(1)
    return scaled_dot_product_attention(decoder_states @ w_q, encoder_states @ w_k, encoder_states @ w_v, mask)


def cross_attention_with_einsum(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    q = torch.einsum("btd,dk->btk", decoder_states, w_q)
    k = torch.einsum("bsd,dk->bsk", encoder_states, w_k)
    v = torch.einsum("bsd,dv->bsv", encoder_states, w_v)
    scores = torch.einsum("btk,bsk->bts", q, k) * q.shape[-1] ** -0.5
    if encoder_mask is not None:
        scores = torch.where(encoder_mask[:, None, :], scores, torch.tensor(-1e9))
    weights = torch.softmax(scores, -1)
    return torch.einsum("bts,bsv->btv", weights, v), weights


def cross_attention_with_one_head_helpers(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    # split_heads with one head is a reshape: checks that (B, 1, T, d) shapes work as well.
    q, k, v = (split_heads(t, 1) for t in (decoder_states @ w_q, encoder_states @ w_k, encoder_states @ w_v))
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    return merge_heads(out), weights[:, 0]


@pytest.mark.parametrize(
    "cross_attention",
    [cross_attention_by_hand, cross_attention_with_course_lib, cross_attention_with_einsum,
     cross_attention_with_one_head_helpers],
    ids=["by-hand", "course_lib", "einsum", "split-heads"],
)
def test_correct_cross_attention_passes(cross_attention):
    assert_passes(check_cross_attention(cross_attention))


def keys_and_values_from_decoder(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    return cross_attention_by_hand(decoder_states, decoder_states, w_q, w_k, w_v)


def queries_from_encoder(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    return cross_attention_by_hand(encoder_states, decoder_states, w_q, w_k, w_v)


def with_a_causal_mask(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    Tt, Ts = decoder_states.shape[1], encoder_states.shape[1]
    mask = torch.ones(Tt, Ts, dtype=torch.bool).tril()
    if encoder_mask is not None:
        mask = mask & encoder_mask[:, None, :]
    return scaled_dot_product_attention(decoder_states @ w_q, encoder_states @ w_k, encoder_states @ w_v, mask)


def without_the_encoder_mask(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    return cross_attention_by_hand(decoder_states, encoder_states, w_q, w_k, w_v)


def without_scaling(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    return cross_attention_by_hand(decoder_states * math.sqrt(w_q.shape[-1]), encoder_states, w_q, w_k, w_v,
                                   encoder_mask)


def with_the_encoder_mask_inverted(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    return cross_attention_by_hand(decoder_states, encoder_states, w_q, w_k, w_v,
                                   None if encoder_mask is None else ~encoder_mask)


def scaled_by_d_model(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    d_k, d_model = w_q.shape[-1], decoder_states.shape[-1]
    return cross_attention_by_hand(decoder_states * math.sqrt(d_k / d_model), encoder_states, w_q, w_k, w_v,
                                   encoder_mask)


def scaled_by_d_v(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    q, k, v = decoder_states @ w_q, encoder_states @ w_k, encoder_states @ w_v
    scores = q @ k.transpose(-2, -1) / v.shape[-1] ** 0.5
    if encoder_mask is not None:
        scores = scores.masked_fill(~encoder_mask.unsqueeze(1), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def softmax_over_the_targets(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    q, k, v = decoder_states @ w_q, encoder_states @ w_k, encoder_states @ w_v
    scores = q @ k.transpose(1, 2) / math.sqrt(k.shape[-1])
    if encoder_mask is not None:
        scores = scores.masked_fill(~encoder_mask[:, None, :], float("-inf"))
    weights = scores.softmax(dim=1)
    return weights @ v, weights


def masked_after_the_softmax(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    q, k, v = decoder_states @ w_q, encoder_states @ w_k, encoder_states @ w_v
    weights = (q @ k.transpose(1, 2) / math.sqrt(k.shape[-1])).softmax(dim=-1)
    if encoder_mask is not None:
        weights = weights * encoder_mask[:, None, :]
    return weights @ v, weights


@pytest.mark.parametrize(
    "wrong_cross_attention, words_of_the_hint",
    [
        (keys_and_values_from_decoder, "keys and values came from the decoder"),
        (queries_from_encoder, "queries came from the encoder"),
        (with_a_causal_mask, "needs none"),
        (without_the_encoder_mask, "encoder_mask was ignored"),
        (without_scaling, "not scaled"),
        (with_the_encoder_mask_inverted, "encoder_mask is inverted"),
        (scaled_by_d_model, "square root of the wrong size"),
        (scaled_by_d_v, "square root of the wrong size"),
        (softmax_over_the_targets, "softmax ran over the target positions"),
        (masked_after_the_softmax, "zeroed after the softmax"),
    ],
    ids=["kv-from-decoder", "q-from-encoder", "causal-mask", "no-encoder-mask", "unscaled", "inverted-encoder-mask",
         "scaled-by-d-model", "scaled-by-d-v", "softmax-over-targets", "masked-after-softmax"],
)
def test_cross_attention_mistake_fails_with_its_hint(wrong_cross_attention, words_of_the_hint):
    assert_fails_with_hint(check_cross_attention(wrong_cross_attention), words_of_the_hint)


def test_a_causal_mask_on_cross_attention_fails_every_case():
    result = check_cross_attention(with_a_causal_mask)

    # Even with more target than source positions, the first target rows lose part of the source.
    assert result.n_passed == 0


def test_only_the_output_is_not_enough():
    result = check_cross_attention(lambda *args, **kwargs: cross_attention_by_hand(*args, **kwargs)[0])

    assert not result
    assert "expected a tuple of 2 items" in result.report()


# ---------------------------------------------------------------------------
# Every check of this module: not implemented, and never raising
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("check", [check_layer_norm, check_encoder_block_forward, check_causal_mask,
                                   check_cross_attention])
def test_not_implemented_and_crashing_functions_are_reported(check):
    def not_implemented(*args, **kwargs):
        raise NotImplementedError()

    def crashing(*args, **kwargs):
        raise ValueError("my bug")

    assert check(not_implemented).status == "not implemented"
    crashed = check(crashing)
    assert crashed.status == "failed"
    assert "your function raised ValueError: my bug" in crashed.report()


@pytest.mark.parametrize("check, exercise", [(check_layer_norm, "03.layer_norm"),
                                             (check_encoder_block_forward, "03.encoder_block_forward"),
                                             (check_causal_mask, "04.causal_mask"),
                                             (check_cross_attention, "04.cross_attention")])
def test_exercise_ids(check, exercise):
    assert check(lambda *args, **kwargs: None).exercise == exercise
