"""Checks of exercises 07: a whole story scored by GPT (its log-probability) and by BERT (pseudo-log-likelihood).

Both exercises turn a model's per-token predictions into one number per
story, the tool behind cloze with GPT and behind judging a story with BERT.
Their mistakes give plausible numbers: a score that counts padding, or
adds probabilities instead of log-probabilities, still ranks some stories
right. Each known mistake is a small wrong implementation here; when the
learner's answer equals what it returns, the hint names the mistake.

``gpt_sentence_score`` is checked on tiny random GPTs. ``pseudo_log_likelihood``
is checked on the shipped ``tiny-bert`` and real stories (the contract of the
exercise asks for it); the model is loaded when the check first runs, not
when ``course_lib.checks`` is imported.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Sequence

import torch

from course_lib.checks.framework import Case, CheckResult, Mistake, check_function, same_output_as
from course_lib.hub import load_pretrained
from course_lib.models import GPT, TransformerConfig
from course_lib.objectives import gpt_token_losses, masked_one_at_a_time_log_probs

# ---------------------------------------------------------------------------
# Exercise 07.gpt_sentence_score: log p(story) = sum over t of log p(token t+1 | tokens 0..t)
# ---------------------------------------------------------------------------


def _gpt_sentence_score_reference(model, input_ids, attention_mask):
    return -gpt_token_losses(model, input_ids, attention_mask).sum(dim=1)  # (B,)


def _score_variant(*, shift: bool = True, real_only: bool = True, log: bool = True, normalise: bool = True,
                   reduce: str = "sum", sign: float = 1.0, pass_mask: bool = True,
                   mask_of_the_inputs: bool = False) -> Callable:
    """GPT's score of every row with one known mistake switched on.

    Whether the model is given the mask changes nothing at the real
    positions of a right-padded batch, only at the padded ones: a mistake
    that reads those is tried both ways (``pass_mask``).
    """

    @torch.no_grad()
    def score(model, input_ids, attention_mask):
        mask = attention_mask.bool()
        model_mask = mask if pass_mask else torch.ones_like(mask)
        if shift:
            counted = mask[:, :-1] if mask_of_the_inputs else mask[:, 1:]
            logits, targets = model(input_ids[:, :-1], model_mask[:, :-1]), input_ids[:, 1:]
        else:
            logits, targets, counted = model(input_ids, model_mask), input_ids, mask
        scores = logits.log_softmax(dim=-1) if normalise else logits
        picked = scores.gather(-1, targets[..., None])[..., 0]  # (B, T')
        if not log:
            picked = picked.exp()
        if not real_only:
            counted = torch.ones_like(counted)
        total = (picked * counted).sum(dim=1)
        if reduce == "mean":
            total = total / counted.sum(dim=1)
        return sign * total

    return score


def _tiny_gpt(seed: int) -> GPT:
    config = TransformerConfig(vocab_size=12, max_len=16, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.mul_(25)  # decisive predictions: every mistake moves the score by far more than rounding
    return model


def _right_padded(rows: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids padded with ``pad_id`` after each row, and the (B, T) bool mask of the real ids."""
    T = max(len(row) for row in rows)
    ids = torch.tensor([list(row) + [pad_id] * (T - len(row)) for row in rows])
    mask = torch.tensor([[True] * len(row) + [False] * (T - len(row)) for row in rows])
    return ids, mask


def _score_case(description: str, rows: Sequence[Sequence[int]], seed: int, mask_as_int: bool = False) -> Case:
    ids, mask = _right_padded(rows)
    return Case(description, (_tiny_gpt(seed), ids, mask.long() if mask_as_int else mask), atol=1e-4)


_SCORE_CASES = (
    _score_case("one story of 6 tokens ([BOS] first), no padding", [[5, 7, 9, 8, 10, 6]], seed=50),
    _score_case("3 stories of 7, 5 and 3 tokens, padded with 0 after the end",
                [[5, 7, 8, 9, 10, 11, 6], [5, 9, 9, 7, 6], [5, 8, 6]], seed=51),
    _score_case("2 stories of 4 and 6 tokens, attention_mask of 0/1 integers", [[5, 10, 7, 6], [5, 8, 11, 9, 7, 6]],
                seed=52, mask_as_int=True),
    _score_case("a story of 2 tokens (one prediction) beside one of 8", [[5, 6], [5, 11, 10, 9, 8, 7, 11, 6]],
                seed=53),
)

