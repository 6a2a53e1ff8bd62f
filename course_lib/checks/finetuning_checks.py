"""Checks of exercises 08: one vector per story (mean pooling), and which parameters fine-tuning trains.

``mean_pool`` is compared with a reference, as usual. ``trainable_parameters``
returns a list of parameters, the list an optimizer would be given; the
check finds out which parameters of the classifier the answer holds (every
parameter of the check's classifiers has its own random values, so a
tensor's values name it) and compares that set with the expected one. It
never relies on the identity of the tensors or on ``requires_grad``: the
grader only sees the values the learner's function returned.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from course_lib.checks.framework import (Case, CheckResult, Mistake, check_function, same_output_as,
                                        same_output_as_any_of)
from course_lib.models import BERT, ClassificationHead, TransformerConfig

# ---------------------------------------------------------------------------
# Exercise 08.mean_pool: the mean of the hidden states over the real tokens
# ---------------------------------------------------------------------------


def _mean_pool_reference(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    real = attention_mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * real).sum(dim=1) / real.sum(dim=1)


def _mean_with_padding(hidden, attention_mask):
    return hidden.mean(dim=1)


def _sum_over_T(hidden, attention_mask):
    return (hidden * attention_mask.to(hidden.dtype)[..., None]).sum(dim=1) / hidden.shape[1]


def _sum_only(hidden, attention_mask):
    return (hidden * attention_mask.to(hidden.dtype)[..., None]).sum(dim=1)


def _first_position(hidden, attention_mask):
    return hidden[:, 0]


def _divided_by_the_batch_count(hidden, attention_mask):
    """The masked sum of each row divided by the number of real tokens of the whole batch."""
    real = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * real).sum(dim=1) / real.sum()


def _max_pool(hidden, attention_mask):
    return hidden.max(dim=1).values


def _masked_max_pool(hidden, attention_mask):
    """The largest value of each feature over the real tokens only."""
    return hidden.masked_fill(~attention_mask.bool()[..., None], float("-inf")).max(dim=1).values


def _last_real_token(hidden, attention_mask):
    lengths = attention_mask.long().sum(dim=1)
    return hidden[torch.arange(hidden.shape[0]), lengths - 1]


def _last_position(hidden, attention_mask):
    return hidden[:, -1]


def _shape_is(shape: Callable[[torch.Tensor], tuple]) -> Callable[[Any, Case], bool]:
    def shows_in(received: Any, case: Case) -> bool:
        return isinstance(received, torch.Tensor) and tuple(received.shape) == shape(case.args[0])
    return shows_in


def _pool_case(description: str, lengths: list[int], T: int, d: int, seed: int, mask_as_int: bool = False) -> Case:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(len(lengths), T, d, generator=generator) + 1.0  # a mean that is not near 0
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    return Case(description, (hidden, mask.long() if mask_as_int else mask))


_POOL_CASES = (
    _pool_case("hidden (1, 4, 3), no padding", [4], 4, 3, seed=60),
    _pool_case("hidden (3, 5, 4), stories of 5, 3 and 2 tokens, bool mask", [5, 3, 2], 5, 4, seed=61),
    _pool_case("hidden (2, 6, 8), stories of 6 and 1 tokens, mask of 0/1 integers", [6, 1], 6, 8, seed=62,
               mask_as_int=True),
    _pool_case("hidden (4, 7, 5), every story padded", [3, 6, 2, 5], 7, 5, seed=63),
)

_POOL_MISTAKES = (
    Mistake("padding was averaged in: the mean must run over the real tokens only. Multiply by the mask "
            "(shaped (B, T, 1) so that it broadcasts over the features), sum over T, and divide by the number "
            "of real tokens of each story.", same_output_as(_mean_with_padding)),
    Mistake("the masked sum was divided by T, the padded length; divide by the number of real tokens of each "
            "story, attention_mask.sum(dim=1) (kept as (B, 1) so that it broadcasts).", same_output_as(_sum_over_T)),
    Mistake("this is the sum over the real tokens: divide it by their number to get the mean.",
            same_output_as(_sum_only)),
    Mistake("this is the vector of the first position ([CLS] pooling); the exercise asks for the mean over all "
            "real positions.", same_output_as(_first_position)),
    Mistake("the masked sum was divided by the number of real tokens of the whole batch; divide each story by its "
            "own count, attention_mask.sum(dim=1, keepdim=True), shape (B, 1).",
            same_output_as(_divided_by_the_batch_count)),
    Mistake("this is max pooling, the largest value of each feature; the exercise asks for the mean over the real "
            "tokens: (hidden * mask).sum(dim=1) / mask.sum(dim=1), with the mask shaped (B, T, 1).",
            same_output_as_any_of(_max_pool, _masked_max_pool)),
    Mistake("this is the vector of one position, the last (GPT-style last-token pooling); the exercise asks for "
            "the mean over all real positions: (hidden * mask).sum(dim=1) / mask.sum(dim=1).",
            same_output_as_any_of(_last_real_token, _last_position)),
    Mistake("the answer has one value per position, shape (B, T): the mean ran over the features. Average over "
            "the positions, dim=1, to keep one d-dimensional vector per story.",
            _shape_is(lambda hidden: tuple(hidden.shape[:2]))),
    Mistake("the answer is one vector for the whole batch: hidden[mask] mixes every story's tokens. Keep one "
            "vector per story, shape (B, d).", _shape_is(lambda hidden: (hidden.shape[-1],))),
)


def check_mean_pool(learner_fn: Any) -> CheckResult:
    """Check exercise 08: ``mean_pool(hidden, attention_mask)``: (B, T, d) and (B, T) -> (B, d).

    The mean of each story's hidden states over its real positions (mask
    True or 1). The cases have B, T and d all different, bool and 0/1
    masks, a story of one token and stories with no padding.
    """
    return check_function(learner_fn, exercise="08.mean_pool", reference=_mean_pool_reference,
                          cases=_POOL_CASES, mistakes=_POOL_MISTAKES)


# ---------------------------------------------------------------------------
# Exercise 08.trainable_parameters: the head, and the last n blocks of the body
# ---------------------------------------------------------------------------


class _Classifier(nn.Module):
    """The layout of notebook 08's ``BertClassifier``: a BERT in ``.bert``, a small MLP in ``.head``."""

    def __init__(self, n_layers: int, seed: int):
        super().__init__()
        config = TransformerConfig(vocab_size=10, max_len=8, d_model=8, n_heads=2, n_layers=n_layers, d_ff=16,
                                   dropout=0.0)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.bert = BERT(config)
            self.head = ClassificationHead(8, 2, hidden=6)
            with torch.no_grad():
                for parameter in self.parameters():  # every tensor its own values: they tell which one it is
                    parameter.copy_(torch.randn_like(parameter))


