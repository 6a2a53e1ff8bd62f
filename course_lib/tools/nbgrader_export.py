"""The exercises in nbgrader's layout: ``course exercises nbgrader``.

nbgrader builds an assignment from the instructor's notebook in
``source/<assignment>/``: the solutions between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` (the course's markers too), and nbgrader's metadata on
every graded cell. For each solutions notebook with exercises this writes
``<out>/<NN_name>/<NN_name>.ipynb``, one assignment per notebook:

- the solutions notebook's cells, each with the metadata the exercise build
  gives it: nbgrader's (``grade_id``, solution cells, locked check cells
  worth 1 point) and the course's (exercise id and role, tags), so that a
  notebook nbgrader releases is also one that ``course grade`` recognises;
- the notebook's ``course`` metadata, as in ``exercises/``, with
  ``content_sha256`` the hash of this file, so a later export can tell
  whether someone edited it;
- each check cell ending in an assertion: nbgrader counts a test cell as
  passed when it does not raise, and the course's checks never raise.

Torch-free, like the exercise build.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat

from course_lib.tools.exercises import (
    ExerciseError, build_exercise_notebook, content_hash, edited_since_generated, find_course_notebooks,
    read_notebook, render_notebook,
)
from course_lib.tools.notebook_cells import CellError, find_check_call

FAILED_CHECK_MESSAGE = "not every case of the check passed: its report above says which"


def raising_check_source(source: str, *, where: str) -> str:
    """The check cell ``source`` with its check call made to show the verdict, then raise when it failed."""
    call = find_check_call(source)
    if call is None:
        raise ExerciseError(f"{where}: not a check cell")
    statements = [node for node in ast.parse(source).body
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                  and call.check_name in ast.get_source_segment(source, node.value.func)]
    if len(statements) != 1 or statements[0].lineno != statements[0].end_lineno:
        raise ExerciseError(f"{where}: the check call must be a statement of its own, on one line, "
                            f"like {call.check_name}({call.answer_expression})")
    lines = source.splitlines()
    line = statements[0].lineno - 1
    call_text = lines[line].strip()
    lines[line:line + 1] = [
        "from IPython.display import display",
        f"verdict = {call_text}",
        "display(verdict)",
        f"assert verdict, {FAILED_CHECK_MESSAGE!r}",
    ]
    return "\n".join(lines)


def nbgrader_source_notebook(solutions_path: Path) -> nbformat.NotebookNode:
    """The nbgrader source notebook made from the solutions notebook at ``solutions_path``."""
    source = read_notebook(solutions_path)
    built = build_exercise_notebook(solutions_path)
    for index, (cell, built_cell) in enumerate(zip(source.cells, built.cells), start=1):
        cell.metadata = built_cell.metadata
        if cell.metadata.get("course", {}).get("role") == "check":
            cell.source = raising_check_source(cell.source, where=f"{solutions_path}, cell {index}")
    source.metadata["course"] = dict(built.metadata["course"])
    source.metadata["course"]["content_sha256"] = content_hash(source)
    return source


def export_to_nbgrader(solutions_dir: Path, out: Path, *, force: bool = False) -> list[str]:
    """Write one nbgrader assignment per gradable solutions notebook into ``out``; one line per notebook.

    A notebook there that was edited since it was exported is left as it is
    (and named in an ExerciseError) unless ``force``. Every notebook is made
    before any is written.
    """
    out = Path(out)
    exported = {}
    for path in find_course_notebooks(solutions_dir):
        notebook = nbgrader_source_notebook(path)
        if any(cell.metadata.get("nbgrader", {}).get("grade") for cell in notebook.cells):
            exported[out / path.stem / path.name] = render_notebook(notebook)
    edited = [f"{target} {why}" for target in exported
              if target.exists() and (why := edited_since_generated(target)) is not None]
    if edited and not force:
        raise ExerciseError("refused to overwrite: " + "; ".join(edited) + ". Rerun with --force to replace them.")
    lines = []
    for target, text in exported.items():
        action = "unchanged" if target.exists() and target.read_text(encoding="utf-8") == text else "written"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        lines.append(f"{action}: {target}")
    return lines


def run_nbgrader_command(solutions_dir: Path, out: Path, *, force: bool) -> int:
    """``course exercises nbgrader``: print one line per assignment; 1 when it refused or could not."""
    try:
        lines = export_to_nbgrader(solutions_dir, out, force=force)
    except (ExerciseError, CellError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    print(f"Next, in the folder above {out}: nbgrader generate_assignment NN_name (one per notebook).")
    return 0
