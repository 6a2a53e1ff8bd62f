"""Check of exercise 04.decoder_block_forward: a decoder block from its sub-modules.

A decoder block has three sub-layers where an encoder block has two:
causal self-attention over the target so far, cross-attention from the
target to the encoder's output (the memory), and the feed-forward network;
each with its residual connection and its own layer norm. The check gives
the learner ``DecoderBlock``s whose own forward is switched off and compares
the answer with ``DecoderBlock``'s forward with the same weights, for
post-norm and pre-norm blocks, with and without padding in the source. The
target and source lengths always differ, and the layer norms have random
weights, so every known mistake changes the answer.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from course_lib.checks.framework import (Case, CheckResult, Mistake, check_function, same_output_as,
                                        same_output_as_any_of)
from course_lib.layers import DecoderBlock, TransformerBlock

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
