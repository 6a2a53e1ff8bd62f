"""Sampling strategies and the generation loop, with and without the KV cache."""
import pytest
import torch

from course_lib.attention import KVCache
from course_lib.fast_decoding import FastDecoder
from course_lib.generation import filter_logits, generate, left_pad, sample_next_token
from course_lib.models import BERT, GPT, TransformerConfig


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    return GPT(TransformerConfig(vocab_size=40, max_len=48, d_model=32, n_heads=4, n_layers=2, d_ff=64)).eval()


def kept(logits, **kwargs):
    return torch.isfinite(filter_logits(logits, **kwargs))


def test_top_k_keeps_exactly_k():
    logits = torch.randn(3, 20)
    assert kept(logits, top_k=5).sum(-1).tolist() == [5, 5, 5]
    assert (kept(logits, top_k=1) == (logits == logits.max(-1, keepdim=True).values)).all()


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert kept(logits, top_p=0.5).tolist() == [[True, False, False, False]]
    assert kept(logits, top_p=0.6).tolist() == [[True, True, False, False]]
    assert kept(logits, top_p=0.8).tolist() == [[True, True, False, False]]  # 0.5 + 0.3 = 0.8 reaches p
    assert kept(logits, top_p=0.81).tolist() == [[True, True, True, False]]
    assert kept(logits, top_p=1.0).all()


def test_temperature_divides_the_logits():
    logits = torch.randn(2, 7)
    torch.testing.assert_close(filter_logits(logits, temperature=0.5), logits / 0.5)


