"""Checks of exercises 03 and 04: layer norm, an encoder block's forward pass, the causal mask, cross-attention."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from course_lib.checks.framework import (Case, CheckResult, Mistake, check_function, same_output_as,
                                        same_output_as_any_of)
from course_lib.layers import EncoderBlock, TransformerBlock

# ---------------------------------------------------------------------------
# 03.layer_norm
# ---------------------------------------------------------------------------


def _layer_norm_reference(x, weight, bias, eps=1e-5):
    return F.layer_norm(x, tuple(weight.shape), weight, bias, eps)


def _weight_dims(weight) -> tuple[int, ...]:
    """The trailing dimensions a layer norm with this weight normalises: (-1,) for a (d,) weight."""
    return tuple(range(-weight.dim(), 0))


def _normalise(x, *, dims=(-1,), unbiased=False, eps=1e-5, eps_outside=False, root=True, centre=True):
    """What a layer norm computes before weight and bias, with the knobs the known mistakes turn."""
    mean = x.mean(dim=dims, keepdim=True)
    variance = x.var(dim=dims, keepdim=True, correction=1 if unbiased else 0)
    centred = x - mean if centre else x
    if eps_outside:
        return centred / (variance.sqrt() + eps)
    return centred / ((variance + eps).sqrt() if root else variance + eps)


def _layer_norm_mistake(eps_used=lambda eps: eps, **knobs):
    """A layer norm with the knobs of ``_normalise`` turned; ``eps_used(eps)`` is the eps it really adds."""
    def wrong(x, weight, bias, eps=1e-5):
        return _normalise(x, eps=eps_used(eps), **{"dims": _weight_dims(weight), **knobs}) * weight + bias
    return wrong


def _no_eps(eps):
    """No eps at all, whatever eps was given: sqrt(variance) alone."""
    return 0.0


def _bias_before_weight(x, weight, bias, eps=1e-5):
    """The shift added before the scale: (x_hat + bias) * weight."""
    return (_normalise(x, dims=_weight_dims(weight), eps=eps) + bias) * weight


def _rms_norm(x, weight, bias, eps=1e-5):
    """RMSNorm with a bias: x divided by its root mean square, the mean never subtracted."""
    mean_square = (x ** 2).mean(dim=_weight_dims(weight), keepdim=True)
    return x / (mean_square + eps).sqrt() * weight + bias


def _without(*, weight=True, bias=True, eps_given=True):
    """A layer norm over the right dimensions that forgets the weight, the bias or the eps it was given."""
    def wrong(x, w, b, eps=1e-5):
        normalised = _normalise(x, dims=_weight_dims(w), eps=eps if eps_given else 1e-5)
        return normalised * (w if weight else 1) + (b if bias else 0)
    return wrong


def _all_dims(x):
    return tuple(range(x.dim()))


_LN_GENERATOR = torch.Generator().manual_seed(3)
_LN_3D = torch.randn(2, 3, 8, generator=_LN_GENERATOR) * 2 + 1
_LN_WEIGHT = torch.rand(8, generator=_LN_GENERATOR) + 0.5
_LN_BIAS = torch.randn(8, generator=_LN_GENERATOR)
_LN_2D = torch.randn(5, 6, generator=_LN_GENERATOR) * 3 - 2
_LN_SMALL = torch.randn(4, 6, generator=_LN_GENERATOR) * 0.1  # variance near 0.01: eps=0.1 matters

_LN_4D = torch.randn(2, 2, 3, 4, generator=_LN_GENERATOR) * 2 - 1
_LN_WEIGHT_2D = torch.rand(3, 4, generator=_LN_GENERATOR) + 0.5
_LN_BIAS_2D = torch.randn(3, 4, generator=_LN_GENERATOR)

_LAYER_NORM_CASES = (
    Case("x = [1, 2, 3, 4], weight of ones, bias of zeros",
         (torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.ones(4), torch.zeros(4))),
    Case("x of shape (2, 3, 8), random weight and bias (8,)", (_LN_3D, _LN_WEIGHT, _LN_BIAS)),
    Case("x of shape (5, 6), weight of 2s, bias of 1s", (_LN_2D, torch.full((6,), 2.0), torch.ones(6))),
    Case("x of shape (4, 6) with small values, eps=0.1", (_LN_SMALL, torch.ones(6), torch.zeros(6)), {"eps": 0.1}),
    Case("a constant row x = [5, 5, 5], bias [1, 2, 3]",
         (torch.full((1, 3), 5.0), torch.ones(3), torch.tensor([1.0, 2.0, 3.0]))),
    Case("x of shape (2, 3, 8), weight and bias of shape (3, 8): normalise over the last 2 dimensions",
         (_LN_3D, _LN_WEIGHT_2D.repeat(1, 2), _LN_BIAS_2D.repeat(1, 2))),
    Case("x of shape (2, 2, 3, 4), weight and bias of shape (3, 4)", (_LN_4D, _LN_WEIGHT_2D, _LN_BIAS_2D)),
)

_LAYER_NORM_MISTAKES = (
    Mistake(
        "the statistics were taken over the last dimension only, but weight has shape (..., d) with more than "
        "one dimension: normalise over as many trailing dimensions as weight has, "
        "dims = tuple(range(-weight.dim(), 0)), as nn.LayerNorm(normalized_shape) does.",
        same_output_as(_layer_norm_mistake(dims=(-1,))),
    ),
    Mistake(
        "the variance is the unbiased one (divided by d - 1). Layer norm divides by d: "
        "x.var(dim=-1, unbiased=False, keepdim=True), or ((x - mean) ** 2).mean(dim=-1, keepdim=True).",
        same_output_as(_layer_norm_mistake(unbiased=True)),
    ),
    Mistake(
        "the statistics were taken over the wrong dimension. Layer norm normalises each position's "
        "features: the mean and variance over the last dimension only (dim=-1, keepdim=True).",
        same_output_as(_layer_norm_mistake(dims=(0,))),
    ),
    Mistake(
        "the statistics were taken over the wrong dimension. Layer norm normalises each position's "
        "features: the mean and variance over the last dimension only (dim=-1, keepdim=True).",
        same_output_as(lambda x, weight, bias, eps=1e-5: _normalise(x, dims=_all_dims(x), eps=eps) * weight + bias),
    ),
    Mistake(
        "weight and bias are missing: after normalising, scale by weight and shift by bias "
        "(x_hat * weight + bias), so the model can undo the normalisation where it helps.",
        same_output_as(_without(weight=False, bias=False)),
    ),
    Mistake(
        "the bias is missing: add it after scaling by weight (x_hat * weight + bias).",
        same_output_as(_without(bias=False)),
    ),
    Mistake(
        "the weight is missing: multiply the normalised x by weight before adding bias.",
        same_output_as(_without(weight=False)),
    ),
    Mistake(
        "eps belongs inside the square root: (x - mean) / sqrt(variance + eps), "
        "not (x - mean) / (sqrt(variance) + eps).",
        same_output_as(_layer_norm_mistake(eps_outside=True)),
    ),
    Mistake(
        "the eps argument was ignored: use the eps you are given, inside the square root.",
        same_output_as(_without(eps_given=False)),
    ),
    Mistake(
        "eps is missing: a constant row has variance 0, and 0 / sqrt(0) is NaN. Add eps to the variance "
        "before the square root: (x - mean) / torch.sqrt(variance + eps).",
        same_output_as(_layer_norm_mistake(eps_used=_no_eps)),
    ),
    Mistake(
        "eps was squared: add eps itself to the variance, (x - mean) / torch.sqrt(variance + eps), "
        "not variance + eps ** 2.",
        same_output_as(_layer_norm_mistake(eps_used=lambda eps: eps ** 2)),
    ),
    Mistake(
        "x - mean was divided by the variance, not by the standard deviation: take the square root, "
        "(x - mean) / torch.sqrt(variance + eps).",
        same_output_as_any_of(_layer_norm_mistake(root=False), _layer_norm_mistake(root=False, eps_used=_no_eps)),
    ),
    Mistake(
        "the bias was added before scaling: scale first, then shift, x_hat * weight + bias, "
        "not (x_hat + bias) * weight.",
        same_output_as(_bias_before_weight),
    ),
    Mistake(
        "the mean was not subtracted: layer norm centres x before dividing, (x - mean) / torch.sqrt(variance + eps). "
        "Dividing x itself by its root mean square is RMSNorm, another normalisation.",
        same_output_as_any_of(_layer_norm_mistake(centre=False), _rms_norm),
    ),
)


def check_layer_norm(learner_fn: Any) -> CheckResult:
    """Check exercise 03: ``layer_norm(x, weight, bias, eps=1e-5)`` over the trailing dimensions of weight's shape.

    The general version, as ``nn.LayerNorm(normalized_shape)``: a (d,)
    weight normalises the last dimension (the transformer's case), a (T, d)
    weight the last two. The cases cover 1-D to 4-D inputs, weights and
    biases that are not ones and zeros, a large eps on small values, and a
    constant row (zero variance, where eps keeps the division finite).
    """
    return check_function(
        learner_fn,
        exercise="03.layer_norm",
        reference=_layer_norm_reference,
        cases=_LAYER_NORM_CASES,
        mistakes=_LAYER_NORM_MISTAKES,
    )


# ---------------------------------------------------------------------------
# 03.encoder_block_forward
# ---------------------------------------------------------------------------


class _SubModulesOnly(EncoderBlock):
    """An encoder block for the check: the learner must combine its sub-modules, not call it whole."""

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            "calling block(x) runs the finished block, and this exercise is to write its forward pass yourself: "
            "use block.self_attention, block.norm1, block.feed_forward and block.norm2"
        )


def _make_block(norm_first: bool, seed: int) -> _SubModulesOnly:
    """A small block with random weights everywhere, layer norms included (so forgetting one shows)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        block = _SubModulesOnly(16, 4, 32, dropout=0.0, norm_first=norm_first)
        for norm in (block.norm1, block.norm2):
            norm.weight.data = torch.rand(16) + 0.5
            norm.bias.data = torch.randn(16) * 0.5
    return block.eval()


def _encoder_block_reference(x, block, mask=None):
    return TransformerBlock.forward(block, x, mask=mask)


def _encoder_block_variant(*, residual_attention=True, residual_ff=True, feed_forward=True, swap_norm=False,
                           use_mask=True, norm_whole_stream=False, causal=False, invert_mask=False,
                           shared_norm=False, final_norm=None):
    """A forward pass with one known mistake switched on."""
    def forward(x, block, mask=None):
        norm_first = block.norm_first != swap_norm
        attention_mask = mask if use_mask else None
        if invert_mask and attention_mask is not None:
            attention_mask = ~attention_mask
        sublayers = [(block.norm1, lambda h: block.self_attention(h, mask=attention_mask, is_causal=causal),
                      residual_attention)]
        if feed_forward:
            sublayers.append((block.norm1 if shared_norm else block.norm2, block.feed_forward, residual_ff))
        for norm, sublayer, residual in sublayers:
            if norm_first and norm_whole_stream:
                x = norm(x)
                x = x + sublayer(x)
            elif norm_first:
                x = (x if residual else 0) + sublayer(norm(x))
            else:
                x = norm((x if residual else 0) + sublayer(x))
        if norm_first and final_norm is not None:
            x = getattr(block, final_norm)(x)
        return x
    return forward


_BLOCK_X = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(4))
_BLOCK_REAL = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
_BLOCK_MASK = _BLOCK_REAL[:, None, None, :]  # (B, 1, 1, T): what padding_mask returns

