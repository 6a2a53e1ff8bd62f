"""Pretraining BERT and GPT on the story world, and measuring what they learned.

The same recipes serve three users: notebooks 05 and 06 (pretrain live, a
minute at most), ``course pretrain`` (``pretrain``: the shipped checkpoints
that ``hub`` loads) and ``course bench``. BERT and GPT get the same data,
the same size and the same optimiser; only the objective differs.

Every recipe takes a ``device`` ("cpu" by default, "cuda" on a machine with
a GPU); every measurement runs where the model is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from course_lib.corpus import PRONOUN, Story, StoryWorld, default_world, entropy_floor
from course_lib.generation import generate
from course_lib.hub import CHECKPOINT_DIR, Pretrained, load_pretrained, save_pretrained
from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.objectives import (
    IGNORE_INDEX, gpt_token_losses, mask_tokens, masked_lm_loss, masked_one_at_a_time_log_probs, next_token_loss,
    next_token_targets,
)
from course_lib.tokenizer import Tokenizer
from course_lib.training import History, TrainConfig, resolve_device, train, trim_padding
from course_lib.utils import evaluating

# One size for both families, so that notebook 07 compares like with like.
MODEL_SIZE = dict(max_len=64, d_model=64, n_heads=4, n_layers=4, d_ff=256, dropout=0.0)


@dataclass
class StoryData:
    """The story world's splits, tokenized once for one model family.

    ``ids[split]`` (N, T) and ``mask[split]`` (N, T) bool, padded to the
    longest story; ``stories[split]`` the annotated stories row by row.
    """

    tokenizer: Tokenizer
    style: str
    stories: dict[str, list[Story]]
    ids: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]

    @classmethod
    def build(cls, style: str, n_stories: int = 60_000, seed: int = 0, world: StoryWorld | None = None) -> "StoryData":
        world = world or default_world()
        tokenizer = Tokenizer.for_story_world(world)
        stories = world.splits(n_stories, seed=seed)
        ids, mask = {}, {}
        for split, part in stories.items():
            batch = tokenizer.encode_batch([s.tokens for s in part], style=style, max_len=MODEL_SIZE["max_len"])
            ids[split], mask[split] = batch.input_ids, batch.attention_mask
        return cls(tokenizer, style, stories, ids, mask)

    def batches(self, batch_size: int, seed: int = 0, pool: int = 16):
        """Random training batches of stories of similar length, each cut to its longest story.

        Stories run from 12 to 46 tokens: a random batch would spend about
        half its work on padding. Each pool of ``pool`` batches is sorted by
        length before it is cut into batches, and the batches are served in
        random order, so the model still sees every kind of batch.
        """
        generator = torch.Generator().manual_seed(seed)
        ids, mask = self.ids["train"], self.mask["train"]
        lengths = mask.sum(dim=1)
        pool_rows = batch_size * pool
        if pool_rows > len(ids):
            raise ValueError(f"batch_size * pool = {pool_rows} is more than the {len(ids)} training stories")
        while True:
            order = torch.randperm(len(ids), generator=generator)
            for start in range(0, len(ids) - pool_rows + 1, pool_rows):
                rows = order[start:start + pool_rows]
                rows = rows[torch.argsort(lengths[rows], stable=True)]  # similar lengths side by side
                for batch in torch.randperm(pool, generator=generator).tolist():
                    chosen = rows[batch * batch_size:(batch + 1) * batch_size]
                    length = int(lengths[chosen].max())
                    yield ids[chosen, :length], mask[chosen, :length]


def model_config(tokenizer: Tokenizer, **overrides) -> TransformerConfig:
    return TransformerConfig(vocab_size=tokenizer.vocab_size, **{**MODEL_SIZE, **overrides})


# Notebooks 05 and 06 pretrain live: a fixed number of steps (the same model
# on every machine), and a time limit that stops a slow laptop early. GPT gets
# the longer run: a GPT step is cheaper, and in 1,500 steps it learns pronoun
# agreement, which BERT needs about 2,000 steps for (notebook 05 shows the
# shipped checkpoint instead). Both runs fit in the limit on one core of the
# course's 2-core test machine, all that a lesson gets on a busy laptop or a
# JupyterHub: GPT's batches hold 48 stories, with which it learns agreement by
# step 1,250 (with 64 it did by step 1,000 but needed about 70 s of one core).
NOTEBOOK_STEPS = {"gpt": 1500, "bert": 800}
NOTEBOOK_BATCH_SIZE = {"gpt": 48, "bert": 64}
NOTEBOOK_MAX_SECONDS = 60.0

# The peak learning rate of each family. BERT's post-norm layers want a gentler
# one than GPT's pre-norm layers: at 6e-3 BERT learns most words quickly but
# stalls on pronoun agreement for 2,000 steps; at 2e-3, with a longer warm-up,
# it passes 90% after 1,600 (both histories: ``lab.histories``).
PEAK_LR = {"gpt": 6e-3, "bert": 2e-3}
WARMUP_STEPS = {"gpt": 100, "bert": 300}
# The shipped checkpoints (``hub``) train longer than the live runs, both
# families for the same number of steps: the same compute, so notebook 07
# compares the objectives and nothing else.
CHECKPOINT_STEPS = 3000


def default_train_config(steps: int = 1200, batch_size: int = 64, lr: float = 6e-3,
                         warmup_steps: int = 100) -> TrainConfig:
    """AdamW with warm-up and cosine decay; the warm-up never takes more than a tenth of the run."""
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=0.01,
                       warmup_steps=min(warmup_steps, steps // 10), eval_every=max(1, steps // 6))


def _check_family(family: str) -> None:
    if family not in PEAK_LR:
        raise ValueError(f"family must be one of {sorted(PEAK_LR)}, got {family!r}")


def family_train_config(family: str, steps: int, batch_size: int = 64) -> TrainConfig:
    """The recipe of ``family`` ("gpt" or "bert") for a run of ``steps`` optimizer steps."""
    _check_family(family)
    return default_train_config(steps, batch_size=batch_size, lr=PEAK_LR[family], warmup_steps=WARMUP_STEPS[family])


def notebook_train_config(family: str) -> TrainConfig:
    """The live run of notebook 05 (``"bert"``) or 06 (``"gpt"``)."""
    _check_family(family)
    return family_train_config(family, NOTEBOOK_STEPS[family], NOTEBOOK_BATCH_SIZE[family])


def checkpoint_train_config(family: str) -> TrainConfig:
    """The recipe of the shipped ``tiny-bert`` or ``tiny-gpt``."""
    return family_train_config(family, CHECKPOINT_STEPS)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s weights are: the measurements below send their inputs there (the CPU if it has none)."""
    weights = next(model.parameters(), None)
    return torch.device("cpu") if weights is None else weights.device


