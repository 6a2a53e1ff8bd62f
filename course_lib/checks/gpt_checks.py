"""Checks of exercises 06: GPT's forward pass from its parts, and one attention step with a key/value cache.

``gpt_forward`` assembles a course ``GPT`` from its parts; the check gives
the learner GPTs whose own ``forward`` (and their body's) is switched off,
so the answer cannot come from ``model(input_ids)``, and compares it with
what ``model(input_ids)`` returns for the same weights. The models are tiny
and their weights, layer norms and positions included, are large and
random: leaving out any part changes every logit.

``kv_cache_step`` is pure tensor code. Its cases include an empty past
(the first token), so attending before appending shows, and a case with
one sequence, one head and one cached position, the only shapes where
appending along the wrong axis does not raise (and so can be named).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from course_lib.checks.framework import (Case, CheckResult, Mistake, check_function, describe_difference,
                                        same_output_as, same_output_as_any_of)
from course_lib.models import GPT, TransformerBody, TransformerConfig

# ---------------------------------------------------------------------------
# Exercise 06.gpt_forward: token embedding, positions, blocks, final norm, tied head
# ---------------------------------------------------------------------------

_PARTS_ONLY = (
    "calling {what} runs the finished GPT, and this exercise is to assemble it yourself: use "
    "model.body.token_embedding, model.body.position, model.body.blocks, model.body.final_norm and model.lm_head"
)


class _PartsOnlyBody(TransformerBody):
    """A GPT body whose parts work but whose own forward is switched off."""

    def forward(self, *args, **kwargs):
        raise RuntimeError(_PARTS_ONLY.format(what="model.body(...)"))


class _PartsOnlyGPT(GPT):
    """A GPT for the check: the learner combines its parts instead of calling it whole."""

    def forward(self, *args, **kwargs):
        raise RuntimeError(_PARTS_ONLY.format(what="model(input_ids)"))

    def encode(self, *args, **kwargs):
        raise RuntimeError(_PARTS_ONLY.format(what="model.encode(input_ids)"))


def _parts_only_gpt(n_layers: int, seed: int) -> _PartsOnlyGPT:
    """A tiny GPT (vocabulary 12, 16 positions, width 16) in eval mode, with large random weights everywhere."""
    config = TransformerConfig(vocab_size=12, max_len=16, d_model=16, n_heads=2, n_layers=n_layers, d_ff=32,
                               dropout=0.0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _PartsOnlyGPT(config)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.dim() >= 2:
                    parameter.mul_(25)  # standard deviation 0.5 instead of 0.02
                elif name.endswith("weight"):  # layer norms: a scale that is not 1 ...
                    parameter.copy_(torch.rand_like(parameter) + 0.5)
                else:  # ... and biases that are not 0
                    parameter.copy_(torch.randn_like(parameter) * 0.5)
    model.body.__class__ = _PartsOnlyBody
    return model.eval()


@torch.no_grad()
def _gpt_forward_reference(model: GPT, input_ids: torch.Tensor) -> torch.Tensor:
    """What ``model(input_ids)`` returns for an ordinary GPT with the same weights."""
    return model.lm_head(TransformerBody.forward(model.body, input_ids))


def _gpt_variant(*, positions: bool = True, scale_embeddings: bool = False, final_norm: bool = True,
                 blocks: Callable[[list], list] = lambda blocks: blocks, position_ids: str = "0..T-1",
                 positions_twice: bool = False, norm_after_every_block: bool = False) -> Callable:
    """GPT's forward pass with one part left out or changed: one known mistake per setting."""

    @torch.no_grad()
    def forward(model, input_ids):
        body = model.body
        x = body.token_embedding(input_ids)
        if scale_embeddings:
            x = x * math.sqrt(model.config.d_model)
        if positions:
            T = input_ids.shape[1]
            looked_up = {"0..T-1": torch.arange(T), "1..T": torch.arange(1, T + 1), "token ids": input_ids}
            x = x + body.position.embedding(looked_up[position_ids])
        if positions_twice:
            x = body.position(x)
        for block in blocks(list(body.blocks)):
            x = block(x)
            if norm_after_every_block:
                x = body.final_norm(x)
        if final_norm:
            x = body.final_norm(x)
        return model.lm_head(x)

    return forward


