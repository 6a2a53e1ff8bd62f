"""Tests of course_lib.attention: parity with PyTorch, masks, errors, heads."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import (
    MultiHeadAttention,
    causal_mask,
    merge_heads,
    padding_mask,
    scaled_dot_product_attention,
    split_heads,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed))


def random_mask(shape, seed: int = 0) -> torch.Tensor:
    """A random bool mask of shape (..., Tq, Tk) where every row allows at least one key."""
    g = gen(seed)
    mask = torch.rand(shape, generator=g) < 0.5
    Tk = shape[-1]
    keep = torch.randint(Tk, shape[:-1], generator=g)  # one key per row that is always allowed
    mask.scatter_(-1, keep.unsqueeze(-1), True)
    return mask


# (q shape, k shape, v shape): 2-D, 3-D, 4-D, Tq != Tk, d_k != d_v
SHAPES = [
    ((5, 8), (5, 8), (5, 8)),
    ((4, 8), (7, 8), (7, 3)),
    ((2, 5, 8), (2, 5, 8), (2, 5, 8)),
    ((2, 3, 8), (2, 6, 8), (2, 6, 5)),
    ((2, 3, 5, 8), (2, 3, 5, 8), (2, 3, 5, 8)),
    ((2, 3, 4, 16), (2, 3, 9, 16), (2, 3, 9, 4)),
]


def make_qkv(q_shape, k_shape, v_shape, seed=0):
    return randn(*q_shape, seed=seed), randn(*k_shape, seed=seed + 1), randn(*v_shape, seed=seed + 2)


# --- scaled_dot_product_attention ------------------------------------------


SDPA_CASES = [(shapes, kind) for shapes in SHAPES for kind in ("none", "random", "causal")
              if kind != "causal" or shapes[0][-2] == shapes[1][-2]]  # a causal mask needs Tq == Tk


@pytest.mark.parametrize("shapes, mask_kind", SDPA_CASES)
def test_sdpa_matches_pytorch(shapes, mask_kind):
    q, k, v = make_qkv(*shapes)
    Tq, Tk = q.shape[-2], k.shape[-2]
    scores_shape = q.shape[:-1] + (Tk,)
    if mask_kind == "none":
        mask = None
    elif mask_kind == "random":
        mask = random_mask(scores_shape, seed=3)
    else:
        mask = causal_mask(Tq)

    out, weights = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    assert out.shape == q.shape[:-1] + (v.shape[-1],)
    assert weights.shape == scores_shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(scores_shape[:-1]))
    if mask is not None:
        blocked = ~mask.expand(scores_shape)
        assert blocked.any()
        assert (weights[blocked] == 0).all()  # exactly 0, not merely small
        assert (weights[~blocked] > 0).all()


def test_sdpa_with_padding_mask_matches_pytorch():
    B, H, T, d = 3, 2, 6, 8
    q, k, v = make_qkv((B, H, T, d), (B, H, T, d), (B, H, T, d))
    lengths = torch.tensor([6, 4, 1])
    real = torch.arange(T) < lengths[:, None]  # (B, T)
    mask = padding_mask(real)  # (B, 1, 1, T)

    out, weights = scaled_dot_product_attention(q, k, v, mask)

    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=1e-5)
    for b, n in enumerate(lengths.tolist()):
        assert (weights[b, :, :, n:] == 0).all()
        torch.testing.assert_close(weights[b, :, :, :n].sum(-1), torch.ones(H, T))


def test_sdpa_padding_and_causal_combined():
    B, H, T, d = 2, 2, 5, 4
    q, k, v = make_qkv((B, H, T, d), (B, H, T, d), (B, H, T, d))
    real = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    mask = padding_mask(real) & causal_mask(T)  # (B, 1, T, T)

    out, weights = scaled_dot_product_attention(q, k, v, mask)

    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=1e-5)
    assert (weights.triu(diagonal=1) == 0).all()
    assert (weights[1, :, :, 3:] == 0).all()


def test_sdpa_broadcasts_batch_dimensions():
    # One set of keys and values shared by every batch element and head.
    q = randn(2, 3, 4, 8)
    k, v = randn(5, 8, seed=1), randn(5, 6, seed=2)
    out, weights = scaled_dot_product_attention(q, k, v)
    out_expanded, weights_expanded = scaled_dot_product_attention(
        q, k.expand(2, 3, 5, 8), v.expand(2, 3, 5, 6)
    )
    assert out.shape == (2, 3, 4, 6)
    torch.testing.assert_close(out, out_expanded)
    torch.testing.assert_close(weights, weights_expanded)


def test_sdpa_scales_by_sqrt_d_k():
    q, k, v = make_qkv((3, 16), (5, 16), (5, 2))
    _, weights = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(weights, torch.softmax(q @ k.T / 4.0, dim=-1))


def test_sdpa_does_not_modify_inputs():
    q, k, v = make_qkv((2, 4, 8), (2, 4, 8), (2, 4, 8))
    mask = causal_mask(4)
    copies = [t.clone() for t in (q, k, v, mask)]
    scaled_dot_product_attention(q, k, v, mask)
    for before, after in zip(copies, (q, k, v, mask)):
        assert torch.equal(before, after)


# --- errors ------------------------------------------------------------------


def test_error_d_k_mismatch():
    with pytest.raises(ValueError, match=r"^k has shape \(2, 5, 6\).*d_k = 8"):
        scaled_dot_product_attention(randn(2, 5, 8), randn(2, 5, 6), randn(2, 5, 8))


def test_error_tk_mismatch():
    with pytest.raises(ValueError, match=r"^v has shape \(2, 4, 8\).*Tk = 5"):
        scaled_dot_product_attention(randn(2, 5, 8), randn(2, 5, 8), randn(2, 4, 8))


def test_error_batch_not_broadcastable():
    with pytest.raises(ValueError, match=r"batch.*q \(2, 5, 8\), k \(3, 5, 8\)"):
        scaled_dot_product_attention(randn(2, 5, 8), randn(3, 5, 8), randn(3, 5, 8))


@pytest.mark.parametrize("bad", [torch.ones(4, 4), torch.ones(4, 4, dtype=torch.long)])
def test_error_mask_not_bool(bad):
    q = randn(4, 8)
    with pytest.raises(TypeError, match=r"^mask must have dtype torch.bool.*got torch\.(float32|int64)"):
        scaled_dot_product_attention(q, q, q, bad)


@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 4), (2, 2, 4, 4)])
def test_error_mask_not_broadcastable(shape):
    q = randn(2, 4, 8)  # scores (2, 4, 4)
    with pytest.raises(ValueError, match=r"^mask has shape .*does not broadcast.*\(2, 4, 4\)"):
        scaled_dot_product_attention(q, q, q, torch.ones(shape, dtype=torch.bool))


def test_error_row_without_key():
    q = randn(2, 4, 8)
    mask = causal_mask(4).repeat(2, 1, 1)
    mask[1, 2] = False
    with pytest.raises(ValueError, match=r"^row 2 of the mask allows no key \(mask\[1, 2, :\]"):
        scaled_dot_product_attention(q, q, q, mask)


def test_error_inputs_not_tensors_or_not_float():
    q = randn(4, 8)
    with pytest.raises(TypeError, match="^q must be a torch.Tensor"):
        scaled_dot_product_attention(q.tolist(), q, q)
    with pytest.raises(TypeError, match="^v must be a floating-point tensor"):
        scaled_dot_product_attention(q, q, q.long())
    with pytest.raises(ValueError, match=r"^k must have at least 2 dimensions, got shape \(8,\)"):
        scaled_dot_product_attention(q, q[0], q)


# --- causal_mask and padding_mask -------------------------------------------


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
def test_causal_mask_values(T):
    mask = causal_mask(T)
    assert mask.dtype == torch.bool and mask.shape == (T, T)
    for i in range(T):
        for j in range(T):
            assert mask[i, j].item() == (j <= i)


def test_causal_mask_small_case_by_hand():
    expected = torch.tensor([[True, False, False], [True, True, False], [True, True, True]])
    assert torch.equal(causal_mask(3), expected)


@pytest.mark.parametrize("T", [0, -2, 2.0, True])
def test_causal_mask_rejects_bad_T(T):
    with pytest.raises(ValueError, match=f"^T must be a positive int, got {T!r}$"):
        causal_mask(T)


@pytest.mark.parametrize("dtype", [torch.bool, torch.long, torch.int32, torch.float32])
def test_padding_mask_shape_and_values(dtype):
    real = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]).to(dtype)
    mask = padding_mask(real)
    assert mask.dtype == torch.bool
    assert mask.shape == (2, 1, 1, 4)
    assert mask[:, 0, 0].tolist() == [[True, True, True, False], [True, False, False, False]]


def test_padding_mask_rejects_bad_input():
    with pytest.raises(TypeError, match="^attention_mask must be a torch.Tensor"):
        padding_mask([[1, 0]])
    with pytest.raises(ValueError, match=r"^attention_mask must have shape \(B, T\), got shape \(4,\)"):
        padding_mask(torch.ones(4))
    with pytest.raises(ValueError, match=r"^attention_mask must be bool or hold only 0 and 1.*2"):
        padding_mask(torch.tensor([[1, 2, 0]]))
    with pytest.raises(ValueError, match=r"^attention_mask rows \[1\] have no real token"):
        padding_mask(torch.tensor([[1, 1], [0, 0]]))


# --- split_heads and merge_heads --------------------------------------------


def test_split_heads_layout():
    B, T, n_heads, d_head = 2, 3, 4, 5
    x = randn(B, T, n_heads * d_head)
    heads = split_heads(x, n_heads)
    assert heads.shape == (B, n_heads, T, d_head)
    for h in range(n_heads):
        assert torch.equal(heads[:, h], x[:, :, h * d_head : (h + 1) * d_head])


def test_a_reshape_without_transpose_is_caught():
    # The classic mistake: (B, T, d_model) -> (B, n_heads, T, d_head) by reshape alone mixes positions.
    B, T, n_heads, d_head = 2, 3, 4, 5
    x = randn(B, T, n_heads * d_head)
    wrong = x.reshape(B, n_heads, T, d_head)
    assert wrong.shape == split_heads(x, n_heads).shape
    assert not torch.equal(wrong, split_heads(x, n_heads))
    assert not all(torch.equal(wrong[:, h], x[:, :, h * d_head : (h + 1) * d_head]) for h in range(n_heads))


def test_merge_heads_inverts_split_heads():
    x = randn(2, 3, 12)
    for n_heads in (1, 2, 3, 4, 6, 12):
        torch.testing.assert_close(merge_heads(split_heads(x, n_heads)), x, rtol=0, atol=0)
    heads = randn(2, 4, 3, 5)
    torch.testing.assert_close(split_heads(merge_heads(heads), 4), heads, rtol=0, atol=0)


def test_split_heads_errors():
    with pytest.raises(ValueError, match=r"d_model = 10, which n_heads = 3 does not divide"):
        split_heads(randn(2, 3, 10), 3)
    with pytest.raises(ValueError, match=r"^x must have shape \(B, T, d_model\), got shape \(3, 10\)"):
        split_heads(randn(3, 10), 2)
    with pytest.raises(ValueError, match=r"^x must have shape \(B, n_heads, T, d_head\)"):
        merge_heads(randn(3, 10))


# --- MultiHeadAttention ------------------------------------------------------


def copy_into_torch_mha(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    theirs = nn.MultiheadAttention(ours.d_model, ours.n_heads, batch_first=True)
    with torch.no_grad():
        # PyTorch stacks W^Q, W^K, W^V in one (3 * d_model, d_model) in_proj_weight.
        theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    return theirs.eval()


@pytest.mark.parametrize(
    "cross, padding, causal",
    [(False, False, False), (False, True, False), (False, False, True), (False, True, True),
     (True, False, False), (True, True, False)],  # a causal mask belongs to self-attention
)
def test_mha_matches_torch_multihead_attention(cross, padding, causal):
    torch.manual_seed(0)
    B, Tq, d_model, n_heads = 3, 5, 16, 4
    Tk = 7 if cross else Tq
    ours = MultiHeadAttention(d_model, n_heads).eval()
    theirs = copy_into_torch_mha(ours)
    x = randn(B, Tq, d_model, seed=1)
    memory = randn(B, Tk, d_model, seed=2) if cross else x

    real = torch.arange(Tk) < torch.tensor([Tk, Tk - 2, 1])[:, None]  # (B, Tk), True = real token
    our_mask = padding_mask(real) if padding else None
    if causal:
        our_mask = causal_mask(Tq) if our_mask is None else our_mask & causal_mask(Tq)
    # nn.MultiheadAttention's bool masks mean the opposite of ours: True = NOT allowed.
    key_padding_mask = ~real if padding else None
    attn_mask = ~causal_mask(Tq) if causal else None

    out = ours(x, memory, memory, mask=our_mask, need_weights=True)
    expected, expected_weights = theirs(
        x, memory, memory, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
        need_weights=True, average_attn_weights=True,
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.attention_weights.mean(dim=1), expected_weights, atol=1e-6, rtol=1e-5)
    # The fast path agrees with PyTorch too.
    torch.testing.assert_close(ours(x, memory, mask=our_mask), expected, atol=1e-5, rtol=1e-4)


def test_mha_key_and_value_default_to_query():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).eval()
    x, memory = randn(2, 3, 8), randn(2, 6, 8, seed=1)
    assert torch.equal(mha(x), mha(x, x, x))
    assert torch.equal(mha(x, memory), mha(x, memory, memory))
    assert mha(x, memory).shape == (2, 3, 8)


@pytest.mark.parametrize("mask_kind", ["none", "causal", "padding"])
def test_mha_fast_path_equals_explicit_path(mask_kind):
    torch.manual_seed(0)
    B, T, d_model = 2, 6, 32
    mha = MultiHeadAttention(d_model, 4, dropout=0.3).eval()  # eval: dropout off in both paths
    x = randn(B, T, d_model)
    mask = {
        "none": None,
        "causal": causal_mask(T),
        "padding": padding_mask(torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])),
    }[mask_kind]

    fast = mha(x, mask=mask)
    assert mha.attention_weights is None
    explicit = mha(x, mask=mask, need_weights=True)
    assert mha.attention_weights.shape == (B, 4, T, T)
    torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=0)


def test_mha_stores_weights_only_when_asked():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).eval()
    x, memory = randn(2, 3, 8), randn(2, 5, 8, seed=1)
    assert mha.attention_weights is None
    mha(x)
    assert mha.attention_weights is None

    mha.store_attention_weights = True
    mha(x, memory)
    weights = mha.attention_weights
    assert weights.shape == (2, 2, 3, 5)
    assert not weights.requires_grad
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 3))

    mha.store_attention_weights = False
    mha(x)
    assert mha.attention_weights is None  # stale weights of an earlier call are not left behind


@pytest.mark.parametrize("explicit", [False, True], ids=["fast", "explicit"])
def test_mha_dropout_only_in_training(explicit):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2, dropout=0.5)
    x = randn(2, 8, 16)
    mha.train()
    assert not torch.allclose(mha(x, need_weights=explicit), mha(x, need_weights=explicit))
    mha.eval()
    assert torch.equal(mha(x, need_weights=explicit), mha(x, need_weights=explicit))


@pytest.mark.parametrize("explicit", [False, True], ids=["fast", "explicit"])
def test_mha_rejects_row_without_key_on_both_paths(explicit):
    mha = MultiHeadAttention(8, 2)
    x = randn(2, 3, 8)
    mask = causal_mask(3).clone()
    mask[1] = False
    with pytest.raises(ValueError, match="^row 1 of the mask allows no key"):
        mha(x, mask=mask, need_weights=explicit)


def test_mha_inside_a_model_skips_the_empty_row_check():
    """The models' blocks do not read the mask's values (that waits for the GPU); the fused kernel gives zeros."""
    mha = MultiHeadAttention(8, 2, check_empty_rows=False).eval()
    x = randn(2, 3, 8)
    mask = causal_mask(3).clone()
    mask[1] = False
    out = mha(x, mask=mask)
    torch.testing.assert_close(out[:, 1], mha.out_proj.bias.expand(2, 8))  # no value reached query 1
    torch.testing.assert_close(out[:, 2], mha(x, mask=causal_mask(3))[:, 2])
    # The readable path too: no error, zero weights for the query without keys, the same outputs.
    torch.testing.assert_close(mha(x, mask=mask, need_weights=True), out)
    assert (mha.attention_weights[:, :, 1] == 0).all()
    assert padding_mask(torch.tensor([[1, 1], [0, 0]]), check_empty_rows=False)[1].sum() == 0


def test_mha_gradients_reach_every_projection():
    mha = MultiHeadAttention(8, 2)
    x, memory = randn(2, 3, 8), randn(2, 4, 8, seed=1)
    mha(x, memory).sum().backward()
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        assert getattr(mha, name).weight.grad.abs().sum() > 0, name


def test_mha_without_bias():
    mha = MultiHeadAttention(8, 2, bias=False)
    assert all(getattr(mha, name).bias is None for name in ("q_proj", "k_proj", "v_proj", "out_proj"))
    assert sum(p.numel() for p in mha.parameters()) == 4 * 8 * 8


def test_mha_constructor_errors():
    with pytest.raises(ValueError, match=r"^d_model = 10 must be divisible by n_heads = 4"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match=r"^n_heads must be a positive int, got 0"):
        MultiHeadAttention(8, 0)
    with pytest.raises(ValueError, match=r"^dropout must be in \[0, 1\), got 1.5"):
        MultiHeadAttention(8, 2, dropout=1.5)


def test_mha_forward_errors():
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"^query must have shape \(B, T, d_model=8\), got shape \(2, 3, 6\)"):
        mha(randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"^key must have shape \(B, T, d_model=8\), got shape \(3, 8\)"):
        mha(randn(2, 3, 8), randn(3, 8))
    with pytest.raises(ValueError, match=r"^value has shape \(2, 4, 8\).*Tk = 5"):
        mha(randn(2, 3, 8), randn(2, 5, 8), randn(2, 4, 8))
    with pytest.raises(ValueError, match=r"^query, key and value must share the batch size"):
        mha(randn(2, 3, 8), randn(3, 5, 8))
    with pytest.raises(TypeError, match=r"^mask must have dtype torch.bool"):
        mha(randn(2, 3, 8), mask=torch.ones(3, 3))
    # A per-example mask (B, Tq, Tk) lines B up with the heads dimension: it needs a head axis, (B, 1, Tq, Tk).
    with pytest.raises(ValueError, match=r"^mask has shape \(3, 3, 3\), which does not broadcast.*\(3, 2, 3, 3\)"):
        mha(randn(3, 3, 8), mask=torch.ones(3, 3, 3, dtype=torch.bool))
    mha(randn(3, 3, 8), mask=torch.ones(3, 1, 3, 3, dtype=torch.bool))
