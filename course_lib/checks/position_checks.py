"""Check of exercise 02.shift_matrix: moving a sinusoidal encoding k positions on is a rotation.

"Attention Is All You Need" chose the sinusoids because "for any fixed
offset k, PE[pos+k] can be represented as a linear function of PE[pos]".
The exercise builds that linear function: a (d_model, d_model) matrix M
with PE[pos + k] = PE[pos] @ M for every position. Each pair of columns
(2i, 2i+1) is a point on a circle turning at its own speed, so M is made of
2 x 2 rotation blocks on its diagonal, one per pair, each turning by k
times the pair's frequency.

The check compares M with the reference, and each known mistake (a block
turning the other way, one angle per column, the offset left out, ...) is a
small wrong implementation whose output the hint names.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from course_lib.checks.framework import Case, CheckResult, Mistake, check_function, same_output_as


def _pair_frequencies(d_model: int) -> torch.Tensor:
    """1 / 10000^(2i / d_model) for i = 0 .. d_model/2 - 1, in float64: (d_model / 2,)."""
    return 1 / 10000 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)


def _rotation_blocks(angles: torch.Tensor, *, clockwise: bool = False, sin_on_diagonal: bool = False) -> torch.Tensor:
    """A (d, d) block-diagonal matrix, one 2 x 2 block per angle: [[cos, -sin], [sin, cos]] by default."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    if sin_on_diagonal:
        cos, sin = sin, cos
    if clockwise:
        sin = -sin
    d_model = 2 * len(angles)
    matrix = torch.zeros(d_model, d_model, dtype=torch.float64)
    even, odd = torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)
    matrix[even, even] = cos
    matrix[odd, odd] = cos
    matrix[even, odd] = -sin
    matrix[odd, even] = sin
    return matrix.float()


def _shift_matrix_reference(k: int, d_model: int) -> torch.Tensor:
    # Row vectors: [sin a, cos a] @ [[cos b, -sin b], [sin b, cos b]] = [sin(a + b), cos(a + b)].
    return _rotation_blocks(k * _pair_frequencies(d_model))


def _shift_variant(*, angles: Callable[[int, int], torch.Tensor] | None = None, clockwise: bool = False,
                   sin_on_diagonal: bool = False) -> Callable:
    def shift_matrix(k: int, d_model: int) -> torch.Tensor:
        chosen = k * _pair_frequencies(d_model) if angles is None else angles(k, d_model)
        return _rotation_blocks(chosen, clockwise=clockwise, sin_on_diagonal=sin_on_diagonal)
    return shift_matrix


def _one_angle_per_column(k: int, d_model: int) -> torch.Tensor:
    """Column 2i turns at frequency i' = 2i, column 2i+1 at 2i+1: only the even columns' angles end up used."""
    return k / 10000 ** (torch.arange(0, d_model, 2, dtype=torch.float64) * 2 / d_model)


def _blocks_only(received: Any, case: Case) -> bool:
    k, d_model = case.args
    return isinstance(received, torch.Tensor) and tuple(received.shape) == (d_model // 2, 2, 2)


_SHIFT_CASES = (
    Case("k=0, d_model=4: no shift at all", (0, 4)),
    Case("k=1, d_model=4", (1, 4)),
    Case("k=3, d_model=8", (3, 8)),
    Case("k=7, d_model=16", (7, 16)),
    Case("k=-2, d_model=6: two positions back", (-2, 6)),
)

_SHIFT_MISTAKES = (
    Mistake("return the whole (d_model, d_model) matrix, with the 2 x 2 blocks on its diagonal "
            "(torch.block_diag(*blocks) assembles it), not the blocks alone.", _blocks_only),
    Mistake("your matrix moves the encoding k positions BACK: it is the transpose of the right one. With rows "
            "PE[pos] @ M, the block of a pair is [[cos, -sin], [sin, cos]]: check it on [sin a, cos a].",
            same_output_as(_shift_variant(clockwise=True))),
    Mistake("sin and cos are swapped in the blocks: cos(k w) belongs on the diagonal (with k = 0 the matrix "
            "must be the identity), sin(k w) off it.", same_output_as(_shift_variant(sin_on_diagonal=True))),
    Mistake("the angle of each block must be k times the pair's frequency 1 / 10000^(2i/d_model); "
            "yours does not depend on k as it should.",
            same_output_as(_shift_variant(angles=lambda k, d_model: _pair_frequencies(d_model)))),
    Mistake("both columns of a pair share one frequency, 1 / 10000^(2i/d_model) with i counting PAIRS "
            "(i = 0, 1, 2, ...); the angles you used grow twice as fast with i.",
            same_output_as(_shift_variant(angles=_one_angle_per_column))),
    Mistake("the frequency is 1 / 10000^(2i/d_model): divide k by 10000^(2i/d_model), do not multiply.",
            same_output_as(_shift_variant(angles=lambda k, d_model: k / _pair_frequencies(d_model)))),
)


def check_shift_matrix(learner_fn: Any) -> CheckResult:
    """Check exercise 02: ``shift_matrix(k, d_model)`` -> (d_model, d_model), PE[pos + k] = PE[pos] @ M.

    M is block-diagonal: the block of pair i, rows and columns (2i, 2i+1),
    is [[cos(k w_i), -sin(k w_i)], [sin(k w_i), cos(k w_i)]] with
    w_i = 1 / 10000^(2i / d_model). The cases include k = 0 (the identity)
    and a negative k.
    """
    return check_function(learner_fn, exercise="02.shift_matrix", reference=_shift_matrix_reference,
                          cases=_SHIFT_CASES, mistakes=_SHIFT_MISTAKES)
