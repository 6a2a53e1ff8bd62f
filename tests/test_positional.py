"""Tests of the positional encodings in course_lib.layers."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.layers import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_positional_encoding,
)


def loop_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """The formula of the paper, one entry at a time."""
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    for pos in range(max_len):
        for j in range(d_model):
            two_i = j - j % 2  # features 2i and 2i+1 share one frequency
            angle = pos / 10000 ** (two_i / d_model)
            pe[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return pe


@pytest.mark.parametrize("max_len, d_model", [(1, 2), (7, 4), (12, 6), (10, 16), (50, 32), (9, 5), (4, 1)])
def test_matches_the_formula(max_len, d_model):
    pe = sinusoidal_positional_encoding(max_len, d_model)
    assert pe.shape == (max_len, d_model)
    assert pe.dtype == torch.float32
    torch.testing.assert_close(pe.double(), loop_encoding(max_len, d_model), atol=1e-7, rtol=0)


def test_interleaved_not_concatenated():
    # A common variant puts all sines first, then all cosines: the course follows the paper.
    pe = sinusoidal_positional_encoding(10, 8)
    pos = torch.arange(10.0)
    torch.testing.assert_close(pe[:, 0], torch.sin(pos))
    torch.testing.assert_close(pe[:, 1], torch.cos(pos))


def test_position_zero_and_range():
    pe = sinusoidal_positional_encoding(200, 64)
    assert pe[0].tolist() == [0.0, 1.0] * 32
    assert pe.abs().max() <= 1.0
    assert not torch.isnan(pe).any()


def test_odd_d_model_ends_with_a_sine():
    pe = sinusoidal_positional_encoding(6, 5)
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    angle = torch.arange(6.0, dtype=torch.float64) / 10000 ** (4 / 5)
    torch.testing.assert_close(pe[:, 4].double(), torch.sin(angle), atol=1e-7, rtol=0)


@pytest.mark.parametrize(
    "max_len, d_model, error, match",
    [
        (0, 8, ValueError, "^max_len must be a positive int, got 0"),
        (8, -1, ValueError, "^d_model must be a positive int, got -1"),
        (8.0, 8, ValueError, "^max_len must be a positive int, got 8.0"),
        (8, "8", ValueError, "^d_model must be a positive int, got '8'"),
        (True, 8, ValueError, "^max_len must be a positive int, got True"),
    ],
)
def test_encoding_rejects_bad_sizes(max_len, d_model, error, match):
    with pytest.raises(error, match=match):
        sinusoidal_positional_encoding(max_len, d_model)


def test_sinusoidal_module_adds_the_encoding():
    module = SinusoidalPositionalEncoding(max_len=20, d_model=8)
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(module(x), x + sinusoidal_positional_encoding(20, 8)[:5])
    torch.testing.assert_close(module(x, start=4), x + sinusoidal_positional_encoding(20, 8)[4:9])
    assert list(module.parameters()) == []  # fixed, nothing to learn
    assert "pe" not in module.state_dict()  # recomputed, so checkpoints do not depend on max_len


def test_learned_module_adds_its_table():
    torch.manual_seed(0)
    module = LearnedPositionalEmbedding(max_len=20, d_model=8)
    x = torch.randn(3, 5, 8)
    table = module.embedding.weight
    torch.testing.assert_close(module(x), x + table[:5])
    torch.testing.assert_close(module(x, start=4), x + table[4:9])
    module(x).sum().backward()
    assert table.grad[:5].abs().sum() > 0 and table.grad[5:].abs().sum() == 0  # only used positions learn


@pytest.mark.parametrize("cls", [SinusoidalPositionalEncoding, LearnedPositionalEmbedding])
def test_modules_reject_too_long_input(cls):
    module = cls(max_len=6, d_model=4)
    module(torch.zeros(2, 6, 4))  # exactly max_len is fine
    with pytest.raises(ValueError, match=r"^x has T = 7 positions.*max_len = 6"):
        module(torch.zeros(2, 7, 4))
    with pytest.raises(ValueError, match=r"^x has T = 3 positions starting at position 4.*max_len = 6"):
        module(torch.zeros(2, 3, 4), start=4)


@pytest.mark.parametrize("cls", [SinusoidalPositionalEncoding, LearnedPositionalEmbedding])
def test_modules_reject_wrong_shapes(cls):
    module = cls(max_len=6, d_model=4)
    with pytest.raises(ValueError, match=r"^x must have shape \(B, T, d_model=4\), got shape \(2, 3, 5\)"):
        module(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r"^x must have shape \(B, T, d_model=4\), got shape \(3, 4\)"):
        module(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"^start must be a non-negative int, got -1"):
        module(torch.zeros(2, 3, 4), start=-1)


def test_sinusoidal_module_follows_the_device_and_dtype():
    module = SinusoidalPositionalEncoding(max_len=6, d_model=4).to(torch.float64)
    x = torch.zeros(1, 3, 4, dtype=torch.float64)
    assert module(x).dtype == torch.float64
    assert module.pe.device == x.device