_ENCODER_BLOCK_CASES = (
    Case("post-norm block (norm_first=False), x of shape (2, 5, 16)", (_BLOCK_X, _make_block(False, 5))),
    Case("pre-norm block (norm_first=True), x of shape (2, 5, 16)", (_BLOCK_X, _make_block(True, 6))),
    Case("post-norm block with a padding mask", (_BLOCK_X, _make_block(False, 7)), {"mask": _BLOCK_MASK}),
    Case("pre-norm block with a padding mask", (_BLOCK_X, _make_block(True, 8)), {"mask": _BLOCK_MASK}),
)

_RESIDUAL_HINT = (
    "a residual connection is missing: each sub-layer's input is added back to its output "
    "(post-norm: norm(x + sublayer(x)); pre-norm: x + sublayer(norm(x)))."
)

_ENCODER_BLOCK_MISTAKES = (
    Mistake(
        "the layer norms are in the other placement. block.norm_first=False (post-norm, the original "
        "transformer and BERT) normalises after adding: x = norm(x + sublayer(x)); block.norm_first=True "
        "(pre-norm, GPT-2) normalises the sub-layer's input only: x = x + sublayer(norm(x)).",
        same_output_as(_encoder_block_variant(swap_norm=True)),
    ),
    Mistake(_RESIDUAL_HINT, same_output_as(_encoder_block_variant(residual_attention=False, residual_ff=False))),
    Mistake(_RESIDUAL_HINT, same_output_as(_encoder_block_variant(residual_attention=False))),
    Mistake(_RESIDUAL_HINT, same_output_as(_encoder_block_variant(residual_ff=False))),
    Mistake(
        "the feed-forward sub-layer is missing: after attention, every position goes through "
        "block.feed_forward, with its own residual connection and block.norm2.",
        same_output_as(_encoder_block_variant(feed_forward=False)),
    ),
    Mistake(
        "the mask was not passed on: call block.self_attention(h, mask=mask), so that no position "
        "attends to padding.",
        same_output_as(_encoder_block_variant(use_mask=False)),
    ),
    Mistake(
        "in a pre-norm block the residual path skips the norm: x = x + sublayer(norm(x)). "
        "Writing x = norm(x) first normalises the residual stream itself.",
        same_output_as(_encoder_block_variant(norm_whole_stream=True)),
    ),
    Mistake(
        "the self-attention was causal, but an encoder reads the whole input at once: every position may "
        "attend to every real position, before and after it. Pass only the padding mask, "
        "block.self_attention(h, mask=mask), with no is_causal=True and no tril mask.",
        same_output_as(_encoder_block_variant(causal=True)),
    ),
    Mistake(
        "the padding mask is inverted: True means \"may attend\", so pass mask as it is, "
        "block.self_attention(h, mask=mask), not ~mask.",
        same_output_as(_encoder_block_variant(invert_mask=True)),
    ),
    Mistake(
        "each sub-layer has its own layer norm: block.norm1 for self-attention and block.norm2 for the "
        "feed-forward network; norm1 was used for both.",
        same_output_as(_encoder_block_variant(shared_norm=True)),
    ),
    Mistake(
        "a pre-norm block ends with the last addition, x = x + feed_forward(norm2(x)): return x as it is, "
        "without normalising it again (a pre-norm model has one final norm after its whole stack of blocks).",
        same_output_as_any_of(_encoder_block_variant(final_norm="norm2"), _encoder_block_variant(final_norm="norm1")),
    ),
)


