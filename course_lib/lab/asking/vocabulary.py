"""Teaching a pretrained model new words: new embedding rows at the end, every pretrained row kept.

A pretrained model knows the words of its pretraining text and nothing
else: our tokenizer turns any other word into ``[UNK]``. The stories never
ask questions, so "where", "did" or "?" are not in tiny-bert's or tiny-gpt's
vocabulary. Before fine-tuning on questions we give each new word the next
free id and a new row in the token embedding, the way real libraries grow a
pretrained model (Hugging Face's ``resize_token_embeddings``):

* the old ids and their rows are kept exactly, so on any input made of old
  words the model computes what it computed before;
* the output layer that reads the same embedding backwards (tied weights:
  BERT's masked-LM head, GPT's next-token head) grows with it, so it can
  score the new words too;
* a new row starts as the average of the pretrained rows, plus a little
  noise so that no two new words are the same: a new word starts as "some
  word", not as an extreme vector the pretrained layers never met.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import torch
from torch import nn

from course_lib.models import BERT, GPT
from course_lib.tokenizer import SPECIAL_TOKENS, Tokenizer

# Spread of the noise added to each new row: the scale the models are initialised with (models._init_weights).
NEW_ROW_NOISE = 0.02


def grow_tokenizer(tokenizer: Tokenizer, words: Iterable[str]) -> Tokenizer:
    """A copy of ``tokenizer`` with the ``words`` it lacks appended as new ids, every old id unchanged.

    ``Tokenizer`` keeps its ordinary words sorted; a grown one cannot, since
    the pretrained rows belong to the old ids. It encodes and decodes like
    any other (``Tokenizer.save`` of it would not load back, and is not needed).
    """
    if isinstance(words, str):
        raise TypeError(f"words must be a list of words, got the single string {words!r}")
    new_words = [word for word in dict.fromkeys(words) if word not in tokenizer.token_to_id]
    grown = Tokenizer(tokenizer.id_to_token[len(SPECIAL_TOKENS):] + new_words)  # checks that each is one token
    grown.id_to_token = tokenizer.id_to_token + new_words
    grown.token_to_id = {token: i for i, token in enumerate(grown.id_to_token)}
    return grown


def grow_embeddings(model: BERT | GPT, vocab_size: int, seed: int = 0) -> None:
    """Give ``model`` ``vocab_size`` token rows in place: the old rows copied, the new ones initialised.

    The token embedding becomes a new, larger ``nn.Embedding`` whose first
    rows are the pretrained ones; the output layer is tied to it again
    (BERT: the masked-LM head, whose bias grows too; GPT: ``lm_head``), and
    the model's config records the new size.
    """
    if not isinstance(model, (BERT, GPT)):
        raise TypeError(f"model must be a course_lib.models.BERT or GPT, got {type(model).__name__}")
    # A frozen model stays frozen and a trainable one trainable: ``old`` below is detached, it cannot tell.
    trainable = model.body.token_embedding.weight.requires_grad
    old = model.body.token_embedding.weight.detach()                   # (V_old, d_model)
    n_old, d_model = old.shape
    if not isinstance(vocab_size, int) or vocab_size < n_old:
        raise ValueError(f"vocab_size must be an int of at least the current {n_old}, got {vocab_size!r}")
    generator = torch.Generator().manual_seed(seed)
    noise = NEW_ROW_NOISE * torch.randn(vocab_size - n_old, d_model, generator=generator)
    embedding = nn.Embedding(vocab_size, d_model)
    with torch.no_grad():
        embedding.weight.copy_(torch.cat([old, old.mean(dim=0) + noise.to(old)]))  # (vocab_size, d_model)
    embedding.weight.requires_grad_(trainable)
    model.body.token_embedding = embedding
    if isinstance(model, BERT):
        head = model.mlm_head
        head.token_embedding = embedding                               # the head reads the grown rows backwards
        bias = head.bias.detach()                                      # (V_old,)
        head.bias = nn.Parameter(torch.cat([bias, bias.mean().expand(vocab_size - n_old)]),
                                 requires_grad=head.bias.requires_grad)
    else:
        model.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        model.lm_head.weight = embedding.weight                        # tied again
    model.config = model.body.config = replace(model.config, vocab_size=vocab_size)


def add_words(model: BERT | GPT, tokenizer: Tokenizer, words: Iterable[str], seed: int = 0) -> Tokenizer:
    """Teach ``model`` the ``words`` its ``tokenizer`` lacks; returns the grown tokenizer to use with it.

    ``model`` changes in place (``grow_embeddings``); words it already knows
    keep their ids and rows.
    """
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"the model has {model.config.vocab_size} token rows but the tokenizer "
                         f"{tokenizer.vocab_size} ids: they do not belong together")
    grown = grow_tokenizer(tokenizer, words)
    grow_embeddings(model, grown.vocab_size, seed)
    return grown
