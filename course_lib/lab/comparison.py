"""BERT versus GPT on the same stories: the measurements of notebook 07.

* ``compare_word_losses``: for every word of held-out stories, GPT's loss
  when it predicts the word from the words before it, and BERT's loss when
  only that word is masked and it sees all the others; beside each, the
  story world's exact loss for the same question (the best any model could
  do).
* ``gpt_cloze``: GPT fills in a blank by scoring each candidate's whole
  story; ``bert_cloze`` reads the answer off its masked-LM head;
  ``exact_cloze`` asks the story world itself.
* ``generate_by_unmasking``: BERT writes a story by filling in masks one at
  a time, the awkward way an encoder can generate.

The attention maps of both models come from ``probes.attention_maps``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from course_lib.corpus import ACTIVITY, PERSON, PLACE, PRONOUN, TIME, Story, StoryWorld, default_world
from course_lib.models import BERT, GPT
from course_lib.objectives import gpt_token_losses, masked_one_at_a_time_log_probs
from course_lib.tokenizer import Tokenizer
from course_lib.utils import check_positive_int, evaluating

# The kinds of word whose losses notebook 07 explains with the story world's dependencies.
COMPARED_KINDS = (PERSON, PRONOUN, PLACE, ACTIVITY, TIME)


def _check_stories(stories) -> None:
    if isinstance(stories, Story) or not stories or not all(isinstance(s, Story) for s in stories):
        raise ValueError("stories must be a non-empty list of corpus.Story")


def _check_model(model, family: type, name: str) -> None:
    if not isinstance(model, family):
        raise TypeError(f"{name} must be a course_lib.models.{family.__name__}, got {type(model).__name__}")


# ---------------------------------------------------------------------------
# The loss at every word
# ---------------------------------------------------------------------------


def gpt_word_losses(gpt: GPT, tokenizer: Tokenizer, stories: Sequence[Story]) -> list[torch.Tensor]:
    """GPT's next-token loss at every word: one (n_words,) tensor per story.

    Word i is predicted from ``[BOS]`` and words 0..i-1. The prediction of
    ``[EOS]`` is left out, since BERT has nothing to compare it with.
    """
    _check_model(gpt, GPT, "gpt")
    _check_stories(stories)
    batch = tokenizer.encode_batch([s.tokens for s in stories], style="gpt", max_len=gpt.config.max_len)
    losses = gpt_token_losses(gpt, batch.input_ids, batch.attention_mask)  # (B, T-1)
    # losses[:, i] is the loss of the token at position i + 1, i.e. word i after [BOS].
    return [losses[row, :len(story.tokens)] for row, story in enumerate(stories)]


def bert_word_losses(bert: BERT, tokenizer: Tokenizer, stories: Sequence[Story],
                     batch_size: int = 1024) -> list[torch.Tensor]:
    """BERT's loss at every word when that word alone is masked: one (n_words,) tensor per story.

    Every story of n words becomes n inputs, each with one ``[MASK]``; BERT
    sees all the other words, before and after.
    """
    _check_model(bert, BERT, "bert")
    _check_stories(stories)
    batch = tokenizer.encode_batch([s.tokens for s in stories], style="bert", max_len=bert.config.max_len)
    # One (story, position) pair per word: position i + 1 holds word i after [CLS].
    pairs = torch.tensor([(row, i + 1) for row, story in enumerate(stories) for i in range(len(story.tokens))])
    log_probs = masked_one_at_a_time_log_probs(bert, batch.input_ids, batch.attention_mask,
                                               mask_id=tokenizer.mask_id, positions=pairs,
                                               batch_size=batch_size)  # (n_words, vocab_size)
    words = batch.input_ids[pairs[:, 0], pairs[:, 1]]                   # (n_words,) the words really there
    losses = -log_probs.gather(1, words[:, None])[:, 0]
    return list(losses.split([len(s.tokens) for s in stories]))


@dataclass
class WordLosses:
    """GPT's and BERT's loss at every word of some stories, one entry per word.

    story: (N,) which story the word belongs to; position: (N,) its index in
    the story (0 = the person); words and kinds: the N words and their kinds
    of word; gpt and bert: (N,) losses in nats. exact_next and exact_masked:
    (N,) the story world's own losses for the two questions,
    -log p(word | the words before it) and -log p(word | all the others):
    the lowest loss any model could pay there, word by word.
    """

    story: torch.Tensor
    position: torch.Tensor
    words: list[str]
    kinds: list[str]
    gpt: torch.Tensor
    bert: torch.Tensor
    exact_next: torch.Tensor
    exact_masked: torch.Tensor

    def mean_losses(self, chosen: torch.Tensor) -> dict[str, float]:
        """{"gpt", "bert", "exact_next", "exact_masked": mean loss, "count": words} over the (N,) bool ``chosen``."""
        if not chosen.any():
            raise ValueError("chosen selects no word")
        means = {name: getattr(self, name)[chosen].mean().item()
                 for name in ("gpt", "bert", "exact_next", "exact_masked")}
        return means | {"count": int(chosen.sum())}

    def by_kind(self, kinds: Sequence[str] = COMPARED_KINDS) -> dict[str, dict[str, float]]:
        """{kind: ``mean_losses`` of its words} for each kind of word."""
        table = {}
        for kind in kinds:
            chosen = torch.tensor([k == kind for k in self.kinds])
            if not chosen.any():
                raise ValueError(f"no word of kind {kind!r} in these stories")
            table[kind] = self.mean_losses(chosen)
        return table

    def by_position(self, min_count: int = 20) -> dict[int, dict[str, float]]:
        """{position: ``mean_losses`` there} for every position held by at least ``min_count`` stories."""
        table = {}
        for position in range(int(self.position.max()) + 1):
            chosen = self.position == position
            if int(chosen.sum()) >= min_count:
                table[position] = self.mean_losses(chosen)
        return table


def compare_word_losses(gpt: GPT, gpt_tokenizer: Tokenizer, bert: BERT, bert_tokenizer: Tokenizer,
                        stories: Sequence[Story], world: StoryWorld | None = None) -> WordLosses:
    """GPT's next-token loss and BERT's one-mask loss at every word of ``stories``, and the exact ones."""
    world = world or default_world()
    gpt_losses = gpt_word_losses(gpt, gpt_tokenizer, stories)
    bert_losses = bert_word_losses(bert, bert_tokenizer, stories)
    # The end token's prediction is left out here too, as in gpt_word_losses.
    exact_next = [-torch.tensor(world.next_word_log_probs(s)[:-1]) for s in stories]
    exact_masked = [-torch.tensor(world.masked_word_log_probs(s)) for s in stories]
    return WordLosses(
        story=torch.tensor([row for row, s in enumerate(stories) for _ in s.tokens]),
        position=torch.tensor([i for s in stories for i in range(len(s.tokens))]),
        words=[w for s in stories for w in s.tokens],
        kinds=[k for s in stories for k in s.kinds],
        gpt=torch.cat(gpt_losses),
        bert=torch.cat(bert_losses),
        exact_next=torch.cat(exact_next).float(),
        exact_masked=torch.cat(exact_masked).float(),
    )


# ---------------------------------------------------------------------------
# Cloze: fill in a blank
# ---------------------------------------------------------------------------


def _with_candidates(tokens: Sequence[str], blank: int, candidates: Sequence[str]) -> list[list[str]]:
    if not 0 <= blank < len(tokens):
        raise ValueError(f"blank must be a position of tokens (0 to {len(tokens) - 1}), got {blank}")
    if not candidates:
        raise ValueError("candidates must not be empty")
    return [list(tokens[:blank]) + [candidate] + list(tokens[blank + 1:]) for candidate in candidates]


def story_log_probs(gpt: GPT, tokenizer: Tokenizer, token_lists: Sequence[Sequence[str]]) -> torch.Tensor:
    """GPT's log-probability (nats) of each whole story, its end included: (N,).

    log p(story) = sum over t of log p(token t | tokens before t), the chain
    rule; a causal model gives every term in one forward pass.
    """
    _check_model(gpt, GPT, "gpt")
    batch = tokenizer.encode_batch(token_lists, style="gpt", max_len=gpt.config.max_len)
    return -gpt_token_losses(gpt, batch.input_ids, batch.attention_mask).sum(dim=1)


def gpt_cloze(gpt: GPT, tokenizer: Tokenizer, tokens: Sequence[str], blank: int,
              candidates: Sequence[str]) -> torch.Tensor:
    """GPT's probability (C,) of each candidate for ``tokens[blank]``, by scoring each whole story.

    p(candidate | the rest) is proportional to p(story with the candidate),
    so the softmax of the C stories' log-probabilities is the answer. It
    costs one sequence per candidate, but it uses the words after the blank.
    """
    return torch.softmax(story_log_probs(gpt, tokenizer, _with_candidates(tokens, blank, candidates)), dim=0)


def bert_cloze(bert: BERT, tokenizer: Tokenizer, tokens: Sequence[str], blank: int,
               candidates: Sequence[str]) -> torch.Tensor:
    """BERT's probability (C,) of each candidate for ``tokens[blank]``: one pass, renormalised over the candidates."""
    _check_model(bert, BERT, "bert")
    masked = _with_candidates(tokens, blank, ["[MASK]"])[0]
    ids = torch.tensor([tokenizer.encode(masked, style="bert", max_len=bert.config.max_len)])
    with evaluating(bert):
        logits = bert(ids)[0, blank + 1]  # (V,), position blank + 1 after [CLS]
    candidate_ids = torch.tensor(tokenizer.encode(list(candidates)))
    return torch.softmax(logits[candidate_ids], dim=0)


