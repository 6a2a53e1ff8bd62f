"""Exercise notebooks, generated from solutions notebooks.

``solutions/NN_name.ipynb`` is the single source. The code a learner must
write sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (the
markers nbgrader uses). ``course exercises build`` writes
``exercises/NN_name.ipynb`` from it: every marked region becomes a
``# YOUR CODE HERE`` placeholder that raises ``NotImplementedError``, outputs
are cleared, and the cells a grader cares about are tagged with their
exercise id.

Building never destroys a learner's work. Every generated notebook records a
hash of its own content; a notebook whose content no longer matches that hash
has been edited, and is only replaced with ``--force``, after a backup.

Exercise ids look like ``"00.softmax"``: the notebook's number and the name
of the function the exercise asks for. A solution cell gets its id from its
first top-level ``def`` or ``class`` (or from ``course.exercise`` in its
cell metadata, when an instructor wants another name); a check cell from the
``check_<name>(answer)`` call it makes. ``notebook_cells`` reads cells so,
for this build and for the grader alike.

Torch-free: ``course exercises build`` and ``check`` only read and write notebooks.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nbformat

from course_lib.tools.notebook_cells import CellError, find_check_call, solution_exercise_id
from course_lib.verdicts import SUMMARY_MIME_TYPE

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
PLACEHOLDER_LINES = ("# YOUR CODE HERE", "raise NotImplementedError()")

# Backups are named like "00_warmup.backup-20250101-120000.ipynb", next to
# the notebook so the learner finds them. The dot keeps them out of
# NOTEBOOK_NAME, so builds and checks ignore them; .gitignore lists the
# pattern, and pytest must too (--ignore-glob) or nbval would run them.
BACKUP_PATTERN = "*.backup-*.ipynb"
NOTEBOOK_NAME = re.compile(r"^(?P<number>\d\d)_[A-Za-z0-9_-]+\.ipynb$")

FORMAT_VERSION = 1

# Cell metadata worth carrying over; the rest (execution timings, scroll
# state) is noise that would make every rebuild differ.
_KEPT_CELL_METADATA = ("tags", "jupyter", "slideshow", "editable", "deletable")


class ExerciseError(ValueError):
    """A solutions notebook that cannot be turned into an exercise notebook, or a directory that is missing."""


# ---------------------------------------------------------------------------
# From solutions to exercises, in memory
# ---------------------------------------------------------------------------


def strip_solution(source: str, *, where: str) -> tuple[str, list[str]]:
    """Replace every marked region of ``source`` with the placeholder, at the marker's indentation.

    Returns the stripped source and the text of each region (for hashing).
    ``where`` names the cell in error messages, e.g. "solutions/00_warmup.ipynb, cell 5".
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    kept_lines: list[str] = []
    regions: list[str] = []
    region_lines: list[str] | None = None  # None while outside a marked region
    for line_number, line in enumerate(source.splitlines(keepends=True), start=1):
        marker = _marker_in(line, where=f"{where}, line {line_number}")
        if marker == BEGIN_SOLUTION:
            if region_lines is not None:
                raise ExerciseError(f"{where}, line {line_number}: {BEGIN_SOLUTION} inside another solution region")
            region_lines = []
            indent = line[: len(line) - len(line.lstrip())]
            kept_lines.extend(f"{indent}{placeholder}\n" for placeholder in PLACEHOLDER_LINES)
        elif marker == END_SOLUTION:
            if region_lines is None:
                raise ExerciseError(f"{where}, line {line_number}: {END_SOLUTION} without a {BEGIN_SOLUTION} before it")
            regions.append("".join(region_lines))
            region_lines = None
        elif region_lines is not None:
            region_lines.append(line)
        else:
            kept_lines.append(line)
    if region_lines is not None:
        raise ExerciseError(f"{where}: {BEGIN_SOLUTION} is never closed by {END_SOLUTION}")
    stripped = "".join(kept_lines)
    # A region closing the cell leaves the placeholder's newline as the last character; cells do not end with one.
    if not source.endswith("\n"):
        stripped = stripped.removesuffix("\n")
    return stripped, regions


