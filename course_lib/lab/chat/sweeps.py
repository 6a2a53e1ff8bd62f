"""The runs notebook 10 plots, too long for a notebook, written to ``results/10_chat.json``.

    python -m course_lib.lab.chat.sweeps                  # every section, about an hour on one busy core
    python -m course_lib.lab.chat.sweeps seeds recipes    # some of them

The sections:

* ``main``: the lesson (``pipeline.run_chat``): the bench table, the seconds
  of each stage, RLHF's and RLVR's histories step by step, the reward
  model's held-out accuracy by kind of comparison;
* ``failures``: RLHF without the KL penalty, and towards a reward model
  trained on 50 comparisons only;
* ``seeds``: RLHF and RLVR again with the recipe's seeds 1 and 2;
* ``learning_rates``: RLHF and RLVR at three learning rates, judged on the
  validation questions (the test questions only report);
* ``best_of_n``: n answers from the starting model, the reward model's or
  the judge's favourite kept, or the polite answer most often written,
  n = 1 to 16, on every test question;
* ``comparisons``: reward models trained on 250 to 8,000 comparisons;
* ``validation_pairs``: how many of those sweeps' validation pairs are of each kind;
* ``recipes``: the reward model's learning rate and passes, on 2,000 comparisons.

Every section but ``main`` uses the shipped ``chat-sft`` and ``chat-reward``;
``main`` trains its reward model as ``course pretrain chat-reward`` does and
records how far its weights are from the shipped one's (float rounding only,
when nothing changed; ``course pretrain chat-reward`` ships a new one).
``comparisons`` and ``recipes`` collect their own comparisons from questions
the lesson never uses, and score every reward model on the same 500
validation pairs. Each section is written as soon as it ends; running a
section again replaces it. Every run uses one seed unless ``seeds`` says so.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from functools import cached_property
from pathlib import Path
from typing import Sequence

import torch

from course_lib.lab.chat.best_of_n import best_of_n_rates, judge_scores, majority_rates, reward_model_scores, \
    sample_many
from course_lib.lab.asking.questions import Question, QuestionData
from course_lib.lab.chat.data import chat_questions, collect_comparisons, comparison_kinds
from course_lib.lab.chat.pipeline import CHAT_COMPARISONS, CORRECTNESS_KINDS, HELD_OUT_COMPARISONS, STYLE_KINDS, \
    ChatQuestions, Judged, accuracy_on, chat_table_of, judge_against, run_chat
from course_lib.lab.chat.reward_model import REWARD_RECIPE, RewardRecipe, accuracy_by_kind, load_reward_model, \
    reward_accuracy, train_reward_model
from course_lib.lab.chat.rlhf import RLHF_RECIPE, RLHFHistory, rlhf, rlvr
from course_lib.lab.chat.sft import load_chat_checkpoint

RESULTS_FILE = Path(__file__).parents[1] / "results" / "10_chat.json"
# The comparisons of the reward-model sweeps: from questions far after the lesson's, 500 kept to validate.
SWEEP_QUESTIONS_FROM = 20_000
SWEEP_SIZES = (250, 500, 1000, 2000, 4000, 8000)
VALIDATION_PAIRS = 500
# (passes over the comparisons, peak learning rate) of the reward model; the first is REWARD_RECIPE's.
REWARD_RECIPES = ((2, 3e-4), (10, 3e-4), (5, 1e-3), (10, 1e-3), (20, 1e-3))
FEW_COMPARISONS = 50
SEEDS = (1, 2)
LEARNING_RATES = (1e-4, 3e-4, 1e-3)
BEST_OF = (1, 2, 4, 8, 16)


def load_results(path: Path = RESULTS_FILE) -> dict:
    """The shipped results (``python -m course_lib.lab.chat.sweeps`` makes them again)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no results at {path}; make them with `python -m course_lib.lab.chat.sweeps`")
    return json.loads(Path(path).read_text())


def _rounded(values: dict) -> dict:
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in values.items()}


def _history(history: RLHFHistory) -> dict[str, list[float]]:
    return {key: [round(v, 4) for v in getattr(history, key)] for key in ("reward", "kl", "rude_rate", "correct_rate")}


