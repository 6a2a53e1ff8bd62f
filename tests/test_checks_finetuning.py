"""The checks of exercises 08.mean_pool and 08.trainable_parameters: right answers written several ways pass,
each known mistake fails with its one hint."""
import pytest
import torch

from course_lib.checks import check_mean_pool, check_trainable_parameters
from course_lib.checks.finetuning_checks import _PARAMETER_CASES, _names_in

from check_helpers import assert_fails_with_hint, assert_passes

# ---------------------------------------------------------------------------
# 08.mean_pool
# ---------------------------------------------------------------------------


def pool_with_unsqueeze(hidden, attention_mask):
    real = attention_mask.unsqueeze(-1).float()
    return (hidden * real).sum(dim=1) / real.sum(dim=1)


def pool_with_einsum(hidden, attention_mask):
    real = attention_mask.to(hidden.dtype)
    return torch.einsum("btd,bt->bd", hidden, real) / real.sum(dim=1, keepdim=True)


def pool_row_by_row(hidden, attention_mask):
    return torch.stack([h[m.bool()].mean(dim=0) for h, m in zip(hidden, attention_mask)])


def pool_with_masked_fill_and_bmm(hidden, attention_mask):
    weights = attention_mask.float() / attention_mask.float().sum(dim=1, keepdim=True)   # (B, T), rows sum to 1
    return torch.bmm(weights[:, None, :], hidden)[:, 0]


@pytest.mark.parametrize("mean_pool", [pool_with_unsqueeze, pool_with_einsum, pool_row_by_row,
                                       pool_with_masked_fill_and_bmm])
def test_correct_mean_pools_pass(mean_pool):
    assert_passes(check_mean_pool(mean_pool))


@pytest.mark.parametrize("mean_pool, words_of_the_hint", [
    (lambda hidden, mask: hidden.mean(dim=1), "padding was averaged in"),
    (lambda hidden, mask: (hidden * mask[..., None]).sum(1) / hidden.shape[1], "divided by T"),
    (lambda hidden, mask: (hidden * mask[..., None]).sum(1), "this is the sum"),
    (lambda hidden, mask: hidden[:, 0], "[CLS] pooling"),
    (lambda hidden, mask: (hidden * mask[..., None]).mean(dim=-1), "the mean ran over the features"),
    (lambda hidden, mask: hidden[mask.bool()].mean(dim=0), "one vector for the whole batch"),
    (lambda hidden, mask: (hidden * mask[..., None]).sum(1) / mask.sum(), "real tokens of the whole batch"),
    (lambda hidden, mask: hidden.max(dim=1).values, "max pooling"),
    (lambda hidden, mask: hidden.masked_fill(mask[..., None] == 0, -1e9).amax(dim=1), "max pooling"),
    (lambda hidden, mask: hidden[torch.arange(len(hidden)), mask.sum(dim=1) - 1], "last-token pooling"),
    (lambda hidden, mask: hidden[:, -1], "last-token pooling"),
], ids=["padding", "divided-by-T", "sum", "cls", "features", "whole-batch", "batch-count", "max", "masked-max",
        "last-real-token", "last-position"])
def test_mean_pool_mistakes_fail_with_their_hint(mean_pool, words_of_the_hint):
    assert_fails_with_hint(check_mean_pool(mean_pool), words_of_the_hint)


# ---------------------------------------------------------------------------
# 08.trainable_parameters
# ---------------------------------------------------------------------------


def parameters_by_modules(classifier, n_trainable_blocks=0):
    blocks = classifier.bert.body.blocks
    trained = [classifier.head, *blocks[len(blocks) - n_trainable_blocks:]]
    return [parameter for module in trained for parameter in module.parameters()]


def parameters_by_names(classifier, n_trainable_blocks=0):
    n_layers = len(classifier.bert.body.blocks)
    wanted = ["head."] + [f"bert.body.blocks.{i}." for i in range(n_layers - n_trainable_blocks, n_layers)]
    return [p for name, p in classifier.named_parameters() if any(name.startswith(w) for w in wanted)]


def parameters_after_freezing(classifier, n_trainable_blocks=0):
    classifier.requires_grad_(False)
    classifier.head.requires_grad_(True)
    if n_trainable_blocks:
        for block in classifier.bert.body.blocks[-n_trainable_blocks:]:
            block.requires_grad_(True)
    return tuple(p for p in classifier.parameters() if p.requires_grad)


@pytest.mark.parametrize("trainable_parameters", [parameters_by_modules, parameters_by_names,
                                                  parameters_after_freezing])
def test_correct_trainable_parameters_pass(trainable_parameters):
    assert_passes(check_trainable_parameters(trainable_parameters))


def with_blocks(choose, head=True, matrices_only=False, extra=()):
    def trainable_parameters(classifier, n_trainable_blocks=0):
        modules = list(choose(classifier.bert.body.blocks, n_trainable_blocks)) + ([classifier.head] if head else [])
        modules += [getattr(classifier.bert.body, name) for name in extra]
        parameters = [p for module in modules for p in module.parameters()]
        return [p for p in parameters if p.dim() >= 2] if matrices_only else parameters
    return trainable_parameters


def last(blocks, n):
    return blocks[len(blocks) - n:]


@pytest.mark.parametrize("trainable_parameters, words_of_the_hint", [
    (lambda classifier, n_trainable_blocks=0: list(classifier.parameters()), "every parameter of the classifier"),
    (with_blocks(lambda blocks, n: blocks[-n:]), "blocks[-0:]"),
    (with_blocks(lambda blocks, n: blocks[:n]), "the first blocks were chosen"),
    (with_blocks(last, head=False), "the head is missing"),
    (with_blocks(last, matrices_only=True), "only the weight matrices"),
    (with_blocks(last, extra=("token_embedding", "position")), "the embeddings are in the list"),
    (lambda classifier, n_trainable_blocks=0: classifier.head.parameters(), "return a list"),
    (lambda classifier, n_trainable_blocks=0: parameters_by_modules(classifier, n_trainable_blocks) * 2, "twice"),
], ids=["everything", "minus-zero", "first-blocks", "no-head", "matrices", "embeddings", "generator", "twice"])
def test_trainable_parameters_mistakes_fail_with_their_hint(trainable_parameters, words_of_the_hint):
    assert_fails_with_hint(check_trainable_parameters(trainable_parameters), words_of_the_hint)


def test_the_parameters_are_recognised_by_their_values_as_the_grader_sees_them():
    # The grader receives detached copies of the tensors, not the parameters themselves.
    for case in _PARAMETER_CASES:
        copies = [p.detach().clone() for p in case.call(parameters_by_modules)]
        assert _names_in(copies, case) is not None
    recorded = [[p.detach().clone() for p in case.call(parameters_by_modules)] for case in _PARAMETER_CASES]
    assert_passes(check_trainable_parameters(lambda classifier, n_trainable_blocks=0: recorded.pop(0)))


def test_the_embeddings_stay_frozen_even_when_every_block_trains():
    result = check_trainable_parameters(with_blocks(last, extra=("token_embedding",)))

    assert not result.cases[3].passed
    assert "not to be trained" in result.report()