def _hidden_states_returned(received: Any, case: Case) -> bool:
    model, input_ids = case.args
    return isinstance(received, torch.Tensor) and tuple(received.shape) == (*input_ids.shape, model.config.d_model)


def _normalised_into(normalise: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Any, Case], bool]:
    """A ``shows_in`` test: the answer is the right logits turned into probabilities (or their logs)."""

    def shows_in(received: Any, case: Case) -> bool:
        expected = normalise(case.call(_gpt_forward_reference))
        return describe_difference(expected, received, atol=case.atol, rtol=case.rtol) is None

    return shows_in


def _gpt_case(description: str, rows: list[list[int]], n_layers: int, seed: int) -> Case:
    return Case(description, (_parts_only_gpt(n_layers, seed), torch.tensor(rows)), atol=1e-4)


_GPT_FORWARD_CASES = (
    _gpt_case("one sequence of 5 tokens, 2 blocks", [[3, 7, 1, 9, 4]], n_layers=2, seed=20),
    _gpt_case("a batch of 3 sequences of 4 tokens, 3 blocks", [[1, 2, 3, 4], [5, 6, 7, 8], [11, 10, 0, 9]],
              n_layers=3, seed=21),
    _gpt_case("one token only, 2 blocks", [[6]], n_layers=2, seed=22),
    _gpt_case("2 sequences of 16 tokens (the model's max_len), 3 blocks",
              [[i % 12 for i in range(16)], [(5 * i + 3) % 12 for i in range(16)]], n_layers=3, seed=23),
)

_EVERY_BLOCK_HINT = (
    "every block must run, once each, in order: for block in model.body.blocks: x = block(x). "
    "The output of one block is the input of the next."
)

_GPT_FORWARD_MISTAKES = (
    Mistake("these are the hidden states (B, T, d_model): the last step turns them into next-token logits with "
            "the head, model.lm_head(x) (the token embedding read backwards: x @ token_embedding.weight.T).",
            _hidden_states_returned),
    Mistake("the positions are missing: add them to the token embeddings, x = model.body.position(x) (or add "
            "model.body.position.embedding(torch.arange(T))). Without them GPT reads a bag of tokens.",
            same_output_as(_gpt_variant(positions=False))),
    Mistake("the positions were looked up with the token ids: position t's vector is row t of the table, "
            "model.body.position.embedding(torch.arange(T)), whatever the token there (or simply "
            "x = model.body.position(x)).",
            same_output_as(_gpt_variant(position_ids="token ids"))),
    Mistake("the positions were counted from 1: the first token is at position 0. Use torch.arange(T), not "
            "torch.arange(1, T + 1) (x = model.body.position(x) counts from 0).",
            same_output_as(_gpt_variant(position_ids="1..T"))),
    Mistake("the positions were added twice: x = model.body.position(x) already returns the token embeddings "
            "plus the positions, so add them once.", same_output_as(_gpt_variant(positions_twice=True))),
    Mistake("the final layer norm ran after every block: the blocks must pass the raw residual stream to each "
            "other. Apply model.body.final_norm once, after the loop over the blocks.",
            same_output_as_any_of(_gpt_variant(norm_after_every_block=True, final_norm=False),
                                  _gpt_variant(norm_after_every_block=True))),
    Mistake("the token embeddings were multiplied by sqrt(d_model), as in the original transformer paper; "
            "GPT adds the positions to the embeddings as they are.",
            same_output_as(_gpt_variant(scale_embeddings=True))),
    Mistake("the final layer norm is missing: GPT's blocks are pre-norm, so nothing normalises the residual "
            "stream after the last block. Apply model.body.final_norm before the head.",
            same_output_as(_gpt_variant(final_norm=False))),
    Mistake("the blocks ran in reverse order: block 0 reads the embeddings, the last block writes what the head "
            "reads. Loop over model.body.blocks as they come.",
            same_output_as(_gpt_variant(blocks=lambda blocks: blocks[::-1]))),
    Mistake(_EVERY_BLOCK_HINT, same_output_as(_gpt_variant(blocks=lambda blocks: blocks[-1:]))),
    Mistake(_EVERY_BLOCK_HINT, same_output_as(_gpt_variant(blocks=lambda blocks: blocks[:1]))),
    Mistake("the answer holds probabilities (or log-probabilities), not logits: return the head's scores as "
            "they are, without a softmax.", _normalised_into(lambda logits: torch.softmax(logits, dim=-1))),
    Mistake("the answer holds probabilities (or log-probabilities), not logits: return the head's scores as "
            "they are, without a softmax.", _normalised_into(lambda logits: torch.log_softmax(logits, dim=-1))),
)


