"""The translation task of notebook 04: English stories into the story world's second language.

An encoder-decoder reads the English story (the *source*) and writes its
translation (the *target*) one token at a time::

    source:  alice went to the park to play football in the morning .
    target:  [BOS] mane alice ad hortum pilam ludere ivit . [EOS]

The two languages have their own vocabularies, so each side has its own
tokenizer. This module turns stories into padded id tensors
(``encode_pairs``), gives the training loss (``translation_loss``) and
measures the share of translations that are entirely right
(``exact_match``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from course_lib.corpus import Story, StoryWorld, default_world, translate
from course_lib.models import EncoderDecoder
from course_lib.objectives import next_token_loss, next_token_targets
from course_lib.tokenizer import Tokenizer
from course_lib.utils import check_positive_int, evaluating

__all__ = ["TranslationPairs", "translation_tokenizers", "encode_pairs", "translation_loss", "exact_match"]


@dataclass
class TranslationPairs:
    """Stories and their translations as padded id tensors, row by row.

    source_ids:   (N, Ts) English ids, no special tokens, ``[PAD]`` at the end
    source_mask:  (N, Ts) bool, True for a real source token
    target_ids:   (N, Tt) ``[BOS]`` translation ``[EOS]``, then ``[PAD]``
    target_mask:  (N, Tt) bool, True for a real target token
    """

    source_ids: torch.Tensor
    source_mask: torch.Tensor
    target_ids: torch.Tensor
    target_mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.source_ids)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The four tensors in field order, e.g. for ``training.random_batches``."""
        return self.source_ids, self.source_mask, self.target_ids, self.target_mask


def translation_tokenizers(world: StoryWorld | None = None) -> tuple[Tokenizer, Tokenizer]:
    """The source (English) and target (second language) tokenizers of a story world."""
    world = world or default_world()
    return Tokenizer(world.vocabulary), Tokenizer(world.target_vocabulary)


def encode_pairs(stories: Sequence[Story], source_tokenizer: Tokenizer,
                 target_tokenizer: Tokenizer) -> TranslationPairs:
    """Encode each story and its translation (``corpus.translate``) as one row of padded tensors.

    The source needs no special tokens: the encoder reads it whole. The
    target is wrapped in ``[BOS] ... [EOS]``: the decoder starts from
    ``[BOS]`` and says it has finished by writing ``[EOS]``.
    """
    if isinstance(stories, Story) or len(stories) == 0:
        raise ValueError("stories must be a non-empty list of Story objects")
    if not all(isinstance(story, Story) for story in stories):
        raise TypeError("stories must hold Story objects (from StoryWorld.sample or splits)")
    source = source_tokenizer.encode_batch([story.tokens for story in stories], style="plain")
    target = target_tokenizer.encode_batch([translate(story) for story in stories], style="gpt")
    return TranslationPairs(source.input_ids, source.attention_mask, target.input_ids, target.attention_mask)


def translation_loss(model: EncoderDecoder, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Teacher-forcing loss of one batch ``(source_ids, source_mask, target_ids, target_mask)``.

    The decoder reads the true target up to position t and is scored on
    predicting token t + 1, at every position in one pass (the causal mask
    keeps it from seeing the token it must predict). Padding is not scored.
    """
    source_ids, source_mask, target_ids, target_mask = batch
    decoder_inputs, targets = next_token_targets(target_ids, target_mask)  # (B, Tt - 1) each
    logits = model(source_ids, decoder_inputs, source_mask)                # (B, Tt - 1, target vocab)
    return next_token_loss(logits, targets)


def exact_match(model: EncoderDecoder, pairs: TranslationPairs, *, bos_id: int, eos_id: int,
                batch_size: int = 500) -> float:
    """Share of rows whose greedy translation equals the reference token for token, up to ``[EOS]``.

    A translation with one wrong word, a missing word or an extra word
    counts as wrong: nothing partial is credited.
    """
    if not isinstance(pairs, TranslationPairs) or len(pairs) == 0:
        raise ValueError("pairs must be a non-empty TranslationPairs (see encode_pairs)")
    check_positive_int("batch_size", batch_size)
    max_len = pairs.target_ids.shape[1]
    correct = 0
    with evaluating(model):
        for start in range(0, len(pairs), batch_size):
            rows = slice(start, start + batch_size)
            predicted = model.greedy_decode(pairs.source_ids[rows], bos_id, eos_id, max_len=max_len,
                                            source_mask=pairs.source_mask[rows])  # (b, <= max_len)
            for guess, reference, real in zip(predicted, pairs.target_ids[rows], pairs.target_mask[rows]):
                correct += _up_to_eos(guess.tolist(), eos_id) == reference[real].tolist()
    return correct / len(pairs)


def _up_to_eos(ids: list[int], eos_id: int) -> list[int]:
    """``ids`` up to and including the first ``eos_id`` (all of them when there is none)."""
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids
