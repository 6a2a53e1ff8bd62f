"""The code that runs inside the learner's kernel, where a check cell was.

A *recorder* cell calls the learner's function exactly as the check does,
on the check's own inputs, and saves what the function returned (plain
values and plain tensors only) to a file with a random name in the
kernel's scratch folder. The verdict is reached later, in the grader's
process (``replay``), never in the kernel.

The two functions below are injected as source into every recorder cell, so
a recorder depends on nothing the learner's earlier cells could have
replaced. They must stay self-contained: imports inside, no module names.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from course_lib.tools.grading.course import Exercise


def course_grader_import_checks():
    """A fresh import of course_lib.checks, whatever the code run before did to the one in sys.modules.

    Fresh also means the same module state in the kernel and in the grader,
    so the check calls the learner's function on the same inputs in both.
    """
    import importlib
    import sys

    def is_checks(name):
        return name == "course_lib.checks" or name.startswith("course_lib.checks.")

    previous = {name: module for name, module in sys.modules.items() if is_checks(name)}
    for name in previous:
        del sys.modules[name]
    try:
        return importlib.import_module("course_lib.checks")
    finally:
        for name in [name for name in sys.modules if is_checks(name)]:
            del sys.modules[name]
        sys.modules.update(previous)
        if "course_lib.checks" in previous and "course_lib" in sys.modules:
            sys.modules["course_lib"].checks = previous["course_lib.checks"]


def course_grader_record(check_name, get_answer, result_path):
    """Call the learner's answer as the check does, and save every answer to ``result_path``.

    Only plain values, plain tensors and type names are saved, so nothing
    the learner defines can run in the grader when it reads them back.
    """
    import torch

    record = {"defined": True, "type": "", "callable": False, "calls": [], "stopped": ""}

    def describe(error):
        try:
            return f"{type(error).__name__}: {error}"[:2000]
        except Exception:  # an exception whose message cannot even be printed
            return "an exception"

    def encode(value, depth=0):
        try:
            if value is None or type(value) in (bool, int, float, str):
                return ("plain", value)
            if type(value) in (torch.Tensor, torch.nn.Parameter) and value.layout == torch.strided:
                return ("tensor", value.detach().cpu().clone())
            if type(value) in (tuple, list) and depth < 8:
                return (type(value).__name__, [encode(item, depth + 1) for item in value])
            if type(value) is dict and depth < 8 and all(type(key) is str for key in value):
                return ("dict", {key: encode(item, depth + 1) for key, item in value.items()})
            return ("other", str(type(value).__name__))
        except Exception:
            return ("other", "object")

    def encode_inputs(args, kwargs):
        """The inputs as the learner's function left them: the check fails functions that change them."""
        def after(value):
            if type(value) is torch.Tensor:
                return ("tensor", value.detach().cpu().clone())
            if type(value) is torch.Generator:
                return ("generator", value.get_state())
            return None
        return {"args": [after(value) for value in args], "kwargs": {name: after(v) for name, v in kwargs.items()}}

    try:
        answer = get_answer()
    except Exception as error:  # the learner's cell did not define the function
        record["defined"] = False
        record["stopped"] = describe(error)
    else:
        record["type"] = str(type(answer).__name__)
        record["callable"] = callable(answer)

        def recording(*args, **kwargs):
            try:
                returned = answer(*args, **kwargs)
            except BaseException as error:
                raised = {
                    "name": str(type(error).__name__), "message": describe(error).partition(": ")[2],
                    "not_implemented": isinstance(error, NotImplementedError),
                    "runtime_error": isinstance(error, RuntimeError),
                }
                record["calls"].append({"raised": raised, "inputs_after": encode_inputs(args, kwargs)})
                raise
            record["calls"].append({"returned": encode(returned), "inputs_after": encode_inputs(args, kwargs)})
            return returned

        if record["callable"]:
            try:
                getattr(course_grader_import_checks(), check_name)(recording)
            except BaseException as error:  # the learner's function stopped the check: SystemExit, the time limit
                record["stopped"] = describe(error)
    try:
        torch.save(record, result_path)
    except Exception as error:  # over the file size limit: keep the reason, drop the answers
        torch.save({**record, "calls": [], "stopped": f"the answers could not be saved ({describe(error)})"},
                   result_path)


def recorder_source(exercise: Exercise, result_path: Path) -> str:
    """The cell that replaces the instructor's check cell of ``exercise`` in the graded copy."""
    return "\n\n".join([
        f"# Inserted by `course grade`: records the answers of exercise {exercise.exercise_id} for the grader.",
        inspect.getsource(course_grader_import_checks),
        inspect.getsource(course_grader_record),
        f"course_grader_record({exercise.check_name!r}, lambda: ({exercise.answer_expression}), "
        f"{str(result_path)!r})",
        "del course_grader_import_checks, course_grader_record",
    ])
