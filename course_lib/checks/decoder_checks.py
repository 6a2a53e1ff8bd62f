"""Checks of exercise 04: the causal mask, cross-attention, and a decoder block from its sub-modules.

A decoder block has three sub-layers where an encoder block has two:
causal self-attention over the target so far, cross-attention from the
target to the encoder's output (the memory), and the feed-forward network;
each with its residual connection and its own layer norm. Its check gives
the learner ``DecoderBlock``s whose own forward is switched off and compares
the answer with ``DecoderBlock``'s forward with the same weights, for
post-norm and pre-norm blocks, with and without padding in the source. The
target and source lengths always differ, and the layer norms have random
weights, so every known mistake changes the answer.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from course_lib.checks.framework import (Case, CheckResult, Mistake, check_function, same_output_as,
                                        same_output_as_any_of)
from course_lib.layers import DecoderBlock, TransformerBlock

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


# ---------------------------------------------------------------------------
# 04.decoder_block_forward
# ---------------------------------------------------------------------------

_D_MODEL = 16


class _SubModulesOnly(DecoderBlock):
    """A decoder block for the check: the learner must combine its sub-modules, not call it whole."""

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            "calling block(x, ...) runs the finished block, and this exercise is to write its forward pass "
            "yourself: use block.self_attention, block.norm1, block.cross_attention, block.norm_cross, "
            "block.feed_forward and block.norm2"
        )


def _make_block(norm_first: bool, seed: int) -> _SubModulesOnly:
    """A small decoder block with random weights everywhere, layer norms included."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        block = _SubModulesOnly(_D_MODEL, 4, 32, dropout=0.0, norm_first=norm_first, cross_attention=True)
        for norm in (block.norm1, block.norm_cross, block.norm2):
            norm.weight.data = torch.rand(_D_MODEL) + 0.5
            norm.bias.data = torch.randn(_D_MODEL) * 0.5
    return block.eval()


def _key_mask(memory_mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if memory_mask is None else memory_mask.bool()[:, None, None, :]  # (B, 1, 1, Tm)


def _decoder_block_reference(x, block, memory, memory_mask=None):
    return TransformerBlock.forward(block, x, memory=memory, memory_mask=_key_mask(memory_mask))


def _decoder_variant(*, causal: bool = True, keys_from_target: bool = False, use_memory_mask: bool = True,
                     causal_cross: bool = False, cross_first: bool = False, swap_norm: bool = False,
                     residual_cross: bool = True, shared_norm: bool = False, normalise_memory: bool = False,
                     self_mask: Callable[[int], torch.Tensor] | None = None, invert_memory_mask: bool = False,
                     residual_self: bool = True, feed_forward: bool = True):
    """A decoder block's forward pass with one known mistake switched on.

    ``self_mask(T)``, when given, is the (T, T) mask the self-attention gets instead of is_causal.
    """

    def forward(x, block, memory, memory_mask=None):
        norm_first = block.norm_first != swap_norm
        T, Tm = x.shape[1], memory.shape[1]
        cross_mask = _key_mask(memory_mask) if use_memory_mask else None
        if invert_memory_mask and cross_mask is not None:
            cross_mask = ~cross_mask
        if causal_cross:
            triangle = torch.ones(T, Tm, dtype=torch.bool).tril()
            cross_mask = triangle if cross_mask is None else cross_mask & triangle
        cross_norm = block.norm1 if shared_norm else block.norm_cross

        def self_attention(h):
            if self_mask is not None:
                return block.self_attention(h, mask=self_mask(T))
            return block.self_attention(h, is_causal=causal)

        def cross_attention(h):
            if keys_from_target:
                return block.cross_attention(h, h)
            source = cross_norm(memory) if normalise_memory else memory
            return block.cross_attention(h, source, mask=cross_mask)

        sublayers = [(block.norm1, self_attention, residual_self), (cross_norm, cross_attention, residual_cross)]
        if cross_first:
            sublayers.reverse()
        if feed_forward:
            sublayers.append((block.norm2, block.feed_forward, True))
        for norm, sublayer, residual in sublayers:
            if norm_first:
                x = (x if residual else 0) + sublayer(norm(x))
            else:
                x = norm((x if residual else 0) + sublayer(x))
        return x

    return forward


def _upper_triangle(T: int) -> torch.Tensor:
    """The causal mask built with triu: each position sees itself and the later positions, not the earlier."""
    return torch.ones(T, T, dtype=torch.bool).triu()


def _strict_upper_triangle(T: int) -> torch.Tensor:
    """triu(diagonal=1), the positions a causal mask hides, passed as the positions that may be attended to."""
    return torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)


def _strict_lower_triangle(T: int) -> torch.Tensor:
    """The causal mask without its diagonal: each position sees only the earlier ones, not itself."""
    return torch.ones(T, T, dtype=torch.bool).tril(diagonal=-1)


