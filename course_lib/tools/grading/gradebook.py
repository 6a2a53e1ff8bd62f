"""Grade reports merged into one, and the gradebook: ``course gradebook`` and ``course grade --gradebook``.

The shards of a class (``course grade --shard i/N``), or runs of different
notebooks (``--notebooks``), each write a grade report. Merged, they give
the report one run over the whole class would have written, row for row.
A merge is refused when the reports overlap (the same learner and exercise
twice) or do not fit together (an exercise worth different points, or a
learner without an exercise the others have): those come from shards graded
with different options or solutions.

The gradebook has one row per learner and one column per notebook (the
points earned in it), then the total.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from course_lib.tools.grading.report import CSV_COLUMNS, GRADE_STATUSES, GradeRow, write_grades_csv

GRADEBOOK_TOTAL = "total"


class GradebookError(ValueError):
    """Grade reports that cannot be read, or cannot be merged into one."""


def read_grades_csv(path: Path) -> list[tuple[GradeRow, str]]:
    """The rows of a grade report written by ``course grade``, each with where it came from ("grades-1.csv, line 3")."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as file:
            lines = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise GradebookError(f"{path}: cannot read this grade report ({error})") from error
    if not lines or tuple(lines[0]) != CSV_COLUMNS:
        header = ",".join(lines[0]) if lines else "an empty file"
        raise GradebookError(f"{path}: a grade report starts with the columns {','.join(CSV_COLUMNS)}, got {header}")
    rows = []
    for line_number, values in enumerate(lines[1:], start=2):
        where = f"{path}, line {line_number}"
        if len(values) != len(CSV_COLUMNS):
            raise GradebookError(f"{where}: expected {len(CSV_COLUMNS)} values, got {len(values)}")
        learner, notebook, exercise, score, max_score, status = values
        try:
            rows.append((GradeRow(learner, notebook, exercise, float(score), float(max_score), status), where))
        except ValueError as error:
            raise GradebookError(f"{where}: not a grade row ({error}); statuses are {', '.join(GRADE_STATUSES)}") \
                from error
    return rows


def merge_grade_reports(paths: list[Path]) -> list[GradeRow]:
    """The rows of all the reports at ``paths``, in the order of one run; GradebookError when they do not fit."""
    if not paths:
        raise GradebookError("paths: give at least one grade report")
    first_seen: dict[tuple[str, str, str], str] = {}
    worth: dict[tuple[str, str], tuple[float, str]] = {}
    rows = []
    for path in paths:
        for row, where in read_grades_csv(path):
            key = (row.learner, row.notebook, row.exercise)
            if key in first_seen:
                raise GradebookError(
                    f"{where} and {first_seen[key]} both grade {' / '.join(part for part in key if part)}: the "
                    "reports overlap (shards must come from one --shard i/N split, each given once)")
            first_seen[key] = where
            if row.exercise:
                points, source = worth.setdefault((row.notebook, row.exercise), (row.max_score, where))
                if points != row.max_score:
                    raise GradebookError(
                        f"{where} gives {row.exercise} {row.max_score:g} points, {source} gives it {points:g}: "
                        "the reports were graded against different solutions")
            rows.append(row)
    _check_every_learner_has_every_exercise(rows, first_seen)
    rows.sort(key=lambda row: (row.learner, row.notebook, row.exercise))
    return rows


def _check_every_learner_has_every_exercise(rows: list[GradeRow], first_seen: dict[tuple[str, str, str], str]) -> None:
    """One run gives every learner a row for every exercise it grades; merged reports must too."""
    exercises = {(row.notebook, row.exercise) for row in rows if row.exercise}
    for learner in sorted({row.learner for row in rows}):
        lacking = sorted(exercises - {(row.notebook, row.exercise) for row in rows if row.learner == learner})
        if lacking:
            notebook, exercise = lacking[0]
            graded_in = next(where for key, where in first_seen.items() if key[1:] == (notebook, exercise))
            raise GradebookError(
                f"{learner} has no row for {exercise}, which {graded_in} grades: the reports were graded with "
                f"different --notebooks or solutions ({len(lacking)} exercises missing for {learner})")


def gradebook_table(rows: list[GradeRow]) -> list[list[str]]:
    """The gradebook as lines of text: a header (learner, each notebook, total), then one line per learner."""
    notebooks = sorted({row.notebook for row in rows if row.exercise})
    points: dict[str, dict[str, float]] = {}
    for row in rows:
        learner_points = points.setdefault(row.learner, {})
        learner_points[row.notebook] = learner_points.get(row.notebook, 0.0) + row.score
    table = [["learner", *notebooks, GRADEBOOK_TOTAL]]
    for learner in sorted(points):
        earned = [points[learner].get(notebook, 0.0) for notebook in notebooks]
        table.append([learner, *(_points_text(value) for value in earned), _points_text(sum(earned))])
    return table


def _points_text(points: float) -> str:
    return f"{round(points, 2):g}"


def write_gradebook(rows: list[GradeRow], path: Path) -> None:
    """Write the gradebook of ``rows`` as CSV at ``path``."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file, lineterminator="\n").writerows(gradebook_table(rows))


def run_gradebook_command(reports: list[Path], *, out: Path | None, gradebook: Path | None) -> int:
    """``course gradebook``: merge the reports into ``out`` and write ``gradebook``; 1 when they cannot be merged."""
    inputs = {Path(report).resolve() for report in reports}
    for option, target in (("--out", out), ("--gradebook", gradebook)):
        if target is not None and Path(target).resolve() in inputs:
            print(f"error: {option} {target} is one of the reports to merge; write the result elsewhere",
                  file=sys.stderr)
            return 1
    try:
        rows = merge_grade_reports(reports)
        if out is not None:
            write_grades_csv(rows, out)
        if gradebook is not None:
            write_gradebook(rows, gradebook)
    except (GradebookError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    learners = {row.learner for row in rows}
    notebooks = {row.notebook for row in rows if row.exercise}
    written = [f"{label}: {path}" for label, path in (("grades", out), ("gradebook", gradebook)) if path is not None]
    print(f"merged {len(reports)} reports: {len(learners)} learners, {len(notebooks)} notebooks, "
          f"{len(rows)} rows; " + "; ".join(written))
    return 0