def _compiled(model: nn.Module, compile: bool) -> nn.Module:
    """What ``train`` steps: ``torch.compile(model)`` (sharing the model's weights) when asked, else the model."""
    return torch.compile(model) if compile else model


# -- GPT ------------------------------------------------------------------------------------

def gpt_loss(model: GPT, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Next-token loss of one batch: every position predicts the token after it."""
    ids, mask = batch
    inputs, targets = next_token_targets(ids, mask)
    return next_token_loss(model(inputs), targets)


def gpt_validation_loss(model: GPT, data: StoryData, split: str = "validation", limit: int | None = None,
                        batch_size: int = 512) -> float:
    """Average next-token loss in nats per predicted token (the story's words and ``[EOS]``)."""
    device = model_device(model)
    ids, mask = data.ids[split][:limit].to(device), data.mask[split][:limit].to(device)
    # Stories of similar length side by side, each batch cut to its longest: about half the work is padding otherwise.
    order = torch.argsort(mask.sum(dim=1), stable=True)
    total = 0.0
    for start in range(0, len(ids), batch_size):
        rows = order[start:start + batch_size]
        batch_ids, batch_mask = trim_padding((ids[rows], mask[rows]), mask[rows])
        total += gpt_token_losses(model, batch_ids, batch_mask).sum().item()
    return total / mask[:, 1:].sum().item()  # every real token but the first is predicted


# The last token of a story that never reached [EOS], so that the grammar and a reader see it is cut off.
UNFINISHED = "(unfinished)"


def sample_stories(model: GPT, tokenizer: Tokenizer, n: int, temperature: float = 1.0, seed: int = 0,
                   prompt: str = "", **sampling) -> list[list[str]]:
    """``n`` stories generated from ``[BOS] prompt``, as token lists cut at ``[EOS]``.

    Every story starts with the prompt's words; with the empty prompt GPT
    writes the whole story. ``sampling`` takes ``generate``'s ``top_k`` and ``top_p``.
    """
    start = [tokenizer.bos_id] + tokenizer.encode(prompt)
    if len(start) > model.config.max_len:
        raise ValueError(f"prompt is {len(start)} tokens long with [BOS], more than max_len={model.config.max_len}")
    device = model_device(model)
    prompts = torch.tensor([start] * n, device=device)  # (n, len(start))
    out = generate(model, prompts, model.config.max_len - len(start), temperature=temperature,
                   generator=torch.Generator(device).manual_seed(seed), eos_id=tokenizer.eos_id, **sampling)
    stories = []
    for row in out[:, 1:].tolist():
        ended = tokenizer.eos_id in row
        tokens = tokenizer.convert_ids_to_tokens(row[:row.index(tokenizer.eos_id)] if ended else row)
        stories.append(tokens if ended else tokens + [UNFINISHED])
    return stories


def valid_story_rate(model: GPT, tokenizer: Tokenizer, n: int = 500, temperature: float = 1.0, seed: int = 0,
                     world: StoryWorld | None = None) -> float:
    """Share of generated stories that the story world's grammar could have written."""
    world = world or default_world()
    stories = sample_stories(model, tokenizer, n, temperature, seed)
    return sum(world.is_valid(tokens) for tokens in stories) / n


def evaluate_gpt(model: GPT, data: StoryData, n_samples: int = 500) -> dict[str, float]:
    """Validation loss against the entropy floor, and the share of valid stories at temperature 1."""
    val_loss = gpt_validation_loss(model, data)
    floor = entropy_floor(data.stories["validation"])
    return {"val_loss": val_loss, "entropy_floor": floor, "loss_over_floor": val_loss / floor,
            "valid_story_rate": valid_story_rate(model, data.tokenizer, n_samples)}


def pretrain_gpt(data: StoryData | None = None, train_config: TrainConfig | None = None, progress: bool = True,
                 max_seconds: float | None = None, seed: int = 0, device: str | torch.device = "cpu",
                 evaluate: Callable[[GPT], dict[str, float]] | None = None,
                 compile: bool = False) -> tuple[GPT, History]:
    """Train a GPT of ``MODEL_SIZE`` on the story world; its history records the validation loss.

    evaluate: what the history records every ``train_config.eval_every`` steps
        (``lab.histories`` adds probes); by default the validation loss.
    compile: train through ``torch.compile``; the model returned is the plain module either way.
    Returns the model on ``device``, in eval mode like a loaded checkpoint, and the history.
    """
    data = data or StoryData.build("gpt")
    train_config = train_config or notebook_train_config("gpt")
    torch.manual_seed(seed)
    model = GPT(model_config(data.tokenizer))
    history = train(_compiled(model, compile), data.batches(train_config.batch_size, seed), gpt_loss, train_config,
                    evaluate=evaluate or (lambda _: {"val_loss": gpt_validation_loss(model, data, limit=2000)}),
                    progress=progress, max_seconds=max_seconds, device=device)
    return model.eval(), history


# -- BERT -----------------------------------------------------------------------------------

def bert_loss_fn(tokenizer: Tokenizer, seed: int = 0, device: str | torch.device = "cpu"):
    """The masked-LM loss with a fresh 80/10/10 mask for every batch (one seeded generator on the batches' device)."""
    generator = torch.Generator(resolve_device(device)).manual_seed(seed)

    def loss(model: BERT, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, mask = batch
        inputs, labels = mask_tokens(ids, mask_id=tokenizer.mask_id, vocab_size=tokenizer.vocab_size,
                                     special_ids=tokenizer.special_ids, generator=generator)
        return masked_lm_loss(model(inputs, mask), labels)

    return loss


def bert_masked_accuracy(model: BERT, data: StoryData, split: str = "validation", limit: int | None = 2000,
                         seed: int = 1, batch_size: int = 512) -> float:
    """Share of the 15% chosen tokens (80/10/10 recipe) that BERT predicts exactly."""
    ids, mask = data.ids[split][:limit], data.mask[split][:limit]
    tok = data.tokenizer
    # Masked on the CPU, whatever the model's device: the same blanks everywhere.
    inputs, labels = mask_tokens(ids, mask_id=tok.mask_id, vocab_size=tok.vocab_size, special_ids=tok.special_ids,
                                 generator=torch.Generator().manual_seed(seed))
    device = model_device(model)
    correct = 0
    order = torch.argsort(mask.sum(dim=1), stable=True)  # similar lengths together, each batch cut to its longest
    with evaluating(model):
        for start in range(0, len(ids), batch_size):
            rows = order[start:start + batch_size]
            batch_inputs, batch_mask, batch_labels = trim_padding((inputs[rows], mask[rows], labels[rows]), mask[rows])
            predictions = model(batch_inputs.to(device), batch_mask.to(device)).argmax(dim=-1).cpu()
            chosen = batch_labels != IGNORE_INDEX
            correct += (predictions[chosen] == batch_labels[chosen]).sum().item()
    return correct / (labels != IGNORE_INDEX).sum().item()


def positions_of_kind(stories: Sequence[Story], kind: str, offset: int = 1) -> list[tuple[int, int]]:
    """``(row, token position)`` of every word of ``kind``; ``offset`` skips ``[CLS]`` or ``[BOS]``."""
    return [(row, i + offset) for row, story in enumerate(stories) for i, k in enumerate(story.kinds) if k == kind]


def bert_fill_accuracy(model: BERT, data: StoryData, positions: Sequence[tuple[int, int]], split: str = "validation",
                       batch_size: int = 512) -> float:
    """Accuracy of BERT when exactly one position per input is replaced by ``[MASK]``."""
    device = model_device(model)
    ids, mask = data.ids[split].to(device), data.mask[split].to(device)
    log_probs = masked_one_at_a_time_log_probs(model, ids, mask, mask_id=data.tokenizer.mask_id, positions=positions,
                                               batch_size=batch_size)  # (len(positions), vocab_size)
    rows, columns = torch.tensor(positions, device=device).T
    return (log_probs.argmax(dim=-1) == ids[rows, columns]).sum().item() / len(positions)


def evaluate_bert(model: BERT, data: StoryData, limit: int = 2000) -> dict[str, float]:
    """Masked-token accuracy (80/10/10 masks) and pronoun accuracy (one pronoun masked at a time)."""
    pronouns = positions_of_kind(data.stories["validation"][:limit], PRONOUN)
    return {"masked_accuracy": bert_masked_accuracy(model, data, limit=limit),
            "pronoun_accuracy": bert_fill_accuracy(model, data, pronouns)}


def pretrain_bert(data: StoryData | None = None, train_config: TrainConfig | None = None, progress: bool = True,
                  max_seconds: float | None = None, seed: int = 0, device: str | torch.device = "cpu",
                  evaluate: Callable[[BERT], dict[str, float]] | None = None,
                  compile: bool = False) -> tuple[BERT, History]:
    """Train a BERT of ``MODEL_SIZE`` on the story world; its history records masked accuracy.

    evaluate: what the history records every ``train_config.eval_every`` steps
        (``lab.histories`` adds probes); by default the masked accuracy.
    compile: train through ``torch.compile``; the model returned is the plain module either way.
    Returns the model on ``device``, in eval mode like a loaded checkpoint, and the history.
    """
    data = data or StoryData.build("bert")
    train_config = train_config or notebook_train_config("bert")
    torch.manual_seed(seed)
    model = BERT(model_config(data.tokenizer))
    history = train(_compiled(model, compile), data.batches(train_config.batch_size, seed),
                    bert_loss_fn(data.tokenizer, seed, device), train_config,
                    evaluate=evaluate or (lambda _: {"masked_accuracy": bert_masked_accuracy(model, data,
                                                                                             limit=1000)}),
                    progress=progress, max_seconds=max_seconds, device=device)
    return model.eval(), history


# -- The shipped checkpoints ------------------------------------------------------------------

FAMILIES = {"tiny-bert": "bert", "tiny-gpt": "gpt"}


def evaluate_pretrained(pretrained: Pretrained, data: StoryData | None = None) -> dict[str, float]:
    """Measure a checkpoint again, the same way its recorded metrics were measured."""
    if pretrained.name == "tiny-gpt":
        return evaluate_gpt(pretrained.model, data or StoryData.build("gpt"))
    return evaluate_bert(pretrained.model, data or StoryData.build("bert"))


def pretrain(name: str, steps: int | None = None, progress: bool = True, directory: Path = CHECKPOINT_DIR,
             device: str | torch.device = "cpu", compile: bool = False) -> Pretrained:
    """Train a checkpoint from scratch with the course's recipe, measure it and save it (``course pretrain``).

    steps: optimizer steps; by default the shipped recipe's (``CHECKPOINT_STEPS``).
    compile: train through ``torch.compile`` (the same weights; a minute or more of compiling first).
    Returns the checkpoint as ``hub.load_pretrained`` loads it (on the CPU).
    """
    if name not in FAMILIES:
        raise ValueError(f"name must be one of {sorted(FAMILIES)}, got {name!r}")
    family = FAMILIES[name]
    train_config = family_train_config(family, steps or CHECKPOINT_STEPS)
    data = StoryData.build(family)
    if family == "gpt":
        model, history = pretrain_gpt(data, train_config, progress=progress, device=device, compile=compile)
        metrics = evaluate_gpt(model, data)
    else:
        model, history = pretrain_bert(data, train_config, progress=progress, device=device, compile=compile)
        metrics = evaluate_bert(model, data)
    metrics["train_seconds"] = round(history.seconds, 1)
    save_pretrained(name, model, data.tokenizer, metrics, {"train": asdict(train_config)}, directory)
    return load_pretrained(name, directory)