def check_gpt_forward(learner_fn: Any) -> CheckResult:
    """Check exercise 06: ``gpt_forward(model, input_ids)`` -> next-token logits (B, T, vocab_size).

    ``model`` is a course ``GPT`` in eval mode whose own forward is switched
    off; the answer must equal ``model(input_ids)`` of an ordinary GPT with
    the same weights. The cases use 2 and 3 blocks, one token, a batch, and
    sequences as long as the model's max_len.
    """
    return check_function(learner_fn, exercise="06.gpt_forward", reference=_gpt_forward_reference,
                          cases=_GPT_FORWARD_CASES, mistakes=_GPT_FORWARD_MISTAKES)


# ---------------------------------------------------------------------------
# Exercise 06.kv_cache_step: append the new key and value, then attend over all of them
# ---------------------------------------------------------------------------


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, *, scale: bool = True,
            softmax_dim: int = -1, mask: torch.Tensor | None = None) -> torch.Tensor:
    scores = q @ keys.transpose(-2, -1)  # (B, H, 1, T + 1)
    if scale:
        scores = scores / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=softmax_dim) @ values  # (B, H, 1, d)


def _kv_cache_step_reference(q, k, v, past_k, past_v):
    keys = torch.cat([past_k, k], dim=-2)    # (B, H, T + 1, d): the past first, the new token last
    values = torch.cat([past_v, v], dim=-2)
    return _attend(q, keys, values), keys, values


def _kv_variant(*, scale: bool = True, softmax_dim: int = -1, first_key_only: bool = False,
                new_first: bool = False, before_appending: bool = False, old_cache: bool = False,
                scaled_by_length: int | None = None) -> Callable:
    """One cached attention step with one known mistake switched on.

    ``scaled_by_length`` divides the scores by the square root of a length instead of sqrt(d): the number of
    keys plus ``scaled_by_length`` (0 for T + 1, -1 for T).
    """

    def step(q, k, v, past_k, past_v):
        first, second = ((k, past_k), (v, past_v)) if new_first else ((past_k, k), (past_v, v))
        keys, values = torch.cat(first, dim=-2), torch.cat(second, dim=-2)
        if before_appending:
            return _attend(q, past_k, past_v), keys, values
        if scaled_by_length is not None:
            scores = q @ keys.transpose(-2, -1) / math.sqrt(keys.shape[-2] + scaled_by_length)
            return torch.softmax(scores, dim=-1) @ values, keys, values
        # The first row of a causal mask: the one query may see the first key only.
        mask = torch.ones(1, keys.shape[-2], dtype=torch.bool).tril() if first_key_only else None
        output = _attend(q, keys, values, scale=scale, softmax_dim=softmax_dim, mask=mask)
        return (output, past_k, past_v) if old_cache else (output, keys, values)

    return step


def _appended_along_another_axis(received: Any, case: Case) -> bool:
    """The keys or values have the shape of the past and the new ones glued along another axis than time."""
    q, k, v, past_k, past_v = case.args
    wrong_shapes = set()
    for dim in (0, 1, 3):
        try:
            wrong_shapes.add(tuple(torch.cat([past_k, k], dim=dim).shape))
        except RuntimeError:
            continue
    return isinstance(received, (tuple, list)) and len(received) == 3 and any(
        isinstance(item, torch.Tensor) and tuple(item.shape) in wrong_shapes for item in received[1:])


