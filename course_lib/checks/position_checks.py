"""Checks of exercise 02's positions: the sinusoidal encoding, and shift_matrix.

``sinusoidal_positional_encoding`` is compared with the layer's own function
(its check is at the end of this module). ``shift_matrix`` shows that moving
a sinusoidal encoding k positions on is a rotation.

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
from course_lib.layers import sinusoidal_positional_encoding


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


# ---------------------------------------------------------------------------
# Exercise 02.sinusoidal_positional_encoding: PE[pos, 2i] = sin, PE[pos, 2i+1] = cos
# ---------------------------------------------------------------------------
#
# The wrong versions compute in float64, like the reference, so that a
# learner's float32 rounding is the only difference a correct answer can show.


def _positions(max_len: int) -> torch.Tensor:
    return torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)


def _pair_angles(max_len: int, exponents: torch.Tensor) -> torch.Tensor:
    """pos / 10000^exponent, for one exponent per pair of columns: (max_len, d_model // 2)."""
    return _positions(max_len) / 10000 ** exponents


def _interleaved(even_columns: torch.Tensor, odd_columns: torch.Tensor) -> torch.Tensor:
    """Columns 0, 2, 4, ... from ``even_columns`` and 1, 3, 5, ... from ``odd_columns``."""
    return torch.stack([even_columns, odd_columns], dim=-1).flatten(-2).float()


def _two_i_over_d(d_model: int) -> torch.Tensor:
    return torch.arange(0, d_model, 2, dtype=torch.float64) / d_model


def _encoding_sin_cos_swapped(max_len: int, d_model: int) -> torch.Tensor:
    angles = _pair_angles(max_len, _two_i_over_d(d_model))
    return _interleaved(torch.cos(angles), torch.sin(angles))


def _encoding_i_over_d(max_len: int, d_model: int) -> torch.Tensor:
    angles = _pair_angles(max_len, torch.arange(d_model // 2, dtype=torch.float64) / d_model)
    return _interleaved(torch.sin(angles), torch.cos(angles))


def _encoding_one_frequency_per_column(column_exponent: Callable[[torch.Tensor, int], torch.Tensor]) -> Callable:
    """Column j turns at pos / 10000^column_exponent(j, d_model): the two columns of a pair differ."""

    def encoding(max_len: int, d_model: int) -> torch.Tensor:
        columns = torch.arange(d_model, dtype=torch.float64)
        angles = _positions(max_len) / 10000 ** column_exponent(columns, d_model)  # (max_len, d_model)
        return torch.where(columns % 2 == 0, torch.sin(angles), torch.cos(angles)).float()

    return encoding


def _encoding_in_halves(max_len: int, d_model: int) -> torch.Tensor:
    angles = _pair_angles(max_len, _two_i_over_d(d_model))
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).float()


def _encoding_multiplied(max_len: int, d_model: int) -> torch.Tensor:
    angles = _positions(max_len) * 10000 ** _two_i_over_d(d_model)
    return _interleaved(torch.sin(angles), torch.cos(angles))


def _encoding_transposed(max_len: int, d_model: int) -> torch.Tensor:
    return sinusoidal_positional_encoding(max_len, d_model).T


def _encoding_odd_column_left_empty(max_len: int, d_model: int) -> torch.Tensor:
    """One angle per pair of columns, for d_model // 2 pairs: an odd d_model's last column stays 0."""
    n_pairs = d_model // 2
    angles = _pair_angles(max_len, torch.arange(0, 2 * n_pairs, 2, dtype=torch.float64) / d_model)
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    pe[:, 0:2 * n_pairs:2] = torch.sin(angles)
    pe[:, 1:2 * n_pairs:2] = torch.cos(angles)
    return pe.float()


_ENCODING_CASES = (
    Case("max_len=1, d_model=4: position 0 only", (1, 4)),
    Case("max_len=6, d_model=4", (6, 4)),
    Case("max_len=10, d_model=8", (10, 8)),
    Case("max_len=50, d_model=16", (50, 16)),
    Case("max_len=4, d_model=32", (4, 32)),
    Case("an odd width: max_len=6, d_model=5 (three sines, two cosines)", (6, 5)),
    Case("an odd width: max_len=12, d_model=7", (12, 7)),
)

_ONE_FREQUENCY_PER_PAIR_HINT = (
    "both columns of a pair (2i, 2i+1) share one frequency, 1 / 10000^(2i/d_model), with i = 0, 1, 2, ... "
    "counting pairs; your columns each got their own. Compute one angle per pair and put its sine in "
    "column 2i and its cosine in column 2i+1."
)

_ENCODING_MISTAKES = (
    Mistake(
        "sine and cosine are swapped: even columns (0, 2, 4, ...) hold the sines, odd columns the cosines. "
        "Row 0 must be [0, 1, 0, 1, ...].",
        same_output_as(_encoding_sin_cos_swapped),
    ),
    Mistake(
        "the exponent is 2i/d_model, where i = 0, 1, 2, ... counts the pairs of columns (equivalently: the "
        "even column index 0, 2, 4, ... divided by d_model); you used i/d_model.",
        same_output_as(_encoding_i_over_d),
    ),
    Mistake(_ONE_FREQUENCY_PER_PAIR_HINT, same_output_as(_encoding_one_frequency_per_column(lambda j, d: 2 * j / d))),
    Mistake(_ONE_FREQUENCY_PER_PAIR_HINT, same_output_as(_encoding_one_frequency_per_column(lambda j, d: j / d))),
    Mistake(
        "all sines came first and all cosines after them ([sin | cos]); the original interleaves them: "
        "sin in columns 0, 2, 4, ..., cos in columns 1, 3, 5, ... (pe[:, 0::2] = ..., pe[:, 1::2] = ...).",
        same_output_as(_encoding_in_halves),
    ),
    Mistake(
        "divide the position by 10000^(2i/d_model), do not multiply: the angles must turn more slowly "
        "as i grows, from 1 radian per position for i = 0 down to almost nothing.",
        same_output_as(_encoding_multiplied),
    ),
    Mistake(
        "the result is transposed: it must have shape (max_len, d_model), one row per position.",
        same_output_as(_encoding_transposed),
    ),
    Mistake(
        "with an odd d_model the last column, d_model - 1, is even: it holds the sine of one more pair, "
        "(d_model + 1) // 2 angles in all, and has no cosine beside it. Yours stayed 0.",
        same_output_as(_encoding_odd_column_left_empty),
    ),
)


def check_sinusoidal_positional_encoding(learner_fn: Any) -> CheckResult:
    """Check exercise 02: ``sinusoidal_positional_encoding(max_len, d_model)`` -> (max_len, d_model).

    PE[pos, 2i] = sin(pos / 10000^(2i/d_model)) and PE[pos, 2i+1] = cos of the
    same angle. The general version of the lesson's: d_model may be odd, and
    then the last column is a sine without its cosine (as course_lib's
    encoding). Float32 rounding is accepted: the cases stop at position 49,
    where it stays far below the tolerance.
    """
    return check_function(
        learner_fn,
        exercise="02.sinusoidal_positional_encoding",
        reference=sinusoidal_positional_encoding,
        cases=_ENCODING_CASES,
        mistakes=_ENCODING_MISTAKES,
    )
