"""Building exercise notebooks from solutions, protecting learner work, and running the real notebooks."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_lib.checks import SUMMARY_MIME_TYPE
from course_lib.tools.cli import main
from course_lib.tools.exercises import (
    ExerciseError,
    build_exercise_notebook,
    build_exercises,
    content_hash,
    execute_notebook,
    find_out_of_sync,
    render_notebook,
    strip_solution,
)
from course_lib.tools.notebook_cells import (
    CellError, CheckCall, find_check_call, first_definition, solution_exercise_id,
)

REPO = Path(__file__).resolve().parents[1]

SOLUTION_SOURCE = '''def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    result = 2 * x
    return result
    ### END SOLUTION'''

EXERCISE_SOURCE = '''def double(x):
    """Twice x."""
    # YOUR CODE HERE
    raise NotImplementedError()'''


def write_solutions(directory: Path, name: str = "01_toy.ipynb", solution_source: str = SOLUTION_SOURCE) -> Path:
    """A small solutions notebook: prose, an executed solution cell, a check cell, a plain cell."""
    notebook = new_notebook(
        cells=[
            new_markdown_cell("# A toy exercise", id="title"),
            new_code_cell(
                solution_source,
                id="solution",
                execution_count=3,
                outputs=[new_output("stream", name="stdout", text="defined\n")],
                metadata={"tags": ["keep-me"], "execution": {"shell.execute_reply": "2025-01-01T00:00:00"}},
            ),
            new_code_cell("# NBVAL_CHECK_OUTPUT\ncheck_double(double)", id="check", execution_count=4),
            new_code_cell("print(2 + 2)", id="plain", execution_count=5),
        ]
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(nbformat.writes(notebook), encoding="utf-8")
    return path


@pytest.fixture
def course(tmp_path):
    """A course tree with one solutions notebook and its exercises directory (not built yet)."""
    write_solutions(tmp_path / "solutions")
    return tmp_path / "solutions", tmp_path / "exercises"


def edit_exercise(path: Path) -> str:
    """What a learner does: write their answer in the exercise cell. Returns the saved text."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[1].source = notebook.cells[1].source.replace("raise NotImplementedError()", "return x + x")
    path.write_text(nbformat.writes(notebook), encoding="utf-8")
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------
# Stripping solutions
# ---------------------------------------------------------------------------


def test_solution_region_becomes_the_placeholder_at_the_markers_indentation():
    stripped, regions = strip_solution(SOLUTION_SOURCE, where="test")

    assert stripped == EXERCISE_SOURCE
    assert regions == ["    result = 2 * x\n    return result\n"]


def test_code_around_nested_regions_is_kept():
    source = (
        "import math\n"
        "### BEGIN SOLUTION\n"
        "answer = 42\n"
        "### END SOLUTION\n"
        "def f(x):\n"
        "    if x:\n"
        "        ### BEGIN SOLUTION\n"
        "        return math.pi\n"
        "        ### END SOLUTION\n"
        "    return 0\n"
    )

    stripped, regions = strip_solution(source, where="test")

    assert stripped == (
        "import math\n"
        "# YOUR CODE HERE\n"
        "raise NotImplementedError()\n"
        "def f(x):\n"
        "    if x:\n"
        "        # YOUR CODE HERE\n"
        "        raise NotImplementedError()\n"
        "    return 0\n"
    )
    assert len(regions) == 2