def _decoder_case(description: str, norm_first: bool, T: int, Tm: int, padding: tuple[int, int] | None,
                  seed: int) -> Case:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, T, _D_MODEL, generator=generator)
    memory = torch.randn(2, Tm, _D_MODEL, generator=generator)
    kwargs = {}
    if padding is not None:
        kwargs["memory_mask"] = torch.arange(Tm)[None, :] < torch.tensor([Tm - n for n in padding])[:, None]
    return Case(description, (x, _make_block(norm_first, seed), memory), kwargs)


_DECODER_CASES = (
    _decoder_case("post-norm block, target of 4 positions, source of 6 (B=2)", False, 4, 6, None, seed=80),
    _decoder_case("pre-norm block, target of 5 positions, source of 3", True, 5, 3, None, seed=81),
    _decoder_case("post-norm block, source of 6 whose second row is padded by 2 (memory_mask given)",
                  False, 4, 6, (0, 2), seed=82),
    _decoder_case("pre-norm block, target of 3, source of 5 padded by 1 and 3", True, 3, 5, (1, 3), seed=83),
)

_DECODER_MISTAKES = (
    Mistake("the self-attention is not causal: each target position saw the positions after it, the words it "
            "is meant to predict. Call block.self_attention(h, is_causal=True) (or pass mask=causal_mask(T)).",
            same_output_as(_decoder_variant(causal=False))),
    Mistake("the cross-attention read the target itself: its keys and values must come from the encoder, "
            "block.cross_attention(h, memory, mask=...), with the queries from the target.",
            same_output_as(_decoder_variant(keys_from_target=True))),
    Mistake("memory_mask was ignored, so the target attended to padded source positions. Turn the (B, Tm) mask "
            "into (B, 1, 1, Tm), memory_mask[:, None, None, :], and pass it to block.cross_attention.",
            same_output_as(_decoder_variant(use_memory_mask=False))),
    Mistake("the cross-attention got a causal mask: the whole source is known before decoding starts, so every "
            "target position may read every real source position.",
            same_output_as(_decoder_variant(causal_cross=True))),
    Mistake("the sub-layers are in the wrong order: first causal self-attention (the target reads its own past), "
            "then cross-attention (it reads the source), then the feed-forward network.",
            same_output_as(_decoder_variant(cross_first=True))),
    Mistake("the layer norms are in the other placement. block.norm_first=False (post-norm): x = norm(x + "
            "sublayer(x)); block.norm_first=True (pre-norm): x = x + sublayer(norm(x)).",
            same_output_as(_decoder_variant(swap_norm=True))),
    Mistake("the cross-attention sub-layer lost its residual connection: add its input back to its output, "
            "like the other two sub-layers.", same_output_as(_decoder_variant(residual_cross=False))),
    Mistake("each sub-layer has its own layer norm: norm1 for self-attention, norm_cross for cross-attention, "
            "norm2 for the feed-forward network; norm1 was used twice.",
            same_output_as(_decoder_variant(shared_norm=True))),
    Mistake("the memory was normalised too: only the target's stream goes through the block's layer norms; "
            "the encoder's output is read as it is (the encoder normalised it already).",
            same_output_as(_decoder_variant(normalise_memory=True))),
    Mistake("the causal mask keeps the upper triangle (triu), so each target position saw the later positions "
            "instead of the earlier ones. True means \"may attend\": use torch.ones(T, T, dtype=torch.bool).tril(), "
            "or block.self_attention(h, is_causal=True).",
            same_output_as_any_of(_decoder_variant(self_mask=_upper_triangle),
                                  _decoder_variant(self_mask=_strict_upper_triangle))),
    Mistake("the causal mask lost its diagonal: a position may attend to itself (and the first one would have no "
            "key at all). Use tril() or tril(diagonal=0), not tril(diagonal=-1), or is_causal=True.",
            same_output_as(_decoder_variant(self_mask=_strict_lower_triangle))),
    Mistake("memory_mask is inverted: True marks a real source token, one that may be attended to, so pass "
            "memory_mask[:, None, None, :] itself to block.cross_attention, not its negation.",
            same_output_as(_decoder_variant(invert_memory_mask=True))),
    Mistake("the self-attention sub-layer lost its residual connection: add its input back to its output "
            "(post-norm: norm1(x + attention(x)); pre-norm: x + attention(norm1(x))).",
            same_output_as(_decoder_variant(residual_self=False))),
    Mistake("the feed-forward sub-layer is missing: after cross-attention, every position goes through "
            "block.feed_forward, with its own residual connection and block.norm2.",
            same_output_as(_decoder_variant(feed_forward=False))),
)


def check_decoder_block_forward(learner_fn: Any) -> CheckResult:
    """Check exercise 04: ``decoder_block_forward(x, block, memory, memory_mask=None)``.

    x (B, T, d_model) is the target so far, memory (B, Tm, d_model) the
    encoder's output and memory_mask (B, Tm) True for real source tokens.
    ``block`` is a ``DecoderBlock`` in eval mode whose own forward is
    disabled; the answer must equal its forward with the same weights.
    """
    return check_function(learner_fn, exercise="04.decoder_block_forward", reference=_decoder_block_reference,
                          cases=_DECODER_CASES, mistakes=_DECODER_MISTAKES)
