"""How notebook 09 fine-tunes each method: its own learning rate at each size, chosen on validation.

Two methods compared at one learning rate are compared at a rate that may
suit one of them and starve the other: a pretrained model and a model from
scratch need not learn best at the same speed, nor at every size of the
labeled set. So every method of notebook 09 gets its own peak learning rate
at each size of its sweep: the rate of its grid that did best on the
*validation* questions, with seed 0. The test questions play no part in the
choice.

The searches are shipped in ``results/09_asking.json`` (sweeps ``qa_lr`` and
``sft_lr``) and measured again by::

    python -m course_lib.lab.asking.sweeps qa_lr sft_lr

A test checks that the tables below are the best rates of that file. Between
the sizes of the search a method uses the rate of the nearest size, nearest
on a log scale (300 examples are nearer 256 than 1,024).
"""
from __future__ import annotations

import math

from course_lib.lab.finetuning import FinetuneRecipe
from course_lib.utils import check_positive_int

# The learning rates each search tries, for each method. A body that is trained falls apart at 1e-2;
# a frozen body leaves only the span head's two vectors to learn, which takes larger steps.
QA_LR_GRIDS = {"pretrained_full": (3e-4, 1e-3, 3e-3, 1e-2),
               "pretrained_frozen": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
               "scratch": (3e-4, 1e-3, 3e-3, 1e-2)}
SFT_LR_GRIDS = {"pretrained": (1e-3, 3e-3, 6e-3, 1e-2, 2e-2),
                "scratch": (1e-3, 3e-3, 6e-3, 1e-2, 2e-2)}
# Passes over the labeled set; not searched.
QA_EPOCHS = 20
SFT_EPOCHS = 20

# {method: {labeled examples: peak learning rate}}, each the best of its grid on validation (seed 0).
QA_LEARNING_RATES = {"pretrained_full": {256: 1e-3, 1024: 3e-3, 4096: 1e-3},
                     "pretrained_frozen": {256: 3e-2, 1024: 1e-1, 4096: 3e-3},
                     "scratch": {256: 3e-3, 1024: 1e-3, 4096: 1e-3}}
SFT_LEARNING_RATES = {"pretrained": {256: 1e-2, 1024: 6e-3, 4096: 3e-3},
                      "scratch": {256: 1e-2, 1024: 3e-3, 4096: 3e-3}}


def nearest_rate(rates: dict[int, float], n_examples: int) -> float:
    """The rate of ``rates`` ({size: rate}) chosen at the size nearest ``n_examples``, on a log scale."""
    check_positive_int("n_examples", n_examples)
    nearest = min(rates, key=lambda size: abs(math.log(size / n_examples)))
    return rates[nearest]


def _method_rates(table: dict[str, dict[int, float]], method: str) -> dict[int, float]:
    if method not in table:
        raise ValueError(f"method must be one of {tuple(table)}, got {method!r}")
    return table[method]


def qa_recipe(method: str, n_examples: int) -> FinetuneRecipe:
    """How ``method`` of ``lab.asking.qa`` learns from ``n_examples`` labeled questions."""
    return FinetuneRecipe(epochs=QA_EPOCHS, lr=nearest_rate(_method_rates(QA_LEARNING_RATES, method), n_examples))


def sft_recipe(method: str, n_examples: int) -> FinetuneRecipe:
    """How ``method`` of ``lab.asking.instruction`` learns from ``n_examples`` questions and answers."""
    return FinetuneRecipe(epochs=SFT_EPOCHS, lr=nearest_rate(_method_rates(SFT_LEARNING_RATES, method), n_examples))