def check_encoder_block_forward(learner_fn: Any) -> CheckResult:
    """Check exercise 03: ``encoder_block_forward(x, block, mask=None)``.

    ``block`` is an ``EncoderBlock`` in eval mode whose own forward is
    disabled, so the learner combines its sub-modules. The answer must equal
    ``EncoderBlock``'s forward with the same weights, for post-norm and
    pre-norm blocks, with and without a padding mask.
    """
    return check_function(
        learner_fn,
        exercise="03.encoder_block_forward",
        reference=_encoder_block_reference,
        cases=_ENCODER_BLOCK_CASES,
        mistakes=_ENCODER_BLOCK_MISTAKES,
    )


# ---------------------------------------------------------------------------
# 04.causal_mask: T new queries after n_past cached positions
# ---------------------------------------------------------------------------


def _causal_mask_reference(T, n_past=0):
    """Row i is position n_past + i: it may attend to keys 0 .. n_past + i."""
    return torch.ones(T, n_past + T, dtype=torch.bool).tril(diagonal=n_past)


def _triangle(kind: str, offset: int):
    """A (T, n_past + T) mask from tril or triu with the diagonal moved by ``offset`` from the right one."""
    def mask(T, n_past=0):
        ones = torch.ones(T, n_past + T, dtype=torch.bool)
        return ones.tril(diagonal=n_past + offset) if kind == "tril" else ones.triu(diagonal=n_past + offset)
    return mask


