"""Check of exercise 05.training_step: one step of BERT's pretraining, judged by what it does to the model.

A training step returns one number, the loss, but what matters is what it
leaves behind: the parameters after the update. The check runs the
learner's step three times in a row on a tiny BERT, with an optimizer the
check creates, and compares the three losses with those of the reference
step. The first loss says whether the forward pass and the loss are right;
the second is measured on the parameters the first step left, the third on
those the second step left, so a missing update, missing clipping or
gradients that pile up from one step to the next all change them.

Only the returned losses are judged, never the model itself: the grader
replays what the learner's function returned, so the verdict must follow
from the answers alone. The optimizer is plain SGD with a large learning
rate (Adam's first step hardly depends on the size of the gradient, which
would hide missing clipping), and the gradients of the tiny BERT are about
4 in norm, so clipping at 1.0 or 0.5 changes every update.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from course_lib.checks.framework import Case, CheckResult, Mistake, check_function
from course_lib.models import BERT, TransformerConfig
from course_lib.objectives import IGNORE_INDEX, mask_tokens

_LEARNING_RATE = 0.1
_WEIGHT_SCALE = 10.0
_N_STEPS = 3
_SPECIAL_IDS = [0, 1, 2, 3, 4]  # [PAD], [CLS], [SEP], [UNK], [MASK] as in the story world's tokenizer
_MASK_ID = 4


def _tiny_bert(seed: int) -> BERT:
    config = TransformerConfig(vocab_size=12, max_len=16, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BERT(config)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.mul_(_WEIGHT_SCALE)  # decisive attention: padding that is not masked changes the loss
    return model


def _masked_batch(lengths: list[int], T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, labels, attention_mask) of stories [CLS] ... [SEP] [PAD] ... of the given lengths, half masked."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 12, (len(lengths), T), generator=generator)
    positions = torch.arange(T)[None, :]
    ends = torch.tensor(lengths)[:, None]
    ids[:, 0] = 1
    ids[positions == ends - 1] = 2
    ids[positions >= ends] = 0
    attention_mask = positions < ends
    inputs, labels = mask_tokens(ids, mask_id=_MASK_ID, vocab_size=12, special_ids=_SPECIAL_IDS, mask_prob=0.5,
                                 generator=generator)
    return inputs, labels, attention_mask


def _steps_of(step_fn: Any) -> Any:
    """What the check calls: ``step_fn`` three times on the case's model and batches, with a new optimizer.

    Returns the tuple of what the three calls returned. Anything that is not
    a function is passed on unchanged, so the check reports it as such.
    """
    if not callable(step_fn):
        return step_fn

    def run_steps(model, batches, max_grad_norm):
        optimizer = torch.optim.SGD(model.parameters(), lr=_LEARNING_RATE)
        model.train()
        return tuple(step_fn(model, optimizer, inputs, labels, attention_mask, max_grad_norm=max_grad_norm)
                     for inputs, labels, attention_mask in batches)

    return run_steps


def _masked_lm_loss(model, inputs, labels, attention_mask):
    logits = model(inputs, attention_mask)  # (B, T, vocab_size)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


def _training_step_reference(model, optimizer, inputs, labels, attention_mask, max_grad_norm=1.0):
    loss = _masked_lm_loss(model, inputs, labels, attention_mask)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def _step_variant(*, mask: bool = True, targets_are_inputs: bool = False, reduction: str = "mean",
                  clip: str = "norm", update: bool = True, zero_grad: bool = True,
                  step_before_backward: bool = False) -> Callable:
    """A training step with one known mistake switched on."""

    def step(model, optimizer, inputs, labels, attention_mask, max_grad_norm=1.0):
        logits = model(inputs, attention_mask if mask else None)
        targets = inputs if targets_are_inputs else labels
        if reduction == "every position":  # the skipped positions' zeros counted in the mean
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                                   reduction="none").mean()
        else:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                                   reduction=reduction)
        if step_before_backward:
            optimizer.step()
        loss.backward()
        if clip == "norm":
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        elif clip == "norm 1.0":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        elif clip == "value":
            torch.nn.utils.clip_grad_value_(model.parameters(), max_grad_norm)
        if update and not step_before_backward:
            optimizer.step()
        if zero_grad:
            optimizer.zero_grad()
        return loss.item()

    return step


def _as_losses(received: Any) -> tuple[torch.Tensor | None, str]:
    """The three returned losses as a float tensor (3,), or None and what is wrong with them."""
    if not isinstance(received, tuple) or len(received) != _N_STEPS:  # built by _steps_of: cannot happen
        return None, f"expected {_N_STEPS} losses, received {received!r}"
    losses = []
    for step, value in enumerate(received, start=1):
        if value is None:
            return None, f"step {step} returned None: did you forget `return loss.item()`?"
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
            value = value.item()
        if not isinstance(value, (float, int)) or isinstance(value, bool):
            return None, f"step {step} returned a {type(value).__name__}, expected the loss as a number (loss.item())"
        losses.append(float(value))
    return torch.tensor(losses, dtype=torch.float64), ""


def _losses(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{value:.5f}" for value in values) + "]"


def _verify_steps(received: Any, case: Case) -> str | None:
    """The ``verify`` judge: None when the three losses are the reference's, else both lists."""
    losses, problem = _as_losses(received)
    if losses is None:
        return problem
    expected = torch.tensor(case.call(_steps_of(_training_step_reference)), dtype=torch.float64)
    if torch.allclose(losses, expected, rtol=case.rtol, atol=case.atol):
        return None
    first_wrong = int((~torch.isclose(losses, expected, rtol=case.rtol, atol=case.atol)).nonzero()[0]) + 1
    where = ("the first loss already differs: the forward pass or the loss" if first_wrong == 1 else
             f"the first {first_wrong - 1} agree{'s' if first_wrong == 2 else ''}: the update of step "
             f"{first_wrong - 1} differs")
    return (f"losses of the {_N_STEPS} steps: expected {_losses(expected.tolist())}, "
            f"received {_losses(losses.tolist())} ({where})")