@pytest.mark.parametrize(
    "source, words",
    [
        ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
        ("x = 1\n### END SOLUTION\n", "without a ### BEGIN SOLUTION"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside another"),
        ("x = 1  ### BEGIN SOLUTION\n### END SOLUTION\n", "alone on its line"),
    ],
    ids=["unclosed", "end-without-begin", "nested", "marker-after-code"],
)
def test_malformed_markers_are_an_error(source, words):
    with pytest.raises(ExerciseError, match=words):
        strip_solution(source, where="test")


def test_marker_error_names_the_file_and_the_cell(tmp_path):
    unclosed = "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n"
    path = write_solutions(tmp_path / "solutions", solution_source=unclosed)

    with pytest.raises(ExerciseError, match=r"solutions/01_toy\.ipynb, cell 2"):
        build_exercise_notebook(path)


def test_solution_without_a_function_needs_an_explicit_exercise_id(tmp_path):
    path = write_solutions(tmp_path / "solutions", solution_source="### BEGIN SOLUTION\nx = 1\n### END SOLUTION")

    with pytest.raises(ExerciseError, match="course.exercise"):
        build_exercise_notebook(path)


def test_a_check_cell_must_call_its_check_with_the_learners_function_alone(tmp_path):
    # The grader calls the check the same way the cell does: it could not pass the keyword on.
    notebook = nbformat.read(write_solutions(tmp_path / "solutions"), as_version=4)
    notebook.cells[2].source = "check_double(double, rounds=3)"
    path = tmp_path / "solutions" / "01_toy.ipynb"
    path.write_text(nbformat.writes(notebook), encoding="utf-8")

    with pytest.raises(ExerciseError, match=r"cell 3: a check cell calls check_double\(learner_function\)"):
        build_exercise_notebook(path)


# ---------------------------------------------------------------------------
# Reading cells: one reading for the build and the grader
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("source, expected", [
    ("# NBVAL_CHECK_OUTPUT\ncheck_softmax(softmax)", CheckCall("check_softmax", "softmax")),
    ("course_lib.checks.check_layer_norm(my_functions['layer_norm'])",
     CheckCall("check_layer_norm", "my_functions['layer_norm']")),
    ("%time\ncheck_softmax(softmax)", CheckCall("check_softmax", "softmax")),  # a magic line is not Python
    ("from course_lib.checks import check_softmax", None),  # imported, not called
    ("def check_mine(fn):\n    return fn(1)", None),  # defined, not called
    ("print('no check here')", None),
])
def test_find_check_call(source, expected):
    assert find_check_call(source) == expected


@pytest.mark.parametrize("source, words", [
    ("check_a(f)\ncheck_b(g)", "one check call per cell"),
    ("check_a(f, g)", "with one argument"),
    ("check_a(*functions)", "with one argument"),
    ("check_a(f\n", "not valid Python"),
])
def test_find_check_call_refuses_what_the_grader_could_not_repeat(source, words):
    with pytest.raises(CellError, match=words):
        find_check_call(source)


def test_a_solution_cell_is_named_by_its_metadata_or_its_first_definition():
    assert first_definition("import torch\n\nclass Block:\n    def forward(self): pass") == "Block"
    assert first_definition("x = 1  # def not_this") is None
    assert solution_exercise_id("def softmax(x):\n    pass", {}, number="00") == "00.softmax"
    assert solution_exercise_id("x = 1", {"course": {"exercise": "00.warm_up"}}, number="00") == "00.warm_up"
    with pytest.raises(CellError, match="course.exercise must look like '00.name', got '01.x'"):
        solution_exercise_id("x = 1", {"course": {"exercise": "01.x"}}, number="00")


# ---------------------------------------------------------------------------
# The generated notebook
# ---------------------------------------------------------------------------


def test_built_notebook_has_placeholders_and_no_outputs(course):
    solutions, _ = course

    notebook = build_exercise_notebook(solutions / "01_toy.ipynb")

    assert notebook.cells[1].source == EXERCISE_SOURCE
    assert notebook.cells[3].source == "print(2 + 2)"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None
    assert "execution" not in notebook.cells[1].metadata  # timing noise is dropped
    assert notebook.cells[1].metadata["tags"] == ["keep-me", "exercise"]


def test_graded_cells_and_notebook_carry_exercise_metadata(course):
    solutions, _ = course

    notebook = build_exercise_notebook(solutions / "01_toy.ipynb")
    solution_cell, check_cell, plain_cell = notebook.cells[1], notebook.cells[2], notebook.cells[3]

    assert solution_cell.metadata["course"] == {"exercise": "01.double", "role": "solution"}
    assert solution_cell.metadata["nbgrader"]["solution"] is True
    assert check_cell.metadata["course"] == {"exercise": "01.double", "role": "check"}
    assert check_cell.metadata["nbgrader"]["grade"] is True
    assert "check" in check_cell.metadata["tags"]
    assert "course" not in plain_cell.metadata

    course_metadata = notebook.metadata["course"]
    assert course_metadata["kind"] == "exercises"
    assert course_metadata["notebook"] == "01_toy"
    assert course_metadata["source"] == "solutions/01_toy.ipynb"
    assert set(course_metadata["exercises"]) == {"01.double"}
    assert course_metadata["content_sha256"] == content_hash(notebook)


def test_solution_hash_follows_the_solution_text(tmp_path):
    first = build_exercise_notebook(write_solutions(tmp_path / "a"))
    rewritten = SOLUTION_SOURCE.replace("2 * x", "x * 2")
    second = build_exercise_notebook(write_solutions(tmp_path / "b", solution_source=rewritten))

    def solution_hash(notebook):
        return notebook.metadata["course"]["exercises"]["01.double"]["solution_sha256"]

    assert solution_hash(first) != solution_hash(second)
    assert first.cells[1].source == second.cells[1].source


def test_rendering_is_deterministic(course):
    solutions, _ = course

    first = render_notebook(build_exercise_notebook(solutions / "01_toy.ipynb"))
    second = render_notebook(build_exercise_notebook(solutions / "01_toy.ipynb"))

    assert first == second
    assert first.endswith("}\n")
    nbformat.validate(nbformat.reads(first, as_version=4))


# ---------------------------------------------------------------------------
# Building directories without destroying learner work
# ---------------------------------------------------------------------------


def test_build_creates_then_leaves_unchanged_notebooks_alone(course):
    solutions, exercises = course
    [created] = build_exercises(solutions, exercises)
    written_at = created.path.stat().st_mtime_ns

    [again] = build_exercises(solutions, exercises)

    assert created.action == "created"
    assert again.action == "unchanged"
    assert again.path.stat().st_mtime_ns == written_at


def test_unedited_notebook_is_updated_when_the_solution_changes(course):
    solutions, exercises = course
    build_exercises(solutions, exercises)
    write_solutions(solutions, solution_source=SOLUTION_SOURCE.replace('"""Twice x."""', '"""Two times x."""'))

    [outcome] = build_exercises(solutions, exercises)

    assert outcome.action == "updated"
    assert "Two times x." in (exercises / "01_toy.ipynb").read_text(encoding="utf-8")


def test_edited_notebook_is_refused_without_force(course, capsys):
    solutions, exercises = course
    build_exercises(solutions, exercises)
    edited_text = edit_exercise(exercises / "01_toy.ipynb")

    exit_code = main(["exercises", "build", "--solutions", str(solutions), "--exercises", str(exercises)])

    assert exit_code != 0
    assert "01_toy.ipynb was edited since it was generated" in capsys.readouterr().err
    assert (exercises / "01_toy.ipynb").read_text(encoding="utf-8") == edited_text


def test_force_keeps_a_backup_of_the_edited_notebook(course):
    solutions, exercises = course
    build_exercises(solutions, exercises)
    edited_text = edit_exercise(exercises / "01_toy.ipynb")

    exit_code = main(["exercises", "build", "--force", "--solutions", str(solutions), "--exercises", str(exercises)])

    [backup] = exercises.glob("01_toy.backup-*.ipynb")
    assert exit_code == 0
    assert backup.read_text(encoding="utf-8") == edited_text
    expected = render_notebook(build_exercise_notebook(solutions / "01_toy.ipynb"))
    assert (exercises / "01_toy.ipynb").read_text(encoding="utf-8") == expected


def test_a_notebook_not_made_by_the_build_is_protected(course):
    solutions, exercises = course
    exercises.mkdir()
    (exercises / "01_toy.ipynb").write_text(nbformat.writes(new_notebook()), encoding="utf-8")

    [outcome] = build_exercises(solutions, exercises)

    assert outcome.action == "refused"
    assert "not generated" in outcome.reason


def test_invalid_solutions_stop_the_build_before_anything_is_written(course):
    solutions, exercises = course
    write_solutions(solutions, name="02_broken.ipynb", solution_source="### BEGIN SOLUTION\n")

    with pytest.raises(ExerciseError, match="02_broken.ipynb"):
        build_exercises(solutions, exercises)
    assert not exercises.exists()


# ---------------------------------------------------------------------------
# exercises check
# ---------------------------------------------------------------------------


def copy_of_the_repository_notebooks(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    shutil.copytree(REPO / "solutions", solutions)
    shutil.copytree(REPO / "exercises", exercises)
    return solutions, exercises


def test_repository_exercises_are_in_sync(tmp_path, capsys):
    solutions, exercises = copy_of_the_repository_notebooks(tmp_path)

    exit_code = main(["exercises", "check", "--solutions", str(solutions), "--exercises", str(exercises)])

    assert exit_code == 0, capsys.readouterr().err


def test_check_names_missing_extra_and_different_notebooks(tmp_path, capsys):
    solutions, exercises = copy_of_the_repository_notebooks(tmp_path)
    first_exercise = sorted(exercises.glob("[0-9][0-9]_*.ipynb"))[0]
    write_solutions(solutions, name="98_new.ipynb")
    build_exercises(solutions, exercises)
    edit_exercise(exercises / "98_new.ipynb")
    shutil.copyfile(exercises / "98_new.ipynb", exercises / "99_orphan.ipynb")
    first_exercise.unlink()

    exit_code = main(["exercises", "check", "--solutions", str(solutions), "--exercises", str(exercises)])

    errors = capsys.readouterr().err
    assert exit_code != 0
    assert f"missing: {first_exercise}" in errors
    assert f"extra: {exercises / '99_orphan.ipynb'}" in errors
    assert f"different: {exercises / '98_new.ipynb'} was edited since it was generated" in errors


# Runs `python -m course_lib ARGS...` with every import of torch refused, as on a machine without torch.
WITHOUT_TORCH = """
import runpy, sys

class RefuseTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"this test forbids importing {name}")
        return None

sys.meta_path.insert(0, RefuseTorch())
sys.argv = ["course", *sys.argv[1:]]
runpy.run_module("course_lib", run_name="__main__", alter_sys=True)
"""


def test_exercises_build_and_check_run_without_torch(tmp_path):
    exercises = tmp_path / "exercises"
    for command in ("build", "check"):
        completed = subprocess.run(
            [sys.executable, "-c", WITHOUT_TORCH, "exercises", command,
             "--solutions", str(REPO / "solutions"), "--exercises", str(exercises)],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "is in sync with" in completed.stdout
    assert sorted(path.name for path in exercises.iterdir()) == sorted(path.name for path in EXERCISES)


def test_the_command_line_imports_no_torch():
    code = ("import sys, course_lib.tools.cli, course_lib.tools.exercises, course_lib.tools.notebook_cells; "
            "print(sorted(name for name in sys.modules if name.split('.')[0] == 'torch'))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_check_ignores_backups(course):
    solutions, exercises = course
    build_exercises(solutions, exercises)
    edit_exercise(exercises / "01_toy.ipynb")
    build_exercises(solutions, exercises, force=True)

    assert list(exercises.glob("*.backup-*.ipynb"))
    assert find_out_of_sync(solutions, exercises) == []


# ---------------------------------------------------------------------------
# The real notebooks run top to bottom, with the expected verdicts
# ---------------------------------------------------------------------------

# Solutions notebooks are executed by `make test`'s nbval run, which compares
# every check cell (marked NBVAL_CHECK_OUTPUT) with its stored "passed"
# verdict; here we make sure those stored verdicts really are passes. The
# exercise notebooks have no stored outputs, so they are executed here.
SOLUTIONS = sorted(p for p in (REPO / "solutions").glob("[0-9][0-9]_*.ipynb"))
EXERCISES = sorted(p for p in (REPO / "exercises").glob("[0-9][0-9]_*.ipynb") if ".backup-" not in p.name)
CHECK_CALL = re.compile(r"^check_\w+\(", re.MULTILINE)


def _check_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code" and CHECK_CALL.search(cell.source)]


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solutions_store_passing_verdicts_that_nbval_rechecks(path):
    check_cells = _check_cells(nbformat.read(path, as_version=4))
    assert check_cells
    for cell in check_cells:
        assert cell.source.startswith("# NBVAL_CHECK_OUTPUT"), cell.source[:80]
        summaries = [output["data"][SUMMARY_MIME_TYPE] for output in cell.get("outputs", [])
                     if SUMMARY_MIME_TYPE in output.get("data", {})]
        assert [summary["status"] for summary in summaries] == ["passed"], cell.source[:80]


@pytest.mark.slow
@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_unsolved_exercises_run_and_report_not_implemented(path):
    run = execute_notebook(path, timeout=120)
    assert run.errors == []
    assert len(_check_cells(run.notebook)) > 0
    assert [verdict["status"] for verdict in run.verdicts] == ["not implemented"] * len(_check_cells(run.notebook))
