"""How the shipped checkpoints learned: their training histories, probes included (notebooks 05 and 06).

A checkpoint stores its weights and its final metrics. What happened on the
way is told by a history measured every ``EVERY`` steps of the same recipe:

=====================  ==========================================================
``tiny-bert``          masked accuracy, and pronoun accuracy (one pronoun masked at a time)
``tiny-bert-lr-0.006``  the same BERT at three times the learning rate, GPT's: the run that stalled
``tiny-gpt``           validation loss over the entropy floor, valid stories, wrong-gender stories
=====================  ==========================================================

The histories are measured once (``python -m course_lib.lab.histories``,
about fifteen minutes on two cores) and shipped in ``lab/results``; the
notebooks draw them. The probes are the ones notebooks 05 and 06 explain:
an average over all tokens hides a rule that only a few tokens carry.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from course_lib.corpus import PRONOUN
from course_lib.lab.pretraining import (
    StoryData, bert_fill_accuracy, bert_masked_accuracy, checkpoint_train_config, family_train_config,
    gpt_validation_loss, positions_of_kind, pretrain_bert, pretrain_gpt, sample_stories,
)
from course_lib.lab.probes import diagnose_story
from course_lib.models import BERT, GPT
from course_lib.training import History

RESULTS_DIR = Path(__file__).parent / "results"
EVERY = 100
# name: (family, peak learning rate or None for the shipped recipe's)
RUNS = {"tiny-bert": ("bert", None), "tiny-bert-lr-0.006": ("bert", 6e-3), "tiny-gpt": ("gpt", None)}
# Enough validation stories and samples for a probe to read to about two points, every 100 steps.
PROBE_STORIES = 500
PROBE_SAMPLES = 200


def bert_probes(data: StoryData):
    """The evaluation of a BERT history: masked accuracy and pronoun accuracy on validation stories."""
    pronouns = positions_of_kind(data.stories["validation"][:PROBE_STORIES], PRONOUN)

    def evaluate(model: BERT) -> dict[str, float]:
        return {"masked_accuracy": bert_masked_accuracy(model, data, limit=PROBE_STORIES),
                "pronoun_accuracy": bert_fill_accuracy(model, data, pronouns)}

    return evaluate


def gpt_probes(data: StoryData):
    """The evaluation of a GPT history: validation loss, and what its sampled stories get wrong."""

    def evaluate(model: GPT) -> dict[str, float]:
        stories = sample_stories(model, data.tokenizer, PROBE_SAMPLES, seed=0)
        mistakes = [diagnose_story(story) for story in stories]
        return {"val_loss": gpt_validation_loss(model, data, limit=PROBE_STORIES),
                "valid_story_rate": sum(m is None for m in mistakes) / len(stories),
                "wrong_gender_share": sum(m is not None and m[0] == "pronoun" for m in mistakes) / len(stories)}

    return evaluate


def record_history(name: str, directory: Path = RESULTS_DIR, progress: bool = True,
                   steps: int | None = None, every: int = EVERY) -> Path:
    """Train run ``name`` of ``RUNS`` with its recipe, measured every ``every`` steps; save the history as JSON.

    steps: a shorter run than the recipe's (for tests); the schedule follows it.
    """
    if name not in RUNS:
        raise ValueError(f"name must be one of {sorted(RUNS)}, got {name!r}")
    family, lr = RUNS[name]
    recipe = checkpoint_train_config(family) if steps is None else family_train_config(family, steps)
    config = replace(recipe, eval_every=every)
    if lr is not None:
        config = replace(config, lr=lr)
    data = StoryData.build(family)
    if family == "bert":
        _, history = pretrain_bert(data, config, progress=progress, evaluate=bert_probes(data))
    else:
        _, history = pretrain_gpt(data, config, progress=progress, evaluate=gpt_probes(data))
    path = Path(directory) / f"{name}_history.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "lr": config.lr, "steps": config.steps,
                                "train_loss": [round(loss, 4) for loss in history.train_loss],
                                # steps done when measured (History counts from step 0)
                                "eval_steps": [step + 1 for step in history.eval_steps],
                                "eval_metrics": {metric: [round(v, 4) for v in values]
                                                 for metric, values in history.eval_metrics.items()},
                                "seconds": round(history.seconds, 1)}) + "\n")
    return path


def load_history(name: str, directory: Path = RESULTS_DIR) -> History:
    """The shipped history of run ``name`` as a ``training.History`` (``viz.plot_history`` draws it)."""
    if name not in RUNS:
        raise ValueError(f"name must be one of {sorted(RUNS)}, got {name!r}")
    recorded = json.loads((Path(directory) / f"{name}_history.json").read_text())
    return History(steps=list(range(1, len(recorded["train_loss"]) + 1)), train_loss=recorded["train_loss"],
                   eval_steps=recorded["eval_steps"], eval_metrics=recorded["eval_metrics"],
                   seconds=recorded["seconds"])


def first_step_reaching(history: History, metric: str, level: float) -> int | None:
    """The first evaluated step at which ``metric`` is at least ``level`` (None if it never is)."""
    return next((step for step, value in zip(history.eval_steps, history.eval_metrics[metric]) if value >= level),
                None)


if __name__ == "__main__":
    for run in sys.argv[1:] or RUNS:
        print(record_history(run), flush=True)
