"""The checks of exercises 07.gpt_sentence_score and 07.pseudo_log_likelihood: right answers written several ways
pass, each known mistake fails with its one hint."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import check_gpt_sentence_score, check_pseudo_log_likelihood
from course_lib.objectives import masked_one_at_a_time_log_probs

from check_helpers import assert_fails_with_hint, assert_passes

# ---------------------------------------------------------------------------
# 07.gpt_sentence_score
# ---------------------------------------------------------------------------


@torch.no_grad()
def score_with_gather(model, input_ids, attention_mask):
    log_probs = model(input_ids[:, :-1]).log_softmax(dim=-1)                 # right padding: no mask needed
    picked = log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (picked * attention_mask[:, 1:]).sum(dim=1)


@torch.no_grad()
def score_with_cross_entropy(model, input_ids, attention_mask):
    targets = input_ids[:, 1:].masked_fill(~attention_mask[:, 1:].bool(), -100)
    logits = model(input_ids[:, :-1], attention_mask[:, :-1])
    return -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(dim=1)


def score_row_by_row(model, input_ids, attention_mask):
    scores = []
    for ids, mask in zip(input_ids, attention_mask.bool()):
        story = ids[mask][None]                                               # (1, length) without padding
        with torch.no_grad():
            log_probs = torch.log_softmax(model(story), dim=-1)[0, :-1]
        scores.append(log_probs[torch.arange(story.shape[1] - 1), story[0, 1:]].sum())
    return torch.stack(scores)


@pytest.mark.parametrize("gpt_sentence_score", [score_with_gather, score_with_cross_entropy, score_row_by_row])
def test_correct_gpt_sentence_scores_pass(gpt_sentence_score):
    assert_passes(check_gpt_sentence_score(gpt_sentence_score))


def score_with(*, shift=True, padding=False, probabilities=False, logits=False, mean=False, loss=False,
               mask_cut_like_the_inputs=False):
    @torch.no_grad()
    def gpt_sentence_score(model, input_ids, attention_mask):
        if shift:
            counted = (attention_mask[:, :-1] if mask_cut_like_the_inputs else attention_mask[:, 1:]).float()
            out, targets = model(input_ids[:, :-1]), input_ids[:, 1:]
        else:
            out, targets, counted = model(input_ids), input_ids, attention_mask.float()
        scores = out if logits else out.log_softmax(-1)
        picked = scores.gather(-1, targets[..., None])[..., 0]
        if probabilities:
            picked = picked.exp()
        if padding:
            counted = torch.ones_like(counted)
        total = (picked * counted).sum(1) / (counted.sum(1) if mean else 1)
        return -total if loss else total
    return gpt_sentence_score


@pytest.mark.parametrize("gpt_sentence_score, words_of_the_hint", [
    (score_with(shift=False), "Position t predicts token t + 1"),
    (score_with(padding=True), "padding was counted"),
    (score_with(probabilities=True), "the probabilities were added"),
    (score_with(logits=True), "raw logits"),
    (score_with(mean=True), "an average per token"),
    (score_with(loss=True), "the story's loss"),
    (score_with(mask_cut_like_the_inputs=True), "the mask was cut like the inputs"),
], ids=["no-shift", "padding", "probabilities", "logits", "mean", "sign", "mask-of-the-inputs"])
def test_gpt_sentence_score_mistakes_fail_with_their_hint(gpt_sentence_score, words_of_the_hint):
    assert_fails_with_hint(check_gpt_sentence_score(gpt_sentence_score), words_of_the_hint)


# ---------------------------------------------------------------------------
# 07.pseudo_log_likelihood (the check runs the shipped tiny-bert)
# ---------------------------------------------------------------------------


@torch.no_grad()
def pll_one_input_per_position(model, input_ids, attention_mask, *, mask_id, special_ids):
    scores = torch.zeros(input_ids.shape[0])
    special = torch.tensor(special_ids)
    for row in range(input_ids.shape[0]):
        for t in range(input_ids.shape[1]):
            if attention_mask[row, t] and input_ids[row, t] not in special:
                ids = input_ids[row:row + 1].clone()
                ids[0, t] = mask_id
                log_probs = F.log_softmax(model(ids, attention_mask[row:row + 1])[0, t], dim=-1)
                scores[row] += log_probs[input_ids[row, t]]
    return scores


@torch.no_grad()
def pll_in_one_batch(model, input_ids, attention_mask, *, mask_id, special_ids):
    scored = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids))
    rows, positions = scored.nonzero(as_tuple=True)
    inputs = input_ids[rows].clone()                                       # one copy of its row per position
    inputs[torch.arange(len(rows)), positions] = mask_id
    logits = model(inputs, attention_mask[rows])[torch.arange(len(rows)), positions]   # (N, V)
    terms = logits.log_softmax(-1)[torch.arange(len(rows)), input_ids[rows, positions]]
    return torch.zeros(len(input_ids)).index_add(0, rows, terms)


def pll_with_the_course_helper(model, input_ids, attention_mask, *, mask_id, special_ids):
    scored = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids))
    pairs = scored.nonzero()
    log_probs = masked_one_at_a_time_log_probs(model, input_ids, attention_mask, mask_id=mask_id, positions=pairs)
    words = input_ids[pairs[:, 0], pairs[:, 1]]
    per_row = torch.zeros(input_ids.shape, dtype=log_probs.dtype)
    per_row[pairs[:, 0], pairs[:, 1]] = log_probs.gather(1, words[:, None])[:, 0]
    return per_row.sum(dim=1)


@pytest.mark.parametrize("pseudo_log_likelihood", [pll_one_input_per_position, pll_in_one_batch,
                                                   pll_with_the_course_helper])
def test_correct_pseudo_log_likelihoods_pass(pseudo_log_likelihood):
    assert_passes(check_pseudo_log_likelihood(pseudo_log_likelihood))


def pll_with(*, at_once=False, visible=False, specials=False, padding=False, no_mask=False, probabilities=False,
             mean=False, loss=False, read_mask=False):
    @torch.no_grad()
    def pseudo_log_likelihood(model, input_ids, attention_mask, *, mask_id, special_ids):
        scored = torch.ones_like(input_ids, dtype=torch.bool) if padding else attention_mask.bool()
        if not specials:
            scored = scored & ~torch.isin(input_ids, torch.tensor(special_ids))
        model_mask = None if no_mask else attention_mask
        if at_once:
            log_probs = model(input_ids.masked_fill(scored, mask_id), model_mask).log_softmax(-1)
            terms = log_probs.gather(-1, input_ids[..., None])[..., 0]
        else:
            terms = torch.zeros(input_ids.shape)
            for row, t in scored.nonzero().tolist():
                ids = input_ids[row:row + 1].clone()
                if not visible:
                    ids[0, t] = mask_id
                mask = None if model_mask is None else model_mask[row:row + 1]
                read = mask_id if read_mask else input_ids[row, t]
                terms[row, t] = model(ids, mask)[0, t].log_softmax(-1)[read]
        if probabilities:
            terms = terms.exp()
        terms = terms * scored
        total = terms.sum(1) / (scored.sum(1) if mean else 1)
        return -total if loss else total
    return pseudo_log_likelihood


@pytest.mark.slow  # each wrong version runs tiny-bert once per word of four stories, for every known mistake
@pytest.mark.parametrize("pseudo_log_likelihood, words_of_the_hint", [
    (pll_with(at_once=True), "masked at once"),
    (pll_with(visible=True), "scored while visible"),
    (pll_with(specials=True), "special positions were scored"),
    (pll_with(padding=True), "padded positions were scored"),
    (pll_with(specials=True, padding=True), "special and padded positions were scored"),
    (pll_with(no_mask=True), "attention_mask was not passed"),
    (pll_with(probabilities=True), "the probabilities were added"),
    (pll_with(mean=True), "an average per word"),
    (pll_with(loss=True), "the story's loss"),
    (pll_with(read_mask=True), "the log-probability of [MASK] was read"),
], ids=["at-once", "visible", "specials", "padding", "specials-and-padding", "no-mask", "probabilities", "mean",
        "sign", "reads-mask"])
def test_pseudo_log_likelihood_mistakes_fail_with_their_hint(pseudo_log_likelihood, words_of_the_hint):
    assert_fails_with_hint(check_pseudo_log_likelihood(pseudo_log_likelihood), words_of_the_hint)


def test_unsolved_scores_are_not_implemented():
    def unsolved(*args, **kwargs):
        raise NotImplementedError()

    assert check_gpt_sentence_score(unsolved).status == "not implemented"
    assert check_pseudo_log_likelihood(unsolved).status == "not implemented"
