"""Notebook 09's sweeps: recording runs, resuming, summarising and plotting them (no training here)."""
import json
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from course_lib.lab.asking import sweeps as asking_sweeps
from course_lib.lab.asking.recipes import (
    QA_LEARNING_RATES, QA_LR_GRIDS, SFT_LEARNING_RATES, SFT_LR_GRIDS, qa_recipe, sft_recipe,
)
from course_lib.lab.asking.sweeps import (
    RESULTS_PATH, best_learning_rates, load_results, plot_learning_rates, plot_sweep, summary,
)


def test_a_recorded_run_is_not_measured_again(tmp_path):
    path = tmp_path / "results.json"
    calls = []

    def measure():
        calls.append(1)
        return 0.5, {"by_kind": {"when": 1.0}}

    for _ in range(2):
        asking_sweeps._record(path, "sweep", "exact_match", "full", 8, 0, measure)
    asking_sweeps._record(path, "sweep", "exact_match", "full", 8, 1, lambda: 0.7)
    runs = json.loads(path.read_text())["sweep"]["runs"]
    assert len(calls) == 1
    assert [(run["seed"], run["value"]) for run in runs] == [(0, 0.5), (1, 0.7)]
    assert runs[0]["by_kind"] == {"when": 1.0}


def test_runs_at_two_learning_rates_are_two_runs(tmp_path):
    path = tmp_path / "results.json"
    for lr in (1e-3, 3e-3, 1e-3):
        asking_sweeps._record(path, "search", "accuracy", "full", 8, 0, lambda: lr * 100, lr)
    runs = json.loads(path.read_text())["search"]["runs"]
    assert [(run["lr"], run["value"]) for run in runs] == [(1e-3, 0.1), (3e-3, 0.3)]


def search_results():
    values = {("a", 8): {1e-3: 0.2, 3e-3: 0.5, 1e-2: 0.4}, ("a", 32): {1e-3: 0.6, 3e-3: 0.3, 1e-2: 0.1},
              ("b", 8): {1e-3: 0.1, 3e-3: 0.2, 1e-2: 0.3}}
    return {"search": {"metric": "validation_accuracy", "runs": [
        {"method": method, "n": n, "seed": 0, "lr": lr, "value": value}
        for (method, n), by_rate in values.items() for lr, value in by_rate.items()]}}


def test_the_best_learning_rate_of_each_method_and_size():
    assert best_learning_rates(search_results(), "search") == {"a": {8: 3e-3, 32: 1e-3}, "b": {8: 1e-2}}


def test_plot_learning_rates_draws_each_method_and_rings_its_best():
    ax = plot_learning_rates(search_results(), "search", {"a": "method a", "b": "method b"}, 8)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines if not line.get_label().startswith("_")] == ["method a", "method b"]
    assert list(lines[0].get_ydata()) == [0.2, 0.5, 0.4] and list(lines[1].get_xdata()) == [3e-3]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "validation accuracy"
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="n must be one of the sizes"):
        plot_learning_rates(search_results(), "search", {"a": "a"}, 16)


class StandInQuestions:
    """What the sweeps ask of ``QuestionData``: labeled sets, validation and test questions, told apart."""

    validation, test = ["a validation question"], ["a test question"]

    def labeled_set(self, n, kinds=None):
        return [f"{n} labeled questions"]


@pytest.fixture
def stand_ins(monkeypatch):
    """The sweeps' fine-tuning replaced by a recorder: (method, labeled, evaluated on, lr, seed, options) per call."""
    calls = []

    def finetune(method, labeled, evaluated_on, recipe, seed=0, **options):
        calls.append((method, labeled[0], evaluated_on[0], recipe.lr, seed, options))
        return SimpleNamespace(exact_match=0.5, answer_accuracy=0.5, model=None, tokenizer=None)

    monkeypatch.setattr(asking_sweeps.QuestionData, "build", classmethod(lambda cls, **kwargs: StandInQuestions()))
    monkeypatch.setattr(asking_sweeps, "finetune_qa", finetune)
    monkeypatch.setattr(asking_sweeps, "finetune_writer", finetune)
    monkeypatch.setattr(asking_sweeps, "exact_match_by_kind", lambda model, tokenizer, questions: {"when": 1.0})
    return calls


def test_the_searches_try_each_rate_of_the_grid_on_validation_questions_only(stand_ins, tmp_path):
    asking_sweeps.sweep_qa_learning_rates((256,), tmp_path / "results.json")
    asking_sweeps.sweep_sft_learning_rates((256,), tmp_path / "results.json")
    expected = [(method, lr) for method, grid in QA_LR_GRIDS.items() for lr in grid]
    expected += [(method, lr) for method, grid in SFT_LR_GRIDS.items() for lr in grid]
    assert [(method, lr) for method, _, _, lr, _, _ in stand_ins] == expected
    assert {evaluated_on for _, _, evaluated_on, _, _, _ in stand_ins} == {"a validation question"}
    assert {seed for _, _, _, _, seed, _ in stand_ins} == {0}


