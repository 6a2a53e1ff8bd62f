"""Checks of exercise 03: layer norm and an encoder block's forward pass."""
from __future__ import annotations

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