def _by_kind(by_kind: dict[str, tuple[float, int]]) -> dict[str, dict[str, float]]:
    return {kind: {"accuracy": round(accuracy, 4), "pairs": count} for kind, (accuracy, count) in by_kind.items()}


class Lesson:
    """What the sections share, made on first use: the questions, the shipped models, the comparisons."""

    @cached_property
    def questions(self) -> ChatQuestions:
        return ChatQuestions.build()

    @cached_property
    def validation(self) -> list[Question]:
        return chat_questions(QuestionData.build().validation)

    @cached_property
    def start(self):
        return load_chat_checkpoint("chat-sft")

    @cached_property
    def reward_model(self):
        return load_reward_model().model

    def judged(self, policy, questions: Sequence[Question] | None = None) -> dict[str, float]:
        """How the judge sees ``policy`` on the test questions (or on ``questions``), and its KL from the start."""
        judged: Judged = judge_against(policy, self.start.model, self.start.tokenizer,
                                       self.questions.test if questions is None else questions)
        return _rounded(asdict(judged))

    @cached_property
    def sweep_pairs(self):
        """(training pairs, validation pairs) of the reward-model sweeps."""
        pairs = collect_comparisons(self.start.model, self.start.tokenizer,
                                    self.questions.labelling[SWEEP_QUESTIONS_FROM:],
                                    max(SWEEP_SIZES) + VALIDATION_PAIRS, seed=SWEEP_QUESTIONS_FROM)
        return pairs[:max(SWEEP_SIZES)], pairs[max(SWEEP_SIZES):]

    def reward_model_figures(self, pairs, recipe: RewardRecipe) -> dict:
        """A reward model trained on ``pairs``, scored on the validation pairs by kind and on its own pairs."""
        began = time.perf_counter()
        model, _ = train_reward_model(self.start.model, self.start.tokenizer, pairs, recipe)
        validation = self.sweep_pairs[1]
        by_kind = accuracy_by_kind(model, self.start.tokenizer, validation)
        return {"validation": round(reward_accuracy(model, self.start.tokenizer, validation), 4),
                "style": round(accuracy_on(by_kind, STYLE_KINDS), 4),
                "correctness": round(accuracy_on(by_kind, CORRECTNESS_KINDS), 4),
                "own_pairs": round(reward_accuracy(model, self.start.tokenizer, pairs), 4),
                "seconds": round(time.perf_counter() - began, 1)}


def main_section(lesson: Lesson) -> dict:
    run = run_chat(questions=lesson.questions)
    shipped = lesson.reward_model.state_dict()
    difference = max((weight - shipped[name]).abs().max().item()
                     for name, weight in run.reward_model.state_dict().items())
    return {"table": _rounded(chat_table_of(run)), "seconds": run.seconds,
            "reward_model_largest_difference_from_shipped": difference,
            "held_out_by_kind": _by_kind(run.accuracy_by_kind),
            "rlhf": {"history": _history(run.rlhf_history), "seconds": round(run.rlhf_history.seconds, 1)},
            "rlvr": {"history": _history(run.rlvr_history), "seconds": round(run.rlvr_history.seconds, 1)}}


def failures_section(lesson: Lesson) -> list[dict]:
    start, tokenizer, questions = lesson.start.model, lesson.start.tokenizer, lesson.questions
    pairs = collect_comparisons(start, tokenizer, questions.labelling, CHAT_COMPARISONS + HELD_OUT_COMPARISONS)
    few_model, _ = train_reward_model(start, tokenizer, pairs[:FEW_COMPARISONS], REWARD_RECIPE)
    runs = [("no KL penalty", lesson.reward_model, replace(RLHF_RECIPE, kl_coef=0.0)),
            (f"{FEW_COMPARISONS} comparisons", few_model, RLHF_RECIPE)]
    recorded = []
    for name, reward_model, recipe in runs:
        policy, history = rlhf(start, reward_model, tokenizer, questions.practice, recipe)
        shown = questions.test[:8]
        answers = sample_many(policy, tokenizer, shown, 1)
        recorded.append({"name": name, "judged": lesson.judged(policy),
                         "reward_model_accuracy": round(reward_accuracy(reward_model, tokenizer,
                                                                        pairs[CHAT_COMPARISONS:]), 4),
                         "history": _history(history),
                         "examples": [(q.text, " ".join(a[0])) for q, a in zip(shown, answers)]})
    return recorded


