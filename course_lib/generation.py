"""Generating text with a GPT: predict one token, append it, feed the longer sequence back.

``sample_next_token`` turns the logits of the last position into one token
(greedy, temperature, top-k, top-p); ``generate`` runs the loop, with a
key/value cache so that each step only computes the new token's keys and
values instead of recomputing the whole prefix. Prompts of different
lengths go in one batch left-padded (``left_pad``), so that every row's
next token is written at the same place, the end.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from course_lib.fast_decoding import FastDecoder
from course_lib.tokenizer import Batch
from course_lib.utils import check_positive_int, evaluating


def _check_sampling(temperature, top_k, top_p) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r} (use greedy=True for argmax)")
    if top_k is not None:
        check_positive_int("top_k", top_k)
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Logits (B, V) after temperature, top-k and top-p; removed tokens get -inf.

    * temperature divides the logits: below 1 sharpens, above 1 flattens.
    * top-k keeps the k most likely tokens.
    * top-p (nucleus) keeps the smallest set of most likely tokens whose
      probabilities add up to at least p; the token that crosses p stays.
    """
    _check_sampling(temperature, top_k, top_p)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of the tokens ranked above
        remove_sorted = mass_before >= top_p               # the crossing token has mass_before < p: kept
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token id per row from logits (B, V) -> (B,)."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a (B, V) tensor, got {getattr(logits, 'shape', type(logits).__name__)}")
    probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """Token ids of prompts of different lengths in one batch, padded on the left.

    Returns a ``Batch``: input_ids (B, T) with ``pad_id`` before each shorter
    prompt, and attention_mask (B, T), True for a real token. Every prompt
    then ends at the last position, where ``generate`` appends.
    """
    if isinstance(sequences, (str, torch.Tensor)) or not sequences or not all(len(ids) for ids in sequences):
        raise ValueError("sequences must be a non-empty list of non-empty lists of token ids")
    check_positive_int("pad_id", pad_id, allow_zero=True)
    length = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, ids in enumerate(sequences):
        input_ids[row, length - len(ids):] = torch.as_tensor(list(ids), dtype=torch.long)
        attention_mask[row, length - len(ids):] = True
    return Batch(input_ids, attention_mask)


def generate(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, greedy: bool = False, use_cache: bool = True,
             generator: torch.Generator | None = None, eos_id: int | None = None,
             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Continue ``input_ids`` (B, T) by ``max_new_tokens`` tokens; returns (B, T + new).

    With ``use_cache`` the model reads the prompt once and then one token per
    step, reusing the cached keys and values of earlier positions; without
    it, every step re-reads the whole sequence. Both give exactly the same
    tokens. With ``eos_id``, generation stops once every row has produced it,
    and a finished row is padded with ``eos_id``.

    attention_mask: (B, T), True or 1 for a real token, for a batch of
    left-padded prompts (``left_pad``); each row then gets the tokens it
    would get alone. The last position of every row must be a real token.
    """
    check_positive_int("max_new_tokens", max_new_tokens, allow_zero=True)
    if not greedy:
        _check_sampling(temperature, top_k, top_p)
    max_len = model.config.max_len
    B, T = input_ids.shape
    if T + max_new_tokens > max_len:
        raise ValueError(f"input_ids has {T} tokens; {max_new_tokens} more would exceed "
                         f"the model's max_len={max_len}")
    if attention_mask is not None:
        _check_left_padded(attention_mask, input_ids)
    # Room for every token from the start: each step writes one column instead of copying the sequence.
    sequence = torch.cat([input_ids, input_ids.new_zeros(B, max_new_tokens)], dim=1)  # (B, T + max_new_tokens)
    real = padding = None  # the mask covers every token so far, cached or not; new tokens are real
    if attention_mask is not None:
        real = torch.cat([attention_mask.bool(), attention_mask.new_ones(B, max_new_tokens, dtype=torch.bool)], dim=1)
        padding = T - real[:, :T].sum(dim=1, keepdim=True)  # (B, 1): each row's left padding
    cache = model.new_cache() if use_cache else None
    finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    length = T  # tokens written so far
    with evaluating(model):
        fast = FastDecoder.for_model(model) if use_cache else None
        for step in range(max_new_tokens):
            if fast is not None and step > 0:  # after the prompt: one token per row, on the fast path
                position = length - 1 if padding is None else length - 1 - padding  # left padding moves no token
                logits = fast.step(sequence[:, length - 1:length], position, cache,
                                   None if real is None else real[:, None, None, :length])
            else:
                # With a cache only the tokens not yet read are fed: the prompt, then the last token.
                new = sequence[:, length - 1:length] if use_cache and step > 0 else sequence[:, :length]
                masked = {} if real is None else {"attention_mask": real[:, :length]}
                logits = model(new, cache=cache, **masked)[:, -1]  # (B, V)
            if greedy:
                next_ids = logits.argmax(dim=-1)
            else:
                next_ids = sample_next_token(logits, temperature, top_k, top_p, generator)
            if eos_id is not None:
                next_ids = next_ids.masked_fill(finished, eos_id)
                finished |= next_ids == eos_id
            sequence[:, length] = next_ids
            length += 1
            if eos_id is not None and finished.all():
                break
    return sequence[:, :length]


def _check_left_padded(attention_mask, input_ids) -> None:
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must be a tensor of input_ids' shape (B, T) = {tuple(input_ids.shape)}, "
                         f"got {tuple(getattr(attention_mask, 'shape', ())) or type(attention_mask).__name__}")
    if not attention_mask[:, -1].bool().all():
        rows = (~attention_mask[:, -1].bool()).nonzero().flatten().tolist()
        raise ValueError(f"attention_mask rows {rows} end with padding; pad prompts on the left (left_pad), "
                         "so that every row's last position is a real token")
