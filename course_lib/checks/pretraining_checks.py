"""Checks of exercises 05 and 06: BERT's masking recipe and blanks, sampling and greedy generation.

``fill_masks`` and ``generate_greedy`` are deterministic: their checks, at
the end of this module, compare with a reference exactly, like every other
check of the course.

``mask_tokens`` and ``sample_next_token`` are random, so no single output is
*the* answer: two correct implementations that draw their random numbers in
another order return different tensors. Their checks never compare tensors
exactly. They call the learner's function on many tokens (20 000 positions)
or many rows (20 000 copies of the same logits) with a seeded generator and
compare what comes out with what the recipe promises:

* ``mask_tokens``: which positions were chosen, and what became of them
  (``[MASK]``, a random token, unchanged), as shares with tolerances;
* ``sample_next_token``: which tokens can come out at all (exactly the
  allowed set) and how often each does (its probability).

A tolerance is five standard deviations of the measured share (plus a little
slack), so a correct implementation fails by bad luck about once in a million
cases, while every known mistake misses by dozens of standard deviations.
The generators are seeded, so a verdict is the same on every run. These
measurements are the ``verify`` judges that ``check_function`` runs instead
of a comparison with a reference.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from course_lib.checks.framework import Case, CheckResult, Mistake, check_function, same_output_as
from course_lib.generation import filter_logits, generate
from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.objectives import IGNORE_INDEX

# What the masking judge found wrong in an answer: the details to show, and the name of the known
# mistake it shows (a key of _MASK_HINTS), or "" when it shows none.
Finding = tuple[str, str]


def _tolerance(p: float, n: int) -> float:
    """Five standard deviations of a share measured on ``n`` draws of probability ``p``, plus slack."""
    return 5 * math.sqrt(p * (1 - p) / max(n, 1)) + 0.005


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


# ---------------------------------------------------------------------------
# Exercise 05.mask_tokens
# ---------------------------------------------------------------------------


def _story_like_ids(n_rows: int, length: int, vocab_size: int, special_ids: Sequence[int], seed: int) -> torch.Tensor:
    """(n_rows, length) ids shaped like a BERT batch: [CLS], ordinary ids, [SEP], then [PAD] to the end.

    The first three special ids play [PAD], [CLS] and [SEP]; rows have random
    lengths, so every batch holds all three.
    """
    pad, cls, sep = special_ids[:3]
    generator = torch.Generator().manual_seed(seed)
    ordinary = torch.tensor([i for i in range(vocab_size) if i not in set(special_ids)])
    ids = ordinary[torch.randint(len(ordinary), (n_rows, length), generator=generator)]
    ends = torch.randint(length // 2, length, (n_rows,), generator=generator)  # position of [SEP]
    positions = torch.arange(length)
    ids[:, 0] = cls
    ids[positions[None, :] == ends[:, None]] = sep
    ids[positions[None, :] > ends[:, None]] = pad
    return ids


def _masking_case(description: str, *, mask_prob: float | None, vocab_size: int = 93,
                  special_ids: Sequence[int] = (0, 1, 2, 3, 4, 5, 6), mask_id: int = 4, seed: int = 0,
                  input_ids: torch.Tensor | None = None, call_twice: bool = False) -> Case:
    if input_ids is None:
        input_ids = _story_like_ids(200, 100, vocab_size, special_ids, seed)
    kwargs = dict(mask_id=mask_id, vocab_size=vocab_size, special_ids=list(special_ids),
                  generator=torch.Generator().manual_seed(1000 + seed))
    if mask_prob is not None:
        kwargs["mask_prob"] = mask_prob
    return Case(description, (input_ids,), kwargs, call_twice=call_twice)


_MASK_HINTS = {
    "not_a_pair": "return two tensors, (inputs, labels): the corrupted ids the model reads and the ids it must predict.",
    "labels_everywhere": ("labels must be -100 wherever the token was not chosen: the loss only scores the chosen "
                          "~15% (torch.where(chosen, input_ids, -100))."),
    "corrupted_labels": ("the labels hold the corrupted inputs; they must hold the ORIGINAL ids, the words the "
                         "model has to recover."),
    "special_chosen": ("special tokens ([CLS], [SEP], [PAD], ...) were chosen or changed: never select a position "
                       "whose id is in special_ids (torch.isin(input_ids, torch.tensor(special_ids)))."),
    "changed_unchosen": ("a token that was not chosen (label -100) was changed: only chosen positions may be "
                         "replaced, and every replaced position needs its label."),
    "mask_prob_ignored": ("the share of chosen tokens does not follow mask_prob: compare one uniform draw per "
                          "position with mask_prob (torch.rand(...) < mask_prob), not with a fixed 0.15."),
    "everything_chosen": ("every ordinary token was chosen: each one should be chosen with probability "
                          "mask_prob only (torch.rand(...) < mask_prob)."),
    "always_mask": ("every chosen token became [MASK]: the recipe replaces 80% of them with [MASK], 10% with a "
                    "random token and leaves 10% unchanged."),
    "no_unchanged": ("no chosen token was left unchanged: 10% of the chosen tokens must keep their own id "
                     "(while still being predicted)."),
    "no_random": ("no chosen token was replaced by a random token: 10% of them must get a random ordinary id."),
    "wrong_shares": ("among the chosen tokens, 80% become [MASK], 10% a random token, 10% stay unchanged. Draw "
                     "one more uniform number u per position: u < 0.8 -> [MASK], 0.8 <= u < 0.9 -> random, "
                     "else unchanged."),
    "special_random": ("a random replacement was a special token or an id outside the vocabulary: draw "
                       "replacements among the ordinary ids only (ids below vocab_size that are not in "
                       "special_ids)."),
    "not_uniform": ("the random replacements use only a few ids: draw them uniformly among all ordinary ids."),
}


def _verify_masking(received: Any, case: Case) -> str | None:
    """The ``verify`` judge of ``mask_tokens``: None, or what is wrong with ``(inputs, labels)``."""
    finding = _judge_masking(received, case)
    return None if finding is None else finding[0]


def _found_by_the_masking_judge(mistake: str) -> Callable[[Any, Case], bool]:
    """A ``shows_in`` test: the masking judge names ``mistake`` (a key of ``_MASK_HINTS``) in the answer."""
    def shows_in(received: Any, case: Case) -> bool:
        finding = _judge_masking(received, case)
        return finding is not None and finding[1] == mistake

    return shows_in


def _judge_masking(received: Any, case: Case) -> Finding | None:
    """Judge ``(inputs, labels)`` against the 80/10/10 recipe: None, or the first problem found.

    The problems are looked for in order, from the form of the answer to the
    shares, and each names the known mistake it reveals: the judge and the
    hints come from this one walk through the answer.
    """
    original = case.args[0]
    mask_id, vocab_size = case.kwargs["mask_id"], case.kwargs["vocab_size"]
    special_ids = case.kwargs["special_ids"]
    mask_prob = case.kwargs.get("mask_prob", 0.15)

    if not isinstance(received, (tuple, list)) or len(received) != 2:
        return f"expected a tuple (inputs, labels), received {_describe(received)}", "not_a_pair"
    for name, tensor in zip(("inputs", "labels"), received):
        if not isinstance(tensor, torch.Tensor):
            return f"{name} is {_describe(tensor)}, expected a tensor", "not_a_pair"
        if tensor.shape != original.shape:
            return f"{name} has shape {tuple(tensor.shape)}, expected {tuple(original.shape)} like input_ids", ""
        if tensor.is_floating_point() or tensor.dtype == torch.bool:
            return f"{name} has dtype {tensor.dtype}, expected integer ids like input_ids ({original.dtype})", ""
    inputs, labels = (tensor.long() for tensor in received)

    is_special = torch.isin(original, torch.tensor(special_ids))
    chosen = labels != IGNORE_INDEX
    changed = inputs != original
    ordinary = ~is_special
    n_ordinary = int(ordinary.sum())

    # Labels: -100 or the original id, and only where something is predicted.
    if chosen.all() and (labels == original).all():
        return (f"no label is -100: labels equal input_ids at all {labels.numel()} positions",
                "labels_everywhere")
    wrong_label = chosen & (labels != original)
    if wrong_label.any():
        details = (f"{int(wrong_label.sum())} labels are neither -100 nor the original id "
                   f"(first at index {_first_index(wrong_label)})")
        corrupted = chosen & changed
        if corrupted.any() and bool((labels[corrupted] == inputs[corrupted]).all()):
            return details, "corrupted_labels"
        return details, ""
    if (is_special & (chosen | changed)).any():
        where = is_special & (chosen | changed)
        return (f"{int(where.sum())} special tokens were chosen or changed (first at index {_first_index(where)})",
                "special_chosen")
    if (changed & ~chosen).any():
        return (f"{int((changed & ~chosen).sum())} positions were changed but have the label -100 "
                f"(first at index {_first_index(changed & ~chosen)})", "changed_unchosen")

    # How many ordinary tokens were chosen: mask_prob of them.
    n_chosen = int(chosen.sum())
    chosen_share = n_chosen / max(n_ordinary, 1)
    if abs(chosen_share - mask_prob) > _tolerance(mask_prob, n_ordinary):
        details = (f"{_percent(chosen_share)} of the {n_ordinary} ordinary tokens were chosen, expected "
                   f"mask_prob = {_percent(mask_prob)} (± {_percent(_tolerance(mask_prob, n_ordinary))})")
        changed_share = int((changed & ordinary).sum()) / max(n_ordinary, 1)
        if chosen_share > 0.99 and abs(changed_share - 0.9 * mask_prob) <= _tolerance(0.9 * mask_prob, n_ordinary):
            # About mask_prob of the tokens were replaced as they should be, but every one got a label.
            return details, "labels_everywhere"
        return details, "everything_chosen" if chosen_share > 0.99 else "mask_prob_ignored"
    if n_chosen == 0:
        return None  # nothing to replace (a batch of special tokens only)

    # What became of the chosen tokens: 80% [MASK], 10% random, 10% unchanged.
    ordinary_ids = [i for i in range(vocab_size) if i not in set(special_ids)]
    became_mask = chosen & (inputs == mask_id)
    became_random = chosen & changed & ~became_mask
    random_ids = inputs[became_random]
    not_ordinary = sorted(set(random_ids.tolist()) - set(ordinary_ids))
    if not_ordinary:
        return (f"some random replacements are special ids or lie outside 0..{vocab_size - 1}: {not_ordinary[:6]}",
                "special_random")
    # A uniform random replacement equals the original token once in len(ordinary_ids) draws.
    same_by_chance = 0.1 / len(ordinary_ids)
    shares = {"[MASK]": (int(became_mask.sum()) / n_chosen, 0.8),
              "random": (int(became_random.sum()) / n_chosen, 0.1 - same_by_chance),
              "unchanged": (int((chosen & ~changed).sum()) / n_chosen, 0.1 + same_by_chance)}
    off = {name: (share, p) for name, (share, p) in shares.items() if abs(share - p) > _tolerance(p, n_chosen)}
    if off:
        details = f"of the {n_chosen} chosen tokens: " + ", ".join(
            f"{_percent(share)} {name} (expected {_percent(p)})" for name, (share, p) in shares.items())
        if shares["[MASK]"][0] > 0.99:
            return details, "always_mask"
        if shares["unchanged"][0] < 0.01:
            return details, "no_unchanged"
        if shares["random"][0] < 0.01:
            return details, "no_random"
        return details, "wrong_shares"
    # Uniform over the ordinary ids: with a few hundred draws, most ids turn up.
    expected_distinct = len(ordinary_ids) * (1 - math.exp(-len(random_ids) / len(ordinary_ids)))
    if len(random_ids) >= 50 and len(set(random_ids.tolist())) < expected_distinct / 2:
        return (f"the {len(random_ids)} random replacements use only {len(set(random_ids.tolist()))} different "
                f"ids (about {expected_distinct:.0f} expected)", "not_uniform")
    return None


def _first_index(where: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in where.nonzero()[0])


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)} items"
    return f"a {type(x).__name__}"


_MASKING_CASES = (
    _masking_case("200 rows x 100 positions ([CLS], ids, [SEP], [PAD]...), vocab_size=93, mask_prob=0.15",
                  mask_prob=0.15),
    _masking_case("the same kind of batch without mask_prob (the default, 0.15)", mask_prob=None, seed=1),
    _masking_case("200 x 100 positions, mask_prob=0.3", mask_prob=0.3, seed=2),
    _masking_case("200 x 100 positions, mask_prob=0.05", mask_prob=0.05, seed=3),
    _masking_case("vocab_size=30 with special_ids [0, 1, 2, 3, 29] (mask_id=3), mask_prob=0.5", mask_prob=0.5,
                  vocab_size=30, special_ids=(0, 1, 2, 3, 29), mask_id=3, seed=4),
    _masking_case("a batch of [CLS] and padding only: nothing can be chosen", mask_prob=0.5,
                  input_ids=torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0]])),
    _masking_case("called twice with generators seeded alike: the same answer", mask_prob=0.15, seed=5,
                  call_twice=True),
)

_MASKING_MISTAKES = tuple(Mistake(hint, _found_by_the_masking_judge(mistake)) for mistake, hint in _MASK_HINTS.items())


def check_mask_tokens(learner_fn: Any) -> CheckResult:
    """Check exercise 05: ``mask_tokens(input_ids, *, mask_id, vocab_size, special_ids, mask_prob=0.15, generator=None)``.

    The function returns ``(inputs, labels)``: each ordinary token is chosen
    with probability ``mask_prob``; a chosen token becomes ``[MASK]`` (80%),
    a random ordinary token (10%) or stays (10%); labels hold the original
    id where a token was chosen and -100 elsewhere; special tokens are never
    chosen. The cases measure these shares on 20 000 positions for several
    values of ``mask_prob`` and vocabularies, and call the function twice
    with generators seeded alike to see that it uses ``generator``.
    """
    return check_function(learner_fn, exercise="05.mask_tokens", verify=_verify_masking, cases=_MASKING_CASES,
                          mistakes=_MASKING_MISTAKES)


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
    Mistake("top-p dropped the token that crosses the threshold. Keep the smallest set of most likely tokens whose "
            "probabilities add up to AT LEAST top_p: a token stays when the mass of the tokens ranked above it is "
            "still below top_p (cumsum - probs < top_p).", _samples_from(_top_p_without_crossing_token)),
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



# ---------------------------------------------------------------------------
# Exercises 05.fill_masks and 06.generate_greedy: using a trained model
# ---------------------------------------------------------------------------
# Both are deterministic, so they are compared exactly with a reference, on
# tiny models whose weights are scaled up: their scores differ clearly, and
# rounding can never change which token is the most likely.


def _tiny_model(model_class: type, seed: int) -> torch.nn.Module:
    """A 2-block model over 12 token ids, in eval mode, with decisive scores."""
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=12, max_len=16, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0)
    model = model_class(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.mul_(25)  # standard deviation 0.5 instead of 0.02
    return model


_TINY_MASK_ID = 4  # [MASK] has id 4, as in the story world's tokenizer


@torch.no_grad()
def _fill_masks_reference(model, input_ids, mask_id, attention_mask=None):
    predictions = model(input_ids, attention_mask).argmax(dim=-1)  # (B, T): every blank from the same pass
    return torch.where(input_ids == mask_id, predictions, input_ids)


@torch.no_grad()
def _fill_every_position(model, input_ids, mask_id, attention_mask=None):
    return model(input_ids, attention_mask).argmax(dim=-1)


@torch.no_grad()
def _fill_one_after_another(model, input_ids, mask_id, attention_mask=None):
    """Fill the blanks left to right, each pass seeing the blanks filled before."""
    filled = input_ids.clone()
    for position in range(input_ids.shape[1]):
        blank = filled[:, position] == mask_id
        if blank.any():
            prediction = model(filled, attention_mask)[:, position].argmax(dim=-1)
            filled[:, position] = torch.where(blank, prediction, filled[:, position])
    return filled


@torch.no_grad()
def _fill_ignoring_padding(model, input_ids, mask_id, attention_mask=None):
    return _fill_masks_reference(model, input_ids, mask_id)


def _floating(received: Any, case: Case) -> bool:
    return isinstance(received, torch.Tensor) and received.is_floating_point()


def _one_row_per_story_and_token(received: Any, case: Case) -> bool:
    B, T = case.args[1].shape
    return isinstance(received, torch.Tensor) and tuple(received.shape) == (B, case.args[0].config.vocab_size)


def _fill_case(description: str, rows: list[list[int]], padded_from: list[int] | None = None, seed: int = 0) -> Case:
    input_ids = torch.tensor(rows)
    args: tuple = (_tiny_model(BERT, seed), input_ids, _TINY_MASK_ID)
    if padded_from is not None:
        positions = torch.arange(input_ids.shape[1])
        args += (positions[None, :] < torch.tensor(padded_from)[:, None],)
    return Case(description, args)


_FILL_CASES = (
    _fill_case("one story of 6 tokens with one [MASK]", [[2, 7, 4, 9, 10, 3]]),
    _fill_case("two stories of 7 tokens, three [MASK] in all", [[2, 4, 8, 4, 11, 6, 3], [2, 9, 7, 10, 4, 5, 3]],
               seed=2),
    _fill_case("three [MASK] side by side", [[2, 8, 4, 4, 4, 9, 3]], seed=1),
    _fill_case("no [MASK] at all: the ids come back unchanged", [[2, 8, 9, 10, 3]], seed=3),
    _fill_case("two stories, the second padded with id 0 after 4 tokens (attention_mask given)",
               [[2, 4, 8, 9, 11, 6, 3], [2, 9, 4, 3, 0, 0, 0]], padded_from=[7, 4], seed=4),
)

_FILL_MISTAKES = (
    Mistake("your answer holds scores, not token ids: take the argmax over the vocabulary (the last dimension) "
            "and put the winning ids at the [MASK] positions.", _floating),
    Mistake("the argmax was taken over the wrong dimension: the scores have shape (B, T, vocab_size), and "
            "the most likely token at each position is .argmax(dim=-1).", _one_row_per_story_and_token),
    Mistake("every position was replaced by BERT's prediction: only the [MASK] positions change, keep the "
            "other ids as they are (torch.where(input_ids == mask_id, predictions, input_ids)).",
            same_output_as(_fill_every_position)),
    Mistake("the blanks were filled one after another, each pass seeing the earlier fills; fill them all from "
            "ONE pass over the input, as BERT was trained to do.", same_output_as(_fill_one_after_another)),
    Mistake("padding changed the predictions: pass attention_mask to the model, model(input_ids, attention_mask).",
            same_output_as(_fill_ignoring_padding)),
)


def check_fill_masks(learner_fn: Any) -> CheckResult:
    """Check exercise 05: ``fill_masks(model, input_ids, mask_id, attention_mask=None)``.

    input_ids (B, T) with some ids equal to mask_id -> (B, T) ids where
    every mask_id is replaced by BERT's most likely token at that position,
    all blanks predicted from one pass, every other id unchanged. The cases
    use tiny BERTs: one blank, several, side by side, none, and padding.
    """
    return check_function(learner_fn, exercise="05.fill_masks", reference=_fill_masks_reference,
                          cases=_FILL_CASES, mistakes=_FILL_MISTAKES)


@torch.no_grad()
def _generate_greedy_reference(model, input_ids, max_new_tokens, eos_id=None):
    return generate(model, input_ids, max_new_tokens, greedy=True, use_cache=False, eos_id=eos_id)


def _greedy_with_eos_variant(*, stop_when: str = "all", pad: bool = True) -> Callable:
    """Greedy generation that mishandles ``eos_id``: stops at the first finished row, never stops, or never pads."""

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
    Mistake("the loop stopped as soon as ONE row wrote eos_id; the others have not finished. Stop when every "
            "row has written it (keep a (B,) bool tensor `finished`, and stop when finished.all()).",
            same_output_as(_greedy_with_eos_variant(stop_when="any"))),
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