def _marker_in(line: str, *, where: str) -> str | None:
    """The marker this line is, or None; a marker sharing its line with other text is an error.

    A marker hidden after code would otherwise be missed and leak the solution.
    """
    for marker in (BEGIN_SOLUTION, END_SOLUTION):
        if marker in line:
            if line.strip() != marker:
                raise ExerciseError(f"{where}: {marker!r} must be alone on its line, found {line.strip()!r}")
            return marker
    return None


def build_exercise_notebook(solutions_path: Path) -> nbformat.NotebookNode:
    """The exercise notebook generated from the solutions notebook at ``solutions_path``."""
    solutions_path = Path(solutions_path)
    number = _notebook_number(solutions_path)
    source_notebook = read_notebook(solutions_path)
    source_name = f"{solutions_path.parent.name}/{solutions_path.name}"

    cells = []
    solution_regions: dict[str, list[str]] = {}
    for index, cell in enumerate(source_notebook.cells, start=1):
        where = f"{source_name}, cell {index}"
        exercise_cell, exercise_id, regions = _exercise_cell(cell, index=index, number=number, where=where)
        cells.append(exercise_cell)
        if regions:
            solution_regions.setdefault(exercise_id, []).extend(regions)

    notebook = nbformat.from_dict(
        {
            "cells": cells,
            "metadata": dict(source_notebook.metadata),
            "nbformat": 4,
            "nbformat_minor": max(5, source_notebook.nbformat_minor),  # 4.5: cells have ids
        }
    )
    notebook.metadata["course"] = {
        "kind": "exercises",
        "format_version": FORMAT_VERSION,
        "notebook": solutions_path.stem,
        "source": source_name,
        "exercises": {
            exercise_id: {"solution_sha256": _sha256("".join(regions))}
            for exercise_id, regions in sorted(solution_regions.items())
        },
        "content_sha256": content_hash(notebook),
    }
    _validate(notebook, where=f"notebook generated from {source_name}")
    return notebook


def _exercise_cell(cell: dict, *, index: int, number: str, where: str) -> tuple[dict, str | None, list[str]]:
    """One cell of the exercise notebook, the exercise id it belongs to (or None) and its solution regions."""
    metadata = {key: cell.metadata[key] for key in _KEPT_CELL_METADATA if key in cell.metadata}
    new_cell = {
        "cell_type": cell.cell_type,
        "id": cell.get("id", f"cell-{index}"),
        "metadata": metadata,
        "source": cell.source,
    }
    if "attachments" in cell:
        new_cell["attachments"] = cell.attachments
    if cell.cell_type != "code":
        return new_cell, None, []

    new_cell["execution_count"] = None
    new_cell["outputs"] = []
    stripped_source, regions = strip_solution(cell.source, where=where)
    new_cell["source"] = stripped_source
    try:
        check_call = find_check_call(cell.source)
        if regions and check_call is not None:
            raise CellError("a cell holds both a solution and a check; put the check call in a cell of its own")
        exercise_id = solution_exercise_id(cell.source, cell.metadata, number=number) if regions else None
    except CellError as error:
        raise ExerciseError(f"{where}: {error}") from error

    if regions:
        _mark_graded(metadata, exercise_id, role="solution")
        return new_cell, exercise_id, regions
    if check_call is not None:
        exercise_id = f"{number}.{check_call.function_name}"
        _mark_graded(metadata, exercise_id, role="check")
        return new_cell, exercise_id, []
    return new_cell, None, []


def _mark_graded(metadata: dict, exercise_id: str, *, role: str) -> None:
    """Tag a solution or check cell with its exercise, in our metadata and in nbgrader's."""
    name = exercise_id.split(".", 1)[1]
    metadata["course"] = {"exercise": exercise_id, "role": role}
    is_check = role == "check"
    metadata["nbgrader"] = {
        "grade": is_check,
        "grade_id": f"check_{name}" if is_check else name,
        "locked": is_check,
        "schema_version": 3,
        "solution": not is_check,
        "task": False,
    }
    if is_check:
        metadata["nbgrader"]["points"] = 1
        metadata["editable"] = False
    # A grader finds exercises by these cells: keep learners from deleting them by accident.
    metadata["deletable"] = False
    tags = list(metadata.get("tags", []))
    role_tag = "check" if is_check else "exercise"
    if role_tag not in tags:
        tags.append(role_tag)
    metadata["tags"] = tags