def seeds_section(lesson: Lesson) -> list[dict]:
    start, tokenizer, practice = lesson.start.model, lesson.start.tokenizer, lesson.questions.practice
    runs = []
    for seed in SEEDS:
        recipe = replace(RLHF_RECIPE, seed=seed)
        for method, (policy, _) in (("rlhf", rlhf(start, lesson.reward_model, tokenizer, practice, recipe)),
                                    ("rlvr", rlvr(start, tokenizer, practice, recipe))):
            runs.append({"method": method, "seed": seed, **lesson.judged(policy)})
    return runs


def learning_rates_section(lesson: Lesson) -> list[dict]:
    start, tokenizer, practice = lesson.start.model, lesson.start.tokenizer, lesson.questions.practice
    runs = [{"method": "start", "lr": 0.0, **lesson.judged(start, lesson.validation)}]
    for lr in LEARNING_RATES:
        recipe = replace(RLHF_RECIPE, lr=lr)
        for method, (policy, _) in (("rlhf", rlhf(start, lesson.reward_model, tokenizer, practice, recipe)),
                                    ("rlvr", rlvr(start, tokenizer, practice, recipe))):
            runs.append({"method": method, "lr": lr, **lesson.judged(policy, lesson.validation)})
    return runs


def best_of_n_section(lesson: Lesson) -> list[dict]:
    start, tokenizer, test = lesson.start.model, lesson.start.tokenizer, lesson.questions.test
    samples = sample_many(start, tokenizer, test, max(BEST_OF), seed=7)
    by_scorer = {"reward_model": best_of_n_rates(test, samples, reward_model_scores(lesson.reward_model, tokenizer,
                                                                                    test, samples), BEST_OF),
                 "judge": best_of_n_rates(test, samples, judge_scores(test, samples), BEST_OF),
                 "majority": majority_rates(test, samples, BEST_OF)}
    return [{"n": n, "questions": len(test), **{scorer: _rounded(rates[n]) for scorer, rates in by_scorer.items()}}
            for n in BEST_OF]


def comparisons_section(lesson: Lesson) -> list[dict]:
    training = lesson.sweep_pairs[0]
    return [{"comparisons": n, **lesson.reward_model_figures(training[:n], REWARD_RECIPE)} for n in SWEEP_SIZES]


def validation_pairs_section(lesson: Lesson) -> dict[str, int]:
    return comparison_kinds(lesson.sweep_pairs[1])


def recipes_section(lesson: Lesson) -> list[dict]:
    training = lesson.sweep_pairs[0][:CHAT_COMPARISONS]
    return [{"epochs": epochs, "lr": lr,
             **lesson.reward_model_figures(training, replace(REWARD_RECIPE, epochs=epochs, lr=lr))}
            for epochs, lr in REWARD_RECIPES]


SECTIONS = {"main": main_section, "failures": failures_section, "seeds": seeds_section,
            "learning_rates": learning_rates_section, "best_of_n": best_of_n_section,
            "comparisons": comparisons_section, "validation_pairs": validation_pairs_section,
            "recipes": recipes_section}


def main(argv: list[str], path: Path = RESULTS_FILE) -> int:
    """Run the sections named in ``argv`` (all by default) and write each into ``path`` as it ends."""
    torch.set_num_threads(1)  # the course's machines are small and shared: one core, one run at a time
    names = argv or list(SECTIONS)
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        print(f"unknown sections {unknown}; choose from {list(SECTIONS)}", file=sys.stderr)
        return 2
    lesson = Lesson()
    for name in names:
        began = time.perf_counter()
        section = SECTIONS[name](lesson)
        results = load_results(path) if Path(path).exists() else {}
        results[name] = section
        Path(path).write_text(json.dumps(results, indent=1) + "\n")
        print(f"{name}: {time.perf_counter() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
