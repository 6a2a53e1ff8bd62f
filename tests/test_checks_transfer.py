"""The checks of exercises 07 and 08: correct answers written several ways pass, known mistakes fail with their hint.

Every implementation here is written the way a learner might write it, not
copied from the checks, so a test fails when a check stops recognising a
real learner's answer.
"""
import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import check_gpt_finetune_loss, check_per_position_loss

from check_helpers import assert_fails_with_hint, assert_passes


# ---------------------------------------------------------------------------
# 07.per_position_loss
# ---------------------------------------------------------------------------


def loss_with_cross_entropy(logits, targets):
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), reduction="none").reshape(B, T)


def loss_with_transposed_logits(logits, targets):
    return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")


def loss_with_log_softmax_and_gather(logits, targets):
    ignored = targets == -100
    safe_targets = targets.masked_fill(ignored, 0)
    log_probs = torch.log_softmax(logits, dim=-1)
    losses = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    return losses.masked_fill(ignored, 0.0)


def loss_with_logsumexp(logits, targets):
    kept = targets != -100
    picked = torch.gather(logits, 2, targets.clamp(min=0)[:, :, None])[:, :, 0]
    return (torch.logsumexp(logits, dim=-1) - picked) * kept


@pytest.mark.parametrize("per_position_loss", [loss_with_cross_entropy, loss_with_transposed_logits,
                                               loss_with_log_softmax_and_gather, loss_with_logsumexp])
def test_correct_per_position_losses_pass(per_position_loss):
    assert_passes(check_per_position_loss(per_position_loss))


def mean_loss(logits, targets):
    return F.cross_entropy(logits.transpose(1, 2), targets)


def loss_per_row(logits, targets):
    return loss_with_cross_entropy(logits, targets).sum(dim=1)


def flat_loss(logits, targets):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")


def transposed_loss(logits, targets):
    return loss_with_cross_entropy(logits, targets).T


def clamped_targets(logits, targets):
    log_probs = torch.log_softmax(logits, dim=-1)
    return -log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def log_of_softmax(logits, targets):
    probabilities = torch.softmax(logits, dim=-1)
    losses = -torch.log(probabilities.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1))
    return torch.where(targets == -100, torch.zeros_like(losses), losses)


def softmax_probabilities(logits, targets):
    probabilities = torch.softmax(logits, dim=-1)
    losses = -probabilities.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return losses * (targets != -100)


def log_probabilities(logits, targets):
    return -loss_with_log_softmax_and_gather(logits, targets)


def token_0_zeroed(logits, targets):
    safe_targets = targets.clamp(min=0)
    losses = -torch.log_softmax(logits, dim=-1).gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    return losses.masked_fill(safe_targets == 0, 0.0)


def token_0_zeroed_only(logits, targets):
    losses = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return torch.where(targets == 0, torch.zeros_like(losses), losses)


def label_smoothing(logits, targets):
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", label_smoothing=0.1)


@pytest.mark.parametrize(
    "wrong_loss, words_of_the_hint",
    [
        (mean_loss, "returned one number"),
        (loss_per_row, "averaged or summed over a dimension"),
        (flat_loss, "reshape it"),
        (transposed_loss, "transposed"),
        (clamped_targets, "exactly 0"),
        (log_of_softmax, "underflowed"),
        (softmax_probabilities, "instead of its log"),
        (log_probabilities, "negative"),
        (token_0_zeroed, "where the target is token 0"),
        (token_0_zeroed_only, "where the target is token 0"),
        (label_smoothing, "label smoothing was applied"),
    ],
    ids=["mean", "sum-per-row", "flat", "transposed", "clamped", "log-of-softmax", "probabilities", "sign",
         "token-0-zeroed", "token-0-zeroed-only", "label-smoothing"],
)
def test_wrong_per_position_losses_fail_with_their_hint(wrong_loss, words_of_the_hint):
    assert_fails_with_hint(check_per_position_loss(wrong_loss), words_of_the_hint)


def test_gather_without_handling_ignored_targets_reports_the_error():
    def gather_minus_100(logits, targets):
        return -torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    result = check_per_position_loss(gather_minus_100)
    assert not result
    assert "your function raised" in result.report()


def test_unsolved_per_position_loss_is_not_implemented():
    def unsolved(logits, targets):
        raise NotImplementedError()

    assert check_per_position_loss(unsolved).status == "not implemented"


# ---------------------------------------------------------------------------
# 08.gpt_finetune_loss
# ---------------------------------------------------------------------------


def finetune_loss_with_cross_entropy(task_logits, labels, lm_logits, lm_targets, lm_weight):
    task = F.cross_entropy(task_logits, labels)
    lm = F.cross_entropy(lm_logits.transpose(1, 2), lm_targets, ignore_index=-100)
    return task + lm_weight * lm


