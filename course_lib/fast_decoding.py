"""The fast path of generation: GPT's forward pass for one new token, from plain tensors.

``generate`` writes one token per step. At batch size 1 a step of the
course's GPT is tiny arithmetic (about a million multiply-adds) wrapped in
a great deal of Python: ``model(ids, cache=cache)`` goes through some sixty
``nn.Module`` calls, and each looks up its hooks and its weights by name.
Measured with an instruction counter, a third of a step went to those
lookups alone. ``FastDecoder`` reads every weight once per ``generate``
call and then runs each step as a short list of functional calls: the
same operations in the same order as the modules (so exactly the same
logits, which tests/test_generation.py checks), without the machinery.

It handles what ``generate`` needs after the prompt: one new token per row
in eval mode, on top of a filled ``KVCache`` per block, left padding
included. The prompt itself goes through the model as usual.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from course_lib.attention import KVCache, stacked_projection
from course_lib.layers import LearnedPositionalEmbedding
from course_lib.models import GPT

__all__ = ["FastDecoder"]


@dataclass
class _Block:
    """One pre-norm block's weights: (weight, bias) pairs of its layer norms and linear layers."""

    norm1: tuple[torch.Tensor, torch.Tensor]
    qkv: tuple[torch.Tensor, torch.Tensor | None]  # the three projections stacked: (3 d_model, d_model)
    out: tuple[torch.Tensor, torch.Tensor | None]
    norm2: tuple[torch.Tensor, torch.Tensor]
    ff1: tuple[torch.Tensor, torch.Tensor]
    ff2: tuple[torch.Tensor, torch.Tensor]


class FastDecoder:
    """``model(next_ids, cache=cache, attention_mask=...)[:, -1]`` for a course GPT in eval mode, faster.

    Build it with ``FastDecoder.for_model(model)``, which returns None for a
    model it cannot run exactly: not a ``GPT``, training (dropout is on), or
    recording its attention weights for a figure.
    """

    def __init__(self, model: GPT):
        body = model.body
        config = model.config
        self.n_heads, self.d_model, self.eps = config.n_heads, config.d_model, config.layer_norm_eps
        self.token_embedding = body.token_embedding.weight  # (vocab_size, d_model)
        if isinstance(body.position, LearnedPositionalEmbedding):
            self.position_table = body.position.embedding.weight  # (max_len, d_model), learned
        else:
            self.position_table = body.position.pe  # (max_len, d_model), sinusoids
        self.activation = body.blocks[0].feed_forward.activation  # a parameter-free module (GELU or ReLU)
        self.blocks = [_Block(norm1=(block.norm1.weight, block.norm1.bias),
                              qkv=stacked_projection(block.self_attention),
                              out=(block.self_attention.out_proj.weight, block.self_attention.out_proj.bias),
                              norm2=(block.norm2.weight, block.norm2.bias),
                              ff1=(block.feed_forward.linear1.weight, block.feed_forward.linear1.bias),
                              ff2=(block.feed_forward.linear2.weight, block.feed_forward.linear2.bias))
                       for block in body.blocks]
        self.final_norm = (body.final_norm.weight, body.final_norm.bias)
        self.lm_head = model.lm_head.weight  # (vocab_size, d_model), tied to the token embedding

    @classmethod
    def for_model(cls, model) -> "FastDecoder | None":
        if type(model) is not GPT or model.training:
            return None
        if any(block.self_attention.store_attention_weights for block in model.body.blocks):
            return None
        return cls(model)

    def step(self, input_ids: torch.Tensor, position: int | torch.Tensor, cache: list[KVCache],
             key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, vocab_size) after one new token per row.

        input_ids: (B, 1), the new tokens. position: where the new tokens
        sit, an int for every row or (B, 1) for rows with left padding (not
        counted). cache: the filled caches, one per block; each grows by one
        position. key_mask: (B, 1, 1, T_cached + 1) bool, True for a real
        key, or None without padding.
        """
        B = input_ids.shape[0]
        if isinstance(position, int):
            place = self.position_table[position:position + 1]  # (1, d_model)
        else:
            place = self.position_table[position]  # (B, 1, d_model)
        x = F.embedding(input_ids, self.token_embedding) + place  # (B, 1, d_model)
        for block, block_cache in zip(self.blocks, cache):
            h = F.layer_norm(x, (self.d_model,), *block.norm1, self.eps)
            qkv = F.linear(h, *block.qkv)  # (B, 1, 3 d_model)
            q, k, v = qkv.view(B, 1, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)  # each (B, n_heads, 1, d_head)
            keys, values = block_cache.append(k, v)  # (B, n_heads, T_cached + 1, d_head)
            attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=key_mask)  # (B, n_heads, 1, d_head)
            x = x + F.linear(attended.transpose(1, 2).reshape(B, 1, self.d_model), *block.out)
            h = F.layer_norm(x, (self.d_model,), *block.norm2, self.eps)
            x = x + F.linear(self.activation(F.linear(h, *block.ff1)), *block.ff2)
        x = F.layer_norm(x, (self.d_model,), *self.final_norm, self.eps)
        return F.linear(x[:, -1], self.lm_head)  # (B, vocab_size)
