"""The check of exercise 02.shift_matrix: right answers written several ways pass, each known mistake fails with its
one hint."""
import math

import pytest
import torch

from course_lib.checks import check_shift_matrix
from course_lib.layers import sinusoidal_positional_encoding

from check_helpers import assert_fails_with_hint, assert_passes


def shift_with_block_diag(k, d_model):
    blocks = []
    for i in range(d_model // 2):
        angle = k / 10000 ** (2 * i / d_model)
        blocks.append(torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]))
    return torch.block_diag(*blocks)


def shift_with_strided_writes(k, d_model):
    angles = k / 10000 ** (torch.arange(0, d_model, 2) / d_model)
    matrix = torch.zeros(d_model, d_model)
    rows = torch.arange(0, d_model, 2)
    matrix[rows, rows] = matrix[rows + 1, rows + 1] = torch.cos(angles)
    matrix[rows, rows + 1] = -torch.sin(angles)
    matrix[rows + 1, rows] = torch.sin(angles)
    return matrix


def shift_with_loops_in_float64(k, d_model):
    matrix = torch.zeros(d_model, d_model, dtype=torch.float64)
    for first in range(0, d_model, 2):                   # the pair (first, first + 1)
        angle = torch.tensor(k / 10000 ** (first / d_model), dtype=torch.float64)
        matrix[first, first] = matrix[first + 1, first + 1] = torch.cos(angle)
        matrix[first, first + 1] = -torch.sin(angle)
        matrix[first + 1, first] = torch.sin(angle)
    return matrix


@pytest.mark.parametrize("shift_matrix", [shift_with_block_diag, shift_with_strided_writes,
                                          shift_with_loops_in_float64])
def test_correct_shift_matrices_pass(shift_matrix):
    assert_passes(check_shift_matrix(shift_matrix))


def test_the_matrix_moves_the_encoding():
    pe = sinusoidal_positional_encoding(40, 16)
    torch.testing.assert_close(pe[:30] @ shift_with_block_diag(5, 16), pe[5:35], atol=1e-5, rtol=1e-5)


def blocks_of(block):
    def shift_matrix(k, d_model):
        return torch.block_diag(*[block(k / 10000 ** (2 * i / d_model)) for i in range(d_model // 2)])
    return shift_matrix


def rotation(angle):
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]])


@pytest.mark.parametrize("shift_matrix, words_of_the_hint", [
    (blocks_of(lambda a: rotation(a).T), "moves the encoding k positions BACK"),
    (blocks_of(lambda a: torch.tensor([[math.sin(a), -math.cos(a)], [math.cos(a), math.sin(a)]])), "swapped"),
    (lambda k, d: shift_with_block_diag(1, d), "does not depend on k"),
    (lambda k, d: torch.block_diag(*[rotation(k / 10000 ** (4 * i / d)) for i in range(d // 2)]),
     "share one frequency"),
    (lambda k, d: torch.block_diag(*[rotation(k * 10000 ** (2 * i / d)) for i in range(d // 2)]), "do not multiply"),
    (lambda k, d: torch.stack([rotation(k / 10000 ** (2 * i / d)) for i in range(d // 2)]), "the whole"),
], ids=["transposed", "sin-cos-swapped", "no-k", "per-column", "multiplied", "blocks-only"])
def test_shift_matrix_mistakes_fail_with_their_hint(shift_matrix, words_of_the_hint):
    assert_fails_with_hint(check_shift_matrix(shift_matrix), words_of_the_hint)
