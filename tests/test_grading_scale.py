"""Grading a class at scale: one notebook only, shards on separate machines, the merged gradebook, re-runs.

A made-up class of 43 learners (honest, blank, partial, hostile, absent,
with broken or foreign files) is graded on notebook 00 (the cheapest: one
exercise, and a blank notebook costs no kernel) once in one run and once in
three shards, through the `course` command as an instructor types it.
"""
from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import nbformat
import pytest

from course_lib.tools.cli import main
from course_lib.tools.grading import (
    GradebookError, GradedNotebook, GradeRow, GradingError, Shard, gradebook_table, load_course,
    merge_grade_reports, read_record, record_path, select_notebooks, shard_of, write_grades_csv,
)
from grading_helpers import RIGHT_SOFTMAX, ZERO_SOFTMAX, copy_course, exercise_notebook, save, softmax_learner

NAIVE_SOFTMAX = '''def softmax(x, dim=-1):
    return x.exp() / x.exp().sum(dim=dim, keepdim=True)'''

HOSTILE_SOFTMAX = {
    # Replaces the check with one that always passes.
    "patches_checks": ZERO_SOFTMAX + """

import course_lib.checks
course_lib.checks.check_softmax = lambda *args, **kwargs: True""",
    # Returns an object that claims to equal anything.
    "bool_tricks": """class Anything:
    def __eq__(self, other): return True
    def __bool__(self): return True
    def __getattr__(self, name): return lambda *args, **kwargs: self

def softmax(x, dim=-1):
    return Anything()""",
}

GRADE_OPTIONS = ["--notebooks", "00", "--timeout", "30", "--workers", "2"]


def write_class(root: Path) -> list[str]:
    """One folder per learner under ``root``; returns the learners' names."""
    # Only the five learners who wrote code cost a kernel (twice: in the one run and in a shard).
    for index in range(25):  # received notebook 00 and did nothing
        save(exercise_notebook("00_warmup"), root / f"blank-{index:02d}" / "00_warmup.ipynb")
    for index, file_name in enumerate(["00_warmup.ipynb", "warm-up done.ipynb"]):
        softmax_learner(root, f"honest-{index}", RIGHT_SOFTMAX, file_name=file_name)
    softmax_learner(root, "naive", NAIVE_SOFTMAX)  # partly right: partial credit
    for learner, source in HOSTILE_SOFTMAX.items():
        softmax_learner(root, learner, source)
    for index in range(4):  # an empty folder: nothing handed in
        (root / f"absent-{index}").mkdir()
    for index in range(3):  # a broken file named after notebook 00, and one after notebook 01 (not graded here)
        (root / f"broken-{index}").mkdir()
        (root / f"broken-{index}" / "00_warmup.ipynb").write_text('{"cells": [', encoding="utf-8")
        (root / f"broken-{index}" / "01_attention.ipynb").write_text("not json", encoding="utf-8")
    for index in range(3):  # a notebook that is not the course's
        save(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]),
             root / f"foreign-{index}" / "scratch.ipynb")
    for index in range(3):  # deleted the exercise cell
        notebook = exercise_notebook("00_warmup")
        notebook.cells = [cell for cell in notebook.cells if cell.metadata.get("course", {}).get("role") != "solution"]
        save(notebook, root / f"deleted-{index}" / "00_warmup.ipynb")
    return sorted(path.name for path in root.iterdir())


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """The class graded in one run and in three shards, then the shards merged: the folder of it all."""
    root = tmp_path_factory.mktemp("scale")
    solutions = copy_course(root / "solutions", ("00_warmup", "01_attention"))
    learners = write_class(root / "submissions")
    common = [str(root / "submissions"), "--solutions", str(solutions), *GRADE_OPTIONS]
    assert main(["grade", *common, "--out", str(root / "one-run.csv"),
                 "--gradebook", str(root / "one-run-gradebook.csv")]) == 0
    for index in (1, 2, 3):
        assert main(["grade", *common, "--shard", f"{index}/3", "--out", str(root / f"shard-{index}.csv")]) == 0
    assert main(["gradebook", *(str(root / f"shard-{index}.csv") for index in (1, 2, 3)),
                 "--out", str(root / "merged.csv"), "--gradebook", str(root / "merged-gradebook.csv")]) == 0
    return root, solutions, learners


@pytest.mark.slow
def test_three_shards_merged_equal_one_run_row_for_row(graded_class):
    root, _, learners = graded_class
    assert len(learners) >= 40
    one_run = (root / "one-run.csv").read_text(encoding="utf-8")
    assert (root / "merged.csv").read_text(encoding="utf-8") == one_run
    assert len(read_csv(root / "one-run.csv")) == 1 + len(learners) + 3  # one row each, plus three broken files


