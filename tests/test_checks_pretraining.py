"""The checks of exercises 05 and 06: correct answers written several ways pass, known mistakes fail with their hint.

Both exercises are random functions, so the correct implementations below
deliberately draw their random numbers in different orders and with
different tools (uniform draws, Bernoulli draws, multinomial, Gumbel noise,
inverse CDF): the checks must accept all of them, and must name the mistake
of each wrong one.
"""
import pytest
import torch

from course_lib.checks import check_fill_masks, check_generate_greedy, check_mask_tokens, check_sample_next_token
from course_lib.generation import sample_next_token
from course_lib.objectives import mask_tokens

from check_helpers import assert_fails_with_hint, assert_passes


# ---------------------------------------------------------------------------
# 05.mask_tokens: correct implementations
# ---------------------------------------------------------------------------


def ordinary_ids(vocab_size, special_ids):
    return torch.tensor([i for i in range(vocab_size) if i not in special_ids])


def masking_with_two_uniform_draws(input_ids, *, mask_id, vocab_size, special_ids, mask_prob=0.15, generator=None):
    special = torch.isin(input_ids, torch.tensor(special_ids))
    chosen = (torch.rand(input_ids.shape, generator=generator) < mask_prob) & ~special
    labels = torch.where(chosen, input_ids, -100)
    fate = torch.rand(input_ids.shape, generator=generator)
    pool = ordinary_ids(vocab_size, special_ids)
    random_ids = pool[torch.randint(len(pool), input_ids.shape, generator=generator)]
    inputs = torch.where(chosen & (fate < 0.8), mask_id, input_ids)
    inputs = torch.where(chosen & (fate >= 0.8) & (fate < 0.9), random_ids, inputs)
    return inputs, labels


def masking_with_bernoulli(input_ids, *, mask_id, vocab_size, special_ids, mask_prob=0.15, generator=None):
    probability = torch.full(input_ids.shape, mask_prob)
    chosen = torch.bernoulli(probability, generator=generator).bool()
    for special_id in special_ids:
        chosen &= input_ids != special_id
    masked = chosen & torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool()
    randomised = chosen & ~masked & torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool()
    inputs = input_ids.clone()
    inputs[masked] = mask_id
    pool = ordinary_ids(vocab_size, special_ids)
    inputs[randomised] = pool[torch.randint(len(pool), (int(randomised.sum()),), generator=generator)]
    labels = torch.full_like(input_ids, -100)
    labels[chosen] = input_ids[chosen]
    return inputs, labels


def masking_with_one_draw_per_position(input_ids, *, mask_id, vocab_size, special_ids, mask_prob=0.15,
                                       generator=None):
    # One uniform u decides everything: u < 0.8p -> [MASK], u < 0.9p -> random, u < p -> unchanged.
    u = torch.rand(input_ids.shape, generator=generator)
    ordinary = ~torch.isin(input_ids, torch.tensor(special_ids))
    chosen = ordinary & (u < mask_prob)
    pool = ordinary_ids(vocab_size, special_ids)
    replacement = pool[torch.multinomial(torch.ones(len(pool)), input_ids.numel(), replacement=True,
                                         generator=generator)].reshape(input_ids.shape)
    inputs = torch.where(ordinary & (u < 0.8 * mask_prob), mask_id, input_ids)
    inputs = torch.where(ordinary & (u >= 0.8 * mask_prob) & (u < 0.9 * mask_prob), replacement, inputs)
    return inputs, torch.where(chosen, input_ids, torch.full_like(input_ids, -100))


def masking_with_multinomial_fates(input_ids, *, mask_id, vocab_size, special_ids, mask_prob=0.15, generator=None):
    ordinary = ~torch.isin(input_ids, torch.tensor(special_ids))
    chosen = ordinary & (torch.rand(input_ids.shape, generator=generator) < mask_prob)
    fates = torch.multinomial(torch.tensor([0.8, 0.1, 0.1]), input_ids.numel(), replacement=True,
                              generator=generator).reshape(input_ids.shape)  # 0 mask, 1 random, 2 keep
    pool = ordinary_ids(vocab_size, special_ids)
    random_ids = pool[torch.randint(len(pool), input_ids.shape, generator=generator)]
    inputs = input_ids.clone()
    inputs[chosen & (fates == 0)] = mask_id
    inputs[chosen & (fates == 1)] = random_ids[chosen & (fates == 1)]
    labels = input_ids.masked_fill(~chosen, -100)
    return inputs, labels


