"""A learner's submissions, and the graded copy built from each.

A notebook is recognised by the ``metadata.course`` the exercise build
writes (or, failing that, by its course file name). The learner's notebook
is never executed as it is: the *graded copy* is the instructor's solutions
notebook with every solution cell replaced by the learner's cell for the
same exercise (found by the exercise id in the cell metadata, else by the
name of its first top-level ``def``), and every check cell by a recorder.
The learners' files are only read.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course_lib.tools.exercises import ExerciseError, read_notebook
from course_lib.tools.grading.course import CourseNotebook, Exercise
from course_lib.tools.grading.recorder import recorder_source
from course_lib.tools.grading.report import GradeRow
from course_lib.tools.notebook_cells import course_marks, first_definition


@dataclass(frozen=True)
class Submission:
    """A learner's notebook for one course notebook: its file and its code cells (metadata and source)."""

    learner: str
    notebook: str
    path: Path
    cells: tuple[nbformat.NotebookNode, ...]


def find_submissions(
    learner_dir: Path, course: dict[str, CourseNotebook]
) -> tuple[dict[str, Submission], list[GradeRow], list[str]]:
    """A learner's submissions by course notebook, an error row per unreadable file, and notes for the learner.

    Files are only read. When several files hold the same course notebook
    (a copy made in JupyterLab, say), the one with the most attempted
    exercises is graded, and of those the one saved last.
    """
    learner = learner_dir.name
    found: dict[str, list[Submission]] = {}
    error_rows, notes = [], []
    for path in sorted(learner_dir.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        shown_name = str(path.relative_to(learner_dir))
        try:
            notebook = read_notebook(path)
        except ExerciseError as error:
            error_rows.append(GradeRow(learner, shown_name, "", 0.0, 0.0, "error",
                                       f"This file is not a readable notebook: {error}"))
            continue
        marks = course_marks(notebook.metadata)
        name = marks.get("notebook") if marks.get("kind") == "exercises" else path.stem
        if name not in course:
            notes.append(f"{shown_name} was not graded: it is not an exercise notebook of this course.")
            continue
        cells = tuple(cell for cell in notebook.cells if cell.cell_type == "code")
        found.setdefault(name, []).append(Submission(learner, name, path, cells))
    chosen = {}
    for name, candidates in found.items():
        candidates.sort(key=lambda candidate: (_attempted_count(course[name], candidate), candidate.path.stat().st_mtime))
        chosen[name] = candidates[-1]
        notes.extend(
            f"{other.path.relative_to(learner_dir)} was not graded: {chosen[name].path.relative_to(learner_dir)} "
            "holds the same notebook, with more work or saved later."
            for other in candidates[:-1]
        )
    return chosen, error_rows, notes


def _attempted_count(course_notebook: CourseNotebook, submission: Submission) -> int:
    """How many solution cells of ``submission`` differ from the placeholder."""
    learner_cells = _learner_cells(course_notebook, submission)
    return sum(_changed(source, course_notebook.placeholders[index]) for index, source in learner_cells.items())


# ---------------------------------------------------------------------------
# The graded copy: the instructor's notebook with the learner's solution cells
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExercisePlan:
    """Where one exercise sits in a graded copy, and what the learner's cells looked like."""

    exercise: Exercise
    solution_cells: tuple[int, ...]
    recorder_cell: int
    result_path: Path
    found: bool
    attempted: bool


def build_graded_copy(
    course_notebook: CourseNotebook, submission: Submission, results_dir: Path
) -> tuple[nbformat.NotebookNode, list[ExercisePlan]]:
    """The notebook the kernel runs for ``submission``, and the plan to read its results from ``results_dir``."""
    learner_cells = _learner_cells(course_notebook, submission)
    cells, solution_cells, recorder_cells = [], {}, {}
    found, attempted, result_paths = {}, {}, {}
    for index, (source, (exercise_id, role)) in enumerate(zip(course_notebook.sources, course_notebook.roles)):
        if role == "solution":
            learner_source, placeholder = learner_cells[index], course_notebook.placeholders[index]
            found[exercise_id] = found.get(exercise_id, True) and learner_source is not None
            attempted[exercise_id] = attempted.get(exercise_id, False) or _changed(learner_source, placeholder)
            source = placeholder if learner_source is None else learner_source
            solution_cells.setdefault(exercise_id, []).append(index)
        elif role == "check":
            exercise = next(item for item in course_notebook.exercises if item.exercise_id == exercise_id)
            result_paths[exercise_id] = results_dir / f"{secrets.token_hex(16)}.pt"
            source = recorder_source(exercise, result_paths[exercise_id])
            recorder_cells[exercise_id] = index
        cells.append(nbformat.v4.new_code_cell(source))
    plans = [
        ExercisePlan(
            exercise=exercise,
            solution_cells=tuple(solution_cells[exercise.exercise_id]),
            recorder_cell=recorder_cells[exercise.exercise_id],
            result_path=result_paths[exercise.exercise_id],
            found=found[exercise.exercise_id],
            attempted=attempted[exercise.exercise_id],
        )
        for exercise in course_notebook.exercises
    ]
    return nbformat.v4.new_notebook(cells=cells), plans


def _learner_cells(course_notebook: CourseNotebook, submission: Submission) -> dict[int, str | None]:
    """For each solution cell of the course notebook (by index), the learner's source for it, or None."""
    learner_sources = _learner_solution_sources(submission.cells)
    used: dict[str, int] = {}  # solution cells already taken, per exercise: an exercise may span cells
    return {
        index: _matching_source(learner_sources, course_notebook.roles[index][0], course_notebook.sources[index], used)
        for index in sorted(course_notebook.placeholders)
    }


def _changed(learner_source: str | None, placeholder: str) -> bool:
    return learner_source is not None and learner_source.strip() != placeholder.strip()


def _learner_solution_sources(cells: tuple) -> dict[str, list[str]]:
    """The learner's solution cells, listed under their exercise id and under "def <name>" of their first definition."""
    sources: dict[str, list[str]] = {}
    for cell in cells:
        marks = course_marks(cell.metadata)
        if marks.get("role") == "solution" and marks.get("exercise"):
            sources.setdefault(marks["exercise"], []).append(cell.source)
        elif (name := first_definition(cell.source)) is not None:
            sources.setdefault(f"def {name}", []).append(cell.source)
    return sources


def _matching_source(learner_sources: dict[str, list[str]], exercise_id: str, instructor_source: str,
                     used: dict[str, int]) -> str | None:
    """The learner's cell for the next solution cell of ``exercise_id``, or None when the learner has none.

    A cell tagged with the exercise id wins; a learner who pasted the code
    into a new cell (which has no tag) is found by the function it defines.
    """
    position = used.get(exercise_id, 0)
    used[exercise_id] = position + 1
    tagged = learner_sources.get(exercise_id, [])
    if position < len(tagged):
        return tagged[position]
    name = first_definition(instructor_source)
    untagged = learner_sources.get(f"def {name}", []) if name else []
    return untagged[-1] if untagged else None  # the last one: the learner's latest attempt
