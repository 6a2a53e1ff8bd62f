"""The check of exercise 05.training_step: right steps written several ways pass, each known mistake fails with
its one hint.

The check judges a step by the losses of three steps in a row (the later
losses are measured on the parameters the earlier steps left), so these
tests also make sure that it judges from the returned losses alone, as the
grader does.
"""
import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import check_training_step
from course_lib.checks.training_checks import _TRAINING_CASES, _steps_of
from course_lib.objectives import masked_lm_loss

from check_helpers import assert_fails_with_hint, assert_passes


def step_zeroing_first(model, optimizer, inputs, labels, attention_mask, max_grad_norm=1.0):
    optimizer.zero_grad()
    logits = model(inputs, attention_mask)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return loss.item()


def step_with_course_loss_returning_a_tensor(model, optimizer, inputs, labels, attention_mask, max_grad_norm=1.0):
    loss = masked_lm_loss(model(inputs, attention_mask), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_grad_norm)
    optimizer.step()
    model.zero_grad(set_to_none=False)
    return loss.detach()


def step_by_hand(model, optimizer, inputs, labels, attention_mask, max_grad_norm=1.0):
    logits = model(inputs, attention_mask.long())
    chosen = labels != -100
    log_probs = torch.log_softmax(logits[chosen], dim=-1)              # (N, V), only the predicted positions
    loss = -log_probs.gather(1, labels[chosen][:, None]).mean()
    loss.backward()
    parameters = [p for p in model.parameters() if p.grad is not None]
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in parameters))
    if norm > max_grad_norm:
        for p in parameters:
            p.grad.mul_(max_grad_norm / (norm + 1e-6))
    optimizer.step()
    for p in parameters:
        p.grad = None
    return float(loss.detach())


@pytest.mark.parametrize("training_step", [step_zeroing_first, step_with_course_loss_returning_a_tensor,
                                           step_by_hand])
def test_correct_training_steps_pass(training_step):
    assert_passes(check_training_step(training_step))


def step_with(*, mask=True, targets="labels", reduction="mean", clip="norm", step=True, zero=True,
              zero_before_step=False, step_first=False):
    def training_step(model, optimizer, inputs, labels, attention_mask, max_grad_norm=1.0):
        logits = model(inputs, attention_mask) if mask else model(inputs)
        wanted = labels if targets == "labels" else inputs
        if reduction == "none, then mean":
            loss = F.cross_entropy(logits.transpose(1, 2), wanted, reduction="none").mean()
        else:
            loss = F.cross_entropy(logits.transpose(1, 2), wanted, reduction=reduction)
        if step_first:
            optimizer.step()
        loss.backward()
        if clip == "norm":
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        elif clip == "value":
            torch.nn.utils.clip_grad_value_(model.parameters(), max_grad_norm)
        elif clip == "at 1.0":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if zero_before_step:
            optimizer.zero_grad()
        if step and not step_first:
            optimizer.step()
        if clip == "after step":
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        if zero and not zero_before_step:
            optimizer.zero_grad()
        return loss.item()
    return training_step


@pytest.mark.parametrize("training_step, words_of_the_hint", [
    (step_with(mask=False), "attention_mask was not passed"),
    (step_with(targets="inputs"), "compared the predictions with the inputs"),
    (step_with(reduction="sum"), "you returned the sum"),
    (step_with(step=False), "the parameters never changed"),
    (step_with(zero_before_step=True), "the parameters never changed"),
    (step_with(step_first=True), "the parameters never changed"),
    (step_with(zero=False), "never zeroed"),
    (step_with(clip="none"), "not clipped before the update"),
    (step_with(clip="after step"), "not clipped before the update"),
    (step_with(clip="value"), "clip_grad_value_"),
    (step_with(reduction="none, then mean"), "the mean counted every position"),
    (step_with(clip="at 1.0"), "whatever max_grad_norm is"),
], ids=["no-mask", "inputs-as-targets", "sum", "no-step", "zero-before-step", "step-before-backward", "no-zero",
        "no-clip", "clip-after-step", "clip-value", "mean-over-every-position", "clip-at-1"])
def test_training_step_mistakes_fail_with_their_hint(training_step, words_of_the_hint):
    assert_fails_with_hint(check_training_step(training_step), words_of_the_hint)


def test_a_step_that_returns_nothing_is_told_to_return_the_loss():
    def step_without_return(model, optimizer, inputs, labels, attention_mask, max_grad_norm=1.0):
        step_zeroing_first(model, optimizer, inputs, labels, attention_mask, max_grad_norm)

    result = check_training_step(step_without_return)

    assert not result
    assert "forget `return loss.item()`" in result.report()


def test_the_verdict_comes_from_the_returned_losses_alone():
    # What the grader does: a stand-in that returns the right losses, recorded elsewhere, and changes nothing.
    recorded = [loss for case in _TRAINING_CASES for loss in case.call(_steps_of(step_zeroing_first))]

    def replay(model, optimizer, inputs, labels, attention_mask, max_grad_norm=1.0):
        return recorded.pop(0)

    assert_passes(check_training_step(replay))
    assert not recorded


def test_unsolved_or_not_a_function():
    def unsolved(model, optimizer, inputs, labels, attention_mask, max_grad_norm=1.0):
        raise NotImplementedError()

    assert check_training_step(unsolved).status == "not implemented"
    result = check_training_step(3)
    assert not result
    assert "should be a function" in result.report()