@pytest.mark.parametrize("fn", [mask_tokens, masking_with_two_uniform_draws, masking_with_bernoulli,
                                masking_with_one_draw_per_position, masking_with_multinomial_fates])
def test_correct_maskings_pass(fn):
    assert_passes(check_mask_tokens(fn))


# ---------------------------------------------------------------------------
# 05.mask_tokens: known mistakes
# ---------------------------------------------------------------------------


def masking_variant(*, choose=None, fates=(0.8, 0.1, 0.1), labels="original", random_pool="ordinary",
                    use_generator=True, in_place=False):
    """A masking function with one knob turned away from the recipe."""
    def fn(input_ids, *, mask_id, vocab_size, special_ids, mask_prob=0.15, generator=None):
        generator = generator if use_generator else None
        special = torch.isin(input_ids, torch.tensor(special_ids))
        u = torch.rand(input_ids.shape, generator=generator)
        chosen = choose(u, special, mask_prob) if choose else (u < mask_prob) & ~special
        fate = torch.rand(input_ids.shape, generator=generator)
        pool = ordinary_ids(vocab_size, special_ids) if random_pool == "ordinary" else torch.arange(vocab_size)
        random_ids = pool[torch.randint(len(pool), input_ids.shape, generator=generator)]
        to_mask = chosen & (fate < fates[0])
        to_random = chosen & (fate >= fates[0]) & (fate < fates[0] + fates[1])
        inputs = input_ids if in_place else input_ids.clone()
        original = input_ids.clone()
        inputs[to_random] = random_ids[to_random]
        inputs[to_mask] = mask_id
        if labels == "original":
            label_ids = torch.where(chosen, original, -100)
        elif labels == "corrupted":
            label_ids = torch.where(chosen, inputs, -100)
        elif labels == "changed only":  # the chosen tokens left unchanged lose their label
            label_ids = torch.where(to_mask | to_random, original, -100)
        elif labels == "everywhere":
            label_ids = original.clone()
        else:  # everywhere but at special tokens
            label_ids = torch.where(special, -100, original)
        return inputs, label_ids

    return fn


@pytest.mark.parametrize("fn, words", [
    (masking_variant(fates=(1.0, 0.0, 0.0)), "every chosen token became [MASK]"),
    (masking_variant(fates=(0.8, 0.2, 0.0)), "no chosen token was left unchanged"),
    (masking_variant(labels="changed only"), "the chosen tokens left unchanged got the label -100"),
    (masking_variant(fates=(0.9, 0.0, 0.1)), "no chosen token was replaced by a random token"),
    (masking_variant(fates=(0.7, 0.15, 0.15)), "80% become [MASK], 10% a random token"),
    (masking_variant(choose=lambda u, special, p: u < p), "special tokens ([CLS], [SEP], [PAD], ...) were chosen"),
    (masking_variant(labels="everywhere"), "labels must be -100 wherever the token was not chosen"),
    (masking_variant(labels="everywhere_but_special"), "labels must be -100 wherever the token was not chosen"),
    (masking_variant(labels="corrupted"), "they must hold the ORIGINAL ids"),
    (masking_variant(choose=lambda u, special, p: (u < 0.15) & ~special), "does not follow mask_prob"),
    (masking_variant(choose=lambda u, special, p: ~special), "every ordinary token was chosen"),
    (masking_variant(random_pool="whole vocabulary"), "a random replacement was a special token"),
    (masking_variant(use_generator=False), "draw every random number from `generator`"),
    (masking_variant(in_place=True), "instead of writing into the caller's tensor"),
])
def test_masking_mistakes_fail_with_their_hint(fn, words):
    assert_fails_with_hint(check_mask_tokens(fn), words)


