"""`course exercises nbgrader`: the export to nbgrader's source layout, and a real round trip through nbgrader."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.checks import check_softmax
from course_lib.tools.cli import main
from course_lib.tools.exercises import ExerciseError
from course_lib.tools.nbgrader_export import (
    FAILED_CHECK_MESSAGE, export_to_nbgrader, nbgrader_source_notebook, raising_check_source,
)
from grading_helpers import RIGHT_SOFTMAX, ZERO_SOFTMAX, copy_course, solve

CHECK_CELL = "# NBVAL_CHECK_OUTPUT\ncheck_softmax(softmax)"


def run_check_cell(source: str, softmax_source: str) -> None:
    namespace: dict = {"check_softmax": check_softmax}
    exec("import torch\n" + softmax_source, namespace)
    exec(source, namespace)


def test_a_check_cell_raises_when_the_check_fails_and_only_then():
    source = raising_check_source(CHECK_CELL, where="cell")
    assert source.startswith("# NBVAL_CHECK_OUTPUT\n") and "verdict = check_softmax(softmax)" in source
    run_check_cell(source, RIGHT_SOFTMAX)
    with pytest.raises(AssertionError, match=FAILED_CHECK_MESSAGE):
        run_check_cell(source, ZERO_SOFTMAX)


def test_a_check_call_inside_an_expression_is_refused():
    with pytest.raises(ExerciseError, match="statement of its own"):
        raising_check_source("print(check_softmax(softmax))", where="solutions/00_warmup.ipynb, cell 7")


def test_the_export_keeps_the_solutions_and_the_courses_metadata(tmp_path):
    solutions = copy_course(tmp_path / "solutions", ("00_warmup", "01_attention"))
    notebook = nbgrader_source_notebook(solutions / "00_warmup.ipynb")
    assert notebook.metadata["course"]["kind"] == "exercises"
    assert notebook.metadata["course"]["notebook"] == "00_warmup"
    graded = [cell for cell in notebook.cells if "nbgrader" in cell.metadata]
    assert [(cell.metadata["course"]["role"], cell.metadata["nbgrader"]["grade_id"]) for cell in graded] == [
        ("solution", "softmax"), ("check", "check_softmax")]
    assert "### BEGIN SOLUTION" in graded[0].source
    assert graded[1].metadata["nbgrader"]["points"] == 1 and "assert verdict" in graded[1].source


def test_an_edited_export_is_not_overwritten_without_force(tmp_path):
    solutions = copy_course(tmp_path / "solutions", ("00_warmup",))
    out = tmp_path / "nbgrader" / "source"
    assert export_to_nbgrader(solutions, out) == [f"written: {out}/00_warmup/00_warmup.ipynb"]
    assert export_to_nbgrader(solutions, out) == [f"unchanged: {out}/00_warmup/00_warmup.ipynb"]
    target = out / "00_warmup" / "00_warmup.ipynb"
    notebook = nbformat.read(target, as_version=4)
    notebook.cells[0].source += "\nAn instructor's remark."
    nbformat.write(notebook, target)
    edited = target.read_bytes()
    with pytest.raises(ExerciseError, match="was edited since it was generated"):
        export_to_nbgrader(solutions, out)
    assert target.read_bytes() == edited
    assert main(["exercises", "nbgrader", "--solutions", str(solutions), "--out", str(out), "--force"]) == 0
    assert target.read_bytes() != edited


def nbgrader(course: Path, *args: str) -> None:
    """Run nbgrader's own command in the course folder; it starts `alembic` from the environment's bin folder."""
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    completed = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=environment,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


@pytest.mark.slow
def test_nbgrader_gives_full_marks_to_a_solved_notebook_and_zero_to_an_untouched_one(tmp_path):
    api = pytest.importorskip("nbgrader.api", reason="nbgrader is not installed (it is in the dev extra)")
    course = tmp_path / "nbgrader"
    solutions = copy_course(tmp_path / "solutions", ("00_warmup",))
    assert main(["exercises", "nbgrader", "--solutions", str(solutions), "--out", str(course / "source")]) == 0
    (course / "nbgrader_config.py").write_text('c = get_config()\nc.CourseDirectory.course_id = "attention"\n')
    nbgrader(course, "generate_assignment", "00_warmup", "--force")

    released = nbformat.read(course / "release" / "00_warmup" / "00_warmup.ipynb", as_version=4)
    assert "### BEGIN SOLUTION" not in nbformat.writes(released)
    assert released.metadata["course"]["notebook"] == "00_warmup"  # `course grade` recognises it too
    for learner, answers in (("untouched", {}), ("solved", {"00.softmax": RIGHT_SOFTMAX})):
        submission = course / "submitted" / learner / "00_warmup" / "00_warmup.ipynb"
        submission.parent.mkdir(parents=True)
        nbformat.write(solve(nbformat.from_dict(released), answers), submission)
    nbgrader(course, "autograde", "00_warmup", "--force")

    with api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {learner: (gradebook.find_submission("00_warmup", learner).score,
                            gradebook.find_submission("00_warmup", learner).max_score)
                  for learner in ("solved", "untouched")}
    assert scores == {"solved": (1.0, 1.0), "untouched": (0.0, 1.0)}