def content_hash(notebook: nbformat.NotebookNode) -> str:
    """SHA-256 of what a learner can change: each cell's type, source and outputs.

    Metadata is left out because JupyterLab rewrites some of it on every
    save, and a notebook only opened and saved holds no learner work.
    """
    content = [
        {"cell_type": cell.cell_type, "source": cell.source, "outputs": cell.get("outputs", [])}
        for cell in notebook.cells
    ]
    return _sha256(json.dumps(content, sort_keys=True, ensure_ascii=False))


def render_notebook(notebook: nbformat.NotebookNode) -> str:
    """The notebook as it is written to disk: nbformat's JSON (sorted keys) and a final newline."""
    return nbformat.writes(notebook) + "\n"


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read and validate a notebook; any problem is an ExerciseError naming the file."""
    path = Path(path)
    try:
        notebook = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as error:
        raise ExerciseError(f"{path}: cannot read this notebook ({error})") from error
    _validate(notebook, where=str(path))
    return notebook


def _validate(notebook: nbformat.NotebookNode, *, where: str) -> None:
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as error:
        raise ExerciseError(f"{where}: not a valid notebook: {error.message}") from error


def _notebook_number(path: Path) -> str:
    match = NOTEBOOK_NAME.match(path.name)
    if match is None:
        raise ExerciseError(f"{path}: a course notebook is named like '00_warmup.ipynb', got {path.name!r}")
    return match["number"]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------
# Building and checking directories
# ---------------------------------------------------------------------------


def find_course_notebooks(directory: Path) -> list[Path]:
    """The ``NN_name.ipynb`` notebooks of ``directory``, sorted; backups and other files are ignored."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ExerciseError(f"no directory {directory} (run from the repository root, or pass the directory)")
    return sorted(path for path in directory.iterdir() if path.is_file() and NOTEBOOK_NAME.match(path.name))


def edited_since_generated(path: Path) -> str | None:
    """Why the notebook at ``path`` holds learner work, or None when it is exactly as generated."""
    try:
        notebook = read_notebook(path)
    except ExerciseError:
        return "is not a readable notebook"
    recorded_hash = notebook.metadata.get("course", {}).get("content_sha256")
    if recorded_hash is None:
        return "was not generated by `course exercises build`"
    if recorded_hash != content_hash(notebook):
        return "was edited since it was generated"
    return None


@dataclass(frozen=True)
class BuildOutcome:
    """What building did to one exercise notebook: action is created, updated, unchanged, replaced or refused."""

    path: Path
    action: str
    reason: str = ""
    backup: Path | None = None

    def describe(self) -> str:
        if self.action == "refused":
            return (
                f"refused: {self.path} {self.reason}; not overwritten. "
                "Rerun with --force to replace it (a backup is kept next to it)."
            )
        if self.action == "replaced":
            return f"replaced: {self.path} ({self.reason}; your version is saved as {self.backup})"
        return f"{self.action}: {self.path}"


def build_exercises(solutions_dir: Path, exercises_dir: Path, *, force: bool = False) -> list[BuildOutcome]:
    """Write ``exercises_dir/NN_name.ipynb`` for every ``solutions_dir/NN_name.ipynb``.

    Every solutions notebook is turned into an exercise notebook before any
    file is written, so an invalid source leaves the exercises untouched.
    """
    if not isinstance(force, bool):
        raise TypeError(f"force must be a bool, got {type(force).__name__}")
    exercises_dir = Path(exercises_dir)
    generated = {
        exercises_dir / source.name: render_notebook(build_exercise_notebook(source))
        for source in find_course_notebooks(solutions_dir)
    }
    exercises_dir.mkdir(parents=True, exist_ok=True)
    return [_write_exercise(target, text, force=force) for target, text in generated.items()]


def _write_exercise(target: Path, text: str, *, force: bool) -> BuildOutcome:
    if not target.exists():
        target.write_text(text, encoding="utf-8")
        return BuildOutcome(target, "created")
    if target.read_text(encoding="utf-8") == text:
        return BuildOutcome(target, "unchanged")
    learner_work = edited_since_generated(target)
    if learner_work is None:
        target.write_text(text, encoding="utf-8")
        return BuildOutcome(target, "updated")
    if not force:
        return BuildOutcome(target, "refused", reason=learner_work)
    backup = _backup_path(target)
    shutil.copyfile(target, backup)
    target.write_text(text, encoding="utf-8")
    return BuildOutcome(target, "replaced", reason=learner_work, backup=backup)