def test_masking_with_a_fixed_replacement_is_not_uniform():
    def fixed_replacement(input_ids, *, mask_id, vocab_size, special_ids, mask_prob=0.15, generator=None):
        inputs, labels = mask_tokens(input_ids, mask_id=mask_id, vocab_size=vocab_size, special_ids=special_ids,
                                     mask_prob=mask_prob, generator=generator)
        randomised = (labels != -100) & (inputs != mask_id) & (inputs != input_ids)
        return inputs.masked_fill(randomised, max(set(range(vocab_size)) - set(special_ids))), labels

    assert_fails_with_hint(check_mask_tokens(fixed_replacement), "uniformly among all ordinary ids")


def test_masking_answers_of_the_wrong_form_fail_without_crashing():
    only_inputs = lambda input_ids, **kwargs: mask_tokens(input_ids, **kwargs)[0]  # noqa: E731
    assert_fails_with_hint(check_mask_tokens(only_inputs), "return two tensors, (inputs, labels)")
    float_labels = lambda input_ids, **kwargs: tuple(t.float() for t in mask_tokens(input_ids, **kwargs))  # noqa: E731
    result = check_mask_tokens(float_labels)
    assert not result and "dtype torch.float32" in result.report()


def test_masking_check_reports_not_implemented_errors_and_non_functions():
    def unsolved(input_ids, **kwargs):
        raise NotImplementedError()

    assert check_mask_tokens(unsolved).status == "not implemented"

    def broken(input_ids, **kwargs):
        return input_ids.unknown_method()

    report = check_mask_tokens(broken).report()
    assert "AttributeError" in report and "✗" in report
    result = check_mask_tokens(mask_tokens(torch.tensor([[1, 8, 2]]), mask_id=4, vocab_size=93,
                                           special_ids=[0, 1, 2, 3, 4, 5, 6]))
    assert not result and "should be a function" in result.report()


def test_masking_verdict_is_reproducible():
    assert check_mask_tokens(masking_variant(fates=(0.8, 0.2, 0.0))).report() == \
        check_mask_tokens(masking_variant(fates=(0.8, 0.2, 0.0))).report()


# ---------------------------------------------------------------------------
# 06.sample_next_token: correct implementations
# ---------------------------------------------------------------------------


def keep_top_k_and_top_p_by_sorting(logits, temperature, top_k, top_p):
    """Logits after temperature, top-k and top-p, written with one sort."""
    logits = logits / temperature
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    remove = torch.zeros_like(sorted_logits, dtype=torch.bool)
    if top_k is not None:
        remove[:, top_k:] = True
    if top_p is not None:
        probs = torch.softmax(sorted_logits.masked_fill(remove, float("-inf")), dim=-1)
        before = probs.cumsum(dim=-1) - probs
        remove |= before >= top_p
    removed = torch.zeros_like(remove).scatter(1, order, remove)
    return logits.masked_fill(removed, float("-inf"))


