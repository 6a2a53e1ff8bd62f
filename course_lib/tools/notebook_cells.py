"""Which exercise a notebook cell belongs to, and which check it calls.

One reading of a code cell, shared by the exercise build (which tags the
cells of the notebooks it writes) and the grader (which finds the learner's
cells and calls the checks the way the instructor's cells do), so the two
can never disagree about a cell. Torch-free: it only reads source text.

- A *solution cell* is named by its first top-level ``def`` or ``class``
  (``00.softmax`` for ``def softmax``), unless the instructor wrote another
  name in the cell metadata ``course.exercise``.
- A *check cell* makes exactly one call ``check_<name>(answer)``, with the
  learner's function (or an expression that gives it) as its one argument.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# A regular expression, not the syntax tree: a learner's cell that is not
# valid Python still names the exercise it attempts (and then fails to run).
_TOP_LEVEL_DEFINITION = re.compile(r"^(?:async\s+)?(?:def|class)\s+(?P<name>[A-Za-z_]\w*)", re.MULTILINE)
_CHECK_PREFIX = "check_"
# IPython's line magics and shell escapes (``%timeit f()``, ``!ls``) are not Python.
_IPYTHON_LINE = re.compile(r"^(?P<indent>[ \t]*)(?:%|!(?!=)).*$", re.MULTILINE)
_EXERCISE_NAME = re.compile(r"[A-Za-z_]\w*")


class CellError(ValueError):
    """A cell that cannot be read as a check cell: not Python, or not exactly one ``check_<name>(answer)``."""


@dataclass(frozen=True)
class CheckCall:
    """The call a check cell makes: ``check_softmax(softmax)`` is ``CheckCall("check_softmax", "softmax")``."""

    check_name: str
    answer_expression: str

    @property
    def function_name(self) -> str:
        """The exercise's function, as the check names it: "softmax" for ``check_softmax``."""
        return self.check_name.removeprefix(_CHECK_PREFIX)


def first_definition(source: str) -> str | None:
    """The name of the first top-level ``def`` or ``class`` in ``source``, or None when there is none."""
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    match = _TOP_LEVEL_DEFINITION.search(source)
    return None if match is None else match["name"]


def solution_exercise_id(source: str, metadata: dict, *, number: str) -> str:
    """The id of the exercise a solution cell of notebook ``number`` holds, e.g. "00.softmax".

    ``course.exercise`` in the cell metadata wins; otherwise the cell's first
    top-level definition names it. Raises CellError when neither does.
    """
    explicit_id = metadata.get("course", {}).get("exercise") if isinstance(metadata, dict) else None
    if explicit_id is not None:
        prefix, _, name = str(explicit_id).partition(".")
        if prefix != number or not _EXERCISE_NAME.fullmatch(name):
            raise CellError(f"course.exercise must look like '{number}.name', got {explicit_id!r}")
        return str(explicit_id)
    name = first_definition(source)
    if name is None:
        raise CellError("a solution region needs a top-level def or class in its cell to name the exercise, "
                        "or an id in the cell metadata course.exercise")
    return f"{number}.{name}"


def find_check_call(source: str) -> CheckCall | None:
    """The one check a cell calls, or None for a cell that calls no check.

    Raises CellError for a cell that mentions a check but is not valid
    Python, calls more than one check, or calls a check with anything but a
    single positional argument: the grader could not call it the same way.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    if _CHECK_PREFIX not in source:  # most cells: no need to parse them
        return None
    python_source = _IPYTHON_LINE.sub(lambda line: f"{line['indent']}pass", source)
    try:
        tree = ast.parse(python_source)
    except SyntaxError as error:
        raise CellError(f"the cell mentions a check but is not valid Python ({error.msg}, line {error.lineno})") \
            from error
    calls = [node for node in ast.walk(tree)
             if isinstance(node, ast.Call) and _called_name(node).startswith(_CHECK_PREFIX)]
    if not calls:
        return None
    if len(calls) > 1:
        names = sorted({_called_name(call) for call in calls})
        raise CellError(f"one check call per cell, found {len(calls)} calls: {', '.join(names)}")
    call = calls[0]
    if len(call.args) != 1 or call.keywords or isinstance(call.args[0], ast.Starred):
        raise CellError(f"a check cell calls {_called_name(call)}(learner_function) with one argument, "
                        f"found {ast.get_source_segment(python_source, call)!r}")
    return CheckCall(_called_name(call), ast.get_source_segment(python_source, call.args[0]))


def _called_name(call: ast.Call) -> str:
    """``check_softmax`` for ``check_softmax(...)`` and for ``course_lib.checks.check_softmax(...)``."""
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return ""


def course_marks(metadata: dict) -> dict[str, str]:
    """The text fields of ``metadata.course`` (a notebook's or a cell's); anything else there is ignored.

    The exercise build writes them; in a learner's notebook they may have
    been edited, so nothing but plain text is ever read from them.
    """
    marks = metadata.get("course") if isinstance(metadata, dict) else None
    if not isinstance(marks, dict):
        return {}
    return {key: value for key, value in marks.items() if isinstance(key, str) and isinstance(value, str)}
