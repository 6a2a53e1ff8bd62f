"""The checks of exercises 06.gpt_forward and 06.kv_cache_step: right answers written several ways pass,
each known mistake fails with its one hint.

Every implementation here is written the way a learner might write it, not
copied from the checks, so a test fails when a check stops recognising a
real learner's answer.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import causal_mask, scaled_dot_product_attention
from course_lib.checks import check_gpt_forward, check_kv_cache_step
from course_lib.checks.gpt_checks import _GPT_FORWARD_CASES, _parts_only_gpt
from course_lib.models import GPT

from check_helpers import assert_fails_with_hint, assert_passes

# ---------------------------------------------------------------------------
# 06.gpt_forward
# ---------------------------------------------------------------------------


def forward_with_the_modules(model, input_ids):
    body = model.body
    x = body.dropout(body.embedding_norm(body.position(body.token_embedding(input_ids))))
    for block in body.blocks:
        x = block(x)
    return model.lm_head(body.final_norm(x))


def forward_with_explicit_positions_and_tied_head(model, input_ids):
    B, T = input_ids.shape
    embeddings = model.body.token_embedding.weight                      # (V, d_model)
    x = embeddings[input_ids] + model.body.position.embedding(torch.arange(T))
    for block in model.body.blocks:
        x = block(x, mask=causal_mask(T))                               # the block adds its own causal mask too
    x = F.layer_norm(x, (x.shape[-1],), model.body.final_norm.weight, model.body.final_norm.bias,
                     model.body.final_norm.eps)
    return x @ embeddings.T                                             # the head is tied to the embeddings


@torch.no_grad()
def forward_without_gradients_and_with_a_sequential(model, input_ids):
    stack = torch.nn.Sequential(*model.body.blocks, model.body.final_norm, model.lm_head)
    return stack(model.body.position(model.body.token_embedding(input_ids)))


@pytest.mark.parametrize("gpt_forward", [forward_with_the_modules, forward_with_explicit_positions_and_tied_head,
                                         forward_without_gradients_and_with_a_sequential])
def test_correct_gpt_forward_passes(gpt_forward):
    assert_passes(check_gpt_forward(gpt_forward))


def test_the_reference_is_what_an_ordinary_gpt_returns():
    for case in _GPT_FORWARD_CASES:
        model, input_ids = case.args
        ordinary = GPT(model.config).eval()
        ordinary.load_state_dict(model.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(forward_with_the_modules(model, input_ids), ordinary(input_ids))


def calling_the_model(model, input_ids):
    return model(input_ids)


def forward_without(part):
    def forward(model, input_ids):
        body = model.body
        x = body.token_embedding(input_ids)
        if part == "scaled":
            x = x * math.sqrt(model.config.d_model)
        T = input_ids.shape[1]
        if part == "positions from the ids":
            x = x + body.position.embedding(input_ids)
        elif part == "positions from 1":
            x = x + body.position.embedding(torch.arange(1, T + 1))
        elif part != "positions":
            x = body.position(x)
        if part == "positions twice":
            x = x + body.position.embedding(torch.arange(T))
        blocks = {"reversed": list(body.blocks)[::-1], "last block": body.blocks[-1:],
                  "first block": body.blocks[:1]}.get(part, body.blocks)
        for block in blocks:
            x = block(x)
            if part.startswith("norm after every block"):
                x = body.final_norm(x)
        if part not in ("final norm", "norm after every block"):
            x = body.final_norm(x)
        if part == "head":
            return x
        logits = model.lm_head(x)
        return {"softmax": logits.softmax(-1), "log_softmax": F.log_softmax(logits, -1)}.get(part, logits)
    return forward


@pytest.mark.parametrize("part, words_of_the_hint", [
    ("head", "these are the hidden states"),
    ("positions", "the positions are missing"),
    ("scaled", "multiplied by sqrt(d_model)"),
    ("final norm", "the final layer norm is missing"),
    ("reversed", "in reverse order"),
    ("last block", "every block must run"),
    ("first block", "every block must run"),
    ("softmax", "not logits"),
    ("log_softmax", "not logits"),
    ("positions from the ids", "looked up with the token ids"),
    ("positions from 1", "counted from 1"),
    ("positions twice", "added twice"),
    ("norm after every block", "ran after every block"),
    ("norm after every block and at the end", "ran after every block"),
])
def test_gpt_forward_mistakes_fail_with_their_hint(part, words_of_the_hint):
    assert_fails_with_hint(check_gpt_forward(forward_without(part)), words_of_the_hint)


def test_calling_the_finished_model_is_explained():
    result = check_gpt_forward(calling_the_model)

    assert not result
    assert "this exercise is to assemble it yourself" in result.report()


def test_the_check_models_cannot_run_whole_but_their_parts_can():
    model = _parts_only_gpt(n_layers=2, seed=0)
    ids = torch.tensor([[1, 2, 3]])
    for run_whole in (lambda: model(ids), lambda: model.encode(ids), lambda: model.body(ids)):
        with pytest.raises(RuntimeError, match="assemble it yourself"):
            run_whole()
    assert model.body.blocks[0](model.body.token_embedding(ids)).shape == (1, 3, 16)


def test_unsolved_gpt_forward_is_not_implemented():
    def unsolved(model, input_ids):
        raise NotImplementedError()

    assert check_gpt_forward(unsolved).status == "not implemented"


# ---------------------------------------------------------------------------
# 06.kv_cache_step
# ---------------------------------------------------------------------------


def step_with_cat_and_softmax(q, k, v, past_k, past_v):
    keys = torch.cat([past_k, k], dim=2)
    values = torch.cat([past_v, v], dim=2)
    weights = torch.softmax(q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ values, keys, values


def step_with_course_attention(q, k, v, past_k, past_v):
    keys, values = torch.cat((past_k, k), -2), torch.cat((past_v, v), -2)
    output, _ = scaled_dot_product_attention(q, keys, values)
    return output, keys, values


def step_with_pytorch_attention_and_a_list(q, k, v, past_k, past_v):
    keys = torch.cat([past_k, k], dim=-2)
    values = torch.cat([past_v, v], dim=-2)
    return [F.scaled_dot_product_attention(q, keys, values), keys, values]


def step_with_einsum(q, k, v, past_k, past_v):
    keys = torch.cat([past_k, k], dim=2)
    values = torch.cat([past_v, v], dim=2)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, keys) * q.shape[-1] ** -0.5
    return torch.einsum("bhqk,bhkd->bhqd", scores.softmax(-1), values), keys, values


@pytest.mark.parametrize("kv_cache_step", [step_with_cat_and_softmax, step_with_course_attention,
                                           step_with_pytorch_attention_and_a_list, step_with_einsum])
def test_correct_kv_cache_step_passes(kv_cache_step):
    assert_passes(check_kv_cache_step(kv_cache_step))


def attend_before_appending(q, k, v, past_k, past_v):
    weights = torch.softmax(q @ past_k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ past_v, torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)


def append_along(dim):
    def step(q, k, v, past_k, past_v):
        keys, values = torch.cat([past_k, k], dim=dim), torch.cat([past_v, v], dim=dim)
        weights = torch.softmax(q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return weights @ values, keys, values
    return step


def step_with_a_causal_mask(q, k, v, past_k, past_v):
    keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    T = keys.shape[2]
    mask = causal_mask(T)[:1]  # (1, T + 1): the mask of a single query, taken from its first row
    output, _ = scaled_dot_product_attention(q, keys, values, mask)
    return output, keys, values


def step_without_scale(q, k, v, past_k, past_v):
    keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    return torch.softmax(q @ keys.transpose(-2, -1), dim=-1) @ values, keys, values


def step_with_softmax_over_queries(q, k, v, past_k, past_v):
    keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    return torch.softmax(q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-2) @ values, keys, values


def step_new_key_first(q, k, v, past_k, past_v):
    keys, values = torch.cat([k, past_k], dim=2), torch.cat([v, past_v], dim=2)
    output, _ = scaled_dot_product_attention(q, keys, values)
    return output, keys, values


def step_scaled_by_the_number_of_keys(q, k, v, past_k, past_v):
    keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    scores = q @ keys.transpose(-2, -1) / math.sqrt(keys.shape[2])
    return torch.softmax(scores, dim=-1) @ values, keys, values


def step_scaled_by_the_past_length(q, k, v, past_k, past_v):
    keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    scores = q @ keys.transpose(-2, -1) / past_k.shape[2] ** 0.5
    return torch.softmax(scores, dim=-1) @ values, keys, values


def step_returning_the_old_cache(q, k, v, past_k, past_v):
    keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    output, _ = scaled_dot_product_attention(q, keys, values)
    return output, past_k, past_v


def step_returning_the_output_only(q, k, v, past_k, past_v):
    return step_with_cat_and_softmax(q, k, v, past_k, past_v)[0]


@pytest.mark.parametrize("kv_cache_step, words_of_the_hint", [
    (attend_before_appending, "attended before its own key"),
    (append_along(1), "appended along the wrong axis"),
    (append_along(0), "appended along the wrong axis"),
    (step_with_a_causal_mask, "a causal mask hid the past"),
    (step_without_scale, "not scaled"),
    (step_with_softmax_over_queries, "softmax ran over the wrong dimension"),
    (step_new_key_first, "came before the cached ones"),
    (step_returning_the_output_only, "return three tensors"),
    (step_scaled_by_the_number_of_keys, "square root of a length"),
    (step_scaled_by_the_past_length, "square root of a length"),
    (step_returning_the_old_cache, "the old cache was returned"),
], ids=["before-appending", "axis-1", "axis-0", "causal-mask", "no-scale", "softmax-dim", "new-first", "one-tensor",
        "scaled-by-T+1", "scaled-by-T", "old-cache"])
def test_kv_cache_step_mistakes_fail_with_their_hint(kv_cache_step, words_of_the_hint):
    assert_fails_with_hint(check_kv_cache_step(kv_cache_step), words_of_the_hint)


def test_appending_along_the_features_fails_with_the_error_it_raises():
    result = check_kv_cache_step(append_along(-1))

    assert not result
    assert "your function raised RuntimeError" in result.report()


def test_a_causal_mask_is_harmless_for_the_first_token_only():
    result = check_kv_cache_step(step_with_a_causal_mask)

    passed = {case.description: case.passed for case in result.cases}
    assert [description for description, ok in passed.items() if ok] == [
        "the first token: an empty past, past_k and past_v of shape (2, 3, 0, 4)"]


def test_unsolved_kv_cache_step_is_not_implemented():
    def unsolved(q, k, v, past_k, past_v):
        raise NotImplementedError()

    assert check_kv_cache_step(unsolved).status == "not implemented"