def _backup_path(target: Path) -> Path:
    """A free name like ``00_warmup.backup-20250101-120000.ipynb`` next to ``target``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    backup = target.with_name(f"{target.stem}.backup-{stamp}.ipynb")
    attempt = 1
    while backup.exists():  # two forced builds within one second
        attempt += 1
        backup = target.with_name(f"{target.stem}.backup-{stamp}-{attempt}.ipynb")
    return backup


def find_out_of_sync(solutions_dir: Path, exercises_dir: Path) -> list[str]:
    """One line per exercise notebook that is missing, extra, or not exactly what the build writes."""
    exercises_dir = Path(exercises_dir)
    sources = find_course_notebooks(solutions_dir)
    existing = find_course_notebooks(exercises_dir) if exercises_dir.is_dir() else []
    problems = []
    for source in sources:
        target = exercises_dir / source.name
        if not target.exists():
            problems.append(f"missing: {target} (generated from {source})")
        elif target.read_text(encoding="utf-8") != render_notebook(build_exercise_notebook(source)):
            learner_work = edited_since_generated(target)
            why = learner_work if learner_work is not None else f"is out of date with {source}"
            problems.append(f"different: {target} {why}")
    source_names = {source.name for source in sources}
    problems.extend(
        f"extra: {path} has no solutions notebook {Path(solutions_dir) / path.name}"
        for path in existing
        if path.name not in source_names
    )
    return problems


def run_build_command(solutions_dir: Path, exercises_dir: Path, *, force: bool) -> int:
    """``course exercises build``: print what happened to each notebook; 1 if any was refused."""
    try:
        outcomes = build_exercises(solutions_dir, exercises_dir, force=force)
    except ExerciseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        print(outcome.describe(), file=sys.stderr if outcome.action == "refused" else sys.stdout)
    return 1 if any(outcome.action == "refused" for outcome in outcomes) else 0


def run_check_command(solutions_dir: Path, exercises_dir: Path) -> int:
    """``course exercises check``: 0 when exercises/ is exactly what the build would write."""
    try:
        problems = find_out_of_sync(solutions_dir, exercises_dir)
    except ExerciseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not problems:
        print(f"{exercises_dir} is in sync with {solutions_dir}")
        return 0
    for problem in problems:
        print(problem, file=sys.stderr)
    print("Run `course exercises build` to regenerate the exercise notebooks.", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------
# Executing a notebook as it is and reading its verdicts (the tests of the notebooks)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutedNotebook:
    """An executed notebook: the check summaries it displayed and the errors its cells raised, in cell order."""

    notebook: nbformat.NotebookNode
    verdicts: list[dict]
    errors: list[str]


def execute_notebook(path: Path, *, timeout: float = 120, kernel_name: str = "python3") -> ExecutedNotebook:
    """Run every cell of the notebook at ``path`` (in its own directory) without stopping at errors.

    ``timeout`` is the limit in seconds for each cell. The file is not modified.
    """
    from nbclient import NotebookClient  # imported here: building exercises never executes one

    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    path = Path(path)
    notebook = read_notebook(path)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=kernel_name,
        allow_errors=True,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    client.execute()
    return ExecutedNotebook(notebook=notebook, verdicts=collect_verdicts(notebook), errors=collect_errors(notebook))


def collect_verdicts(notebook: nbformat.NotebookNode) -> list[dict]:
    """The summaries of the checks displayed in the notebook's outputs, in cell order."""
    return [
        dict(output["data"][SUMMARY_MIME_TYPE])
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if SUMMARY_MIME_TYPE in output.get("data", {})
    ]


def collect_errors(notebook: nbformat.NotebookNode) -> list[str]:
    """One line per error output: the cell (counting from 1), the exception and its message."""
    return [
        f"cell {index}: {output['ename']}: {output['evalue']}"
        for index, cell in enumerate(notebook.cells, start=1)
        for output in cell.get("outputs", [])
        if output["output_type"] == "error"
    ]
