"""Small helpers used everywhere: seeding, device choice, parameter counts, eval mode, argument checks."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from course_lib.threads import use_fair_threads_once


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch so that a notebook gives the same numbers on every run.

    Returns a fresh ``torch.Generator`` seeded with ``seed`` for code that
    prefers an explicit generator to the global one. Every notebook starts
    with it, so its first call in a process also sets how many CPU threads
    PyTorch uses (``course_lib.threads``: as many as the machine has free).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Same numbers on every run of one machine: ask for deterministic kernels
    # where PyTorch has them, and warn (not fail) where it does not.
    torch.use_deterministic_algorithms(True, warn_only=True)
    use_fair_threads_once()
    return torch.Generator().manual_seed(seed)


def get_device() -> torch.device:
    """CUDA if present, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters in ``model`` (only those that learn, by default)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode (dropout off) and no gradients inside the block; the model's previous mode afterwards.

    ``with evaluating(model): logits = model(ids)`` measures a model without
    changing what it was doing: a model that was training goes on training.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def check_positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    """``value`` if it is an int at least 1 (or 0 when ``allow_zero``), else a ValueError naming ``name``.

    ``True`` is an int to Python but never a count to a learner, so it is refused.
    """
    smallest = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < smallest:
        expected = "a non-negative int" if allow_zero else "a positive int"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value
