"""What is graded: the exercises of the instructor's solutions notebooks, and how each check is called."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from course_lib.tools.exercises import ExerciseError, build_exercise_notebook, find_course_notebooks, read_notebook
from course_lib.tools.notebook_cells import CellError, find_check_call


class GradingError(RuntimeError):
    """The grader itself cannot work: a missing folder, a course notebook it cannot grade, a required sandbox missing."""


@dataclass(frozen=True)
class Exercise:
    """One graded exercise: its id, notebook, worth, and how the instructor's check cell calls the check."""

    exercise_id: str
    notebook: str
    max_score: float
    check_name: str
    answer_expression: str

    @property
    def function_name(self) -> str:
        """The function the learner writes: "softmax" for exercise "00.softmax"."""
        return self.exercise_id.split(".", 1)[1]


@dataclass(frozen=True)
class CourseNotebook:
    """A solutions notebook's code cells, each with the exercise and role the exercise build gives it.

    ``roles[i]`` is ``(exercise_id, "solution" | "check")`` or ``(None, None)``;
    ``placeholders[i]`` is the source a learner receives for solution cell i;
    ``file_sha256`` is the hash of the solutions file, so a re-run can tell
    whether the instructor changed it.
    """

    name: str
    sources: tuple[str, ...]
    roles: tuple[tuple[str | None, str | None], ...]
    placeholders: dict[int, str]
    exercises: tuple[Exercise, ...]
    file_sha256: str = ""


def load_course(solutions_dir: Path) -> dict[str, CourseNotebook]:
    """The gradable notebooks of the course, by name ("01_attention"), from ``solutions_dir``."""
    solutions_dir = Path(solutions_dir)
    try:
        paths = find_course_notebooks(solutions_dir)
    except ExerciseError as error:
        raise GradingError(f"solutions_dir: {error}") from error
    course = {}
    for path in paths:
        try:
            notebook = _load_course_notebook(path)
        except ExerciseError as error:
            raise GradingError(str(error)) from error
        if notebook.exercises:
            course[notebook.name] = notebook
    if not course:
        raise GradingError(f"solutions_dir: no notebook with graded exercises in {solutions_dir}")
    return course


def _load_course_notebook(path: Path) -> CourseNotebook:
    """One solutions notebook, with the roles of its cells; an exercise needs both a solution and a check cell."""
    from course_lib import checks  # imported here: only the grader needs the checks (and torch)

    source_notebook = read_notebook(path)
    built = build_exercise_notebook(path)  # the build decides which cell belongs to which exercise
    sources, roles, placeholders, exercises = [], [], {}, []
    solution_ids = set()
    for source_cell, built_cell in zip(source_notebook.cells, built.cells):
        if source_cell.cell_type != "code":
            continue
        marks = built_cell.metadata.get("course", {})
        role = (marks.get("exercise"), marks.get("role"))
        if role[1] == "solution":
            placeholders[len(sources)] = built_cell.source
            solution_ids.add(role[0])
        elif role[1] == "check":
            try:
                call = find_check_call(source_cell.source)
            except CellError as error:  # the build read the same cell, so this only guards against a change of rules
                raise GradingError(f"{path}, {role[0]}: {error}") from error
            if not callable(getattr(checks, call.check_name, None)):
                raise GradingError(f"{path}, {role[0]}: course_lib.checks has no {call.check_name}")
            exercises.append(Exercise(
                exercise_id=role[0], notebook=path.stem, max_score=float(built_cell.metadata["nbgrader"]["points"]),
                check_name=call.check_name, answer_expression=call.answer_expression,
            ))
        sources.append(source_cell.source)
        roles.append(role)
    checked_ids = {exercise.exercise_id for exercise in exercises}
    if solution_ids != checked_ids:
        raise GradingError(
            f"{path}: every exercise needs a solution cell and a check cell; solutions without a check: "
            f"{sorted(solution_ids - checked_ids)}, checks without a solution: {sorted(checked_ids - solution_ids)}"
        )
    return CourseNotebook(path.stem, tuple(sources), tuple(roles), placeholders, tuple(exercises),
                          file_sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def select_notebooks(course: dict[str, CourseNotebook], selectors: list[str] | None) -> dict[str, CourseNotebook]:
    """The notebooks of ``course`` that ``selectors`` name, each by its number ("01") or its name ("01_attention").

    None selects the whole course. A selector that names no notebook is a
    GradingError that lists the notebooks there are.
    """
    if selectors is None:
        return course
    chosen = set()
    for selector in selectors:
        matches = {name for name in course if selector in (name, name.split("_", 1)[0])}
        if not matches:
            raise GradingError(f"notebooks (--notebooks): no gradable notebook is {selector!r}; "
                               f"give a number or a name among {', '.join(course)}")
        chosen |= matches
    return {name: notebook for name, notebook in course.items() if name in chosen}