@pytest.mark.slow
def test_the_shards_split_the_class_by_learner_without_overlap(graded_class):
    root, _, learners = graded_class
    shard_learners = [{row[0] for row in read_csv(root / f"shard-{index}.csv")[1:]} for index in (1, 2, 3)]
    assert all(shard_learners)
    assert sum(len(part) for part in shard_learners) == len(learners)
    assert set().union(*shard_learners) == set(learners)
    for index, part in enumerate(shard_learners, start=1):
        assert all(shard_of(learner, 3) == index for learner in part)


@pytest.mark.slow
def test_the_merged_gradebook_has_one_row_per_learner(graded_class):
    root, _, learners = graded_class
    gradebook = read_csv(root / "merged-gradebook.csv")
    assert gradebook[0] == ["learner", "00_warmup", "total"]
    assert [line[0] for line in gradebook[1:]] == learners
    points = {line[0]: line[1:] for line in gradebook[1:]}
    assert points["honest-1"] == ["1", "1"]
    assert points["blank-00"] == points["patches_checks"] == points["absent-0"] == ["0", "0"]
    assert 0 < float(points["naive"][0]) < 1
    assert (root / "merged-gradebook.csv").read_bytes() == (root / "one-run-gradebook.csv").read_bytes()


@pytest.mark.slow
def test_only_the_chosen_notebook_is_graded(graded_class):
    root, _, _ = graded_class
    rows = read_csv(root / "one-run.csv")[1:]
    assert {row[1] for row in rows if row[2]} == {"00_warmup"}
    broken = [row for row in rows if row[0] == "broken-0"]
    assert broken == [["broken-0", "00_warmup", "00.softmax", "0", "1", "missing"],
                      ["broken-0", "00_warmup.ipynb", "", "0", "0", "error"]]


@pytest.mark.slow
def test_a_rerun_keeps_what_is_graded_and_regrades_a_changed_submission(graded_class, tmp_path, capsys):
    """Its own first run, on part of the class: the record depends on the package's files, which others may edit."""
    root, solutions, _ = graded_class
    submissions = tmp_path / "submissions"
    for learner in ("honest-1", "naive", "blank-00", "blank-01", "absent-0", "broken-0"):
        shutil.copytree(root / "submissions" / learner, submissions / learner)
    run = ["grade", str(submissions), "--solutions", str(solutions), *GRADE_OPTIONS,
           "--out", str(tmp_path / "grades.csv"), "--resume"]
    assert main(run) == 0  # nothing to resume from yet: everything is graded
    first = read_record(tmp_path / "grades.resume.json")
    assert sorted(first) == [("blank-00", "00_warmup"), ("blank-01", "00_warmup"), ("honest-1", "00_warmup"),
                             ("naive", "00_warmup")]
    first_rows = read_csv(tmp_path / "grades.csv")
    softmax_learner(submissions, "honest-1", NAIVE_SOFTMAX, file_name="warm-up done.ipynb")

    capsys.readouterr()
    assert main(run) == 0
    output = capsys.readouterr()
    assert "kept 3 notebooks unchanged" in output.out and "graded 1." in output.out
    assert output.err.count("ran ") == 1 and "ran honest-1 / 00_warmup" in output.err
    rows = read_csv(tmp_path / "grades.csv")
    changed = [index for index, (old, new) in enumerate(zip(first_rows, rows)) if old != new]
    assert len(rows) == len(first_rows) and [rows[index][:3] for index in changed] == [
        ["honest-1", "00_warmup", "00.softmax"]]
    assert rows[changed[0]][5] == "failed"

    assert main(run) == 0  # nothing changed since: nothing runs
    output = capsys.readouterr()
    assert "kept 4 notebooks unchanged" in output.out and "ran " not in output.err
    assert read_csv(tmp_path / "grades.csv") == rows


# ---------------------------------------------------------------------------
# Without kernels: the choice of notebooks, the split, the merge's refusals
# ---------------------------------------------------------------------------


def test_notebooks_are_chosen_by_number_or_name(tmp_path):
    course = load_course(copy_course(tmp_path / "solutions", ("00_warmup", "01_attention")))
    assert list(select_notebooks(course, ["01"])) == ["01_attention"]
    assert list(select_notebooks(course, ["01_attention", "00"])) == ["00_warmup", "01_attention"]
    assert select_notebooks(course, None) is course
    with pytest.raises(GradingError, match=r"--notebooks.*'12'.*00_warmup, 01_attention"):
        select_notebooks(course, ["12"])


def test_a_shard_is_written_i_of_n():
    assert Shard.parse("2/3") == Shard(2, 3)
    for text in ("0/3", "4/3", "3", "a/b"):
        with pytest.raises(ValueError, match="i/N"):
            Shard.parse(text)