def _expected_names(classifier: nn.Module, n_trainable_blocks: int) -> list[str]:
    n_layers = len(classifier.bert.body.blocks)
    trained = [f"bert.body.blocks.{i}." for i in range(n_layers - n_trainable_blocks, n_layers)] + ["head."]
    return [name for name, _ in classifier.named_parameters() if name.startswith(tuple(trained))]


def _names_in(received: Any, case: Case) -> list[str] | None:
    """The names of the classifier's parameters that the answer holds, in order (None when one is not one of them)."""
    if not isinstance(received, (list, tuple)):
        return None
    parameters = list(case.args[0].named_parameters())
    names = []
    for item in received:
        if not isinstance(item, torch.Tensor):
            return None
        match = [name for name, parameter in parameters
                 if parameter.shape == item.shape and torch.equal(parameter.detach(), item.detach().cpu())]
        if len(match) != 1:
            return None
        names.append(match[0])
    return names


def _part(name: str) -> str:
    """The part of the classifier a parameter belongs to, as the learner would say it."""
    if name.startswith("head."):
        return "the head"
    if name.startswith("bert.body.blocks."):
        return f"block {name.split('.')[3]}"
    return "the embeddings" if name.startswith("bert.body.") or "segment" in name else "the masked-LM head"


def _describe_parts(names: list[str]) -> str:
    parts = list(dict.fromkeys(_part(name) for name in names))
    return ", ".join(parts) if parts else "nothing"


def _verify_parameters(received: Any, case: Case) -> str | None:
    classifier = case.args[0]
    n_trainable_blocks = case.kwargs.get("n_trainable_blocks", 0)
    if not isinstance(received, (list, tuple)):
        return f"expected a list of parameters, received a {type(received).__name__}"
    names = _names_in(received, case)
    if names is None:
        return "the list holds something that is not one of the classifier's parameters (compare values, not copies)"
    expected = _expected_names(classifier, n_trainable_blocks)
    if len(names) != len(set(names)):
        return f"{len(names) - len(set(names))} parameters are in the list twice"
    if set(names) == set(expected):
        return None
    missing = [name for name in expected if name not in names]
    extra = [name for name in names if name not in expected]
    lines = [f"expected the parameters of {_describe_parts(expected)} ({len(expected)} tensors), "
             f"received those of {_describe_parts(names)} ({len(names)} tensors)"]
    if missing:
        lines.append(f"missing {len(missing)}, first {missing[0]}")
    if extra:
        lines.append(f"not to be trained: {len(extra)}, first {extra[0]}")
    return "\n".join(lines)


def _shows_names(wrong_names: Callable[[nn.Module, int], list[str]]) -> Callable[[Any, Case], bool]:
    """A ``shows_in`` test: the answer holds exactly the parameters that ``wrong_names`` lists."""

    def shows_in(received: Any, case: Case) -> bool:
        names = _names_in(received, case)
        wrong = wrong_names(case.args[0], case.kwargs.get("n_trainable_blocks", 0))
        return names is not None and set(names) == set(wrong) and set(wrong) != set(
            _expected_names(case.args[0], case.kwargs.get("n_trainable_blocks", 0)))

    return shows_in