def _one_tensor(received: Any, case: Case) -> bool:
    return isinstance(received, torch.Tensor)


def _kv_case(description: str, B: int, H: int, T: int, d: int, seed: int) -> Case:
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    return Case(description, (randn(B, H, 1, d), randn(B, H, 1, d), randn(B, H, 1, d), randn(B, H, T, d),
                              randn(B, H, T, d)))


_KV_CASES = (
    _kv_case("B=2, H=3, d=4, a past of T=5 positions", 2, 3, 5, 4, seed=30),
    _kv_case("the first token: an empty past, past_k and past_v of shape (2, 3, 0, 4)", 2, 3, 0, 4, seed=31),
    _kv_case("B=1, H=1, d=8, a past of T=1 position", 1, 1, 1, 8, seed=32),
    _kv_case("B=1, H=2, d=16, a past of T=9 positions", 1, 2, 9, 16, seed=33),
    _kv_case("B=3, H=2, d=6, a past of T=2 positions", 3, 2, 2, 6, seed=34),
)

_KV_MISTAKES = (
    Mistake("return three tensors, (output, keys, values): the attention output and the cache with the new key "
            "and value appended, so that the next step can use it.", _one_tensor),
    Mistake("the new key and value were appended along the wrong axis: the cache is (B, H, T, d) and grows along "
            "time, dim=2 (or -2): torch.cat([past_k, k], dim=-2).", _appended_along_another_axis),
    Mistake("the query attended before its own key and value were appended, so it never saw its own token (and "
            "the first token saw nothing). Append first, then attend over all T + 1 keys.",
            same_output_as(_kv_variant(before_appending=True))),
    Mistake("a causal mask hid the past from the query. The one new query is the LAST position: it may see every "
            "cached key and its own, so no mask is needed (the first row of a causal mask allows key 0 only).",
            same_output_as(_kv_variant(first_key_only=True))),
    Mistake("the scores were not scaled: divide q @ keys^T by sqrt(d), the last dimension of q.",
            same_output_as(_kv_variant(scale=False))),
    Mistake("the scores were divided by the square root of a length (the number of keys): the scale is sqrt(d), "
            "the size of each query and key vector, math.sqrt(q.shape[-1]).",
            same_output_as_any_of(_kv_variant(scaled_by_length=0), _kv_variant(scaled_by_length=-1))),
    Mistake("the old cache was returned: return the keys and values with the new ones appended, (output, keys, "
            "values) with keys = torch.cat([past_k, k], dim=-2), or the next step forgets this token.",
            same_output_as(_kv_variant(old_cache=True))),
    Mistake("the softmax ran over the wrong dimension: the weights of the one query over the T + 1 keys must sum "
            "to 1, so take it over the last dimension of the (B, H, 1, T + 1) scores.",
            same_output_as(_kv_variant(softmax_dim=-2))),
    Mistake("the new key and value came before the cached ones. The output does not care, but the cache must "
            "stay in the order of the positions (the past first, the new token last): torch.cat([past_k, k], dim=-2).",
            same_output_as(_kv_variant(new_first=True))),
)


def check_kv_cache_step(learner_fn: Any) -> CheckResult:
    """Check exercise 06: ``kv_cache_step(q, k, v, past_k, past_v)`` -> ``(output, keys, values)``.

    q, k, v (B, H, 1, d) belong to the new token; past_k, past_v (B, H, T, d)
    with T >= 0. keys and values are the past with the new ones appended
    along time, (B, H, T + 1, d); output (B, H, 1, d) is scaled dot-product
    attention of q over all T + 1 keys. The cases include an empty past.
    """
    return check_function(learner_fn, exercise="06.kv_cache_step", reference=_kv_cache_step_reference,
                          cases=_KV_CASES, mistakes=_KV_MISTAKES)