def test_sampling_follows_the_distribution_and_is_reproducible():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = probs.log().expand(20_000, 3)
    draws = sample_next_token(logits, generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=3).float() / len(draws)
    torch.testing.assert_close(frequencies, probs, atol=0.015, rtol=0)
    again = sample_next_token(logits, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_bad_sampling_arguments():
    with pytest.raises(ValueError, match="temperature"):
        filter_logits(torch.randn(1, 5), temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        filter_logits(torch.randn(1, 5), top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        filter_logits(torch.randn(1, 5), top_p=1.5)
    with pytest.raises(ValueError, match="logits"):
        sample_next_token(torch.randn(5))


@pytest.mark.parametrize("settings", [dict(greedy=True), dict(temperature=0.8), dict(top_k=5), dict(top_p=0.9)])
def test_cache_gives_exactly_the_same_tokens(gpt, settings):
    prompt = torch.randint(7, 40, (3, 4), generator=torch.Generator().manual_seed(1))
    with_cache = generate(gpt, prompt, 40, use_cache=True, generator=torch.Generator().manual_seed(2), **settings)
    without = generate(gpt, prompt, 40, use_cache=False, generator=torch.Generator().manual_seed(2), **settings)
    assert with_cache.shape == (3, 44)
    assert torch.equal(with_cache[:, :4], prompt)
    assert torch.equal(with_cache, without)


def test_greedy_takes_the_argmax_at_every_step(gpt):
    out = generate(gpt, torch.tensor([[5]]), 10, greedy=True)
    logits = gpt(out[:, :-1])
    assert torch.equal(logits.argmax(-1)[0], out[0, 1:])


def test_stops_at_eos_and_respects_max_len(gpt):
    first_token = int(gpt(torch.tensor([[5]]))[0, -1].argmax())
    out = generate(gpt, torch.tensor([[5], [5]]), 30, greedy=True, eos_id=first_token)
    assert out.tolist() == [[5, first_token], [5, first_token]]  # both rows ended at once: the loop stopped
    with pytest.raises(ValueError, match="max_len=48"):
        generate(gpt, torch.tensor([[5]]), 48)


def test_generation_runs_in_eval_mode_and_restores_the_mode(gpt):
    gpt.train()
    try:
        out = generate(gpt, torch.tensor([[5]]), 5, greedy=True)
        assert gpt.training
        assert torch.equal(out, generate(gpt.eval(), torch.tensor([[5]]), 5, greedy=True))
    finally:
        gpt.eval()
    with pytest.raises(ValueError, match="^max_new_tokens must be a non-negative int, got -1"):
        generate(gpt, torch.tensor([[5]]), -1)
    with pytest.raises(ValueError, match="^top_k must be a positive int, got True"):
        generate(gpt, torch.tensor([[5]]), 3, top_k=True)


# -- batches of prompts of different lengths, padded on the left -------------------------------------

def test_left_pad_puts_every_prompt_at_the_end():
    batch = left_pad([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]]
    assert batch.attention_mask.tolist() == [[True] * 3, [False, False, True], [False, True, True]]
    for bad in ([], [[1], []], "abc"):
        with pytest.raises(ValueError, match="sequences must be"):
            left_pad(bad, pad_id=0)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no cache"])
def test_a_left_padded_batch_writes_what_each_prompt_writes_alone(gpt, use_cache):
    prompts = [[7, 12, 30, 9, 21, 8], [15], [33, 11, 19]]
    batch = left_pad(prompts, pad_id=0)
    together = generate(gpt, batch.input_ids, 20, greedy=True, use_cache=use_cache,
                        attention_mask=batch.attention_mask)
    assert together.shape == (3, 26)
    for row, prompt in enumerate(prompts):
        alone = generate(gpt, torch.tensor([prompt]), 20, greedy=True, use_cache=use_cache)
        assert together[row, 6 - len(prompt):].tolist() == alone[0].tolist(), row
    sampled = [generate(gpt, batch.input_ids, 20, top_p=0.9, use_cache=use_cache, attention_mask=batch.attention_mask,
                        generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*sampled)


def test_a_batch_padded_on_the_right_is_refused(gpt):
    right = torch.tensor([[True, True, True], [True, False, False]])
    with pytest.raises(ValueError, match=r"rows \[1\] end with padding; pad prompts on the left"):
        generate(gpt, torch.tensor([[5, 6, 7], [8, 0, 0]]), 3, greedy=True, attention_mask=right)
    with pytest.raises(ValueError, match=r"attention_mask must be a tensor of input_ids' shape \(B, T\) = \(1, 3\)"):
        generate(gpt, torch.tensor([[5, 6, 7]]), 3, attention_mask=torch.ones(1, 2, dtype=torch.bool))


# -- the fast path: exactly the logits of the model's own forward pass with a cache -----------------

FAST_CONFIGS = [
    dict(positional="learned", activation="gelu"),
    dict(positional="sinusoidal", activation="relu"),
    dict(positional="learned", activation="gelu_tanh", layer_norm_eps=1e-6),
]


def readable_step(model, new_ids, cache, mask):
    """The next-token logits by ``model``'s modules, the path notebook 06 explains."""
    return model(new_ids, cache=cache, **({} if mask is None else {"attention_mask": mask}))[:, -1]


@pytest.mark.parametrize("overrides", FAST_CONFIGS)
@pytest.mark.parametrize("padded", [False, True])
def test_the_fast_path_gives_exactly_the_modules_logits(overrides, padded):
    torch.manual_seed(1)
    model = GPT(TransformerConfig(vocab_size=30, max_len=24, d_model=24, n_heads=3, n_layers=3, d_ff=40,
                                  dropout=0.1, **overrides)).eval()
    fast = FastDecoder.for_model(model)
    prompts = left_pad([[1, 5, 7, 2], [3, 9], [4, 4, 4, 8]], pad_id=0)
    mask = prompts.attention_mask if padded else None
    ids = prompts.input_ids
    slow_cache, fast_cache = model.new_cache(), model.new_cache()
    with torch.no_grad():
        torch.testing.assert_close(readable_step(model, ids, slow_cache, mask),
                                   readable_step(model, ids, fast_cache, mask), rtol=0, atol=0)
        for step in range(6):
            new_ids = torch.randint(1, 30, (3, 1))
            if mask is not None:
                mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], dim=1)
            position = len(fast_cache[0]) if mask is None else (mask[:, :-1].sum(dim=1, keepdim=True))
            slow = readable_step(model, new_ids, slow_cache, mask)
            quick = fast.step(new_ids, position, fast_cache, None if mask is None else mask[:, None, None, :])
            assert torch.equal(slow, quick), f"step {step}: largest difference {(slow - quick).abs().max()}"
    assert len(fast_cache[0]) == len(slow_cache[0]) == ids.shape[1] + 6


@pytest.mark.parametrize("settings", [dict(greedy=True), dict(top_k=5, temperature=1.3), dict(top_p=0.8)])
def test_generate_writes_the_same_tokens_with_and_without_the_fast_path(gpt, settings, monkeypatch):
    prompts = left_pad([[1, 5, 7], [3], [4, 4, 4, 8, 9]], pad_id=0)
    run = lambda: generate(gpt, prompts.input_ids, 20, attention_mask=prompts.attention_mask, eos_id=2,
                           generator=torch.Generator().manual_seed(3), **settings)
    fast = run()
    monkeypatch.setattr(FastDecoder, "for_model", classmethod(lambda cls, model: None))
    assert torch.equal(fast, run())


def test_the_fast_path_declines_what_it_cannot_run_exactly(gpt):
    assert FastDecoder.for_model(gpt) is not None
    assert FastDecoder.for_model(gpt.train()) is None  # dropout is on while training
    gpt.eval()
    gpt.body.blocks[0].self_attention.store_attention_weights = True  # a figure wants the weights
    try:
        assert FastDecoder.for_model(gpt) is None
    finally:
        gpt.body.blocks[0].self_attention.store_attention_weights = False
    assert FastDecoder.for_model(BERT(TransformerConfig(vocab_size=30, max_len=8, d_model=8, n_heads=2,
                                                        n_layers=1, d_ff=8))) is None


def test_the_kv_cache_grows_past_its_first_buffer():
    cache = KVCache()  # no max_len: the buffer doubles when full
    keys = torch.randn(2, 3, 5, 4)
    for start in range(0, 5):
        cache.append(keys[:, :, start:start + 1], -keys[:, :, start:start + 1])
    assert len(cache) == 5
    assert torch.equal(cache.keys, keys) and torch.equal(cache.values, -keys)
    bounded = KVCache(max_len=8)
    bounded.append(keys, keys)
    assert bounded._key_buffer.shape[-2] == 8  # one buffer for the model's whole length