def _named(classifier: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    return [name for name, _ in classifier.named_parameters() if name.startswith(prefixes)]


def _first_blocks(classifier: nn.Module, n: int) -> list[str]:
    return _named(classifier, tuple(f"bert.body.blocks.{i}." for i in range(n)) + ("head.",))


def _minus_zero_slice(classifier: nn.Module, n: int) -> list[str]:
    """blocks[-n:] with n = 0 is blocks[0:], every block."""
    return _named(classifier, ("bert.body.blocks.", "head.")) if n == 0 else _expected_names(classifier, n)


def _matrices_only(classifier: nn.Module, n: int) -> list[str]:
    parameters = dict(classifier.named_parameters())
    return [name for name in _expected_names(classifier, n) if parameters[name].dim() >= 2]


def _embeddings_added(received: Any, case: Case) -> bool:
    """The right parameters, and some of the embeddings' (token, position, segment, their layer norm) besides."""
    names = _names_in(received, case)
    if names is None:
        return False
    classifier, n = case.args[0], case.kwargs.get("n_trainable_blocks", 0)
    extra = set(names) - set(_expected_names(classifier, n))
    embeddings = set(_named(classifier, ("bert.body.token_embedding", "bert.body.position", "bert.body.embedding_norm",
                                         "bert.segment_embedding")))
    return set(_expected_names(classifier, n)) <= set(names) and bool(extra) and extra <= embeddings


def _not_a_list(received: Any, case: Case) -> bool:
    return not isinstance(received, (list, tuple, torch.Tensor))


def _repeated(received: Any, case: Case) -> bool:
    names = _names_in(received, case)
    return names is not None and len(names) != len(set(names))


def _parameter_case(description: str, n_layers: int, n_trainable_blocks: int | None, seed: int) -> Case:
    kwargs = {} if n_trainable_blocks is None else {"n_trainable_blocks": n_trainable_blocks}
    return Case(description, (_Classifier(n_layers, seed),), kwargs)


_PARAMETER_CASES = (
    _parameter_case("2 blocks, n_trainable_blocks left at its default 0: a frozen body", 2, None, seed=70),
    _parameter_case("3 blocks, n_trainable_blocks=1: the head and the top block", 3, 1, seed=71),
    _parameter_case("3 blocks, n_trainable_blocks=0", 3, 0, seed=72),
    _parameter_case("2 blocks, n_trainable_blocks=2: every block, but not the embeddings", 2, 2, seed=73),
)

_PARAMETER_MISTAKES = (
    Mistake("return a list, list(...): a generator such as model.parameters() can be read only once, and the "
            "answer must say exactly which parameters the optimizer sees.", _not_a_list),
    Mistake("some parameters are in the list twice: an optimizer would update them twice per step.", _repeated),
    Mistake("every parameter of the classifier is in the list: the optimizer would change the whole body. Only "
            "the head (and the last n_trainable_blocks blocks) may be trained.",
            _shows_names(lambda classifier, n: _named(classifier, ("",)))),
    Mistake("with n_trainable_blocks = 0, blocks[-n_trainable_blocks:] is blocks[-0:], which is blocks[0:]: "
            "EVERY block. Take blocks[len(blocks) - n_trainable_blocks:] instead.",
            _shows_names(_minus_zero_slice)),
    Mistake("the first blocks were chosen; fine-tuning keeps the lower blocks (general features) frozen and trains "
            "the LAST ones, next to the head: blocks[len(blocks) - n_trainable_blocks:].",
            _shows_names(_first_blocks)),
    Mistake("the head is missing: it is new and random, so it is the one part that must always be trained.",
            _shows_names(lambda classifier, n: [name for name in _expected_names(classifier, n)
                                                if not name.startswith("head.")])),
    Mistake("only the weight matrices are in the list; the biases and the layer norms' weights are parameters "
            "too, and train with the rest: take every parameter of the parts you train.",
            _shows_names(_matrices_only)),
    Mistake("the embeddings are in the list: they belong to the body below the blocks, which stays frozen.",
            _embeddings_added),
)


def check_trainable_parameters(learner_fn: Any) -> CheckResult:
    """Check exercise 08: ``trainable_parameters(classifier, n_trainable_blocks=0)`` -> a list of parameters.

    ``classifier`` has a BERT in ``.bert`` and a new head in ``.head``. The
    list must hold every parameter of the head and of the last
    ``n_trainable_blocks`` blocks of ``classifier.bert.body.blocks``, each
    once, and nothing else: with 0, a frozen body and a trained head.
    """
    return check_function(learner_fn, exercise="08.trainable_parameters", verify=_verify_parameters,
                          cases=_PARAMETER_CASES, mistakes=_PARAMETER_MISTAKES)