def finetune_loss_by_hand(task_logits, labels, lm_logits, lm_targets, lm_weight):
    task = -torch.log_softmax(task_logits, dim=-1)[torch.arange(len(labels)), labels].mean()
    real = lm_targets != -100
    log_probs = torch.log_softmax(lm_logits[real], dim=-1)  # (N, V) for the N real positions
    lm = -log_probs[torch.arange(len(log_probs)), lm_targets[real]].mean()
    return task + lm_weight * lm


@pytest.mark.parametrize("gpt_finetune_loss", [finetune_loss_with_cross_entropy, finetune_loss_by_hand])
def test_correct_finetune_losses_pass(gpt_finetune_loss):
    assert_passes(check_gpt_finetune_loss(gpt_finetune_loss))


def lm_loss(lm_logits, lm_targets):
    return F.cross_entropy(lm_logits.flatten(0, 1), lm_targets.flatten())


def weight_on_the_task(task_logits, labels, lm_logits, lm_targets, lm_weight):
    return lm_weight * F.cross_entropy(task_logits, labels) + lm_loss(lm_logits, lm_targets)


def convex_mix(task_logits, labels, lm_logits, lm_targets, lm_weight):
    return (1 - lm_weight) * F.cross_entropy(task_logits, labels) + lm_weight * lm_loss(lm_logits, lm_targets)


def shifted_again(task_logits, labels, lm_logits, lm_targets, lm_weight):
    lm = F.cross_entropy(lm_logits[:, :-1].flatten(0, 1), lm_targets[:, 1:].flatten())
    return F.cross_entropy(task_logits, labels) + lm_weight * lm


def padding_as_token_zero(task_logits, labels, lm_logits, lm_targets, lm_weight):
    lm = F.cross_entropy(lm_logits.flatten(0, 1), lm_targets.clamp(min=0).flatten())
    return F.cross_entropy(task_logits, labels) + lm_weight * lm


def padding_in_the_average(task_logits, labels, lm_logits, lm_targets, lm_weight):
    losses = F.cross_entropy(lm_logits.transpose(1, 2), lm_targets, reduction="none")  # 0 at padding
    return F.cross_entropy(task_logits, labels) + lm_weight * losses.mean()


def no_weight(task_logits, labels, lm_logits, lm_targets, lm_weight):
    return F.cross_entropy(task_logits, labels) + lm_loss(lm_logits, lm_targets)


def task_only(task_logits, labels, lm_logits, lm_targets, lm_weight):
    return F.cross_entropy(task_logits, labels)


def shifted_the_wrong_way(task_logits, labels, lm_logits, lm_targets, lm_weight):
    lm = F.cross_entropy(lm_logits[:, 1:].flatten(0, 1), lm_targets[:, :-1].flatten())
    return F.cross_entropy(task_logits, labels) + lm_weight * lm


def mean_of_row_means(task_logits, labels, lm_logits, lm_targets, lm_weight):
    losses = F.cross_entropy(lm_logits.transpose(1, 2), lm_targets, reduction="none")  # (B, T), 0 at padding
    row_means = losses.sum(dim=1) / (lm_targets != -100).sum(dim=1)
    return F.cross_entropy(task_logits, labels) + lm_weight * row_means.mean()


def lm_loss_summed(task_logits, labels, lm_logits, lm_targets, lm_weight):
    lm = F.cross_entropy(lm_logits.flatten(0, 1), lm_targets.flatten(), ignore_index=-100, reduction="sum")
    return F.cross_entropy(task_logits, labels) + lm_weight * lm


def task_loss_summed(task_logits, labels, lm_logits, lm_targets, lm_weight):
    return F.cross_entropy(task_logits, labels, reduction="sum") + lm_weight * lm_loss(lm_logits, lm_targets)


@pytest.mark.parametrize(
    "wrong_loss, words_of_the_hint",
    [
        (weight_on_the_task, "multiplies the task loss"),
        (convex_mix, "(1 - lm_weight)"),
        (shifted_again, "do not shift them again"),
        (padding_as_token_zero, "padding was counted"),
        (padding_in_the_average, "padding was counted"),
        (no_weight, "lm_weight was not used"),
        (task_only, "language-modelling loss is missing"),
        (shifted_the_wrong_way, "shifted the wrong way"),
        (mean_of_row_means, "mean of per-row means"),
        (lm_loss_summed, "language-modelling loss was summed"),
        (task_loss_summed, "task loss was summed"),
    ],
    ids=["weight-on-task", "convex", "shifted", "padding-token-0", "padding-in-mean", "no-weight", "task-only",
         "shifted-wrong-way", "row-means", "lm-summed", "task-summed"],
)
def test_wrong_finetune_losses_fail_with_their_hint(wrong_loss, words_of_the_hint):
    assert_fails_with_hint(check_gpt_finetune_loss(wrong_loss), words_of_the_hint)


def test_a_float_instead_of_a_tensor_fails():
    def returns_a_float(*args):
        return float(finetune_loss_with_cross_entropy(*args))

    result = check_gpt_finetune_loss(returns_a_float)
    assert not result
    assert "expected a torch.Tensor" in result.report()
