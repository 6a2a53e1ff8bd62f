"""The shared training loop: schedule, batches, determinism, that it learns."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.models import GPT, TransformerConfig
from course_lib.training import (
    TrainConfig, learning_rate, random_batches, resolve_device, train, trim_padding, trimmed_batches,
)


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    rates = [learning_rate(step, config) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4)
    assert rates[9] == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(rates[:10], rates[1:10]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] == pytest.approx(1e-4, rel=0.01)


def test_random_batches_cover_every_row_once_per_epoch():
    data = torch.arange(12)
    batches = random_batches([data, data * 10], batch_size=4, generator=torch.Generator().manual_seed(0))
    epoch = [next(batches) for _ in range(3)]
    assert sorted(torch.cat([b[0] for b in epoch]).tolist()) == list(range(12))
    assert all((b[1] == b[0] * 10).all() for b in epoch)
    with pytest.raises(ValueError, match="first dimension"):
        next(random_batches([data, data[:5]], 4, torch.Generator()))
    with pytest.raises(ValueError, match="batch_size=20"):
        next(random_batches([data], 20, torch.Generator()))


def copy_task(steps, seed=0):
    """A GPT learns to repeat the first half of each row in the second half."""
    torch.manual_seed(seed)
    first_half = torch.randint(1, 10, (512, 6), generator=torch.Generator().manual_seed(seed))
    data = torch.cat([first_half, first_half], dim=1)
    model = GPT(TransformerConfig(vocab_size=10, max_len=12, d_model=32, n_heads=2, n_layers=2, d_ff=64, dropout=0.0))

    def loss_fn(model, batch):
        (ids,) = batch
        logits = model(ids[:, :-1])
        return F.cross_entropy(logits[:, 5:].reshape(-1, 10), ids[:, 6:].reshape(-1))

    def evaluate(model):
        logits = model(data[:128, :-1])
        return {"copy_accuracy": (logits[:, 5:].argmax(-1) == data[:128, 6:]).float().mean().item()}

    config = TrainConfig(steps=steps, batch_size=32, lr=3e-3, warmup_steps=10, eval_every=50)
    batches = random_batches([data], config.batch_size, torch.Generator().manual_seed(seed))
    return train(model, batches, loss_fn, config, evaluate, progress=False, tokens_per_batch=32 * 11)


def test_training_learns_and_records_history():
    history = copy_task(steps=200)
    assert history.last("copy_accuracy") > 0.95
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert len(history.steps) == len(history.train_loss) == len(history.lr) == 200
    assert history.eval_steps == [49, 99, 149, 199]
    assert history.tokens_seen == 200 * 32 * 11


def test_training_is_deterministic():
    assert copy_task(steps=30).train_loss == copy_task(steps=30).train_loss


def test_bad_configuration():
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=20)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="^steps must be a positive int, got True"):
        TrainConfig(steps=True)
    with pytest.raises(ValueError, match="^warmup_steps must be a non-negative int, got -1"):
        TrainConfig(warmup_steps=-1)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_training_leaves_the_model_in_the_mode_it_had(mode):
    model = GPT(TransformerConfig(vocab_size=10, max_len=8, d_model=16, n_heads=2, n_layers=1, d_ff=32))
    getattr(model, mode)()
    data = torch.randint(0, 10, (8, 8), generator=torch.Generator().manual_seed(0))
    modes_seen = []

    def loss_fn(model, batch):
        modes_seen.append(model.training)
        (ids,) = batch
        return F.cross_entropy(model(ids[:, :-1]).transpose(1, 2), ids[:, 1:])

    def evaluate(model):
        modes_seen.append(model.training)
        return {}

    train(model, random_batches([data], 4, torch.Generator()), loss_fn, TrainConfig(steps=2, warmup_steps=1),
          evaluate, progress=False, device="cpu")
    assert modes_seen == [True, True, False]  # two steps in training mode, then the final evaluation
    assert model.training == (mode == "train")


def test_batches_and_model_go_to_the_device():
    model = GPT(TransformerConfig(vocab_size=10, max_len=8, d_model=16, n_heads=2, n_layers=1, d_ff=32))
    data = torch.randint(0, 10, (8, 8), generator=torch.Generator().manual_seed(0))
    devices = []

    def loss_fn(model, batch):
        (ids,) = batch
        devices.append((ids.device, model.lm_head.weight.device))
        return F.cross_entropy(model(ids[:, :-1]).transpose(1, 2), ids[:, 1:])

    train(model, random_batches([data], 4, torch.Generator()), loss_fn, TrainConfig(steps=2, warmup_steps=1),
          progress=False, device=torch.device("cpu"))
    assert devices == [(torch.device("cpu"), torch.device("cpu"))] * 2


def test_a_device_that_is_not_there_is_a_clear_error():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="^device must be a device name such as 'cpu' or 'cuda', got 'gpu'"):
        resolve_device("gpu")
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU, on any machine
    with pytest.raises(ValueError, match=f"^device='{missing}' was asked for, but this machine has"):
        resolve_device(missing)


def test_trim_padding_cuts_every_row_to_the_longest_real_one_and_keeps_labels():
    ids = torch.arange(12).reshape(2, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([0, 1])
    trimmed_ids, trimmed_mask, same_labels = trim_padding((ids, mask, labels), mask)
    assert torch.equal(trimmed_ids, ids[:, :4]) and torch.equal(trimmed_mask, mask[:, :4])
    assert torch.equal(same_labels, labels)
    batches = trimmed_batches(iter([(ids, mask, labels)]))
    assert next(batches)[0].shape == (2, 4)