def _losses_of(variant: Callable) -> Callable[[Any, Case], bool]:
    """A ``shows_in`` test: the three losses are those of the wrong step ``variant``."""

    def shows_in(received: Any, case: Case) -> bool:
        losses, _ = _as_losses(received)
        wrong = torch.tensor(case.call(_steps_of(variant)), dtype=torch.float64)
        return losses is not None and torch.allclose(losses, wrong, rtol=case.rtol, atol=case.atol)

    return shows_in


def _training_case(description: str, batch_seeds: tuple[int, int, int], max_grad_norm: float, seed: int) -> Case:
    batches = tuple(_masked_batch([7, 6, 4, 5], 7, batch_seed) for batch_seed in batch_seeds)
    return Case(description, (_tiny_bert(seed), batches, max_grad_norm))


_TRAINING_CASES = (
    _training_case("3 steps on 3 batches of 4 padded stories, max_grad_norm=1.0", (40, 41, 42), 1.0, seed=40),
    _training_case("3 steps on the same batch, max_grad_norm=0.5", (43, 43, 43), 0.5, seed=41),
    _training_case("3 steps, max_grad_norm=1000 (the gradients are never clipped)", (44, 45, 46), 1000.0, seed=42),
)

_NEVER_UPDATED_HINT = (
    "the parameters never changed: after loss.backward() and clipping, optimizer.step() must apply the "
    "gradients, and only then may they be zeroed (zero_grad() before step() throws them away)."
)

_TRAINING_MISTAKES = (
    Mistake("attention_mask was not passed to the model, so the real tokens also attended to padding: "
            "model(inputs, attention_mask).", _losses_of(_step_variant(mask=False))),
    Mistake("the loss compared the predictions with the inputs, which hold [MASK] where BERT must guess. "
            "The targets are labels: the original ids at the chosen positions, -100 (skipped) everywhere else.",
            _losses_of(_step_variant(targets_are_inputs=True))),
    Mistake("the loss is the mean over the predicted positions (F.cross_entropy's default); you returned the sum.",
            _losses_of(_step_variant(reduction="sum"))),
    Mistake("the mean counted every position, the skipped ones (label -100) too, each as a loss of 0. Average "
            "over the predicted positions only: F.cross_entropy(..., ignore_index=-100) with its default "
            "reduction does exactly that.", _losses_of(_step_variant(reduction="every position"))),
    Mistake(_NEVER_UPDATED_HINT, _losses_of(_step_variant(update=False))),
    Mistake("the gradients were never zeroed, so each step's gradients were added to the previous ones. "
            "Call optimizer.zero_grad() once per step (at its start, or after optimizer.step()).",
            _losses_of(_step_variant(zero_grad=False))),
    Mistake("the gradients were not clipped before the update: between loss.backward() and optimizer.step(), "
            "call torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm). (Clipping after step() "
            "comes too late: the update has already used them.)", _losses_of(_step_variant(clip="none"))),
    Mistake("the gradients were clipped at a norm of 1.0 whatever max_grad_norm is: pass the argument, "
            "clip_grad_norm_(model.parameters(), max_grad_norm).", _losses_of(_step_variant(clip="norm 1.0"))),
    Mistake("clip_grad_value_ clips every number of every gradient on its own; the step must scale the whole "
            "gradient down when its norm exceeds max_grad_norm: torch.nn.utils.clip_grad_norm_.",
            _losses_of(_step_variant(clip="value"))),
)


def check_training_step(learner_fn: Any) -> CheckResult:
    """Check exercise 05: ``training_step(model, optimizer, inputs, labels, attention_mask, max_grad_norm=1.0)``.

    One step of masked-language-model training: forward pass, the
    cross-entropy over the positions whose label is not -100, backward,
    clipping of the gradient norm, the optimizer's step, gradients zeroed;
    it returns the loss as a number. Each case runs three steps on a tiny
    BERT with an SGD optimizer and compares the three losses with the
    reference's: the later ones show what the earlier updates did.
    """
    return check_function(_steps_of(learner_fn), exercise="05.training_step", verify=_verify_steps,
                          cases=_TRAINING_CASES, mistakes=_TRAINING_MISTAKES)
