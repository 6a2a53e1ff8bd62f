"""Pretraining and fine-tuning objectives: 80/10/10 masking, losses."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.objectives import (
    IGNORE_INDEX, gpt_finetune_loss, mask_tokens, masked_lm_loss, next_token_loss, next_token_targets,
    per_position_loss,
)

SPECIAL = list(range(7))
VOCAB = 100
MASK_ID = 4


@pytest.fixture(scope="module")
def masked():
    ids = torch.randint(7, VOCAB, (400, 50), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, -5:] = 2, 0  # [CLS] and padding are never chosen
    inputs, labels = mask_tokens(ids, mask_id=MASK_ID, vocab_size=VOCAB, special_ids=SPECIAL,
                                 generator=torch.Generator().manual_seed(1))
    return ids, inputs, labels


def test_about_15_percent_of_ordinary_tokens_are_chosen(masked):
    ids, inputs, labels = masked
    chosen = labels != IGNORE_INDEX
    ordinary = ids >= 7
    assert not chosen[~ordinary].any()
    assert chosen[ordinary].float().mean().item() == pytest.approx(0.15, abs=0.01)
    assert (labels[chosen] == ids[chosen]).all()


def test_80_10_10(masked):
    ids, inputs, labels = masked
    chosen = labels != IGNORE_INDEX
    n = chosen.sum().item()
    as_mask = (inputs[chosen] == MASK_ID).sum().item() / n
    unchanged = (inputs[chosen] == ids[chosen]).sum().item() / n
    random = 1 - as_mask - unchanged
    assert as_mask == pytest.approx(0.8, abs=0.02)
    assert unchanged == pytest.approx(0.1 + 0.1 / 93, abs=0.015)  # a random draw can equal the original
    assert random == pytest.approx(0.1 - 0.1 / 93, abs=0.015)
    assert (inputs[~chosen] == ids[~chosen]).all()
    assert (inputs[chosen] >= 7).logical_or(inputs[chosen] == MASK_ID).all()  # random tokens are never special


def test_masking_is_reproducible_with_a_generator():
    ids = torch.randint(7, VOCAB, (8, 20))
    first = mask_tokens(ids, mask_id=4, vocab_size=VOCAB, special_ids=SPECIAL, generator=torch.Generator().manual_seed(3))
    again = mask_tokens(ids, mask_id=4, vocab_size=VOCAB, special_ids=SPECIAL, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    with pytest.raises(ValueError, match="mask_prob"):
        mask_tokens(ids, mask_id=4, vocab_size=VOCAB, special_ids=SPECIAL, mask_prob=1.5)
    with pytest.raises(TypeError, match="input_ids"):
        mask_tokens(ids.float(), mask_id=4, vocab_size=VOCAB, special_ids=SPECIAL)


def test_losses_match_cross_entropy_on_predicted_positions():
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[3, -100, 4, -100, -100], [-100, 1, -100, -100, 10]])
    kept = labels != -100
    expected = F.cross_entropy(logits[kept], labels[kept])
    torch.testing.assert_close(masked_lm_loss(logits, labels), expected)
    torch.testing.assert_close(next_token_loss(logits, labels), expected)
    per_position = per_position_loss(logits, labels)
    assert per_position.shape == (2, 5)
    assert (per_position[~kept] == 0).all()
    torch.testing.assert_close(per_position[kept].mean(), expected)


def test_next_token_targets_shift_and_ignore_padding():
    ids = torch.tensor([[5, 10, 11, 6, 0], [5, 12, 6, 0, 0]])
    inputs, targets = next_token_targets(ids, ids != 0)
    assert inputs.tolist() == [[5, 10, 11, 6], [5, 12, 6, 0]]
    assert targets.tolist() == [[10, 11, 6, -100], [12, 6, -100, -100]]


def test_gpt_finetune_loss_is_task_plus_weighted_lm():
    task_logits, labels = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    lm_logits, lm_targets = torch.randn(4, 6, 9), torch.randint(0, 9, (4, 6))
    lm_targets[:, -2:] = -100
    task = F.cross_entropy(task_logits, labels)
    lm = F.cross_entropy(lm_logits[:, :4].reshape(-1, 9), lm_targets[:, :4].reshape(-1))
    torch.testing.assert_close(gpt_finetune_loss(task_logits, labels, lm_logits, lm_targets, 0.5), task + 0.5 * lm)
    torch.testing.assert_close(gpt_finetune_loss(task_logits, labels, lm_logits, lm_targets, 0.0), task)