def sampling_with_multinomial(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    probs = torch.softmax(keep_top_k_and_top_p_by_sorting(logits, temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def sampling_with_gumbel_max(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    filtered = keep_top_k_and_top_p_by_sorting(logits, temperature, top_k, top_p)
    uniform = torch.rand(filtered.shape, generator=generator).clamp(1e-12, 1 - 1e-7)
    return (filtered - torch.log(-torch.log(uniform))).argmax(dim=-1)


def sampling_with_inverse_cdf(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    scaled = logits / temperature
    if top_k is not None:
        threshold = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = torch.where(scaled >= threshold, scaled, torch.tensor(float("-inf")))
    probs = torch.softmax(scaled, dim=-1)
    if top_p is not None:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep_sorted = sorted_probs.cumsum(-1) - sorted_probs < top_p
        keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
        probs = probs * keep
        probs = probs / probs.sum(dim=-1, keepdim=True)
    u = torch.rand(len(probs), 1, generator=generator)
    return (probs.cumsum(dim=-1) < u).sum(dim=-1).clamp(max=probs.shape[-1] - 1)


@pytest.mark.parametrize("fn", [sample_next_token, sampling_with_multinomial, sampling_with_gumbel_max,
                                sampling_with_inverse_cdf])
def test_correct_samplers_pass(fn):
    assert_passes(check_sample_next_token(fn))


# ---------------------------------------------------------------------------
# 06.sample_next_token: known mistakes
# ---------------------------------------------------------------------------


def sampler(*, temperature_op="divide", k_offset=0, drop_crossing=False, uniform=False, use_generator=True,
            keep_dim=False):
    """A sampler with one knob turned away from the recipe."""
    def fn(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        scaled = {"divide": logits / temperature, "multiply": logits * temperature, "ignore": logits}[temperature_op]
        if top_k is not None:
            k = top_k + k_offset
            sorted_logits = scaled.sort(dim=-1, descending=True).values
            scaled = scaled.masked_fill(scaled < sorted_logits[:, k - 1:k], float("-inf")) if k >= 1 else \
                scaled.masked_fill(torch.ones_like(scaled, dtype=torch.bool), float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        if top_p is not None:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            cumulative = sorted_probs.cumsum(-1)
            remove_sorted = cumulative > top_p if drop_crossing else cumulative - sorted_probs >= top_p
            remove_sorted[:, 0] = False
            remove = torch.zeros_like(remove_sorted).scatter(1, order, remove_sorted)
            probs = probs.masked_fill(remove, 0.0)
        if uniform:
            probs = (probs > 0).float()
        ids = torch.multinomial(probs, 1, generator=generator if use_generator else None)
        return ids if keep_dim else ids.squeeze(1)

    return fn


def greedy(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    return (logits / temperature).argmax(dim=-1)


def top_p_in_vocabulary_order(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    probs = torch.softmax(keep_top_k_and_top_p_by_sorting(logits, temperature, top_k, None), dim=-1)
    if top_p is not None:
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)  # no sort
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def ranks_instead_of_ids(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    probs = torch.softmax(keep_top_k_and_top_p_by_sorting(logits, temperature, top_k, top_p), dim=-1)
    sorted_probs = probs.sort(dim=-1, descending=True).values
    return torch.multinomial(sorted_probs, 1, generator=generator).squeeze(1)  # never mapped back to ids


def first_k_ids(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    scaled = logits / temperature
    if top_k is not None:
        scaled = scaled.clone()
        scaled[:, top_k:] = float("-inf")
    return sampling_with_multinomial(scaled, 1.0, None, top_p, generator)


def top_p_before_top_k(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    return sampling_with_multinomial(keep_top_k_and_top_p_by_sorting(logits, temperature, None, top_p), 1.0, top_k,
                                     None, generator)


@pytest.mark.parametrize("fn, words", [
    (greedy, "you always took the most likely token (argmax)"),
    (sampler(temperature_op="multiply"), "multiplied by the temperature"),
    (sampler(temperature_op="ignore"), "the temperature was ignored"),
    (sampler(k_offset=-1), "top-k kept k - 1 tokens"),
    (sampler(k_offset=+1), "top-k kept k + 1 tokens"),
    (sampler(drop_crossing=True), "top-p dropped the token that crosses the threshold"),
    (sampler(uniform=True), "not uniformly"),
    (sampler(use_generator=False), "draw every random number from `generator`"),
    (sampler(keep_dim=True), "shape (B,)"),
    (top_p_in_vocabulary_order, "in the vocabulary's order"),
    (ranks_instead_of_ids, "ranks in the sorted order"),
    (first_k_ids, "the first k token ids"),
    (top_p_before_top_k, "top-p ran before top-k"),
])
def test_sampling_mistakes_fail_with_their_hint(fn, words):
    assert_fails_with_hint(check_sample_next_token(fn), words)


def test_sampling_that_overflows_fails():
    def naive_softmax(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        exps = (logits / temperature).exp()
        return torch.multinomial(exps / exps.sum(dim=-1, keepdim=True), 1, generator=generator).squeeze(1)

    result = check_sample_next_token(naive_softmax)
    failed = [case.description for case in result.cases if not case.passed]
    assert not result and any("around 1000" in description for description in failed), result.report()


def test_sampling_that_changes_the_logits_in_place_fails():
    def divides_in_place(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        logits /= temperature
        return sample_next_token(logits, 1.0, top_k, top_p, generator)

    assert_fails_with_hint(check_sample_next_token(divides_in_place), "instead of writing into the caller's tensor")


def test_sampling_check_reports_not_implemented():
    def unsolved(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        raise NotImplementedError()

    result = check_sample_next_token(unsolved)
    assert result.status == "not implemented" and "not implemented yet" in result.report()


# ---------------------------------------------------------------------------
# 05.fill_masks
# ---------------------------------------------------------------------------


def fill_with_where(model, input_ids, mask_id, attention_mask=None):
    with torch.no_grad():
        predictions = model(input_ids, attention_mask).argmax(dim=-1)
    return torch.where(input_ids == mask_id, predictions, input_ids)


def fill_with_encoder_and_head(model, input_ids, mask_id, attention_mask=None):
    filled = input_ids.clone()
    with torch.no_grad():
        logits = model.mlm_head(model.encode(input_ids, attention_mask))
    blanks = input_ids == mask_id
    filled[blanks] = logits[blanks].argmax(dim=-1)
    return filled


@pytest.mark.parametrize("fn", [fill_with_where, fill_with_encoder_and_head])
def test_correct_fill_masks_pass(fn):
    assert_passes(check_fill_masks(fn))


def fill_every_position(model, input_ids, mask_id, attention_mask=None):
    return model(input_ids, attention_mask).argmax(dim=-1)


def fill_one_blank_per_pass(model, input_ids, mask_id, attention_mask=None):
    filled = input_ids.clone()
    for position in range(input_ids.shape[1]):
        blank = filled[:, position] == mask_id
        if blank.any():
            with torch.no_grad():
                prediction = model(filled, attention_mask)[:, position].argmax(dim=-1)
            filled[:, position] = torch.where(blank, prediction, filled[:, position])
    return filled


def fill_without_padding_mask(model, input_ids, mask_id, attention_mask=None):
    return fill_with_where(model, input_ids, mask_id)


def fill_with_probabilities(model, input_ids, mask_id, attention_mask=None):
    return torch.softmax(model(input_ids, attention_mask), dim=-1)


def fill_with_argmax_over_positions(model, input_ids, mask_id, attention_mask=None):
    return model(input_ids, attention_mask).argmax(dim=1)


@pytest.mark.parametrize("fn, words", [
    (fill_every_position, "only the [MASK] positions change"),
    (fill_one_blank_per_pass, "fill them all from ONE pass"),
    (fill_without_padding_mask, "pass attention_mask to the model"),
    (fill_with_probabilities, "your answer holds scores, not token ids"),
    (fill_with_argmax_over_positions, "the argmax was taken over the wrong dimension"),
])
def test_fill_masks_mistakes_fail_with_their_hint(fn, words):
    assert_fails_with_hint(check_fill_masks(fn), words)


# ---------------------------------------------------------------------------
# 06.generate_greedy
# ---------------------------------------------------------------------------


def greedy_loop(model, input_ids, max_new_tokens, eos_id=None):
    sequence = input_ids
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        with torch.no_grad():
            next_ids = model(sequence)[:, -1].argmax(dim=-1)
        if eos_id is not None:
            next_ids = torch.where(finished, eos_id, next_ids)
            finished = finished | (next_ids == eos_id)
        sequence = torch.cat([sequence, next_ids[:, None]], dim=1)
        if eos_id is not None and finished.all():
            break
    return sequence


def greedy_with_a_cache(model, input_ids, max_new_tokens, eos_id=None):
    cache, sequence, new = model.new_cache(), input_ids, input_ids
    done = torch.zeros(len(input_ids), dtype=torch.bool)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            new = model(new, cache=cache)[:, -1].argmax(dim=-1)[:, None]
            if eos_id is not None:
                new[done] = eos_id
                done |= new[:, 0] == eos_id
            sequence = torch.cat([sequence, new], dim=1)
            if eos_id is not None and bool(done.all()):
                break
    return sequence


def greedy_into_a_preallocated_tensor_then_cut(model, input_ids, max_new_tokens, eos_id=None):
    B, T = input_ids.shape
    out = torch.zeros(B, T + max_new_tokens, dtype=torch.long)
    out[:, :T] = input_ids
    end = T + max_new_tokens
    for t in range(T, T + max_new_tokens):
        with torch.no_grad():
            out[:, t] = model(out[:, :t])[:, -1].argmax(dim=-1)
        if eos_id is not None:
            written = out[:, T:t]                                  # the tokens before this step's
            out[(written == eos_id).any(dim=1), t] = eos_id
            if (out[:, T:t + 1] == eos_id).any(dim=1).all():
                end = t + 1
                break
    return out[:, :end]


@pytest.mark.parametrize("fn", [greedy_loop, greedy_with_a_cache, greedy_into_a_preallocated_tensor_then_cut])
def test_correct_greedy_generation_passes(fn):
    assert_passes(check_generate_greedy(fn))


def the_lessons_loop_for_one_prompt(model, input_ids, max_new_tokens, eos_id=None):
    sequence = input_ids
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = model(sequence)[:, -1].argmax(dim=-1, keepdim=True)
            sequence = torch.cat([sequence, next_id], dim=1)
            if next_id.item() == eos_id:
                break
    return sequence


def test_the_lessons_single_prompt_loop_fails_on_batches_with_eos_only():
    result = check_generate_greedy(the_lessons_loop_for_one_prompt)

    assert [case.passed for case in result.cases] == [True, True, False, True, True, False, False]


def greedy_with_eos(*, stop="all", pad=True):
    def generate_greedy(model, input_ids, max_new_tokens, eos_id=None):
        sequence, finished = input_ids, torch.zeros(len(input_ids), dtype=torch.bool)
        for _ in range(max_new_tokens):
            with torch.no_grad():
                next_ids = model(sequence)[:, -1].argmax(dim=-1)
            if eos_id is not None:
                if pad:
                    next_ids[finished] = eos_id
                finished = finished | (next_ids == eos_id)
                if stop == "before appending" and finished.all():
                    break  # the token that finished the last row is lost
            sequence = torch.cat([sequence, next_ids[:, None]], dim=1)
            if eos_id is not None and {"all": finished.all(), "any": finished.any()}.get(stop, False):
                break
        return sequence
    return generate_greedy


def greedy_reading_the_last_token(model, input_ids, max_new_tokens):
    sequence = input_ids
    for _ in range(max_new_tokens):
        with torch.no_grad():
            next_id = model(sequence[:, -1:])[:, -1].argmax(dim=-1, keepdim=True)
        sequence = torch.cat([sequence, next_id], dim=1)
    return sequence


def greedy_from_the_first_position(model, input_ids, max_new_tokens):
    sequence = input_ids
    for _ in range(max_new_tokens):
        with torch.no_grad():
            next_id = model(sequence)[:, 0].argmax(dim=-1, keepdim=True)
        sequence = torch.cat([sequence, next_id], dim=1)
    return sequence


def greedy_returning_the_new_tokens(model, input_ids, max_new_tokens):
    return greedy_loop(model, input_ids, max_new_tokens)[:, input_ids.shape[1]:]


def greedy_one_step_short(model, input_ids, max_new_tokens):
    return greedy_loop(model, input_ids, max(max_new_tokens - 1, 0)) if max_new_tokens else input_ids[:, :-1]


@pytest.mark.parametrize("fn, words", [
    (greedy_reading_the_last_token, "the model read only the last token at every step"),
    (greedy_from_the_first_position, "those of the last position"),
    (greedy_returning_the_new_tokens, "you returned only the new tokens"),
    (greedy_one_step_short, "one token too many or too few"),
    (greedy_with_eos(stop="any"), "as soon as ONE row wrote eos_id"),
    (greedy_with_eos(stop="before appending"), "before appending the eos_id that finished the last row"),
    (greedy_with_eos(pad=False), "must write only eos_id from then on"),
    (greedy_with_eos(stop="never"), "the loop must stop"),
])
def test_greedy_generation_mistakes_fail_with_their_hint(fn, words):
    assert_fails_with_hint(check_generate_greedy(fn), words)