def test_the_sweeps_measure_each_method_at_its_own_rate_on_test_questions(stand_ins, tmp_path):
    asking_sweeps.sweep_qa((1024,), tmp_path / "results.json")
    n_qa = len(stand_ins)
    asking_sweeps.sweep_sft((1024,), tmp_path / "results.json")
    assert all(evaluated_on == "a test question" for _, _, evaluated_on, _, _, _ in stand_ins)
    for call, (method, labeled, _, lr, _, _) in enumerate(stand_ins):
        recipe = qa_recipe if call < n_qa else sft_recipe
        assert labeled == "1024 labeled questions" and lr == recipe(method, 1024).lr
    runs = load_results(tmp_path / "results.json")["qa"]["runs"]
    assert len(runs) == 3 * len(asking_sweeps.SEEDS) and runs[0]["by_kind"] == {"when": 1.0}


def test_the_limits_change_one_thing_each(stand_ins, tmp_path):
    asking_sweeps.sweep_limits(path=tmp_path / "results.json")
    assert [(method, labeled, options) for method, labeled, _, _, _, options in stand_ins] == [
        (method, f"{n} labeled questions", options) for _, method, n, options in asking_sweeps.LIMITS]
    assert all(evaluated_on == "a test question" and seed == 0 for _, _, evaluated_on, _, seed, _ in stand_ins)
    recorded = load_results(tmp_path / "results.json")["limits"]["runs"]
    assert [(run["method"], run["n"]) for run in recorded] == [(name, n) for name, _, n, _ in asking_sweeps.LIMITS]


def test_summary_gives_mean_lowest_and_highest_over_seeds():
    results = {"qa": {"metric": "exact_match", "runs": [
        {"method": "full", "n": 8, "seed": seed, "value": value} for seed, value in enumerate((0.2, 0.5, 0.8))]}}
    assert summary(results, "qa") == {("full", 8): (pytest.approx(0.5), 0.2, 0.8)}


def test_plot_sweep_draws_one_line_and_band_per_method():
    results = {"qa": {"metric": "exact_match", "runs": [
        {"method": method, "n": n, "seed": seed, "value": 0.1 * seed + (0.5 if method == "a" else 0.3)}
        for method in ("a", "b") for n in (4, 16) for seed in range(3)]}}
    ax = plot_sweep(results, "qa", {"a": "method a", "b": "method b"})
    assert [line.get_label() for line in ax.get_lines()] == ["method a", "method b"]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.6, 0.6])
    assert len(ax.collections) == 2 and ax.get_ylabel() == "exact match"
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="sweep must be one of"):
        plot_sweep(results, "sft")


def test_the_shipped_results_hold_three_seeds_of_every_run_the_notebook_shows():
    results = load_results(RESULTS_PATH)
    for sweep in ("prompting", "transfer", "qa", "sft"):
        seeds: dict[tuple[str, int], set[int]] = {}
        for run in results[sweep]["runs"]:
            seeds.setdefault((run["method"], run["n"]), set()).add(run["seed"])
        assert all(found == set(asking_sweeps.SEEDS) for found in seeds.values()), sweep
    assert results["held_out"]["runs"][0]["by_kind"].keys() >= {asking_sweeps.HELD_OUT_KIND}


def test_the_learning_rates_in_use_are_the_best_of_the_shipped_searches():
    results = load_results(RESULTS_PATH)
    assert best_learning_rates(results, "qa_lr") == QA_LEARNING_RATES
    assert best_learning_rates(results, "sft_lr") == SFT_LEARNING_RATES


def test_every_shipped_run_used_its_methods_rate():
    results = load_results(RESULTS_PATH)
    assert all(run["lr"] == qa_recipe(run["method"], run["n"]).lr for run in results["qa"]["runs"])
    assert all(run["lr"] == sft_recipe(run["method"], run["n"]).lr for run in results["sft"]["runs"])
    assert all(run["lr"] == sft_recipe("pretrained", run["n"]).lr for run in results["held_out"]["runs"])
    for run in results.get("limits", {}).get("runs", []):  # recorded only where `sweeps limits` was run
        [method] = [method for name, method, n, _ in asking_sweeps.LIMITS if (name, n) == (run["method"], run["n"])]
        assert run["lr"] == sft_recipe(method, run["n"]).lr and run["seed"] == 0
