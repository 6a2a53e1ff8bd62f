"""From recorded answers to verdicts, in the grader's process.

The grader runs its own fresh copy of the check, with a stand-in for the
learner's function that replays the answers the recorder saved in the
kernel. Whatever the learner's code did inside the kernel (replace the
checks, patch ``torch.isclose``, return objects that compare equal to
anything, print text that looks like a pass), the only thing that reaches
the verdict is the data its function returned.
"""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

import torch

from course_lib.tools.grading.course import Exercise
from course_lib.tools.grading.kernel_run import KernelRun
from course_lib.tools.grading.recorder import course_grader_import_checks
from course_lib.tools.grading.report import GradeRow
from course_lib.tools.grading.sandbox import SandboxLimits
from course_lib.tools.grading.submissions import ExercisePlan
from course_lib.verdicts import NOT_IMPLEMENTED


class ReplayStopped(BaseException):
    """The replay cannot go on.

    A BaseException, like SystemExit, so that the check does not count it
    as a failed case of the learner's function and stops instead.
    """


class CheckStopped(ReplayStopped):
    """The learner's function stopped the check in the kernel (SystemExit, say): the replay stops there too."""


class RecordingMismatch(ReplayStopped):
    """The record does not fit the check: the kernel did not run the check as written, or the file was forged."""


def _stand_in(type_name: str) -> Any:
    """An object of a new, empty class named like the learner's: the check reports "received a <name>"."""
    return type(type_name, (), {})()


def _decode(encoded: Any) -> Any:
    """A value saved by the recorder; anything not shaped like the recorder's output is a RecordingMismatch."""
    if not isinstance(encoded, tuple) or len(encoded) != 2:
        raise RecordingMismatch(f"unexpected record {type(encoded).__name__}")
    kind, payload = encoded
    if kind == "plain" and (payload is None or type(payload) in (bool, int, float, str)):
        return payload
    if kind == "tensor" and type(payload) is torch.Tensor:
        return payload
    if kind in ("tuple", "list") and type(payload) is list:
        items = [_decode(item) for item in payload]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict" and type(payload) is dict:
        return {str(key): _decode(item) for key, item in payload.items()}
    if kind == "other" and type(payload) is str:
        return _stand_in(payload)
    raise RecordingMismatch(f"unexpected record of kind {kind!r}")


def _rebuild_exception(raised: dict) -> Exception:
    """An exception like the learner's: same class name and message; NotImplementedError and RuntimeError kept."""
    import builtins

    name, message = str(raised["name"]), str(raised["message"])
    if raised["not_implemented"]:
        return NotImplementedError(message)
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        return builtin(message)
    return type(name, (RuntimeError if raised["runtime_error"] else Exception,), {})(message)


def _restore_inputs(args: tuple, kwargs: dict, inputs_after: dict) -> None:
    """Leave the check's inputs as the learner's function left them in the kernel, so in-place changes show."""
    pairs = list(zip(args, inputs_after["args"])) + [
        (kwargs[name], recorded) for name, recorded in inputs_after["kwargs"].items() if name in kwargs
    ]
    for value, recorded in pairs:
        if recorded is None:
            continue
        kind, payload = recorded
        if kind == "tensor" and isinstance(value, torch.Tensor) and type(payload) is torch.Tensor:
            with torch.no_grad():
                if value.shape == payload.shape:
                    value.copy_(payload)
                else:
                    value.set_(payload.to(value.dtype))
        elif kind == "generator" and isinstance(value, torch.Generator) and type(payload) is torch.Tensor:
            value.set_state(payload)


class _Replay:
    """Stands in for the learner's function in the grader's check: answers what the function answered in the kernel."""

    def __init__(self, calls: list, stopped: str, name: str):
        self._calls = list(calls)
        self._stopped = stopped
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._calls:
            if self._stopped:
                raise CheckStopped(self._stopped)
            raise RecordingMismatch("the check called the function more often than it was called in the kernel")
        call = self._calls.pop(0)
        try:
            _restore_inputs(args, kwargs, call["inputs_after"])
            if "raised" in call:
                learner_error = _rebuild_exception(call["raised"])
            else:
                learner_error, returned = None, _decode(call["returned"])
        except (KeyError, TypeError, ValueError, RuntimeError) as problem:  # a record not made by the recorder
            raise RecordingMismatch(f"{type(problem).__name__}: {problem}") from problem
        if learner_error is not None:
            raise learner_error
        return returned

    def all_used(self) -> bool:
        return not self._calls


