"""Checks of exercise 06: sampling the next token and greedy generation.

``generate_greedy`` is deterministic: its check compares with a reference
exactly, on the tiny GPTs of ``pretraining_checks.py``.

``sample_next_token`` is random, so no single output is *the* answer. Its
check calls the learner's function on many rows (20 000 copies of the same
logits) with a seeded generator and compares which tokens can come out at
all (exactly the allowed set) and how often each does (its probability),
with the tolerances of ``pretraining_checks.py``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from course_lib.checks.framework import Case, CheckResult, Mistake, check_function, same_output_as, same_output_as_any_of
from course_lib.checks.pretraining_checks import _describe, _floating, _tiny_model, _tolerance
from course_lib.generation import filter_logits, generate
from course_lib.models import GPT

# ---------------------------------------------------------------------------
# Exercise 06.sample_next_token
# ---------------------------------------------------------------------------

_N_ROWS = 20_000

# Eight logits whose probabilities all differ: 50%, 22%, 12%, 7%, 4%, 2.5%, 1.4%, 0.6%.
_LOGITS = torch.tensor([3.0, 2.2, 1.6, 1.0, 0.4, 0.0, -0.6, -1.5])
# Probabilities 40%, 30%, 20%, 10%: with top_p = 0.6 the second token crosses the threshold.
_QUARTER_LOGITS = torch.tensor([0.4, 0.3, 0.2, 0.1]).log()


def _distribution(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """The probabilities the sampler must follow, (B, V)."""
    return torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)


# Known mistakes, each as the distribution it samples from instead of _distribution.
def _greedy(logits, temperature=1.0, top_k=None, top_p=None):
    return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()


def _temperature_multiplied(logits, temperature=1.0, top_k=None, top_p=None):
    return _distribution(logits * temperature, 1.0, top_k, top_p)


def _temperature_ignored(logits, temperature=1.0, top_k=None, top_p=None):
    return _distribution(logits, 1.0, top_k, top_p)


def _top_k_off_by(offset: int):
    def distribution(logits, temperature=1.0, top_k=None, top_p=None):
        if top_k is None or not 1 <= top_k + offset <= logits.shape[-1]:
            raise ValueError("this mistake needs a top_k")
        return _distribution(logits, temperature, top_k + offset, top_p)

    return distribution


def _top_p_without_crossing_token(logits, temperature=1.0, top_k=None, top_p=None):
    """Keeps only tokens whose cumulative probability stays within top_p (the crossing token is dropped)."""
    if top_p is None:
        raise ValueError("this mistake needs a top_p")
    filtered = filter_logits(logits, temperature, top_k)
    probs = torch.softmax(filtered, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    drop_sorted = sorted_probs.cumsum(dim=-1) > top_p
    drop_sorted[..., 0] = False  # even this mistake keeps the most likely token
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return torch.softmax(filtered.masked_fill(drop, float("-inf")), dim=-1)


def _first_k_ids(logits, temperature=1.0, top_k=None, top_p=None):
    """The first k token ids kept, whatever their logits."""
    if top_k is None:
        raise ValueError("this mistake needs a top_k")
    first_k = logits.clone()
    first_k[..., top_k:] = float("-inf")
    return _distribution(first_k, temperature, None, top_p)


def _top_p_in_vocabulary_order(logits, temperature=1.0, top_k=None, top_p=None):
    """The cumulative sum taken in the vocabulary's order, not from the most likely token down."""
    if top_p is None:
        raise ValueError("this mistake needs a top_p")
    filtered = filter_logits(logits, temperature, top_k)
    probs = torch.softmax(filtered, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    return torch.softmax(filtered.masked_fill(mass_before >= top_p, float("-inf")), dim=-1)


def _ranks_not_ids(logits, temperature=1.0, top_k=None, top_p=None):
    """Sampled from the sorted probabilities and returned as positions in that order, never mapped back."""
    return _distribution(logits, temperature, top_k, top_p).sort(dim=-1, descending=True).values


def _top_p_before_top_k(logits, temperature=1.0, top_k=None, top_p=None):
    if top_k is None or top_p is None:
        raise ValueError("this mistake needs a top_k and a top_p")
    return _distribution(filter_logits(logits, temperature, top_p=top_p), top_k=top_k)


def _uniform_over_kept(logits, temperature=1.0, top_k=None, top_p=None):
    kept = _distribution(logits, temperature, top_k, top_p) > 0
    return kept.float() / kept.sum(dim=-1, keepdim=True)


def _samples_from(wrong_distribution: Callable) -> Callable[[Any, Case], bool]:
    """A ``shows_in`` test: the sampled ids follow ``wrong_distribution`` where it differs from the right one.

    ``wrong_distribution(logits, temperature, top_k, top_p)`` is the
    distribution a known mistake samples from instead of the right one.

    When two mistakes would give the same distribution in a case (with
    top_k=2, keeping k - 1 tokens is greedy decoding), the case shows both,
    and ``check_function`` names the one that shows in the most cases.
    ``wrong_distribution`` raises ValueError in a case where its mistake
    cannot show, which ``check_function`` takes as "no".
    """
    def shows_in(received: Any, case: Case) -> bool:
        groups = _groups(case.args[0])
        if torch.allclose(wrong_distribution(groups, **_settings(case)), _distribution(groups, **_settings(case))):
            return False  # in this case the mistake samples from the right distribution
        return (_form_problem(received, case) is None
                and _frequency_problem(received, case, wrong_distribution) is None)

    return shows_in


def _one_column_per_row(received: Any, case: Case) -> bool:
    return isinstance(received, torch.Tensor) and tuple(received.shape) == (len(case.args[0]), 1)


_SAMPLING_MISTAKES = (
    Mistake("return one id per row, shape (B,): torch.multinomial gives (B, 1), so add .squeeze(-1).",
            _one_column_per_row),
    Mistake("you always took the most likely token (argmax): that is greedy decoding. Sample from the "
            "probabilities instead, e.g. torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).",
            _samples_from(_greedy)),
    Mistake("the logits were multiplied by the temperature; divide them: logits / temperature (a temperature "
            "below 1 must sharpen the distribution, above 1 flatten it).", _samples_from(_temperature_multiplied)),
    Mistake("the temperature was ignored: divide the logits by it before the softmax.",
            _samples_from(_temperature_ignored)),
    Mistake("top-k kept k - 1 tokens: keep every token whose logit is >= the k-th largest "
            "(torch.topk(logits, k).values[..., -1:]), use >= rather than >.", _samples_from(_top_k_off_by(-1))),
    Mistake("top-k kept k + 1 tokens: the k-th largest logit is torch.topk(logits, k).values[..., -1], "
            "keep the tokens at or above it and no more.", _samples_from(_top_k_off_by(+1))),
    Mistake("top-k kept the first k token ids, not the k most likely tokens: find the k-th largest logit of "
            "each row (torch.topk(logits, k).values[..., -1:]) and keep the tokens at or above it.",
            _samples_from(_first_k_ids)),
    Mistake("top-p dropped the token that crosses the threshold. Keep the smallest set of most likely tokens whose "
            "probabilities add up to AT LEAST top_p: a token stays when the mass of the tokens ranked above it is "
            "still below top_p (cumsum - probs < top_p).", _samples_from(_top_p_without_crossing_token)),
    Mistake("top-p added up the probabilities in the vocabulary's order: sort them from the most likely token "
            "down first (torch.sort(..., descending=True)), then take the cumulative sum.",
            _samples_from(_top_p_in_vocabulary_order)),
    Mistake("these ids are ranks in the sorted order, not token ids: after sampling a position of the sorted "
            "probabilities, map it back with the indices the sort returned (sorted_indices.gather(...)).",
            _samples_from(_ranks_not_ids)),
    Mistake("top-p ran before top-k: apply top-k first, then top-p to the probabilities of the tokens top-k "
            "kept (renormalised), as filter_logits does.", _samples_from(_top_p_before_top_k)),
    Mistake("all kept tokens came out equally often: sample them in proportion to their probabilities "
            "(softmax of the filtered logits), not uniformly.", _samples_from(_uniform_over_kept)),
)


def _sampling_case(description: str, rows: torch.Tensor, *, temperature: float | None = None,
                   top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                   call_twice: bool = False) -> Case:
    """``rows`` (V,) or (G, V) logits repeated to 20 000 rows, and the sampling settings."""
    rows = rows.reshape(-1, rows.shape[-1])
    logits = rows.repeat(_N_ROWS // len(rows), 1)  # (20 000, V): row i holds group i % G
    kwargs: dict[str, Any] = {"generator": torch.Generator().manual_seed(2000 + seed)}
    for name, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p)):
        if value is not None:
            kwargs[name] = value
    return Case(description, (logits,), kwargs, call_twice=call_twice)


