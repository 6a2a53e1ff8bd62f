"""Tests of course_lib.lab.cooccurrence: counts, PPMI, SVD vectors."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.lab.cooccurrence import (
    WordVectors,
    cooccurrence_counts,
    positive_pmi,
    svd_word_vectors,
    word_vectors,
)
from course_lib.corpus import default_world

VOCAB = ["a", "b", "c", "d"]


def test_counts_by_hand():
    counts = cooccurrence_counts([["a", "b", "c"], ["c", "a"]], VOCAB, window=1)
    expected = torch.zeros(4, 4, dtype=torch.float64)
    for x, y in [("a", "b"), ("b", "c"), ("c", "a")]:  # each neighbouring pair, both ways
        i, j = VOCAB.index(x), VOCAB.index(y)
        expected[i, j] += 1
        expected[j, i] += 1
    torch.testing.assert_close(counts, expected)


def test_wider_window_and_no_crossing_between_sequences():
    counts = cooccurrence_counts([["a", "b", "c"], ["d"]], VOCAB, window=2)
    assert counts[0, 2] == 1 and counts[2, 0] == 1  # a and c are two apart
    assert counts[3].sum() == 0  # d stands alone in its sequence: nothing leaks across
    assert counts.sum() == 2 * 3  # pairs (a,b), (b,c), (a,c), counted both ways


def test_pmi_matches_the_formula():
    counts = torch.tensor([[0.0, 4.0, 1.0], [4.0, 0.0, 0.0], [1.0, 0.0, 2.0]], dtype=torch.float64)
    total = counts.sum()
    p = counts.sum(1) / total
    ppmi = positive_pmi(counts)
    assert ppmi[0, 1] == pytest.approx(max(0.0, math.log((4 / total) / (p[0] * p[1]))))
    assert ppmi[1, 2] == 0  # never together: no information, not -inf
    assert (ppmi >= 0).all() and torch.isfinite(ppmi).all()


def test_svd_vectors_have_length_sqrt_dim_and_fixed_signs():
    matrix = positive_pmi(cooccurrence_counts([["a", "b", "c", "d", "a", "c"]], VOCAB))
    vectors = svd_word_vectors(matrix, 3)
    assert vectors.shape == (4, 3) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors.norm(dim=1), torch.full((4,), math.sqrt(3)))
    flipped = svd_word_vectors(matrix, 3)
    torch.testing.assert_close(vectors, flipped)  # the same numbers on every call


def test_story_world_vectors_group_words_by_role():
    world = default_world()
    stories = world.sample(3000, seed=1)
    wv = word_vectors((s.tokens for s in stories), world.vocabulary, window=1, dim=32)
    places = {"cafe", "park", "library", "beach", "cinema", "restaurant", "gym", "market"}
    assert {word for word, _ in wv.nearest("park", k=4)} <= places
    assert wv.nearest("alice", k=1)[0][0] in world.config.names
    where = wv.average(places)
    assert where.norm().item() == pytest.approx(math.sqrt(32), rel=1e-5)
    # the where-query scores a place above an unrelated word
    assert where @ wv["beach"] > where @ wv["history"] + 10


def test_word_vectors_call_and_lookup():
    wv = WordVectors(["x", "y"], torch.eye(2))
    torch.testing.assert_close(wv(["y", "x", "y"]), torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(wv["y"], torch.tensor([0.0, 1.0]))
    assert wv.dim == 2


@pytest.mark.parametrize("call, error, words", [
    (lambda: cooccurrence_counts([["a", "zzz"]], VOCAB), ValueError, "'zzz'"),
    (lambda: cooccurrence_counts(["a b"], VOCAB), TypeError, "text.split()"),
    (lambda: cooccurrence_counts([["a"]], VOCAB, window=0), ValueError, "window"),
    (lambda: positive_pmi(torch.ones(2, 3)), ValueError, "(2, 3)"),
    (lambda: svd_word_vectors(torch.ones(4, 4), 5), ValueError, "dim"),
    (lambda: WordVectors(["x"], torch.ones(2, 3)), ValueError, "2 rows"),
    (lambda: WordVectors(["x"], torch.ones(1, 3))["y"], KeyError, "'y'"),
    (lambda: WordVectors(["x"], torch.ones(1, 3))("x"), TypeError, "str"),
])
def test_errors_name_the_problem(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)