def test_the_split_is_stable_and_covers_everyone():
    learners = [f"learner-{index}" for index in range(200)]
    parts = [[learner for learner in learners if Shard(index, 4).holds(learner)] for index in (1, 2, 3, 4)]
    assert sorted(sum(parts, [])) == sorted(learners)
    assert all(30 <= len(part) <= 70 for part in parts)
    # The documented rule, the same on every machine and Python: SHA-256 (first 8 bytes), not hash().
    assert shard_of("ada", 3) == 1 + int(hashlib.sha256(b"ada").hexdigest()[:16], 16) % 3


def test_the_command_refuses_a_bad_shard(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["grade", "submissions", "--shard", "4/3"])
    assert exit_info.value.code == 2
    assert "--shard" in capsys.readouterr().err


def write_report(path: Path, rows: list[tuple]) -> Path:
    write_grades_csv([GradeRow(*row) for row in rows], path)
    return path


ADA = [("ada", "00_warmup", "00.softmax", 1.0, 1.0, "passed"), ("ada", "01_attention", "01.scores", 0.5, 1.0, "failed")]
BOB = [("bob", "00_warmup", "00.softmax", 0.0, 1.0, "not attempted"),
       ("bob", "01_attention", "01.scores", 0.0, 1.0, "missing"), ("bob", "x.ipynb", "", 0.0, 0.0, "error")]


def test_reports_merge_into_one_sorted_report_and_a_gradebook(tmp_path):
    first, second = write_report(tmp_path / "1.csv", BOB), write_report(tmp_path / "2.csv", ADA)
    rows = merge_grade_reports([first, second])
    assert [row.learner for row in rows] == ["ada", "ada", "bob", "bob", "bob"]
    assert gradebook_table(rows) == [["learner", "00_warmup", "01_attention", "total"],
                                     ["ada", "1", "0.5", "1.5"], ["bob", "0", "0", "0"]]


def test_runs_of_different_notebooks_merge_too(tmp_path):
    notebook_00 = write_report(tmp_path / "00.csv", [ADA[0], BOB[0]])
    notebook_01 = write_report(tmp_path / "01.csv", [ADA[1], BOB[1]])
    assert len(merge_grade_reports([notebook_00, notebook_01])) == 4


def test_overlapping_reports_are_refused(tmp_path):
    report = write_report(tmp_path / "1.csv", ADA)
    with pytest.raises(GradebookError, match=r"both grade ada / 00_warmup / 00.softmax.*overlap"):
        merge_grade_reports([report, write_report(tmp_path / "2.csv", ADA[:1])])


def test_reports_graded_differently_are_refused(tmp_path):
    ada = write_report(tmp_path / "ada.csv", ADA)
    worth_two = write_report(tmp_path / "bob.csv", [("bob", "00_warmup", "00.softmax", 0.0, 2.0, "failed")])
    with pytest.raises(GradebookError, match="2 points.*different solutions"):
        merge_grade_reports([ada, worth_two])
    only_00 = write_report(tmp_path / "only-00.csv", BOB[:1])
    with pytest.raises(GradebookError, match="bob has no row for 01.scores.*different --notebooks"):
        merge_grade_reports([ada, only_00])


def test_a_file_that_is_not_a_grade_report_is_refused(tmp_path):
    (tmp_path / "other.csv").write_text("name,points\nada,3\n", encoding="utf-8")
    with pytest.raises(GradebookError, match="starts with the columns learner,notebook"):
        merge_grade_reports([tmp_path / "other.csv"])
    (tmp_path / "bad.csv").write_text("learner,notebook,exercise,score,max_score,status\nada,00,e,x,1,passed\n",
                                      encoding="utf-8")
    with pytest.raises(GradebookError, match="bad.csv, line 2"):
        merge_grade_reports([tmp_path / "bad.csv"])


def test_the_gradebook_command_never_writes_over_a_report(tmp_path, capsys):
    report = write_report(tmp_path / "grades.csv", ADA)
    before = report.read_bytes()
    assert main(["gradebook", str(report), "--out", str(report)]) == 1
    assert "--out" in capsys.readouterr().err
    assert report.read_bytes() == before


def test_only_clean_runs_are_kept_by_a_rerun():
    passed = GradeRow("ada", "00_warmup", "00.softmax", 1.0, 1.0, "passed")
    timed_out = GradeRow("ada", "00_warmup", "00.softmax", 0.0, 1.0, "timeout")
    assert GradedNotebook("f", (passed,)).reusable
    assert not GradedNotebook("f", (timed_out,)).reusable


def test_a_record_that_is_not_one_is_a_clear_error(tmp_path):
    assert read_record(tmp_path / "none.resume.json") == {}
    (tmp_path / "bad.resume.json").write_text('{"format": 1, "learners": []}', encoding="utf-8")
    with pytest.raises(GradingError, match="--resume.*not a record written by `course grade`"):
        read_record(tmp_path / "bad.resume.json")
    assert record_path(Path("out/grades-2.csv")) == Path("out/grades-2.resume.json")
