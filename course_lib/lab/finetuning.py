"""Fine-tuning and transfer learning: the experiments of notebook 08 and ``course bench``.

The downstream task is the story world's coherence task
(``corpus.coherence_task``): is a story coherent, or does it break one rule
of the world (an activity at a place that does not offer it, an activity at
the wrong time of day, a pronoun of the wrong gender)? Deciding needs what
pretraining taught the models: what each place offers, what suits each time
of day. A few hundred labeled stories cannot teach all of that from nothing,
which makes the task a test of transfer.

Five ways to learn it, all on the same labeled stories and with the same recipe:

=====================  =====================================================
``pretrained_full``    pretrained BERT + a small head, everything trained
``pretrained_frozen``  pretrained BERT unchanged, only the head learns
``scratch``            the same architecture, randomly initialised
``gpt_task_only``      pretrained GPT, its last token's features + a head
``gpt_task_plus_lm``   the same, trained on task loss + 0.5 x next-token loss
=====================  =====================================================

``layer_features`` and ``layer_probe_predictions`` ask where the frozen
body keeps what the task needs: a head trained on each layer's features.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.corpus import LabeledStory, StoryWorld, coherence_task, default_world
from course_lib.hub import CHECKPOINT_DIR, load_pretrained
from course_lib.models import BERT, GPT, ClassificationHead
from course_lib.objectives import (
    gpt_finetune_loss, gpt_token_losses, masked_one_at_a_time_log_probs, next_token_targets,
)
from course_lib.tokenizer import Tokenizer
from course_lib.training import History, TrainConfig, random_batches, train, trimmed_batches
from course_lib.utils import check_positive_int, evaluating

METHODS = ("pretrained_full", "pretrained_frozen", "scratch", "gpt_task_only", "gpt_task_plus_lm")
N_CLASSES = 2  # 1 = coherent, 0 = corrupted


# ---------------------------------------------------------------------------
# The labeled data
# ---------------------------------------------------------------------------


@dataclass
class CoherenceData:
    """Labeled stories of the coherence task: a pool to draw labeled sets from, validation and test stories.

    Each part comes from its own split of the story world (disjoint by text,
    and the same splits as pretraining, so test stories were never seen);
    validation and test examples whose text also occurs in the pool (two
    stories can be corrupted into the same text) are dropped, and the
    held-out sets are balanced. The recipe was chosen on the validation
    stories; the test stories only measure.

    Only stories of at most ``max_sentences`` sentences are used. One
    sentence already holds every constraint between place, activity and
    time. In a longer story the one wrong word is a small part of the
    single vector a classifier reads, and with a few hundred labels our tiny
    models no longer find it.
    """

    pool: list[LabeledStory]
    validation: list[LabeledStory]
    test: list[LabeledStory]
    seed: int = 0

    @classmethod
    def build(cls, n_stories: int = 60_000, max_sentences: int = 1, seed: int = 0,
              world: StoryWorld | None = None) -> "CoherenceData":
        check_positive_int("max_sentences", max_sentences)
        world = world or default_world()
        splits = {name: [s for s in stories if len(s.sentences) <= max_sentences]
                  for name, stories in world.splits(n_stories, seed=seed).items()}
        pool = coherence_task(world, splits["train"], seed=seed)
        in_pool = {example.tokens for example in pool}
        held_out = {name: _balanced([e for e in coherence_task(world, splits[name], seed=seed + i)
                                     if e.tokens not in in_pool], seed)
                    for i, name in enumerate(("validation", "test"), start=1)}
        return cls(pool, held_out["validation"], held_out["test"], seed)

    def labeled_set(self, n: int) -> list[LabeledStory]:
        """``n`` labeled stories of the pool, half coherent and half corrupted.

        The sets are nested: the 32-story set is the start of the 256-story
        one, so a data-efficiency curve adds labels to the same stories
        instead of drawing new ones at every size.
        """
        by_label = [[e for e in self.pool if e.label == label] for label in range(N_CLASSES)]
        largest = N_CLASSES * min(len(examples) for examples in by_label)
        if not isinstance(n, int) or n < N_CLASSES or n % N_CLASSES or n > largest:
            raise ValueError(f"n must be an even int from 2 to {largest}, got {n!r}")
        rng = random.Random(self.seed)
        for examples in by_label:
            rng.shuffle(examples)
        return [e for pair in zip(*(examples[:n // N_CLASSES] for examples in by_label)) for e in pair]


def _balanced(examples: list[LabeledStory], seed: int) -> list[LabeledStory]:
    """As many coherent as corrupted examples, in their original order, so that chance is 50%.

    Dropping the texts that occur in the pool removes corrupted stories more
    often than coherent ones (a short story's corruptions repeat), so some
    coherent ones are dropped at random to even the labels out again.
    """
    by_label = [[i for i, e in enumerate(examples) if e.label == label] for label in range(N_CLASSES)]
    n = min(len(rows) for rows in by_label)
    rng = random.Random(seed)
    kept = sorted(i for rows in by_label for i in rng.sample(rows, n))
    return [examples[i] for i in kept]


def encode_examples(examples: Sequence[LabeledStory], tokenizer: Tokenizer, style: str,
                    max_len: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids (N, T), attention mask (N, T) and labels (N,) of labeled stories.

    style: "bert" wraps each story in ``[CLS] ... [SEP]``, "gpt" in ``[BOS] ... [EOS]``.
    """
    if not examples:
        raise ValueError("examples must not be empty")
    batch = tokenizer.encode_batch([e.tokens for e in examples], style=style, max_len=max_len)
    return batch.input_ids, batch.attention_mask, torch.tensor([e.label for e in examples])


# ---------------------------------------------------------------------------
# Classifiers: a pretrained body and a small head
# ---------------------------------------------------------------------------


class BertClassifier(nn.Module):
    """BERT's body, one feature vector per story, and a ``ClassificationHead`` on it.

    pooling: "cls" takes the final vector of ``[CLS]`` (the original BERT
        recipe); "mean" averages the final vectors of the real tokens. Our
        BERT was pretrained without the next-sentence task that trained
        ``[CLS]`` in the original, so nothing made ``[CLS]`` a summary yet.
    freeze_body: the body's weights never change and only the head learns
        (the layers are reused unchanged); the body then runs without
        gradients, which also makes training cheaper.
    """

    def __init__(self, bert: BERT, n_classes: int = N_CLASSES, pooling: str = "mean", freeze_body: bool = False):
        super().__init__()
        if not isinstance(bert, BERT):
            raise TypeError(f"bert must be a course_lib.models.BERT, got {type(bert).__name__}")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.bert, self.pooling, self.freeze_body = bert, pooling, freeze_body
        self.bert.requires_grad_(not freeze_body)
        self.head = ClassificationHead(bert.config.d_model, n_classes)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per story: (B, T) ids and mask -> (B, d_model)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_body):
            hidden = self.bert.encode(input_ids, attention_mask)  # (B, T, d_model)
        if self.pooling == "cls":
            return hidden[:, 0]
        real = attention_mask[..., None].to(hidden.dtype)         # (B, T, 1): padding must not count
        return (hidden * real).sum(dim=1) / real.sum(dim=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits (B, n_classes)."""
        return self.head(self.features(input_ids, attention_mask))


class GPTClassifier(nn.Module):
    """GPT's body and a ``ClassificationHead`` on the features of each story's last real token.

    In a causal model only the last position has read the whole story (here
    it is ``[EOS]``), so its vector stands for the story; the original GPT
    appended an "extract" token for this purpose. ``forward`` also returns
    the next-token logits, for the auxiliary language-modelling loss.
    """

    def __init__(self, gpt: GPT, n_classes: int = N_CLASSES):
        super().__init__()
        if not isinstance(gpt, GPT):
            raise TypeError(f"gpt must be a course_lib.models.GPT, got {type(gpt).__name__}")
        self.gpt = gpt
        self.head = ClassificationHead(gpt.config.d_model, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, n_classes) and next-token logits (B, T, vocab_size)."""
        hidden = self.gpt.encode(input_ids, attention_mask)    # (B, T, d_model)
        last = attention_mask.sum(dim=1) - 1                     # (B,) position of the last real token
        features = hidden[torch.arange(len(input_ids)), last]  # (B, d_model)
        return self.head(features), self.gpt.lm_head(hidden)


def task_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Class logits (B, n_classes) of either classifier."""
    output = model(input_ids, attention_mask)
    return output[0] if isinstance(output, tuple) else output


# ---------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneRecipe:
    """How every method is fine-tuned: one recipe for all of them, scratch included.

    epochs: passes over the labeled set, at least ``min_steps`` updates so
        that a tiny labeled set still gets trained.
    lr: the peak learning rate (warm-up, then cosine decay, as in pretraining).
        A lower rate for the pretrained body than for the new head was tried
        on the validation stories and did not help here.
    pooling: BERT's story vector, "mean" or "cls" (``BertClassifier``).
    lm_weight: the weight of the next-token loss of ``gpt_task_plus_lm``
        (0.5 in the GPT paper).
    """

    epochs: int = 30
    min_steps: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_share: float = 0.1
    pooling: str = "mean"
    lm_weight: float = 0.5

    def __post_init__(self) -> None:
        for name in ("epochs", "min_steps", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not 0 <= self.warmup_share < 1:
            raise ValueError(f"warmup_share must be in [0, 1), got {self.warmup_share!r}")
        if self.lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0, got {self.lm_weight!r}")

    def train_config(self, n_examples: int, seed: int = 0) -> TrainConfig:
        """The ``training.TrainConfig`` for a labeled set of ``n_examples`` stories."""
        batch_size = min(self.batch_size, n_examples)
        steps = max(self.min_steps, self.epochs * n_examples // batch_size)
        return TrainConfig(steps=steps, batch_size=batch_size, lr=self.lr, weight_decay=self.weight_decay,
                           warmup_steps=int(self.warmup_share * steps), eval_every=steps, seed=seed)


def make_classifier(method: str, recipe: FinetuneRecipe = FinetuneRecipe(), seed: int = 0,
                    directory: Path = CHECKPOINT_DIR) -> tuple[nn.Module, Tokenizer]:
    """A fresh classifier for ``method`` (one of ``METHODS``) and the tokenizer its body expects.

    Pretrained bodies are loaded from the checkpoints in ``directory`` every
    time, so no method ever starts from another method's fine-tuned weights.
    The head (and scratch's whole body) is initialised from ``seed``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    pretrained = load_pretrained("tiny-gpt" if method.startswith("gpt") else "tiny-bert", directory)
    torch.manual_seed(seed)
    if method.startswith("gpt"):
        return GPTClassifier(pretrained.model), pretrained.tokenizer
    body = BERT(pretrained.config) if method == "scratch" else pretrained.model
    classifier = BertClassifier(body, pooling=recipe.pooling, freeze_body=method == "pretrained_frozen")
    return classifier, pretrained.tokenizer


def classification_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The task's cross-entropy on one batch of (ids, mask, labels)."""
    ids, mask, labels = batch
    return F.cross_entropy(task_logits(model, ids, mask), labels)


def gpt_classification_loss(lm_weight: float):
    """The GPT recipe's loss on one batch: task cross-entropy + ``lm_weight`` x next-token loss."""

    def loss(model: GPTClassifier, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, mask, labels = batch
        class_logits, lm_logits = model(ids, mask)
        _, lm_targets = next_token_targets(ids, mask)  # (B, T-1): position t predicts token t + 1
        return gpt_finetune_loss(class_logits, labels, lm_logits[:, :-1], lm_targets, lm_weight)

    return loss


def accuracy(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 512) -> float:
    """Share of stories (N,) whose predicted class is the label; ids and mask are (N, T)."""
    correct = 0
    with evaluating(model):
        for start in range(0, len(labels), batch_size):
            rows = slice(start, start + batch_size)
            predictions = task_logits(model, input_ids[rows], attention_mask[rows]).argmax(dim=-1)
            correct += (predictions == labels[rows]).sum().item()
    return correct / len(labels)


def accuracy_by_corruption(model: nn.Module, tokenizer: Tokenizer,
                           examples: Sequence[LabeledStory]) -> dict[str, float]:
    """Accuracy on each kind of example: "coherent", and each corruption ("pronoun", "place_activity", ...)."""
    style = "gpt" if isinstance(model, GPTClassifier) else "bert"
    ids, mask, labels = encode_examples(examples, tokenizer, style)
    kinds = [e.corruption or "coherent" for e in examples]
    result = {}
    for kind in sorted(set(kinds)):
        rows = torch.tensor([k == kind for k in kinds])
        result[kind] = accuracy(model, ids[rows], mask[rows], labels[rows])
    return result


def gpt_surprise(gpt: GPT, tokenizer: Tokenizer, examples: Sequence[LabeledStory]) -> torch.Tensor:
    """GPT's largest next-token loss in each story (N,), in nats: how surprised it was by the least expected word.

    No training at all: a story that breaks a rule of the world contains a
    word the pretrained GPT did not expect there.
    """
    if not isinstance(gpt, GPT):
        raise TypeError(f"gpt must be a course_lib.models.GPT, got {type(gpt).__name__}")
    ids, mask, _ = encode_examples(examples, tokenizer, "gpt", gpt.config.max_len)
    return gpt_token_losses(gpt, ids, mask).amax(dim=1)


def bert_surprise(bert: BERT, tokenizer: Tokenizer, examples: Sequence[LabeledStory]) -> torch.Tensor:
    """BERT's largest fill-in-the-blank loss in each story (N,), in nats, with no training at all.

    Each word is masked in turn and BERT fills it in from both sides, as in
    pretraining; the loss of the word that is really there is that word's
    surprise (the terms of the masked "pseudo-log-likelihood"). Shown a story
    without a mask, BERT mostly repeats each word it sees, so the blanks are
    what bring out its knowledge. ``[CLS]``, ``[SEP]`` and padding are never
    masked: pretraining never asked BERT to fill them in.
    """
    if not isinstance(bert, BERT):
        raise TypeError(f"bert must be a course_lib.models.BERT, got {type(bert).__name__}")
    ids, mask, _ = encode_examples(examples, tokenizer, "bert", bert.config.max_len)
    words = mask.bool() & ~torch.isin(ids, torch.tensor(tokenizer.special_ids))  # (N, T): the positions to mask
    rows, positions = words.nonzero(as_tuple=True)                                # (n_words,) each
    log_probs = masked_one_at_a_time_log_probs(bert, ids, mask, mask_id=tokenizer.mask_id,
                                               positions=torch.stack([rows, positions], dim=1))
    surprise = torch.zeros(ids.shape)                                             # (N, T): 0 where nothing is masked
    surprise[rows, positions] = -log_probs.gather(1, ids[rows, positions][:, None])[:, 0]
    return surprise.amax(dim=1)


@dataclass
class FinetuneResult:
    """One fine-tuning run: the test accuracy, the training history and the trained classifier (in eval mode)."""

    method: str
    n_labels: int
    test_accuracy: float
    history: History
    model: nn.Module


def finetune(method: str, train_examples: Sequence[LabeledStory], test_examples: Sequence[LabeledStory],
             recipe: FinetuneRecipe = FinetuneRecipe(), seed: int = 0, progress: bool = False,
             directory: Path = CHECKPOINT_DIR) -> FinetuneResult:
    """Fine-tune a fresh classifier of ``method`` on ``train_examples`` and measure it on ``test_examples``.

    The training loop is the one pretraining used (``training.train``):
    AdamW, warm-up and cosine decay, gradient clipping, a progress bar.
    """
    if not train_examples or not test_examples:
        raise ValueError("train_examples and test_examples must not be empty")
    model, tokenizer = make_classifier(method, recipe, seed, directory)
    style = "gpt" if isinstance(model, GPTClassifier) else "bert"
    max_len = (model.gpt if style == "gpt" else model.bert).config.max_len
    train_tensors = encode_examples(train_examples, tokenizer, style, max_len)
    config = recipe.train_config(len(train_examples), seed)
    batches = trimmed_batches(random_batches(train_tensors, config.batch_size, torch.Generator().manual_seed(seed)))
    loss_fn = gpt_classification_loss(recipe.lm_weight if method == "gpt_task_plus_lm" else 0.0) \
        if style == "gpt" else classification_loss
    history = train(model, batches, loss_fn, config, progress=progress)
    model.eval()  # trained: the head's dropout stays off from now on, as in a loaded checkpoint
    test_accuracy = accuracy(model, *encode_examples(test_examples, tokenizer, style, max_len))
    return FinetuneResult(method, len(train_examples), test_accuracy, history, model)


# ---------------------------------------------------------------------------
# Where a frozen body keeps what the task needs: a head on every layer
# ---------------------------------------------------------------------------


def layer_features(bert: BERT, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "mean",
                   batch_size: int = 512) -> torch.Tensor:
    """One vector per story from every layer of a frozen ``bert``: (n_layers + 1, N, d_model).

    Layer 0 is the embeddings as the first block receives them, layer i the
    output of block i (the last is what ``bert.encode`` returns). pooling:
    "mean" averages the vectors of the real tokens, "max" takes each
    feature's largest value over them.
    """
    if not isinstance(bert, BERT):
        raise TypeError(f"bert must be a course_lib.models.BERT, got {type(bert).__name__}")
    if pooling not in ("mean", "max"):
        raise ValueError(f"pooling must be 'mean' or 'max', got {pooling!r}")
    layers = (bert.body.embedding_norm, *bert.body.blocks)
    pooled = []
    for start in range(0, len(input_ids), batch_size):
        ids, mask = input_ids[start:start + batch_size], attention_mask[start:start + batch_size]
        outputs: list[torch.Tensor] = []
        # A forward hook sees each layer's output as it is computed; the hooks go before anything else runs.
        hooks = [layer.register_forward_hook(lambda _layer, _inputs, output: outputs.append(output))
                 for layer in layers]
        try:
            with evaluating(bert), torch.no_grad():
                bert.encode(ids, mask)
        finally:
            for hook in hooks:
                hook.remove()
        hidden = torch.stack(outputs)                 # (n_layers + 1, B, T, d_model)
        real = mask.bool()[None, :, :, None]          # (1, B, T, 1): padding must not count
        if pooling == "mean":
            pooled.append((hidden * real).sum(dim=2) / real.sum(dim=2))
        else:
            pooled.append(hidden.masked_fill(~real, float("-inf")).amax(dim=2))
    return torch.cat(pooled, dim=1)                   # (n_layers + 1, N, d_model)


def _head_loss(head: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    features, labels = batch
    return F.cross_entropy(head(features), labels)


def layer_probe_predictions(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                            recipe: FinetuneRecipe = FinetuneRecipe(), seed: int = 0) -> torch.Tensor:
    """Train one ``ClassificationHead`` per layer on fixed features; its predicted classes on the test stories.

    train_features (L, N, d) with train_labels (N,); test_features (L, M, d).
    Returns (L, M). Each head gets the fine-tuning recipe's schedule for N
    labeled stories; the body is not involved any more, so a layer costs
    well under a second.
    """
    if train_features.dim() != 3 or test_features.dim() != 3 or len(train_features) != len(test_features):
        raise ValueError(f"train_features and test_features must be (L, N, d) and (L, M, d) with the same L, "
                         f"got {tuple(train_features.shape)} and {tuple(test_features.shape)}")
    config = recipe.train_config(train_features.shape[1], seed)
    predictions = []
    for layer_train, layer_test in zip(train_features, test_features):
        torch.manual_seed(seed)
        head = ClassificationHead(layer_train.shape[-1], N_CLASSES)
        batches = random_batches((layer_train, train_labels), config.batch_size, torch.Generator().manual_seed(seed))
        train(head, batches, _head_loss, config, progress=False)
        with evaluating(head), torch.no_grad():
            predictions.append(head(layer_test).argmax(dim=-1))
    return torch.stack(predictions)                   # (L, M)


# ---------------------------------------------------------------------------
# The results table of notebook 08 and ``course bench``
# ---------------------------------------------------------------------------

TABLE_KEYS = ("n_labels", "pretrained_full", "pretrained_frozen", "scratch", "transfer_gain", "gpt_task_only",
              "gpt_task_plus_lm")


def results_table(n_labels: int, accuracies: dict[str, float]) -> dict[str, float]:
    """The table of ``finetune_table`` from test accuracies already measured, one per method."""
    missing = [method for method in METHODS if method not in accuracies]
    if missing:
        raise ValueError(f"accuracies lacks the methods {missing}")
    table = {"n_labels": n_labels, **{method: accuracies[method] for method in METHODS},
             "transfer_gain": accuracies["pretrained_full"] - accuracies["scratch"]}
    return {key: table[key] for key in TABLE_KEYS}


def finetune_table(n_labels: int = 256, data: CoherenceData | None = None, recipe: FinetuneRecipe = FinetuneRecipe(),
                   seed: int = 0, progress: bool = False, directory: Path = CHECKPOINT_DIR) -> dict[str, float]:
    """Test accuracy of every method with ``n_labels`` labeled stories, and the gain of pretraining.

    Returns {n_labels, pretrained_full, pretrained_frozen, scratch,
    transfer_gain, gpt_task_only, gpt_task_plus_lm}: accuracies on the
    held-out test stories, and transfer_gain = pretrained_full - scratch.
    """
    data = data or CoherenceData.build(seed=seed)
    labeled = data.labeled_set(n_labels)
    accuracies = {method: finetune(method, labeled, data.test, recipe, seed, progress, directory).test_accuracy
                  for method in METHODS}
    return results_table(n_labels, accuracies)