def replay_check(exercise: Exercise, record: dict) -> Any:
    """The verdict (a CheckResult) of the grader's own check on the answers recorded in the kernel.

    Raises CheckStopped where the learner's function stopped the check, and
    RecordingMismatch where the record does not fit the check.
    """
    if record["callable"]:
        answer = _Replay(record["calls"], str(record["stopped"]), exercise.function_name)
    else:
        answer = _stand_in(str(record["type"]))
    check = getattr(course_grader_import_checks(), exercise.check_name)
    result = check(answer)
    if isinstance(answer, _Replay) and not answer.all_used():
        raise RecordingMismatch("the function was called more often in the kernel than by the check")
    return result


def load_record(path: Path, limits: SandboxLimits) -> dict:
    """The recorder's file, read with torch's safe loader (tensors and plain containers only, no code).

    The kernel could have put anything at ``path``: only a regular file
    inside its own scratch folder is read, never a link to somewhere else
    (another learner's file, a device, a pipe that never ends).
    """
    if path.parent.is_symlink():  # the results folder, which the kernel could have swapped for a link
        raise RecordingMismatch("the record's folder is a link out of the kernel's scratch folder")
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise RecordingMismatch("the record is not a regular file")
        if status.st_size > limits.file_size_mb * 2**20:
            raise RecordingMismatch("the recorded answers are larger than the file size limit")
        content = file.read()
    record = torch.load(io.BytesIO(content), weights_only=True)
    if not isinstance(record, dict) or not {"defined", "type", "callable", "calls", "stopped"} <= set(record):
        raise RecordingMismatch("the recorded answers are not in the recorder's format")
    return record


def grade_exercise(plan: ExercisePlan, run: KernelRun | None, learner: str, limits: SandboxLimits) -> GradeRow:
    """The row of one exercise, from the plan of the graded copy and what happened when it ran.

    ``run`` is None when no exercise of the notebook was attempted: then no kernel ran.
    """
    exercise = plan.exercise

    def row(status: str, feedback: str, score: float = 0.0) -> GradeRow:
        return GradeRow(learner, exercise.notebook, exercise.exercise_id, round(score, 2), exercise.max_score,
                        status, feedback)

    function_name = exercise.function_name
    if not plan.found:
        return row("missing", f"No cell of your notebook holds exercise {exercise.exercise_id} "
                              f"(`{function_name}`): was the exercise cell deleted?")
    if not plan.attempted:
        return row("not attempted", "The exercise cell is unchanged: it still holds the placeholder.")
    cell_errors = [f"Your exercise cell raised {run.errors[index]}" for index in plan.solution_cells
                   if index in run.errors]
    if any(index in run.timed_out_cells for index in (*plan.solution_cells, plan.recorder_cell)) or (
        run.notebook_timed_out and run.last_cell_started <= plan.recorder_cell
    ):
        limit = (f"{limits.cell_timeout:g} s for a cell" if not run.notebook_timed_out
                 else f"{limits.notebook_timeout:g} s for the notebook")
        return row("timeout", f"Your code was stopped at the time limit ({limit}): an endless loop, or far too slow.")
    if run.grader_failure:
        return row("error", f"The grader failed on this notebook, not your code: {run.grader_failure}")
    if run.kernel_died_at is not None and run.kernel_died_at <= plan.recorder_cell:
        return row("error", "The kernel stopped before this exercise was checked: code in your notebook exited "
                            "the kernel, crashed it, or used more memory than allowed "
                            f"({limits.memory_mb:g} MiB).")
    try:
        record = load_record(plan.result_path, limits)
        if not record["defined"]:
            reasons = cell_errors or [f"`{function_name}` is not defined after your exercise cell ran "
                                      f"({record['stopped']})"]
            return row("failed", "\n".join(reasons))
        result = replay_check(exercise, record)
    except CheckStopped as stop:
        return row("failed", f"Your function stopped the check: {stop}")
    except RecordingMismatch as mismatch:
        return row("error", f"The check's record does not fit the check ({mismatch}): did code in your notebook "
                            "change how the check runs?")
    except FileNotFoundError:
        return row("error", "The check did not run: code in your notebook stopped it before it could record "
                            f"anything. {' '.join(cell_errors)}".strip())
    except Exception as error:  # whatever the kernel wrote, a bad record costs this exercise only
        return row("error", f"The check's record could not be used: {type(error).__name__}: {error}")
    if result.status == NOT_IMPLEMENTED:
        return row("not attempted", result.report())
    score = exercise.max_score * result.n_passed / result.n_total if result.n_total else 0.0
    return row(result.status, result.report(), score)
