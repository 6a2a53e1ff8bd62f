"""The sweeps of notebooks 08 and 09, too long for a notebook: several label counts, three seeds each.

Notebook 09 runs one setting of each experiment live and plots the rest from
``results/09_asking.json``, which this module writes; notebook 08 plots its
data-efficiency curve from the same file (sweep ``transfer``). To recompute it (about
two hours on a 2-core CPU)::

    python -m course_lib.lab.asking.sweeps                  # every sweep
    python -m course_lib.lab.asking.sweeps prompting        # some of them: prompting, transfer, qa, sft, held_out
    python -m course_lib.lab.asking.sweeps qa=256,1024 sft  # qa at two of its sizes only, then sft

Each run is recorded as soon as it ends, and a run already recorded is not
run again: an interrupted sweep resumes where it stopped (delete the file,
or a sweep's entry in it, to measure again). Every number is a test-set
figure; the settings were chosen beforehand on the validation sets.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes

from course_lib.lab.finetuning import CoherenceData, FinetuneRecipe, finetune
from course_lib.lab.asking.instruction import accuracy_by_kind, finetune_writer, sft_recipe
from course_lib.lab.asking.prompting import PROMPT_RECIPE, finetune_prompt
from course_lib.lab.asking.qa import METHODS as QA_METHODS, QA_RECIPE, finetune_qa
from course_lib.lab.asking.questions import KINDS, QuestionData

RESULTS_PATH = Path(__file__).parents[1] / "results" / "09_asking.json"
SEEDS = (0, 1, 2)
PROMPT_SIZES = (32, 128, 256, 512)
QA_SIZES = (256, 1024, 4096)
SFT_SIZES = (256, 1024, 4096)
TRANSFER_METHODS = ("pretrained_full", "pretrained_frozen", "scratch")
HELD_OUT_KIND = "where_to"
HELD_OUT_SIZE = 4096


def load_results(path: Path = RESULTS_PATH) -> dict:
    """The recorded sweeps: {sweep: {"metric": ..., "runs": [{"method", "n", "seed", "value", "seconds"}, ...]}}."""
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


def _record(path: Path, sweep: str, metric: str, method: str, n: int, seed: int,
            measure: Callable[[], float | tuple[float, dict]]) -> None:
    """Run ``measure`` once and add its figure (and any extra figures it returns) to the results file."""
    recorded = load_results(path).get(sweep, {"runs": []})["runs"]
    if any((run["method"], run["n"], run["seed"]) == (method, n, seed) for run in recorded):
        return
    start = time.perf_counter()
    measured = measure()
    value, extra = measured if isinstance(measured, tuple) else (measured, {})
    results = load_results(path)
    part = results.setdefault(sweep, {"metric": metric, "runs": []})
    part["runs"].append({"method": method, "n": n, "seed": seed, "value": round(value, 4),
                         "seconds": round(time.perf_counter() - start, 1), **extra})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(f"{sweep:10} {method:18} n={n:<5} seed={seed}  {metric} {value:.3f}", flush=True)


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
    """Extractive question answering: exact match of each method at ``sizes`` labeled questions."""
    data = QuestionData.build()
    for n in sizes:
        for seed in SEEDS:
            for method in QA_METHODS:
                _record(path, "qa", "exact_match", method, n, seed,
                        lambda: finetune_qa(method, data.labeled_set(n), data.test, QA_RECIPE, seed).exact_match)


def sweep_sft(sizes: tuple[int, ...] = SFT_SIZES, path: Path = RESULTS_PATH) -> None:
    """Supervised fine-tuning of tiny-gpt and of the same GPT from scratch: exact answers at ``sizes`` examples."""
    data = QuestionData.build()
    for n in sizes:
        for seed in SEEDS:
            for method in ("pretrained", "scratch"):
                recipe = sft_recipe(method, n)
                _record(path, "sft", "answer_accuracy", method, n, seed,
                        lambda: (finetune_writer(method, data.labeled_set(n), data.test, recipe, seed).answer_accuracy,
                                 {"lr": recipe.lr}))


def sweep_held_out(sizes: tuple[int, ...] = (HELD_OUT_SIZE,), path: Path = RESULTS_PATH) -> None:
    """tiny-gpt fine-tuned without ``HELD_OUT_KIND`` questions: its accuracy on that kind and on each other kind."""
    data = QuestionData.build()
    seen = tuple(kind for kind in KINDS if kind != HELD_OUT_KIND)

    def measure(n: int, seed: int) -> tuple[float, dict]:
        recipe = sft_recipe("pretrained", n)
        result = finetune_writer("pretrained", data.labeled_set(n, seen), data.test, recipe, seed)
        by_kind = accuracy_by_kind(result.model, result.tokenizer, data.test)
        return by_kind[HELD_OUT_KIND], {"by_kind": {kind: round(value, 4) for kind, value in by_kind.items()},
                                        "lr": recipe.lr}

    for n in sizes:
        for seed in SEEDS:
            _record(path, "held_out", "answer_accuracy", f"without_{HELD_OUT_KIND}", n, seed, lambda: measure(n, seed))


SWEEPS = {"prompting": sweep_prompting, "transfer": sweep_transfer, "qa": sweep_qa, "sft": sweep_sft,
          "held_out": sweep_held_out}


def main(argv: list[str]) -> int:
    """Run the sweeps named in ``argv`` (all by default), each as ``name`` or ``name=size,size``."""
    torch.set_num_threads(1)  # the course's machines are small and shared: one core, one run at a time
    requests = [argument.partition("=") for argument in argv or SWEEPS]
    unknown = [name for name, _, _ in requests if name not in SWEEPS]
    if unknown:
        print(f"unknown sweeps {unknown}; choose from {list(SWEEPS)}", file=sys.stderr)
        return 2
    for name, _, sizes in requests:
        if sizes:
            SWEEPS[name](tuple(int(size) for size in sizes.split(",")))
        else:
            SWEEPS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
