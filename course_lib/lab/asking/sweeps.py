"""The sweeps of notebooks 08 and 09, too long for a notebook: several label counts, three seeds each.

Notebook 09 runs one setting of each experiment live and plots the rest from
``results/09_asking.json``, which this module writes; notebook 08 plots its
data-efficiency curve from the same file (sweep ``transfer``). To recompute it
(about five hours on one core)::

    python -m course_lib.lab.asking.sweeps                  # every sweep
    python -m course_lib.lab.asking.sweeps prompting        # some of them (``SWEEPS`` names them all)
    python -m course_lib.lab.asking.sweeps qa=256,1024 sft  # qa at two of its sizes only, then sft

The sweeps:

==============  ==================================================================  ============
sweep           what it measures                                                    questions
==============  ==================================================================  ============
``qa_lr``       each QA method at each learning rate of ``recipes.QA_LR_GRIDS``     validation
``sft_lr``      each SFT method at each learning rate of ``recipes.SFT_LR_GRIDS``   validation
``prompting``   prompt-based fine-tuning against a new head on pooled features      test
``transfer``    notebook 08's data-efficiency curve                                 test
``qa``          extractive QA, each method at its chosen rate, with each kind       test
``sft``         supervised fine-tuning, tiny-gpt against scratch                    test
``held_out``    tiny-gpt tuned without one kind of question, asked that kind        test
``limits``      SFT's limits, one seed: 16,384 examples, 8 layers, question first   test
==============  ==================================================================  ============

The two searches choose the learning rates (``recipes``) on the validation
questions, with seed 0; every other figure is measured on the test
questions, with those rates. Each run is recorded as soon as it ends, and a
run already recorded is not run again: an interrupted sweep resumes where
it stopped (delete the file, or a sweep's entry in it, to measure again).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes

from course_lib.lab.finetuning import CoherenceData, FinetuneRecipe, finetune
from course_lib.lab.asking.instruction import METHODS as SFT_METHODS, accuracy_by_kind, finetune_writer
from course_lib.lab.asking.prompting import PROMPT_RECIPE, finetune_prompt
from course_lib.lab.asking.qa import METHODS as QA_METHODS, exact_match_by_kind, finetune_qa
from course_lib.lab.asking.questions import KINDS, QuestionData
from course_lib.lab.asking.recipes import QA_LR_GRIDS, SFT_LR_GRIDS, qa_recipe, sft_recipe

RESULTS_PATH = Path(__file__).parents[1] / "results" / "09_asking.json"
SEEDS = (0, 1, 2)
PROMPT_SIZES = (32, 128, 256, 512)
QA_SIZES = (256, 1024, 4096)
SFT_SIZES = (256, 1024, 4096)
TRANSFER_METHODS = ("pretrained_full", "pretrained_frozen", "scratch")
HELD_OUT_KIND = "where_to"
HELD_OUT_SIZE = 4096
# The runs of sweep ``limits``, one seed each: (name, method, examples, finetune_writer's options). Each
# differs in one thing from the ``sft`` run of the same method, size and seed.
LIMITS = (("pretrained_question_first", "pretrained", 1024, {"order": "question_first"}),
          ("scratch_question_first", "scratch", 1024, {"order": "question_first"}),
          ("pretrained_question_first", "pretrained", 4096, {"order": "question_first"}),
          ("scratch_question_first", "scratch", 4096, {"order": "question_first"}),
          ("scratch_8_layers", "scratch", 4096, {"n_layers": 8}),
          ("pretrained", "pretrained", 16384, {}),
          ("scratch", "scratch", 16384, {}))


def load_results(path: Path = RESULTS_PATH) -> dict:
    """The recorded sweeps: {sweep: {"metric": ..., "runs": [{"method", "n", "seed", "value", "seconds"}, ...]}}.

    A run may hold more: the learning rate it used (``"lr"``) and figures by kind of question (``"by_kind"``).
    """
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def summary(results: dict, sweep: str) -> dict[tuple[str, int], tuple[float, float, float]]:
    """{(method, n): (mean, lowest, highest)} over the seeds of one sweep."""
    values: dict[tuple[str, int], list[float]] = {}
    for run in results[sweep]["runs"]:
        values.setdefault((run["method"], run["n"]), []).append(run["value"])
    return {key: (sum(v) / len(v), min(v), max(v)) for key, v in values.items()}


def plot_sweep(results: dict, sweep: str, labels: dict[str, str] | None = None, ax: Axes | None = None) -> Axes:
    """Each method's mean over the seeds against the number of examples, the band from lowest to highest.

    labels: {method: legend text}; by default every method of the sweep, under its own name.
    """
    if sweep not in results:
        raise ValueError(f"sweep must be one of the recorded sweeps {sorted(results)}, got {sweep!r}")
    figures = summary(results, sweep)
    labels = labels or {method: method for method, _ in figures}
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.5), layout="constrained")
    for (method, label), marker in zip(labels.items(), "os^Dv"):
        sizes = sorted(n for m, n in figures if m == method)
        mean, lowest, highest = zip(*(figures[method, n] for n in sizes))
        line, = ax.plot(sizes, mean, marker=marker, label=label)
        ax.fill_between(sizes, lowest, highest, color=line.get_color(), alpha=0.2)
    ax.set_xscale("log", base=2)
    every_size = sorted({n for _, n in figures})
    ax.set_xticks(every_size, [f"{n:,}" for n in every_size], minor=False)
    ax.minorticks_off()
    ax.set_xlabel("labeled examples")
    ax.set_ylabel(results[sweep]["metric"].replace("_", " "))
    ax.legend(frameon=False)
    return ax


def best_learning_rates(results: dict, sweep: str) -> dict[str, dict[int, float]]:
    """{method: {n: the learning rate with the highest figure}} of a learning-rate search (``qa_lr``, ``sft_lr``)."""
    best: dict[tuple[str, int], dict] = {}
    for run in results[sweep]["runs"]:
        key = (run["method"], run["n"])
        if key not in best or run["value"] > best[key]["value"]:
            best[key] = run
    rates: dict[str, dict[int, float]] = {}
    for (method, n), run in sorted(best.items()):
        rates.setdefault(method, {})[n] = run["lr"]
    return rates


def plot_learning_rates(results: dict, sweep: str, labels: dict[str, str], n: int, ax: Axes | None = None) -> Axes:
    """A learning-rate search at ``n`` examples: each method's figure against the learning rate, the best ringed."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.2), layout="constrained")
    runs = [run for run in results[sweep]["runs"] if run["n"] == n]
    if not runs:
        raise ValueError(f"n must be one of the sizes searched in {sweep!r}, got {n!r}")
    best = best_learning_rates(results, sweep)
    for (method, label), marker in zip(labels.items(), "os^Dv"):
        points = sorted((run["lr"], run["value"]) for run in runs if run["method"] == method)
        rates, values = zip(*points)
        line, = ax.plot(rates, values, marker=marker, label=label)
        chosen = best[method][n]
        ax.plot([chosen], [dict(points)[chosen]], "o", markersize=13, markerfacecolor="none",
                color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel(results[sweep]["metric"].replace("_", " "))
    ax.set_title(f"{n:,} examples")
    return ax


def _record(path: Path, sweep: str, metric: str, method: str, n: int, seed: int,
            measure: Callable[[], float | tuple[float, dict]], lr: float | None = None) -> None:
    """Run ``measure`` once and add its figure (and any extra figures it returns) to the results file.

    A run is known by its method, size, seed and, when given, learning rate ``lr``.
    """
    identity = {"method": method, "n": n, "seed": seed, **({"lr": lr} if lr is not None else {})}
    recorded = load_results(path).get(sweep, {"runs": []})["runs"]
    if any(all(run.get(key) == value for key, value in identity.items()) for run in recorded):
        return
    start = time.perf_counter()
    measured = measure()
    value, extra = measured if isinstance(measured, tuple) else (measured, {})
    results = load_results(path)
    part = results.setdefault(sweep, {"metric": metric, "runs": []})
    part["runs"].append({**identity, "value": round(value, 4), "seconds": round(time.perf_counter() - start, 1),
                         **extra})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    rate = "" if lr is None else f" lr={lr:g}"
    print(f"{sweep:10} {method:26} n={n:<5} seed={seed}{rate}  {metric} {value:.3f}", flush=True)


def sweep_qa_learning_rates(sizes: tuple[int, ...] = QA_SIZES, path: Path = RESULTS_PATH) -> None:
    """Each QA method at each rate of its ``QA_LR_GRIDS`` and ``sizes`` questions: validation exact match, seed 0."""
    data = QuestionData.build()
    for n in sizes:
        for method in QA_METHODS:
            for lr in QA_LR_GRIDS[method]:
                recipe = replace(qa_recipe(method, n), lr=lr)
                _record(path, "qa_lr", "validation_exact_match", method, n, 0,
                        lambda: finetune_qa(method, data.labeled_set(n), data.validation, recipe).exact_match, lr)


def sweep_sft_learning_rates(sizes: tuple[int, ...] = SFT_SIZES, path: Path = RESULTS_PATH) -> None:
    """Each SFT method at each rate of its ``SFT_LR_GRIDS`` and ``sizes`` examples: validation accuracy, seed 0."""
    data = QuestionData.build()
    for n in sizes:
        for method in SFT_METHODS:
            for lr in SFT_LR_GRIDS[method]:
                recipe = replace(sft_recipe(method, n), lr=lr)
                _record(path, "sft_lr", "validation_answer_accuracy", method, n, 0,
                        lambda: finetune_writer(method, data.labeled_set(n), data.validation, recipe).answer_accuracy,
                        lr)


def sweep_prompting(sizes: tuple[int, ...] = PROMPT_SIZES, path: Path = RESULTS_PATH) -> None:
    """Prompt-based fine-tuning against notebook 08's head on pooled features, at ``sizes`` labels."""
    data = CoherenceData.build()
    for n in sizes:
        for seed in SEEDS:
            labeled = data.labeled_set(n)
            _record(path, "prompting", "test_accuracy", "prompt_full", n, seed,
                    lambda: finetune_prompt(labeled, data.test, recipe=PROMPT_RECIPE, seed=seed).test_accuracy)
            _record(path, "prompting", "test_accuracy", "pooled_full", n, seed,
                    lambda: finetune("pretrained_full", labeled, data.test, FinetuneRecipe(), seed).test_accuracy)


def sweep_transfer(sizes: tuple[int, ...] = PROMPT_SIZES, path: Path = RESULTS_PATH) -> None:
    """Notebook 08's data-efficiency curve with three seeds: each method of ``finetuning.METHODS``'s BERT rows."""
    data = CoherenceData.build()
    for n in sizes:
        for seed in SEEDS:
            labeled = data.labeled_set(n)
            for method in TRANSFER_METHODS:
                _record(path, "transfer", "test_accuracy", method, n, seed,
                        lambda: finetune(method, labeled, data.test, FinetuneRecipe(), seed).test_accuracy)


def sweep_qa(sizes: tuple[int, ...] = QA_SIZES, path: Path = RESULTS_PATH) -> None:
    """Extractive question answering: exact match of each method at ``sizes`` labeled questions, and by kind."""
    data = QuestionData.build()

    def measure(method: str, n: int, seed: int) -> tuple[float, dict]:
        result = finetune_qa(method, data.labeled_set(n), data.test, qa_recipe(method, n), seed)
        by_kind = exact_match_by_kind(result.model, result.tokenizer, data.test)
        return result.exact_match, {"by_kind": {kind: round(value, 4) for kind, value in by_kind.items()}}

    for n in sizes:
        for seed in SEEDS:
            for method in QA_METHODS:
                _record(path, "qa", "exact_match", method, n, seed, lambda: measure(method, n, seed),
                        qa_recipe(method, n).lr)


def sweep_sft(sizes: tuple[int, ...] = SFT_SIZES, path: Path = RESULTS_PATH) -> None:
    """Supervised fine-tuning of tiny-gpt and of the same GPT from scratch: exact answers at ``sizes`` examples."""
    data = QuestionData.build()
    for n in sizes:
        for seed in SEEDS:
            for method in SFT_METHODS:
                recipe = sft_recipe(method, n)
                _record(path, "sft", "answer_accuracy", method, n, seed,
                        lambda: finetune_writer(method, data.labeled_set(n), data.test, recipe, seed).answer_accuracy,
                        recipe.lr)


def sweep_held_out(sizes: tuple[int, ...] = (HELD_OUT_SIZE,), path: Path = RESULTS_PATH) -> None:
    """tiny-gpt fine-tuned without ``HELD_OUT_KIND`` questions: its accuracy on that kind and on each other kind."""
    data = QuestionData.build()
    seen = tuple(kind for kind in KINDS if kind != HELD_OUT_KIND)

    def measure(n: int, seed: int) -> tuple[float, dict]:
        recipe = sft_recipe("pretrained", n)
        result = finetune_writer("pretrained", data.labeled_set(n, seen), data.test, recipe, seed)
        by_kind = accuracy_by_kind(result.model, result.tokenizer, data.test)
        return by_kind[HELD_OUT_KIND], {"by_kind": {kind: round(value, 4) for kind, value in by_kind.items()}}

    for n in sizes:
        for seed in SEEDS:
            _record(path, "held_out", "answer_accuracy", f"without_{HELD_OUT_KIND}", n, seed, lambda: measure(n, seed),
                    sft_recipe("pretrained", n).lr)


def sweep_limits(sizes: tuple[int, ...] | None = None, path: Path = RESULTS_PATH) -> None:
    """The runs of ``LIMITS`` (those at ``sizes`` examples, or all), seed 0: what more examples, depth or order give."""
    data = QuestionData.build()
    for name, method, n, options in LIMITS:
        if sizes is None or n in sizes:
            recipe = sft_recipe(method, n)
            _record(path, "limits", "answer_accuracy", name, n, 0,
                    lambda: finetune_writer(method, data.labeled_set(n), data.test, recipe, 0, **options).answer_accuracy,
                    recipe.lr)


SWEEPS = {"qa_lr": sweep_qa_learning_rates, "sft_lr": sweep_sft_learning_rates, "prompting": sweep_prompting,
          "transfer": sweep_transfer, "qa": sweep_qa, "sft": sweep_sft, "held_out": sweep_held_out,
          "limits": sweep_limits}


def main(argv: list[str], path: Path = RESULTS_PATH) -> int:
    """Run the sweeps named in ``argv`` (all by default), each as ``name`` or ``name=size,size``, into ``path``."""
    torch.set_num_threads(1)  # the course's machines are small and shared: one core, one run at a time
    requests = [argument.partition("=") for argument in argv or SWEEPS]
    unknown = [name for name, _, _ in requests if name not in SWEEPS]
    if unknown:
        print(f"unknown sweeps {unknown}; choose from {list(SWEEPS)}", file=sys.stderr)
        return 2
    for name, _, sizes in requests:
        if sizes:
            SWEEPS[name](tuple(int(size) for size in sizes.split(",")), path=path)
        else:
            SWEEPS[name](path=path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
