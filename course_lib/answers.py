"""Reading an answer out of a pretrained model's scores (notebook 09).

Fine-tuning teaches a model to produce scores; something must still turn
the scores into an answer. Two ways of asking BERT, two read-outs:

* ``best_span``: extractive question answering. A start head and an end
  head score every position of the text; the answer is the span whose start
  and end score best together, among the spans that are allowed (start
  before end, inside the text, not too long).
* ``verbalizer_logits``: prompt-based classification. The input holds one
  ``[MASK]``; the masked-LM head scores every word of the vocabulary there,
  and each class is read as the score of its own word (the verbalizer).

Both are exercises of notebook 09.
"""
from __future__ import annotations

import torch


def best_span(start_logits: torch.Tensor, end_logits: torch.Tensor, attention_mask: torch.Tensor | None = None,
              max_answer_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The best valid answer span of each row: ``(start, end)``, two (B,) long tensors, ``end`` inclusive.

    A span (s, e) scores ``start_logits[b, s] + end_logits[b, e]``. It is
    valid when ``s <= e``, when the (B, T) bool ``attention_mask`` allows
    both positions (True = may be chosen; None allows every position), and,
    when ``max_answer_len`` is given, when ``e - s + 1 <= max_answer_len``.
    Taking the best start and the best end separately could give an end
    before the start; scoring every pair at once cannot.

    Args:
        start_logits, end_logits: (B, T) scores of each position as the first and as the last token.
        attention_mask: (B, T) bool, True where the answer may start or end; each row allows one at least.
        max_answer_len: the longest answer, in tokens (at least 1), or None for no limit.
    """
    for name, logits in (("start_logits", start_logits), ("end_logits", end_logits)):
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 2:
            raise TypeError(f"{name} must be a (B, T) float tensor, got {type(logits).__name__} "
                            f"{tuple(getattr(logits, 'shape', ()))}")
    if start_logits.shape != end_logits.shape:
        raise ValueError(f"start_logits {tuple(start_logits.shape)} and end_logits {tuple(end_logits.shape)} "
                         "must have the same shape (B, T)")
    B, T = start_logits.shape
    if attention_mask is not None:
        if attention_mask.dtype != torch.bool or attention_mask.shape != (B, T):
            raise ValueError(f"attention_mask must be a bool tensor of shape (B, T) = ({B}, {T}), got "
                             f"{attention_mask.dtype} {tuple(attention_mask.shape)}")
        if not attention_mask.any(dim=1).all():
            raise ValueError("attention_mask allows no position in some row: it has no answer")
    if max_answer_len is not None and (not isinstance(max_answer_len, int) or max_answer_len < 1):
        raise ValueError(f"max_answer_len must be a positive int or None, got {max_answer_len!r}")

    scores = start_logits[:, :, None] + end_logits[:, None, :]           # (B, T, T): row s, column e
    starts = torch.arange(T, device=scores.device)[:, None]              # (T, 1)
    ends = torch.arange(T, device=scores.device)[None, :]                # (1, T)
    valid = ends >= starts                                               # (T, T): no end before its start
    if max_answer_len is not None:
        valid = valid & (ends - starts + 1 <= max_answer_len)
    valid = valid.expand(B, T, T)                                        # (B, T, T)
    if attention_mask is not None:
        valid = valid & attention_mask[:, :, None] & attention_mask[:, None, :]
    best = scores.masked_fill(~valid, float("-inf")).flatten(1).argmax(dim=1)  # (B,) index into the T x T pairs
    return best // T, best % T


def verbalizer_logits(mlm_logits: torch.Tensor, mask_positions: torch.Tensor,
                      verbalizer_ids: torch.Tensor) -> torch.Tensor:
    """The class scores (B, C) of a prompt: the masked-LM logits of each class's word at each row's ``[MASK]``.

    Args:
        mlm_logits: (B, T, V) the masked-LM head's scores of every word at every position.
        mask_positions: (B,) long, where each row's ``[MASK]`` is.
        verbalizer_ids: (C,) long, the id of the word that stands for each class.

    Returns (B, C): ``mlm_logits[b, mask_positions[b], verbalizer_ids[c]]``.
    A softmax over these C scores is the classifier; the other words of the
    vocabulary play no part in it.
    """
    if not isinstance(mlm_logits, torch.Tensor) or mlm_logits.dim() != 3:
        raise ValueError(f"mlm_logits must be a (B, T, V) tensor, got {tuple(getattr(mlm_logits, 'shape', ()))}")
    B, T, V = mlm_logits.shape
    for name, ids, shape in (("mask_positions", mask_positions, (B,)), ("verbalizer_ids", verbalizer_ids, None)):
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.dim() != 1 or \
                (shape is not None and ids.shape != shape):
            raise ValueError(f"{name} must be a 1-D integer tensor{f' of shape {shape}' if shape else ''}, got "
                             f"{type(ids).__name__} {tuple(getattr(ids, 'shape', ()))}")
    at_masks = mlm_logits[torch.arange(B, device=mlm_logits.device), mask_positions]  # (B, V)
    return at_masks[:, verbalizer_ids]                                                 # (B, C)