_SCORE_MISTAKES = (
    Mistake("the logits at position t were scored against token t, which position t has already read. "
            "Position t predicts token t + 1: score logits[:, :-1] against input_ids[:, 1:].",
            same_output_as(_score_variant(shift=False))),
    *(Mistake("padding was counted: a predicted token that is [PAD] (attention_mask False at t + 1) is not part "
              "of the story and must add nothing.", same_output_as(_score_variant(real_only=False, pass_mask=passed)))
      for passed in (True, False)),
    Mistake("the mask was cut like the inputs, attention_mask[:, :-1], so the prediction of the first [PAD] "
            "was counted. A prediction counts when the token it predicts is real: cut the mask like the "
            "targets, attention_mask[:, 1:].", same_output_as(_score_variant(mask_of_the_inputs=True))),
    Mistake("the answer is the story's loss, -log p: the score is the log-probability itself, "
            "a negative number (minus the sum of the losses).", same_output_as(_score_variant(sign=-1.0))),
    Mistake("the probabilities were added; a story's log-probability is the SUM of the LOG-probabilities of its "
            "tokens (the log of their product): use log_softmax.", same_output_as(_score_variant(log=False))),
    Mistake("the raw logits of the tokens were added: a logit is not a log-probability until the log of the "
            "softmax's denominator is taken off. Use logits.log_softmax(dim=-1).",
            same_output_as(_score_variant(normalise=False))),
    Mistake("the answer is an average per token; the log-probability of a story is the sum over its tokens "
            "(longer stories are less likely, and the score must say so).",
            same_output_as(_score_variant(reduce="mean"))),
)


def check_gpt_sentence_score(learner_fn: Any) -> CheckResult:
    """Check exercise 07: ``gpt_sentence_score(model, input_ids, attention_mask)`` -> (B,).

    The log-probability GPT gives each story after its first token: the
    sum, over the real tokens t + 1 (attention_mask True), of
    log p(input_ids[:, t + 1] | input_ids[:, :t + 1]). The cases use tiny
    GPTs, padded batches, and 0/1 as well as bool masks.
    """
    return check_function(learner_fn, exercise="07.gpt_sentence_score", reference=_gpt_sentence_score_reference,
                          cases=_SCORE_CASES, mistakes=_SCORE_MISTAKES)


# ---------------------------------------------------------------------------
# Exercise 07.pseudo_log_likelihood: mask one token at a time, add the log-probabilities of the originals
# ---------------------------------------------------------------------------


def _scored_positions(input_ids, attention_mask, special_ids) -> torch.Tensor:
    return attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(list(special_ids)))


def _pseudo_log_likelihood_reference(model, input_ids, attention_mask, *, mask_id, special_ids):
    scored = _scored_positions(input_ids, attention_mask, special_ids)
    pairs = scored.nonzero()  # (N, 2): (row, position)
    log_probs = masked_one_at_a_time_log_probs(model, input_ids, attention_mask, mask_id=mask_id, positions=pairs)
    originals = input_ids[pairs[:, 0], pairs[:, 1]]
    terms = log_probs.gather(1, originals[:, None])[:, 0]  # (N,)
    return torch.zeros(len(input_ids)).index_add(0, pairs[:, 0], terms)


def _pll_variant(*, one_at_a_time: bool = True, mask_the_token: bool = True, skip_special: bool = True,
                 real_only: bool = True, pass_mask: bool = True, log: bool = True, reduce: str = "sum",
                 sign: float = 1.0, read_the_mask_id: bool = False) -> Callable:
    """The pseudo-log-likelihood with one known mistake switched on."""

    @torch.no_grad()
    def pll(model, input_ids, attention_mask, *, mask_id, special_ids):
        scored = attention_mask.bool() if real_only else torch.ones_like(input_ids, dtype=torch.bool)
        if skip_special:
            scored = scored & ~torch.isin(input_ids, torch.tensor(list(special_ids)))
        model_mask = attention_mask if pass_mask else None
        if one_at_a_time:
            terms = torch.zeros(input_ids.shape)
            for row in range(len(input_ids)):
                positions = scored[row].nonzero().flatten()  # (n,) the positions scored in this row
                copies = input_ids[row].repeat(len(positions), 1)  # (n, T): one copy per scored position
                if mask_the_token:
                    copies[torch.arange(len(positions)), positions] = mask_id
                copies_mask = None if model_mask is None else model_mask[row].repeat(len(positions), 1)
                log_probs = model(copies, copies_mask)[torch.arange(len(positions)), positions].log_softmax(dim=-1)
                read = torch.full_like(positions, mask_id) if read_the_mask_id else input_ids[row, positions]
                terms[row, positions] = log_probs.gather(1, read[:, None])[:, 0]
        else:  # every scored position masked at once, one pass
            ids = torch.where(scored, mask_id, input_ids)
            log_probs = model(ids, model_mask).log_softmax(dim=-1)
            terms = log_probs.gather(-1, input_ids[..., None])[..., 0] * scored
        if not log:
            terms = terms.exp() * scored
        total = sign * terms.sum(dim=1)
        return total / scored.sum(dim=1) if reduce == "mean" else total

    return pll


