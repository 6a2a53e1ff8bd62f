"""Notebook 09's sweeps: recording runs, resuming, summarising and plotting them (no training here)."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from course_lib.lab.asking import sweeps as asking_sweeps
from course_lib.lab.asking.sweeps import RESULTS_PATH, load_results, plot_sweep, summary


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