def _settings(case: Case) -> dict:
    return {name: case.kwargs[name] for name in ("temperature", "top_k", "top_p") if name in case.kwargs}


def _verify_sampling(received: Any, case: Case) -> str | None:
    """The ``verify`` judge of ``sample_next_token``: None, or what is wrong with the sampled ids (B,).

    Right means one integer id per row, exactly the allowed tokens coming
    out, each about as often as its probability.
    """
    return _form_problem(received, case) or _frequency_problem(received, case, _distribution)


def _form_problem(received: Any, case: Case) -> str | None:
    """What keeps ``received`` from being one token id per row of the case's logits (B, V), or None."""
    B, V = case.args[0].shape
    if not isinstance(received, torch.Tensor):
        return f"expected a tensor of {B} token ids, received {_describe(received)}"
    if received.shape != (B,):
        return f"expected shape ({B},), one id per row, received shape {tuple(received.shape)}"
    if received.is_floating_point() or received.dtype == torch.bool:
        return f"expected integer token ids, received dtype {received.dtype}"
    outside = (received < 0) | (received >= V)
    if outside.any():
        return f"some ids lie outside 0..{V - 1}: {sorted(set(received[outside].tolist()))[:6]}"
    return None


def _frequency_problem(ids: torch.Tensor, case: Case, distribution: Callable) -> str | None:
    """What differs between how often each id (B,) came out and the probabilities of ``distribution``, or None."""
    logits = case.args[0]
    groups = _groups(logits)
    measured = _frequencies(ids, len(groups), logits.shape[1])
    return _compare_frequencies(measured, distribution(groups, **_settings(case)), len(logits) // len(groups))


def _groups(logits: torch.Tensor) -> torch.Tensor:
    """The G rows that a case's logits repeat, in order: (G, V)."""
    period = 1
    while period < len(logits) and not torch.equal(logits[period], logits[0]):
        period += 1
    return logits[:period]


def _frequencies(ids: torch.Tensor, n_groups: int, V: int) -> torch.Tensor:
    """Share of every token among the rows of each group: (G, V)."""
    counts = torch.zeros(n_groups, V)
    group_of_row = torch.arange(len(ids)) % n_groups
    counts.index_put_((group_of_row, ids.long()), torch.ones(len(ids)), accumulate=True)
    return counts / counts.sum(dim=-1, keepdim=True)


def _compare_frequencies(measured: torch.Tensor, expected: torch.Tensor, n_per_group: int) -> str | None:
    """What differs between measured and expected shares, or None: support first, then frequencies."""
    for g, (freq, probs) in enumerate(zip(measured, expected)):
        label = f"row group {g}: " if len(expected) > 1 else ""
        forbidden = ((freq > 0) & (probs == 0)).nonzero().flatten().tolist()
        # A token expected more than 20 times is missing by bad luck with probability below e^-20.
        missing = ((freq == 0) & (probs * n_per_group > 20)).nonzero().flatten().tolist()
        if forbidden or missing:
            kept = (probs > 0).nonzero().flatten().tolist()
            sampled = (freq > 0).nonzero().flatten().tolist()
            return (f"{label}tokens {kept} may come out, your function gave tokens {sampled}"
                    + (f" (never {missing})" if missing else "") + (f" (forbidden: {forbidden})" if forbidden else ""))
        tolerance = torch.tensor([_tolerance(p, n_per_group) for p in probs.tolist()])
        if ((freq - probs).abs() > tolerance).any():
            return (f"{label}frequencies of the tokens differ from their probabilities:\n"
                    f"expected {_shares(probs)}\n"
                    f"measured {_shares(freq)}")
    return None


def _shares(probs: torch.Tensor) -> str:
    return "[" + ", ".join(f"{p:.3f}" for p in probs.tolist()) + "]"


_SAMPLING_CASES = (
    _sampling_case("20 000 rows of the same 8 logits, default settings: plain sampling", _LOGITS),
    _sampling_case("temperature=0.5 (sharper)", _LOGITS, temperature=0.5, seed=1),
    _sampling_case("temperature=2.0 (flatter)", _LOGITS, temperature=2.0, seed=2),
    _sampling_case("top_k=3", _LOGITS, top_k=3, seed=3),
    _sampling_case("top_k=1 (only the most likely token)", _LOGITS, top_k=1, seed=4),
    _sampling_case("top_p=0.6 on probabilities 0.4, 0.3, 0.2, 0.1 (the token crossing 0.6 stays)",
                   _QUARTER_LOGITS, top_p=0.6, seed=5),
    _sampling_case("top_p=0.95 on the 8 logits", _LOGITS, top_p=0.95, seed=6),
    _sampling_case("temperature=0.7, top_k=5 and top_p=0.9 together", _LOGITS, temperature=0.7, top_k=5,
                   top_p=0.9, seed=7),
    _sampling_case("top_p=0.6 on rows of two kinds: probabilities 0.4, 0.3, 0.2, 0.1, then 0.1, 0.3, 0.2, 0.4",
                   torch.stack([_QUARTER_LOGITS, _QUARTER_LOGITS[[3, 1, 2, 0]]]), top_p=0.6, seed=11),
    _sampling_case("top_k=3, then top_p=0.6 on the 3 tokens kept (probabilities 0.35, 0.2, 0.15, 0.1, ...)",
                   torch.tensor([0.35, 0.2, 0.15, 0.1, 0.08, 0.06, 0.04, 0.02]).log(), top_k=3, top_p=0.6,
                   seed=12),
    _sampling_case("rows of two kinds in one batch (the 8 logits, then reversed), top_k=2",
                   torch.stack([_LOGITS, _LOGITS.flip(0)]), top_k=2, seed=8),
    _sampling_case("logits around 1000 (softmax must not overflow)", _LOGITS + 1000, seed=9),
    _sampling_case("called twice with generators seeded alike: the same ids", _LOGITS, seed=10, call_twice=True),
)


def check_sample_next_token(learner_fn: Any) -> CheckResult:
    """Check exercise 06: ``sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None)``.

    logits (B, V) -> one sampled id per row (B,). Every case repeats one or
    two rows of logits 20 000 times and compares, token by token, how often
    each id came out with the probability it should have after the
    temperature, top-k and top-p: exactly the allowed tokens must appear,
    each about as often as its probability (± 5 standard deviations).
    """
    return check_function(learner_fn, exercise="06.sample_next_token", verify=_verify_sampling,
                          cases=_SAMPLING_CASES, mistakes=_SAMPLING_MISTAKES)


@torch.no_grad()
def _generate_greedy_reference(model, input_ids, max_new_tokens, eos_id=None):
    return generate(model, input_ids, max_new_tokens, greedy=True, use_cache=False, eos_id=eos_id)


def _greedy_with_eos_variant(*, stop_when: str = "all", pad: bool = True, check_before_append: bool = False
                             ) -> Callable:
    """Greedy generation that mishandles ``eos_id``: stops at the first finished row, never stops, never pads,
    or stops before appending the token that finished the last row."""

    @torch.no_grad()
    def generate_greedy(model, input_ids, max_new_tokens, eos_id=None):
        sequence = input_ids
        finished = torch.zeros(len(input_ids), dtype=torch.bool)
        for _ in range(max_new_tokens):
            next_ids = model(sequence)[:, -1].argmax(dim=-1)
            if eos_id is not None and pad:
                next_ids = next_ids.masked_fill(finished, eos_id)
            if eos_id is not None:
                finished |= next_ids == eos_id
            if check_before_append and eos_id is not None and finished.all():
                break
            sequence = torch.cat([sequence, next_ids[:, None]], dim=1)
            stop = {"all": finished.all(), "any": finished.any(), "never": False}[stop_when]
            if eos_id is not None and stop:
                break
        return sequence

    return generate_greedy


@torch.no_grad()
def _greedy_reading_the_last_token_only(model, input_ids, max_new_tokens):
    sequence = input_ids
    for _ in range(max_new_tokens):
        next_ids = model(sequence[:, -1:])[:, -1].argmax(dim=-1, keepdim=True)
        sequence = torch.cat([sequence, next_ids], dim=1)
    return sequence


@torch.no_grad()
def _greedy_from_the_first_position(model, input_ids, max_new_tokens):
    sequence = input_ids
    for _ in range(max_new_tokens):
        next_ids = model(sequence)[:, 0].argmax(dim=-1, keepdim=True)
        sequence = torch.cat([sequence, next_ids], dim=1)
    return sequence


def _only_new_tokens(received: Any, case: Case) -> bool:
    B, _ = case.args[1].shape
    return isinstance(received, torch.Tensor) and tuple(received.shape) == (B, case.args[2])


def _off_by_one(received: Any, case: Case) -> bool:
    B, T = case.args[1].shape
    return isinstance(received, torch.Tensor) and received.dim() == 2 and received.shape[0] == B \
        and abs(received.shape[1] - (T + case.args[2])) == 1


def _greedy_case(description: str, rows: list[list[int]], max_new_tokens: int, seed: int,
                 eos_id: int | None = None) -> Case:
    return Case(description, (_tiny_model(GPT, seed), torch.tensor(rows), max_new_tokens),
                {} if eos_id is None else {"eos_id": eos_id})


_GREEDY_CASES = (
    _greedy_case("one prompt of 2 tokens, 6 new tokens", [[5, 9]], 6, seed=5),
    _greedy_case("one prompt of 4 tokens, 8 new tokens", [[5, 9, 2, 7]], 8, seed=1),
    _greedy_case("a batch of 3 prompts of 2 tokens, 5 new tokens", [[5, 8], [5, 3], [5, 11]], 5, seed=2),
    _greedy_case("max_new_tokens=0: the prompt comes back unchanged", [[5, 9, 2]], 0, seed=3),
    _greedy_case("up to the model's max_len (16 positions): 3 + 13 tokens", [[5, 6, 7]], 13, seed=4),
    # With these weights, the three rows write eos_id=10 after 2, 2 and 1 steps; then the loop stops.
    _greedy_case("3 prompts, eos_id=10: every row has finished after 2 of the 8 steps",
                 [[5, 8], [5, 3], [5, 11]], 8, seed=9, eos_id=10),
    # Here the first two rows write eos_id=1 at once, the third never: the loop runs all 6 steps.
    _greedy_case("3 prompts, eos_id=1: two rows finish at the first step, the third never",
                 [[5, 8], [5, 3], [5, 11]], 6, seed=8, eos_id=1),
)

_GREEDY_MISTAKES = (
    Mistake("you returned only the new tokens: return the prompt followed by them, shape (B, T + max_new_tokens).",
            _only_new_tokens),
    Mistake("the answer has one token too many or too few: the loop runs max_new_tokens times and appends one "
            "token each time.", _off_by_one),
    Mistake("the model read only the last token at every step: without a cache it must read the whole sequence "
            "so far, model(sequence), so that each step sees the prompt and every token written.",
            same_output_as(_greedy_reading_the_last_token_only)),
    Mistake("the next token was chosen from the scores of the first position; the scores of the NEXT token are "
            "those of the last position: model(sequence)[:, -1].", same_output_as(_greedy_from_the_first_position)),
    Mistake("your answer holds scores, not token ids: choose the most likely token with .argmax(dim=-1).",
            _floating),
    Mistake("the loop stopped one step early: as soon as ONE row wrote eos_id (the others have not finished), "
            "or before appending the eos_id that finished the last row. Append next_ids first, then stop only "
            "when every row has written eos_id (keep a (B,) bool tensor `finished`, stop when finished.all()).",
            same_output_as_any_of(_greedy_with_eos_variant(stop_when="any"),
                                  _greedy_with_eos_variant(check_before_append=True))),
    Mistake("a row that has written eos_id must write only eos_id from then on (its story is over); yours kept "
            "writing. Replace the next token of finished rows: next_ids.masked_fill(finished, eos_id).",
            same_output_as(_greedy_with_eos_variant(pad=False))),
    Mistake("once every row has written eos_id the loop must stop: the rest would be nothing but eos_id. "
            "Break out of the loop when finished.all().",
            same_output_as(_greedy_with_eos_variant(stop_when="never"))),
)


def check_generate_greedy(learner_fn: Any) -> CheckResult:
    """Check exercise 06: ``generate_greedy(model, input_ids, max_new_tokens, eos_id=None)``.

    input_ids (B, T) -> (B, T + n): the prompt, then at every step the most
    likely next token after reading the whole sequence so far. Without
    eos_id, n = max_new_tokens. With it (the batched version of the lesson's
    loop), a row that has written eos_id writes only eos_id from then on,
    and the loop stops early once every row has written it, as course_lib's
    ``generate``. The cases use tiny GPTs: single prompts, a batch, no new
    token, generation up to the model's max_len, and batches whose rows
    finish at different steps.
    """
    return check_function(learner_fn, exercise="06.generate_greedy", reference=_generate_greedy_reference,
                          cases=_GREEDY_CASES, mistakes=_GREEDY_MISTAKES)
