"""What a batch produced, and how it is written: the CSV, the feedback files, the summary table."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from course_lib.tools.grading.sandbox import Isolation
from course_lib.verdicts import FAILED, PASSED

# The status of one learner's exercise in the grade report (INSTRUCTORS.md explains each).
GRADE_STATUSES = (PASSED, FAILED, "not attempted", "missing", "timeout", "error")
CSV_COLUMNS = ("learner", "notebook", "exercise", "score", "max_score", "status")


@dataclass(frozen=True)
class GradeRow:
    """One line of the grade report: one learner and one exercise (or one unreadable file)."""

    learner: str
    notebook: str
    exercise: str
    score: float
    max_score: float
    status: str
    feedback: str = ""

    def __post_init__(self) -> None:
        if self.status not in GRADE_STATUSES:
            raise ValueError(f"status must be one of {GRADE_STATUSES}, got {self.status!r}")

    def csv_values(self) -> list[str]:
        return [self.learner, self.notebook, self.exercise, f"{self.score:g}", f"{self.max_score:g}", self.status]


@dataclass
class GradeReport:
    """Everything a batch produced: the rows, notes for each learner, problems of the grader, its isolation.

    ``graded`` holds, by (learner, notebook), each notebook graded with its
    fingerprint (``resume.GradedNotebook``), for the record a re-run reads;
    ``kept`` counts those taken unchanged from the previous run.
    """

    rows: list[GradeRow]
    notes: dict[str, list[str]]
    grader_problems: list[str]
    isolation: Isolation
    seconds: float
    graded: dict = field(default_factory=dict)
    kept: int = 0


def write_grades_csv(rows: list[GradeRow], path: Path) -> None:
    """One line per learner and exercise, with the columns of CSV_COLUMNS."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(row.csv_values() for row in rows)


def write_feedback(report: GradeReport, directory: Path) -> list[Path]:
    """One Markdown file per learner, ``<learner>.md``: a table of scores, then each check's feedback."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for learner in sorted({row.learner for row in report.rows} | set(report.notes)):
        rows = [row for row in report.rows if row.learner == learner]
        total, maximum = sum(row.score for row in rows), sum(row.max_score for row in rows)
        lines = [f"# Feedback for {learner}", "", f"Total: {total:g} of {maximum:g} points.", "",
                 "| notebook | exercise | score | status |", "|---|---|---|---|"]
        lines += [f"| {row.notebook} | {row.exercise} | {row.score:g} / {row.max_score:g} | {row.status} |"
                  for row in rows]
        for row in rows:
            lines += ["", f"## {row.exercise or row.notebook}: {row.status}", "", "```text", row.feedback, "```"]
        if report.notes.get(learner):
            lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes[learner]]
        path = directory / f"{learner}.md"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    return written


def format_summary(report: GradeReport) -> str:
    """A table with one line per learner (total score, how many exercises ended in each status), then the isolation."""
    learners = sorted({row.learner for row in report.rows})
    width = max([len("learner"), *(len(learner) for learner in learners)])
    header = f"{'learner':<{width}}  {'score':>11}  " + "  ".join(GRADE_STATUSES)
    lines = [header, "-" * len(header)]
    for learner in learners:
        rows = [row for row in report.rows if row.learner == learner]
        score = f"{sum(row.score for row in rows):g} / {sum(row.max_score for row in rows):g}"
        counts = "  ".join(f"{sum(row.status == status for row in rows):>{len(status)}}" for status in GRADE_STATUSES)
        lines.append(f"{learner:<{width}}  {score:>11}  {counts}")
    lines.append(f"{len(learners)} learners graded in {report.seconds:.1f} s.")
    lines.append(f"isolation: {report.isolation.describe()}.")
    return "\n".join(lines)