def _mirrored(dim: int):
    """The right mask flipped along ``dim``: left to right (-1) or upside down (0)."""
    def mask(T, n_past=0):
        return _causal_mask_reference(T, n_past).flip(dim)
    return mask


def _is_not_bool(received, case: Case) -> bool:
    return isinstance(received, torch.Tensor) and received.dtype != torch.bool


def _n_past(case: Case) -> int:
    return case.kwargs.get("n_past", 0)


def _square(received, case: Case) -> bool:
    T = case.args[0]
    return _n_past(case) > 0 and isinstance(received, torch.Tensor) and tuple(received.shape) == (T, T)


def _one_row_per_key(received, case: Case) -> bool:
    n_keys = case.args[0] + _n_past(case)
    return _n_past(case) > 0 and isinstance(received, torch.Tensor) and tuple(received.shape) == (n_keys, n_keys)


_CAUSAL_MASK_CASES = (
    *(Case(f"T={T}", (T,)) for T in (1, 2, 5, 8)),
    Case("T=3 new positions after n_past=2 cached ones -> (3, 5)", (3,), {"n_past": 2}),
    Case("T=1, n_past=5: one generation step with a cache -> (1, 6)", (1,), {"n_past": 5}),
    Case("T=4, n_past=1 -> (4, 5)", (4,), {"n_past": 1}),
)

