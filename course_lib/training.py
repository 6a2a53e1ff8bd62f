"""One small training loop, shared by every notebook that trains a model.

    for step in range(steps):
        batch = next batch                      # random rows of the training tensors
        loss = loss_fn(model, batch)            # the objective is the caller's
        loss.backward()
        clip the gradient norm                  # one bad batch cannot blow up the weights
        optimizer.step()                        # AdamW
        scheduler: linear warm-up, then cosine decay of the learning rate
        every eval_every steps: evaluate and record

It returns a ``History`` that ``viz.plot_history`` draws.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm
from tqdm.notebook import tqdm as notebook_tqdm

from course_lib.threads import FairThreads
from course_lib.utils import check_positive_int, evaluating


@dataclass
class TrainConfig:
    """How to train. ``steps`` counts optimizer updates."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1      # the learning rate decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    eval_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("warmup_steps", self.warmup_steps, allow_zero=True)
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps must be an int between 0 and steps={self.steps}, got {self.warmup_steps!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass
class History:
    """What happened while training: the training loss at every step, evaluations now and then."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    tokens_seen: int = 0
    stopped_by_time_cap: bool = False

    def record_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.eval_steps.append(step)
        for name, value in metrics.items():
            self.eval_metrics.setdefault(name, []).append(float(value))

    def last(self, name: str) -> float:
        """The latest value of an evaluation metric."""
        if name not in self.eval_metrics:
            raise KeyError(f"no metric {name!r}; recorded: {sorted(self.eval_metrics)}")
        return self.eval_metrics[name][-1]


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up to ``config.lr``, then cosine decay to ``lr * min_lr_ratio``.

    Warm-up keeps Adam's first, poorly estimated updates small; the decay lets
    the weights settle at the end.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def random_batches(tensors: Sequence[torch.Tensor], batch_size: int, generator: torch.Generator) -> Iterator[tuple]:
    """Forever: tuples of the same random rows of every tensor (one shuffle per epoch)."""
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ValueError(f"tensors must share their first dimension, got lengths {[len(t) for t in tensors]}")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} training rows")
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            rows = order[start:start + batch_size]
            yield tuple(t[rows] for t in tensors)


def trim_padding(batch: Sequence[torch.Tensor], attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``batch`` with its (B, T) tensors cut to the longest row of the (B, T) ``attention_mask``.

    The columns after the longest row hold padding only, and skipping them
    saves their compute. Every tensor of two or more dimensions is cut (they
    are all (B, T) in the course's batches); (B,) tensors such as labels pass as they are.
    """
    length = int(attention_mask.sum(dim=1).max())
    return tuple(tensor[:, :length] if tensor.dim() >= 2 else tensor for tensor in batch)


def trimmed_batches(batches: Iterator[tuple], mask_index: int = 1) -> Iterator[tuple]:
    """Every batch of ``batches`` through ``trim_padding``, its attention mask at ``mask_index``."""
    for batch in batches:
        yield trim_padding(batch, batch[mask_index])


FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where PyTorch has a fused AdamW kernel


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: decaying biases, norms and embeddings' scale helps nothing."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # One fused kernel updates every parameter, where the default runs about ten small operations per tensor.
    fused = all(parameter.device.type in FUSED_ADAMW_DEVICES for parameter in decay + no_decay)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), fused=fused)


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` ("cpu", "cuda", "cuda:1", "mps" or a ``torch.device``), checked against this machine."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a device name such as 'cpu' or 'cuda', got {device!r}") from None
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} was asked for, but this machine has {torch.cuda.device_count()} "
                         "CUDA GPU(s); use device='cpu'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was asked for, but Apple's MPS is not available here; use device='cpu'")
    return resolved


def train(model: nn.Module, batches: Iterator[tuple], loss_fn: Callable[[nn.Module, tuple], torch.Tensor],
          config: TrainConfig, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
          progress: bool = True, max_seconds: float | None = None, tokens_per_batch: int = 0,
          device: str | torch.device = "cpu") -> History:
    """Train ``model`` on ``batches`` by minimising ``loss_fn(model, batch)``.

    evaluate: called every ``config.eval_every`` steps and at the end with the model (on ``device``), in
        eval mode without gradients; returns named metrics.
    progress: show a tqdm progress bar (off in tests).
    max_seconds: stop early, after an evaluation, once this much time has passed.
    tokens_per_batch: added to ``History.tokens_seen`` at every step.
    device: where to train ("cpu", or "cuda" on a machine with a GPU). The
        model moves there and stays; every batch (a tuple of tensors) is
        moved there before ``loss_fn`` sees it.

    The model ends in the mode it started in (training or eval).
    """
    device = resolve_device(device)
    model.to(device)
    was_training = model.training
    optimizer = make_optimizer(model, config)
    history = History()
    start_time = time.perf_counter()
    bar = ProgressBar(config.steps, enabled=progress)
    fair_threads = FairThreads()  # fewer threads if the machine gets busy during the run
    model.train()
    for step in range(config.steps):
        fair_threads.check()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        batch = tuple(tensor.to(device) for tensor in next(batches))
        loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()

        history.steps.append(step)
        history.train_loss.append(loss.item())
        history.lr.append(optimizer.param_groups[0]["lr"])
        history.tokens_seen += tokens_per_batch
        last_step = step == config.steps - 1
        out_of_time = max_seconds is not None and time.perf_counter() - start_time > max_seconds
        if evaluate is not None and ((step + 1) % config.eval_every == 0 or last_step or out_of_time):
            history.record_eval(step, run_evaluation(model, evaluate))
        bar.step(loss=history.train_loss[-1])
        if out_of_time:
            history.stopped_by_time_cap = step < config.steps - 1
            break
    bar.finish()
    if history.stopped_by_time_cap and progress:
        print(f"Stopped by the time cap of {max_seconds:g} s after {len(history.steps):,} of {config.steps:,} steps; "
              f"the results below come from this shorter run.{fair_threads.why_slow()}")
    model.train(was_training)
    history.seconds = time.perf_counter() - start_time
    return history


def run_evaluation(model: nn.Module, evaluate: Callable[[nn.Module], dict[str, float]]) -> dict[str, float]:
    """``evaluate(model)`` in eval mode without gradients, restoring the previous mode."""
    with evaluating(model):
        return evaluate(model)


class ProgressBar:
    """A tqdm progress bar over training steps that a saved notebook shows in its final state.

    In a notebook, tqdm draws a widget and the notebook file stores the text
    it had when first shown ("0/1500 [00:00<?, ?it/s]"). This bar is shown
    under a display handle and replaced by its final state when training
    ends, so the saved notebook says what happened. A run stopped early (a
    time cap) ends as a complete bar of the steps it did, not a red one.
    """

    def __init__(self, total_steps: int, *, enabled: bool, description: str = "training") -> None:
        self.enabled = enabled
        in_notebook = issubclass(tqdm, notebook_tqdm)
        # mininterval: at most one redraw a second; a notebook flooded with
        # progress messages becomes slow to run and to open.
        options = dict(total=total_steps, desc=description, disable=not enabled, leave=True, mininterval=1.0)
        if in_notebook and enabled:
            from IPython.display import display
            self.bar = tqdm(**options, display=False)
            self.handle = display(self.bar.container, display_id=True)
        else:
            self.bar = tqdm(**options)
            self.handle = None

    def step(self, loss: float) -> None:
        """One more step done; the latest loss is shown beside the bar."""
        if self.enabled:
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            self.bar.update(1)

    def finish(self) -> None:
        """Close the bar as complete at the steps done, and store that final state in the notebook."""
        if not self.enabled:
            return
        if self.bar.n < self.bar.total:
            self.bar.set_description(f"{self.bar.desc} (time cap)", refresh=False)
            self.bar.total = self.bar.n
        self.bar.close()
        if self.handle is not None:
            final_state = self.bar.container._repr_mimebundle_()
            final_state["text/plain"] = self.bar.container.__repr__(pretty=True)
            self.handle.update(final_state, raw=True)