def exact_cloze(tokens: Sequence[str], blank: int, candidates: Sequence[str],
                world: StoryWorld | None = None) -> torch.Tensor:
    """The story world's own answer (C,): p(candidate | the rest), from exact story probabilities."""
    world = world or default_world()
    log_probs = torch.tensor([world.log_prob(c) for c in _with_candidates(tokens, blank, candidates)],
                             dtype=torch.float64)
    if torch.isinf(log_probs).all():
        raise ValueError("no candidate makes a story the world can write")
    return torch.softmax(log_probs, dim=0).float()


# ---------------------------------------------------------------------------
# Generation with BERT: iterative unmasking
# ---------------------------------------------------------------------------


def generate_by_unmasking(bert: BERT, tokenizer: Tokenizer, length: int, n: int = 1, order: str = "confident",
                          temperature: float = 1.0, seed: int = 0) -> tuple[list[list[str]], list[list[str]]]:
    """Write ``n`` stories of exactly ``length`` words by filling in ``[MASK]`` tokens one at a time.

    Start from ``[CLS] [MASK] ... [MASK] [SEP]``. At every step BERT reads
    the whole sequence again, one masked position is chosen and a word is
    sampled there from BERT's prediction (special tokens excluded), until no
    mask is left: ``length`` full forward passes, no cache possible, since a
    new word changes every other position's features.

    order: "confident" fills the masked position where BERT is surest first;
        "left_to_right" fills them in reading order, as GPT would.

    Returns the n stories as word lists, and the first story after every
    step (``[MASK]`` where still hidden), to show how it was written.
    """
    _check_model(bert, BERT, "bert")
    if not isinstance(length, int) or not 1 <= length <= bert.config.max_len - 2:
        raise ValueError(f"length must be an int from 1 to max_len - 2 = {bert.config.max_len - 2}, got {length!r}")
    if order not in ("confident", "left_to_right"):
        raise ValueError(f"order must be 'confident' or 'left_to_right', got {order!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    check_positive_int("n", n)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((n, length + 2), tokenizer.mask_id)
    ids[:, 0], ids[:, -1] = tokenizer.cls_id, tokenizer.sep_id
    never = torch.tensor(tokenizer.special_ids)  # BERT may not write [PAD], [MASK], ...
    every_row = torch.arange(n)
    steps = []
    with evaluating(bert):
        for _ in range(length):
            logits = bert(ids) / temperature            # (n, T, V)
            logits[..., never] = float("-inf")
            probs = torch.softmax(logits, dim=-1)
            masked = ids == tokenizer.mask_id          # (n, T)
            if order == "confident":
                confidence = probs.amax(dim=-1).masked_fill(~masked, -1.0)
                position = confidence.argmax(dim=1)    # (n,)
            else:
                position = masked.int().argmax(dim=1)  # the first masked position
            chosen = torch.multinomial(probs[every_row, position], 1, generator=generator).squeeze(1)
            ids[every_row, position] = chosen
            steps.append(tokenizer.convert_ids_to_tokens(ids[0, 1:-1]))
    stories = [tokenizer.convert_ids_to_tokens(row[1:-1]) for row in ids]
    return stories, steps