_CAUSAL_MASK_MISTAKES = (
    Mistake(
        "return a bool tensor (dtype torch.bool) with True for \"may attend\", not numbers: "
        "torch.ones(T, n_past + T, dtype=torch.bool).tril(...) or a comparison of positions.",
        _is_not_bool,
    ),
    Mistake(
        "the mask has one column per new position only: the keys are the n_past cached positions AND the T new "
        "ones, so its shape is (T, n_past + T).",
        _square,
    ),
    Mistake(
        "the mask has a row for every position; only the T new positions ask a question (the cached ones have "
        "asked theirs already), so its shape is (T, n_past + T).",
        _one_row_per_key,
    ),
    Mistake(
        "the mask is inverted: True must mean \"may attend\" (on and below the diagonal), "
        "and you returned True for the positions to hide.",
        same_output_as(lambda T, n_past=0: ~_causal_mask_reference(T, n_past)),
    ),
    Mistake(
        "True is above the diagonal, so position i would see later positions, the future. "
        "Keep the lower triangle (tril), not the upper one (triu).",
        same_output_as(_triangle("triu", 0)),
    ),
    Mistake(
        "the diagonal is False, but a position may attend to itself (and the first position would "
        "have no key at all). Use j <= n_past + i, not j < n_past + i.",
        same_output_as(_triangle("tril", -1)),
    ),
    Mistake(
        "the cached positions were hidden: new position i is position n_past + i of the sequence, so it may "
        "see every cached key and the new ones up to itself: tril(diagonal=n_past), or j <= n_past + i.",
        same_output_as(lambda T, n_past=0: torch.ones(T, n_past + T, dtype=torch.bool).tril()),
    ),
    Mistake(
        "the diagonal is one column too far right, so each position also sees the next one. New position i "
        "may see keys 0 .. n_past + i: tril(diagonal=n_past), not tril(diagonal=n_past + 1).",
        same_output_as(_triangle("tril", 1)),
    ),
    Mistake(
        "the mask is mirrored: True must fill the lower-left triangle, keys 0 .. n_past + i on row i. "
        "Return torch.ones(T, n_past + T, dtype=torch.bool).tril(diagonal=n_past) as it is, without flipping it.",
        same_output_as_any_of(_mirrored(-1), _mirrored(0)),
    ),
)


def check_causal_mask(learner_fn: Any) -> CheckResult:
    """Check exercise 04: ``causal_mask(T, n_past=0)`` -> (T, n_past + T) bool.

    The general version of the (T, T) mask: T new queries that follow
    n_past cached positions (generation with a key/value cache). Entry
    [i, j] is True when key j <= n_past + i. With n_past = 0 it is the
    (T, T) lower triangle, diagonal included.
    """
    return check_function(
        learner_fn,
        exercise="04.causal_mask",
        reference=_causal_mask_reference,
        cases=_CAUSAL_MASK_CASES,
        mistakes=_CAUSAL_MASK_MISTAKES,
    )


