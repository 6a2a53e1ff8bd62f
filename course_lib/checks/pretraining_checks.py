"""Checks of exercise 05: BERT's masking recipe and filling its blanks.

``fill_masks`` is deterministic: its check, at the end of this module,
compares with a reference exactly, like every other check of the course.

``mask_tokens`` is random, so no single output is *the* answer: two correct
implementations that draw their random numbers in another order return
different tensors. Its check never compares tensors exactly. It calls the
learner's function on many tokens (20 000 positions) with a seeded generator
and compares what comes out with what the recipe promises: which positions
were chosen, and what became of them (``[MASK]``, a random token,
unchanged), as shares with tolerances.

A tolerance is five standard deviations of the measured share (plus a little
slack), so a correct implementation fails by bad luck about once in a million
cases, while every known mistake misses by dozens of standard deviations.
The generators are seeded, so a verdict is the same on every run. These
measurements are the ``verify`` judges that ``check_function`` runs instead
of a comparison with a reference. The checks of exercise 06 (sampling and
greedy generation) are in ``generation_checks.py``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from course_lib.checks.framework import Case, CheckResult, Mistake, check_function, same_output_as
from course_lib.models import BERT, TransformerConfig
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
    "unchanged_unlabelled": ("the chosen tokens left unchanged got the label -100: every chosen token keeps its "
                             "label, the 10% left as they were too. The model must still predict them; otherwise "
                             "it learns that a token it can see is never asked about."),
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
        unchanged_but_chosen = int((chosen & ~changed).sum()) / max(n_chosen, 1)
        if (abs(chosen_share - 0.9 * mask_prob) <= _tolerance(0.9 * mask_prob, n_ordinary)
                and unchanged_but_chosen < 0.02):
            # About 90% of mask_prob chosen, and none of them kept its id: the unchanged tenth lost its label.
            return details, "unchanged_unlabelled"
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
            # [MASK] and random in the recipe's ratio of 8 to 1: the unchanged tenth was chosen, then unlabelled.
            in_ratio = abs(shares["[MASK]"][0] - 8 / 9) <= _tolerance(8 / 9, n_chosen)
            return details, "unchanged_unlabelled" if in_ratio else "no_unchanged"
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