_PLL_STORIES = (
    "alice went to the park to play football in the morning .",
    "tom went to the cafe to drink coffee .",
    "zoe went to the beach .",
    "ben went to the library to read a book . then he went home .",
)


@lru_cache(maxsize=1)
def _pll_cases() -> tuple[Case, ...]:
    """The cases, built on first use: they need the shipped tiny-bert."""
    pretrained = load_pretrained("tiny-bert")
    tokenizer, model = pretrained.tokenizer, pretrained.model
    specials = tokenizer.special_ids
    without_pad = [i for i in specials if i != tokenizer.pad_id]

    def case(description: str, stories: Sequence[str], special_ids: Sequence[int], mask_as_int: bool = False):
        batch = tokenizer.encode_batch(list(stories), style="bert")
        mask = batch.attention_mask.long() if mask_as_int else batch.attention_mask
        return Case(description, (model, batch.input_ids, mask),
                    {"mask_id": tokenizer.mask_id, "special_ids": list(special_ids)}, atol=1e-3)

    return (
        case("one story of 12 words, [CLS] ... [SEP], no padding", _PLL_STORIES[:1], specials),
        case("3 stories padded to the longest, every special id in special_ids", _PLL_STORIES[1:], specials),
        case("2 stories padded, attention_mask of 0/1 integers", _PLL_STORIES[:3:2], specials, mask_as_int=True),
        case("2 stories padded, special_ids without [PAD]: padding is known from attention_mask alone",
             _PLL_STORIES[2:], without_pad),
    )


_COUNTED_HINT = (
    "{what} positions were scored. Only the real (attention_mask True), non-special positions are words of the "
    "story: [CLS], [SEP] and [PAD] are not, and padding must add nothing."
)

_PLL_MISTAKES = (
    Mistake("every scored position was masked at once and read from one pass. The pseudo-log-likelihood masks ONE "
            "position at a time: each word is predicted from all the other words, visible.",
            same_output_as(_pll_variant(one_at_a_time=False))),
    Mistake("the tokens were scored while visible: BERT can then simply copy them. Replace the one position by "
            "mask_id before the forward pass, then read the log-probability of the original token there.",
            same_output_as(_pll_variant(mask_the_token=False))),
    Mistake(_COUNTED_HINT.format(what="special"), same_output_as(_pll_variant(skip_special=False))),
    # Counting padding, with the mask given to the model or not: both are the same mistake.
    *(Mistake(_COUNTED_HINT.format(what="padded"), same_output_as(_pll_variant(real_only=False, pass_mask=passed)))
      for passed in (True, False)),
    *(Mistake(_COUNTED_HINT.format(what="special and padded"),
              same_output_as(_pll_variant(skip_special=False, real_only=False, pass_mask=passed)))
      for passed in (True, False)),
    Mistake("attention_mask was not passed to the model, so the words also attended to the padding: "
            "model(ids, attention_mask).", same_output_as(_pll_variant(pass_mask=False))),
    Mistake("the probabilities were added; the pseudo-log-likelihood adds LOG-probabilities "
            "(log_softmax, then the original token's entry).", same_output_as(_pll_variant(log=False))),
    Mistake("the answer is an average per word; the pseudo-log-likelihood is the sum over the scored positions.",
            same_output_as(_pll_variant(reduce="mean"))),
    Mistake("the answer is the story's loss, -log p: the pseudo-log-likelihood is the sum of the log-probabilities "
            "themselves, a negative number.", same_output_as(_pll_variant(sign=-1.0))),
    Mistake("the log-probability of [MASK] was read at each masked position; read that of the ORIGINAL token "
            "(input_ids at that position): how likely BERT finds the word that was hidden.",
            same_output_as(_pll_variant(read_the_mask_id=True))),
)


def check_pseudo_log_likelihood(learner_fn: Any) -> CheckResult:
    """Check exercise 07: ``pseudo_log_likelihood(model, input_ids, attention_mask, *, mask_id, special_ids)`` -> (B,).

    For each real (attention_mask True), non-special position: replace that
    one token by ``mask_id``, run BERT, and take the log-probability of the
    original token; the sum per row. The cases run the shipped tiny-bert on
    real stories: padded batches, 0/1 masks, and special_ids that leave out
    [PAD] (so the mask alone tells where padding is).
    """
    return check_function(learner_fn, exercise="07.pseudo_log_likelihood",
                          reference=_pseudo_log_likelihood_reference, cases=_pll_cases(), mistakes=_PLL_MISTAKES)