# ---------------------------------------------------------------------------
# 04.cross_attention
# ---------------------------------------------------------------------------


def _attend(queries_from, keys_from, w_q, w_k, w_v, mask=None, scale=True, scale_size=None, softmax_dim=-1,
            mask_after_softmax=False):
    """Single-head attention with explicit projections; ``mask`` (..., Tq, Tk) True = may attend.

    The other knobs turn known mistakes on: ``scale_size`` the size whose square root divides the scores
    (d_k when None), ``softmax_dim`` the dimension the weights sum to 1 over, ``mask_after_softmax`` zeroes
    the masked weights after the softmax instead of hiding their scores before it.
    """
    q, k, v = queries_from @ w_q, keys_from @ w_k, keys_from @ w_v
    scores = q @ k.transpose(-2, -1)
    if scale:
        scores = scores / math.sqrt(w_q.shape[-1] if scale_size is None else scale_size)
    if mask is not None and not mask_after_softmax:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask is not None and mask_after_softmax:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


def _source_mask(encoder_mask):
    return None if encoder_mask is None else encoder_mask[:, None, :]  # (B, 1, Ts): every query, real keys


def _cross_attention_reference(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    return _attend(decoder_states, encoder_states, w_q, w_k, w_v, _source_mask(encoder_mask))


def _keys_from_decoder(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    return _attend(decoder_states, decoder_states, w_q, w_k, w_v)


def _queries_from_encoder(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    return _attend(encoder_states, decoder_states, w_q, w_k, w_v)


def _everything_from_encoder(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    return _attend(encoder_states, encoder_states, w_q, w_k, w_v, _source_mask(encoder_mask))


def _with_causal_mask(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    Tt, Ts = decoder_states.shape[1], encoder_states.shape[1]
    mask = torch.ones(Tt, Ts, dtype=torch.bool).tril()
    if encoder_mask is not None:
        mask = mask & _source_mask(encoder_mask)
    return _attend(decoder_states, encoder_states, w_q, w_k, w_v, mask)


def _ignoring_encoder_mask(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    return _attend(decoder_states, encoder_states, w_q, w_k, w_v)


def _unscaled(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    return _attend(decoder_states, encoder_states, w_q, w_k, w_v, _source_mask(encoder_mask), scale=False)


def _inverted_encoder_mask(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    """encoder_mask read as True = padding: only the padded source positions are attended to."""
    mask = _source_mask(encoder_mask)
    return _attend(decoder_states, encoder_states, w_q, w_k, w_v, None if mask is None else ~mask)


def _scaled_by_d_model(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    """The scores divided by sqrt(d_model) instead of sqrt(d_k)."""
    return _attend(decoder_states, encoder_states, w_q, w_k, w_v, _source_mask(encoder_mask),
                   scale_size=decoder_states.shape[-1])


def _scaled_by_d_v(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    """The scores divided by sqrt(d_v) instead of sqrt(d_k)."""
    return _attend(decoder_states, encoder_states, w_q, w_k, w_v, _source_mask(encoder_mask),
                   scale_size=w_v.shape[-1])


def _softmax_over_targets(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    """The softmax over the target positions (dim=-2): each source position's weights sum to 1."""
    return _attend(decoder_states, encoder_states, w_q, w_k, w_v, _source_mask(encoder_mask), softmax_dim=-2)


def _masked_after_softmax(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None):
    """The padded weights zeroed after the softmax: rows whose source has padding no longer sum to 1."""
    return _attend(decoder_states, encoder_states, w_q, w_k, w_v, _source_mask(encoder_mask),
                   mask_after_softmax=True)


def _cross_attention_case(description, B, Tt, Ts, padding=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    d_model, d_k, d_v = 8, 4, 6
    args = (
        torch.randn(B, Tt, d_model, generator=generator),
        torch.randn(B, Ts, d_model, generator=generator),
        torch.randn(d_model, d_k, generator=generator),
        torch.randn(d_model, d_k, generator=generator),
        torch.randn(d_model, d_v, generator=generator),
    )
    kwargs = {}
    if padding is not None:
        real = torch.ones(B, Ts, dtype=torch.bool)
        for row, n_padding in enumerate(padding):
            if n_padding:
                real[row, -n_padding:] = False
        kwargs["encoder_mask"] = real
    return Case(description, args, kwargs)


_CROSS_ATTENTION_CASES = (
    _cross_attention_case("3 target positions, 5 source positions (B=2)", 2, 3, 5, seed=10),
    _cross_attention_case("6 target positions, 4 source positions (B=2)", 2, 6, 4, seed=11),
    _cross_attention_case("4 target and 4 source positions (B=1)", 1, 4, 4, seed=12),
    _cross_attention_case("3 target, 5 source positions, the second source padded by 2", 2, 3, 5,
                          padding=(0, 2), seed=13),
)

_CROSS_ATTENTION_MISTAKES = (
    Mistake(
        "the keys and values came from the decoder: that is self-attention. In cross-attention the queries "
        "come from decoder_states and the keys and values from encoder_states (the source).",
        same_output_as(_keys_from_decoder),
    ),
    Mistake(
        "the queries came from the encoder. Each *target* position asks the question, so the queries are "
        "decoder_states @ w_q; the keys and values are the encoder's. The output has one row per target "
        "position: shape (B, Tt, d_v).",
        same_output_as(_queries_from_encoder),
    ),
    Mistake(
        "the queries came from the encoder. Each *target* position asks the question, so the queries are "
        "decoder_states @ w_q; the keys and values are the encoder's. The output has one row per target "
        "position: shape (B, Tt, d_v).",
        same_output_as(_everything_from_encoder),
    ),
    Mistake(
        "a causal mask was applied, but cross-attention needs none: the whole source is known before "
        "decoding starts, so every target position may look at every source position (only padding is hidden).",
        same_output_as(_with_causal_mask),
    ),
    Mistake(
        "encoder_mask was ignored: padded source positions must get weight 0. Turn the (B, Ts) mask into "
        "(B, 1, Ts), so it broadcasts over the target positions, and set those scores to -inf.",
        same_output_as(_ignoring_encoder_mask),
    ),
    Mistake(
        "the scores are not scaled: divide q @ k^T by sqrt(d_k), with d_k = w_q.shape[-1].",
        same_output_as(_unscaled),
    ),
    Mistake(
        "encoder_mask is inverted: True marks a real source token, one that may be attended to, so hide the "
        "positions where it is False: scores.masked_fill(~encoder_mask[:, None, :], float(\"-inf\")).",
        same_output_as(_inverted_encoder_mask),
    ),
    Mistake(
        "the scores were divided by the square root of the wrong size: d_k is the size of a query and a key, "
        "w_q.shape[-1], not d_model (decoder_states.shape[-1]) or d_v (w_v.shape[-1]).",
        same_output_as_any_of(_scaled_by_d_model, _scaled_by_d_v),
    ),
    Mistake(
        "the softmax ran over the target positions: each target position's weights over the source must "
        "sum to 1, so take the softmax over the last dimension, scores.softmax(dim=-1).",
        same_output_as(_softmax_over_targets),
    ),
    Mistake(
        "the padded positions were zeroed after the softmax, so the remaining weights no longer sum to 1. "
        "Hide them before it: set their scores to -inf, then take the softmax.",
        same_output_as(_masked_after_softmax),
    ),
)


def check_cross_attention(learner_fn: Any) -> CheckResult:
    """Check exercise 04: ``cross_attention(decoder_states, encoder_states, w_q, w_k, w_v, encoder_mask=None)``.

    Single-head cross-attention returning ``(output, weights)``: output
    (B, Tt, d_v), weights (B, Tt, Ts). The cases use target and source
    lengths that differ both ways, equal lengths, and a padded source.
    """
    return check_function(
        learner_fn,
        exercise="04.cross_attention",
        reference=_cross_attention_reference,
        cases=_CROSS_ATTENTION_CASES,
        mistakes=_CROSS_ATTENTION_MISTAKES,
    )
