"""What the models learn to do: the pretraining and fine-tuning objectives.

* BERT's masked language modelling: hide some tokens (``mask_tokens``) and
  predict them from both sides (``masked_lm_loss``).
* GPT's language modelling: predict every next token (``next_token_loss``).
* GPT's fine-tuning recipe: a task loss plus a weighted language-modelling
  loss (``gpt_finetune_loss``).
* Supervised fine-tuning on prompts and answers: the next-token loss on
  the answer only (``sft_labels``).

Labels use ``IGNORE_INDEX`` (-100) for positions that are not predicted,
the value ``F.cross_entropy`` skips.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from course_lib.utils import check_positive_int, evaluating

IGNORE_INDEX = -100


def _check_ids(name: str, ids) -> None:
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {type(ids).__name__} {getattr(ids, 'dtype', '')}")


def mask_tokens(input_ids: torch.Tensor, *, mask_id: int, vocab_size: int, special_ids: Sequence[int],
                mask_prob: float = 0.15, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking recipe (Devlin et al., 2018, section 3.1).

    "The training data generator chooses 15% of the token positions at
    random for prediction. If the i-th token is chosen, we replace the i-th
    token with (1) the [MASK] token 80% of the time (2) a random token 10%
    of the time (3) the unchanged i-th token 10% of the time."

    Why not always ``[MASK]``? Fine-tuning inputs never contain ``[MASK]``:
    the random and unchanged shares make the model build a good
    representation of *every* token, since any of them might be a target.

    Args:
        input_ids: (B, T) token ids.
        mask_id: id of ``[MASK]``.
        vocab_size: random replacements are drawn from ids 0..vocab_size-1
            that are not special.
        special_ids: ids never chosen for prediction ([CLS], [SEP], [PAD], ...).
        mask_prob: chance that each non-special token is chosen.
        generator: for reproducible masks.

    Returns:
        inputs: (B, T) the corrupted ids the model sees.
        labels: (B, T) the original id where a token was chosen, -100 elsewhere.
    """
    _check_ids("input_ids", input_ids)
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be strictly between 0 and 1, got {mask_prob!r}")
    special = torch.tensor(list(special_ids), dtype=input_ids.dtype, device=input_ids.device)
    ordinary_ids = torch.tensor([i for i in range(vocab_size) if i not in set(special.tolist())], device=input_ids.device)
    if len(ordinary_ids) == 0:
        raise ValueError(f"every id below vocab_size={vocab_size} is special: no token to draw at random")

    def uniform() -> torch.Tensor:  # one draw in [0, 1) per position
        return torch.rand(input_ids.shape, generator=generator, device=input_ids.device)

    chosen = (uniform() < mask_prob) & ~torch.isin(input_ids, special)   # (B, T) about 15% of real tokens
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = uniform()                                                   # which of the three fates
    to_mask = chosen & (action < 0.8)                                    # 80%: [MASK]
    to_random = chosen & (action >= 0.8) & (action < 0.9)                # 10%: a random token
    random_ids = ordinary_ids[torch.randint(len(ordinary_ids), input_ids.shape, generator=generator,
                                            device=input_ids.device)]
    inputs = input_ids.masked_fill(to_mask, mask_id)
    inputs = torch.where(to_random, random_ids, inputs)                  # the other 10% stay unchanged
    return inputs, labels


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the chosen positions only: logits (B, T, V), labels (B, T) with -100 elsewhere."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits (B, T, V) {tuple(logits.shape)} and labels (B, T) {tuple(labels.shape)} disagree")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def next_token_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a batch into what GPT reads and what it must predict.

    ``inputs = ids[:, :-1]`` and ``targets = ids[:, 1:]``: position t reads
    tokens 0..t and must predict token t+1. Padding targets become -100.

    Returns:
        inputs (B, T-1) and targets (B, T-1).
    """
    _check_ids("input_ids", input_ids)
    targets = input_ids[:, 1:].clone()
    if attention_mask is not None:
        targets[~attention_mask[:, 1:].bool()] = IGNORE_INDEX
    return input_ids[:, :-1], targets


def sft_labels(input_ids: torch.Tensor, prompt_lengths: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The targets of supervised fine-tuning: the next token where it is part of the answer, -100 elsewhere.

    Each row is a prompt, then what the model should write after it (the
    answer and whatever closes the text), then padding. Position t predicts
    token t + 1, and only what follows the prompt is learned: the prompt is
    given. So ``labels[b, t] = input_ids[b, t + 1]`` when token t + 1 is a
    real token after the prompt (``t + 1 >= prompt_lengths[b]`` and
    ``attention_mask[b, t + 1]``), and -100 otherwise; the last column is
    -100, since nothing follows it. The labels keep all T columns, so the
    loss is ``next_token_loss(model(input_ids, attention_mask), labels)``.

    Args:
        input_ids: (B, T) token ids.
        prompt_lengths: (B,) how many tokens of each row are the prompt.
        attention_mask: (B, T) bool or 0/1, True or 1 for a real token.

    Returns:
        (B, T) long labels.
    """
    _check_ids("input_ids", input_ids)
    _check_ids("prompt_lengths", prompt_lengths)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    if prompt_lengths.shape != (B,):
        raise ValueError(f"prompt_lengths must be ({B},), one length per row of input_ids, "
                         f"got shape {tuple(prompt_lengths.shape)}")
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != (B, T):
        raise ValueError(f"attention_mask must be a tensor of input_ids' shape {(B, T)}, "
                         f"got {tuple(getattr(attention_mask, 'shape', ())) or type(attention_mask).__name__}")
    positions = torch.arange(T, device=input_ids.device)                                 # (T,)
    after_prompt = (positions[None, :] >= prompt_lengths[:, None]) & attention_mask.bool()  # (B, T) answer tokens
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long, device=input_ids.device)
    labels[:, :-1] = torch.where(after_prompt[:, 1:], input_ids[:, 1:].long(), IGNORE_INDEX)  # t predicts t + 1
    return labels


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Average cross-entropy of the next token: logits (B, T, V), aligned targets (B, T), -100 ignored."""
    return masked_lm_loss(logits, targets)  # the same sum, over other positions


def per_position_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss at every position: logits (B, T, V) and targets (B, T) -> (B, T); 0 where the target is -100."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits (B, T, V) {tuple(logits.shape)} and targets (B, T) {tuple(targets.shape)} disagree")
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                             ignore_index=IGNORE_INDEX, reduction="none")
    return losses.reshape(targets.shape)


def gpt_finetune_loss(task_logits: torch.Tensor, labels: torch.Tensor, lm_logits: torch.Tensor,
                      lm_targets: torch.Tensor, lm_weight: float) -> torch.Tensor:
    """The GPT fine-tuning objective (Radford et al., 2018, section 3.2).

        L3(C) = L2(C) + lambda * L1(C)

    L2 is the task's cross-entropy, L1 the language-modelling loss on the
    same inputs, lambda = ``lm_weight`` (0.5 in the paper): keeping the
    pretraining objective "improving generalization of the supervised model,
    and accelerating convergence".

    task_logits (B, C), labels (B,), lm_logits (B, T, V), lm_targets (B, T)
    already aligned with -100 for padding.
    """
    if lm_weight < 0:
        raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
    task_loss = F.cross_entropy(task_logits, labels)
    return task_loss + lm_weight * next_token_loss(lm_logits, lm_targets)


# -- Asking a trained model about every word -----------------------------------------------
# The lab (probes, the BERT-versus-GPT comparison, fine-tuning) measures
# pretrained models with their own objectives, word by word. These two
# functions are the one place where that is done.


def gpt_token_losses(gpt: torch.nn.Module, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """GPT's next-token loss at every position of a batch, in nats: (B, T) ids -> (B, T - 1).

    ``losses[b, t] = -log p(input_ids[b, t + 1] | input_ids[b, :t + 1])``:
    thanks to the causal mask, one forward pass gives every term. Where the
    token to predict is padding (``attention_mask`` False or 0 at t + 1) the
    loss is 0, so a row's sum is minus the log-probability of its sequence
    after the first token (the chain rule).

    The model runs in eval mode without gradients and is left in the mode it was in.
    """
    inputs, targets = next_token_targets(input_ids, attention_mask)  # (B, T-1) each: t reads 0..t, predicts t+1
    inputs_mask = None if attention_mask is None else attention_mask[:, :-1]
    if inputs_mask is not None and _padded_on_the_right(inputs_mask):
        # A causal model's real positions never see padding that comes after them: no mask is needed,
        # and without one the model takes its fastest attention kernel.
        inputs_mask = None
    with evaluating(gpt):
        return per_position_loss(gpt(inputs, inputs_mask), targets)


def _padded_on_the_right(attention_mask: torch.Tensor) -> bool:
    """Every row is real tokens, then padding only: the mask never rises along a row."""
    mask = attention_mask.long()
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def masked_one_at_a_time_log_probs(bert: torch.nn.Module, input_ids: torch.Tensor,
                                   attention_mask: torch.Tensor | None, *, mask_id: int,
                                   positions: Sequence[tuple[int, int]] | torch.Tensor,
                                   batch_size: int = 512) -> torch.Tensor:
    """BERT's log-probabilities at chosen positions, each position masked on its own.

    Every ``(row, position)`` pair becomes its own input: row ``row`` of
    ``input_ids`` with only ``position`` replaced by ``mask_id``, so BERT
    predicts that one word from all the others, on both sides. The probes
    fill in one pronoun or person this way, notebook 07 compares BERT's loss
    with GPT's word by word, and the sum of these terms over a story's words
    is its pseudo-log-likelihood (Salazar et al., 2020).

    The inputs run ``batch_size`` at a time, in eval mode without gradients;
    the model is left in the mode it was in.

    Args:
        bert: a masked language model, ``bert(ids, attention_mask)`` -> logits (b, T, V).
        input_ids: (B, T) token ids.
        attention_mask: (B, T), True or 1 for a real token; None when nothing is padded.
        mask_id: id of ``[MASK]``.
        positions: N pairs ``(row, position)``, as a sequence or an (N, 2) integer tensor.
        batch_size: inputs per forward pass.

    Returns:
        (N, V) log-probabilities, row n for the n-th pair: ``.argmax(dim=-1)``
        gives BERT's guesses, ``-log_probs.gather(1, words[:, None])`` the
        loss of the words really there.
    """
    _check_ids("input_ids", input_ids)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                         f"got {tuple(attention_mask.shape)}")
    check_positive_int("batch_size", batch_size)
    pairs = torch.as_tensor(positions, dtype=torch.long, device=input_ids.device)  # (N, 2)
    if pairs.dim() != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
        raise ValueError(f"positions must be a non-empty list of (row, position) pairs, got shape {tuple(pairs.shape)}")
    rows, columns = pairs[:, 0], pairs[:, 1]
    B, T = input_ids.shape
    if rows.min() < 0 or rows.max() >= B or columns.min() < 0 or columns.max() >= T:
        raise ValueError(f"positions must hold rows from 0 to {B - 1} and positions from 0 to {T - 1} "
                         f"(input_ids is {B} x {T}), got rows {int(rows.min())}..{int(rows.max())} "
                         f"and positions {int(columns.min())}..{int(columns.max())}")
    log_probs = []
    with evaluating(bert):
        for start in range(0, len(pairs), batch_size):
            chunk_rows, chunk_columns = rows[start:start + batch_size], columns[start:start + batch_size]
            every_input = torch.arange(len(chunk_rows), device=input_ids.device)
            ids = input_ids[chunk_rows].clone()                                 # (b, T)
            ids[every_input, chunk_columns] = mask_id                           # one blank per input
            mask = None if attention_mask is None else attention_mask[chunk_rows]
            logits = bert(ids, mask)[every_input, chunk_columns]                # (b, V): the blanks' scores
            log_probs.append(logits.log_softmax(dim=-1))
    return torch.cat(log_probs)                                                 # (N, V)
