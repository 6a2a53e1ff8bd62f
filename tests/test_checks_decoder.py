"""The check of exercise 04.decoder_block_forward: right answers written several ways pass, each known mistake fails
with its one hint."""
import pytest
import torch

from course_lib.attention import causal_mask
from course_lib.checks import check_decoder_block_forward

from check_helpers import assert_fails_with_hint, assert_passes


def forward_with_branches(x, block, memory, memory_mask=None):
    source_mask = None if memory_mask is None else memory_mask[:, None, None, :]
    if block.norm_first:
        x = x + block.self_attention(block.norm1(x), is_causal=True)
        x = x + block.cross_attention(block.norm_cross(x), memory, mask=source_mask)
        return x + block.feed_forward(block.norm2(x))
    x = block.norm1(x + block.self_attention(x, is_causal=True))
    x = block.norm_cross(x + block.cross_attention(x, memory, mask=source_mask))
    return block.norm2(x + block.feed_forward(x))


def forward_with_a_helper_and_an_explicit_causal_mask(x, block, memory, memory_mask=None):
    def sublayer(x, norm, function):
        return x + function(norm(x)) if block.norm_first else norm(x + function(x))

    T = x.shape[1]
    keys = None if memory_mask is None else memory_mask.bool().view(memory.shape[0], 1, 1, -1)
    x = sublayer(x, block.norm1, lambda h: block.self_attention(h, mask=causal_mask(T)))
    x = sublayer(x, block.norm_cross, lambda h: block.cross_attention(h, memory, memory, mask=keys))
    return sublayer(x, block.norm2, block.feed_forward)


@pytest.mark.parametrize("forward", [forward_with_branches, forward_with_a_helper_and_an_explicit_causal_mask])
def test_correct_decoder_block_forward_passes(forward):
    assert_passes(check_decoder_block_forward(forward))


def forward_with(*, causal=True, keys="memory", mask=True, causal_cross=False, order=("self", "cross"),
                 swap=False, residual_cross=True, cross_norm="norm_cross", norm_memory=False, self_mask=None,
                 residual_self=True, feed_forward=True):
    def forward(x, block, memory, memory_mask=None):
        norm_first = block.norm_first != swap
        T, Tm = x.shape[1], memory.shape[1]
        source_mask = None if memory_mask is None or not mask else memory_mask[:, None, None, :]
        if mask == "inverted" and source_mask is not None:
            source_mask = ~source_mask
        if causal_cross:
            triangle = torch.ones(T, Tm, dtype=torch.bool).tril()
            source_mask = triangle if source_mask is None else source_mask & triangle
        norm = getattr(block, cross_norm)
        steps = {
            "self": (block.norm1, lambda h: block.self_attention(h, is_causal=causal) if self_mask is None
                     else block.self_attention(h, mask=self_mask(T)), residual_self),
            "cross": (norm, lambda h: block.cross_attention(
                h, h if keys == "target" else (norm(memory) if norm_memory else memory),
                mask=None if keys == "target" else source_mask), residual_cross),
        }
        for name in (*order, "ff") if feed_forward else order:
            norm_layer, function, residual = steps.get(name, (block.norm2, block.feed_forward, True))
            if norm_first:
                x = (x if residual else 0) + function(norm_layer(x))
            else:
                x = norm_layer((x if residual else 0) + function(x))
        return x
    return forward


@pytest.mark.parametrize("forward, words_of_the_hint", [
    (forward_with(causal=False), "the self-attention is not causal"),
    (forward_with(keys="target"), "read the target itself"),
    (forward_with(mask=False), "memory_mask was ignored"),
    (forward_with(causal_cross=True), "the cross-attention got a causal mask"),
    (forward_with(order=("cross", "self")), "the sub-layers are in the wrong order"),
    (forward_with(swap=True), "the other placement"),
    (forward_with(residual_cross=False), "lost its residual connection"),
    (forward_with(cross_norm="norm1"), "its own layer norm"),
    (forward_with(norm_memory=True), "the memory was normalised too"),
    (forward_with(self_mask=lambda T: torch.ones(T, T, dtype=torch.bool).triu()), "keeps the upper triangle"),
    (forward_with(self_mask=lambda T: torch.triu(torch.ones(T, T), diagonal=1).bool()), "keeps the upper triangle"),
    (forward_with(self_mask=lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1)), "lost its diagonal"),
    (forward_with(mask="inverted"), "memory_mask is inverted"),
    (forward_with(residual_self=False), "self-attention sub-layer lost its residual"),
    (forward_with(feed_forward=False), "feed-forward sub-layer is missing"),
], ids=["not-causal", "keys-from-target", "no-memory-mask", "causal-cross", "order", "placement", "no-residual",
        "shared-norm", "normalised-memory", "triu-mask", "strict-triu-mask", "no-diagonal", "inverted-memory-mask",
        "no-self-residual", "no-feed-forward"])
def test_decoder_block_mistakes_fail_with_their_hint(forward, words_of_the_hint):
    assert_fails_with_hint(check_decoder_block_forward(forward), words_of_the_hint)


def test_calling_the_block_whole_is_explained():
    result = check_decoder_block_forward(lambda x, block, memory, memory_mask=None: block(x, memory=memory))

    assert not result
    assert "write its forward pass yourself" in result.report()


def test_a_mask_of_the_wrong_shape_fails_with_the_attention_layers_message():
    def unreshaped_mask(x, block, memory, memory_mask=None):
        return forward_with_branches(x, block, memory, None if memory_mask is None else memory_mask[:, None, :, None])

    result = check_decoder_block_forward(unreshaped_mask)

    assert not result
    assert "your function raised" in result.report()
