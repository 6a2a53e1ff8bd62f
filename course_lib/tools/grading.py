"""``course grade``: grade every learner's exercise notebooks in one batch.

The submissions folder holds one folder per learner, with that learner's
exercise notebooks under any file names: a notebook is recognised by the
``metadata.course`` the exercise build writes (or, failing that, by its
course file name, e.g. ``01_attention.ipynb``).

How one notebook is graded
--------------------------

The learner's notebook is never executed as it is. The grader builds a
*graded copy* from the instructor's solutions notebook: every solution cell
is replaced by the learner's cell for the same exercise (found by the
exercise id in the cell metadata, else by the name of its first top-level
``def``), every check cell by a *recorder* cell, and everything else
(imports, data, demonstrations) stays the instructor's. The copy runs in a
fresh kernel, in a temporary folder, with a time limit per cell and per
notebook, a memory limit, and, where the system allows, no network.

A recorder cell calls the learner's function exactly as the check does, on
the check's own inputs, and saves what the function returned (plain values
and plain tensors only) to a file with a random name. The verdict is then
reached in the grader's process, not in the kernel: the grader runs its own
fresh copy of the check, with a stand-in that replays the recorded answers.
Whatever the learner's code did inside the kernel (replace the checks,
patch ``torch.isclose``, return objects that compare equal to anything,
print or display text that looks like a pass), the only thing that reaches
the verdict is the data its function returned.

Statuses: ``passed``, ``failed`` (partial credit: the share of the check's
cases that passed), ``not attempted`` (the exercise cell is unchanged or
still raises NotImplementedError), ``missing`` (no notebook or no cell of
the learner holds the exercise), ``timeout``, and ``error`` (the kernel
stopped, or a notebook could not be read).
"""
from __future__ import annotations

import ast
import asyncio
import csv
import inspect
import json
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import nbformat
import torch
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from course_lib import checks
from course_lib.tools.exercises import (
    # The build's own rule for naming an exercise after the first top-level def of its cell.
    _TOP_LEVEL_DEFINITION, ExerciseError, build_exercise_notebook, find_course_notebooks, read_notebook,
)

STATUSES = ("passed", "failed", "not attempted", "missing", "timeout", "error")
CSV_COLUMNS = ("learner", "notebook", "exercise", "score", "max_score", "status")
DEFAULT_WORKERS = 2

_KERNEL_NAME = "course-grader"
_MAX_ERROR_TEXT = 500


class GradingError(RuntimeError):
    """The grader itself cannot work: a missing folder, or a course notebook it cannot grade."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one learner notebook may use.

    cell_timeout: seconds a cell may run before it is interrupted.
    notebook_timeout: seconds the whole notebook may run before its kernel is killed.
    memory_mb: address space of the kernel process (RLIMIT_AS), in MiB.
    file_size_mb: largest file the kernel may write (RLIMIT_FSIZE), in MiB.
    """

    cell_timeout: float = 60.0
    notebook_timeout: float = 300.0
    memory_mb: float = 4096
    file_size_mb: float = 256

    def __post_init__(self) -> None:
        for name in ("cell_timeout", "notebook_timeout", "memory_mb", "file_size_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive, finite number, got {value!r}")


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

    def csv_values(self) -> list[str]:
        return [self.learner, self.notebook, self.exercise, f"{self.score:g}", f"{self.max_score:g}", self.status]


@dataclass
class GradeReport:
    """Everything a batch produced: the rows, notes for each learner, and problems of the grader itself."""

    rows: list[GradeRow]
    notes: dict[str, list[str]]
    grader_problems: list[str]
    network_isolated: bool
    seconds: float


# ---------------------------------------------------------------------------
# The course: what is graded, read from the instructor's solutions notebooks
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Exercise:
    """One graded exercise: its id, notebook, worth, and how the instructor's check cell calls the check."""

    exercise_id: str
    notebook: str
    max_score: float
    check_name: str
    answer_expression: str


@dataclass(frozen=True)
class CourseNotebook:
    """A solutions notebook's code cells, each with the exercise and role the exercise build gives it.

    ``roles[i]`` is ``(exercise_id, "solution" | "check")`` or ``(None, None)``;
    ``placeholders[i]`` is the source a learner receives for solution cell i.
    """

    name: str
    sources: tuple[str, ...]
    roles: tuple[tuple[str | None, str | None], ...]
    placeholders: dict[int, str]
    exercises: tuple[Exercise, ...]


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
            check_name, answer_expression = _parse_check_call(source_cell.source, where=f"{path}, {role[0]}")
            exercises.append(Exercise(
                exercise_id=role[0], notebook=path.stem, max_score=float(built_cell.metadata["nbgrader"]["points"]),
                check_name=check_name, answer_expression=answer_expression,
            ))
        sources.append(source_cell.source)
        roles.append(role)
    checked_ids = {exercise.exercise_id for exercise in exercises}
    if solution_ids != checked_ids:
        raise GradingError(
            f"{path}: every exercise needs a solution cell and a check cell; solutions without a check: "
            f"{sorted(solution_ids - checked_ids)}, checks without a solution: {sorted(checked_ids - solution_ids)}"
        )
    return CourseNotebook(path.stem, tuple(sources), tuple(roles), placeholders, tuple(exercises))


def _parse_check_call(source: str, *, where: str) -> tuple[str, str]:
    """The check function a check cell calls and the source of its one argument: ("check_softmax", "softmax")."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise GradingError(f"{where}: the check cell is not valid Python ({error})") from error
    calls = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("check_")
    ]
    if len(calls) != 1 or len(calls[0].args) != 1 or calls[0].keywords:
        raise GradingError(f"{where}: a check cell must make one call check_<name>(learner_function)")
    check_name = calls[0].func.id
    if not callable(getattr(checks, check_name, None)):
        raise GradingError(f"{where}: course_lib.checks has no {check_name}")
    return check_name, ast.get_source_segment(source, calls[0].args[0])


# ---------------------------------------------------------------------------
# Submissions: which of a learner's files is which course notebook
# ---------------------------------------------------------------------------


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
        marks = _course_marks(notebook.metadata)
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


def _course_marks(metadata: dict) -> dict[str, str]:
    """The text fields of a learner's ``metadata.course``: anything else there is ignored, never trusted."""
    marks = metadata.get("course")
    if not isinstance(marks, dict):
        return {}
    return {key: value for key, value in marks.items() if isinstance(key, str) and isinstance(value, str)}


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
            source = _recorder_source(exercise, result_paths[exercise_id])
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
        marks = _course_marks(cell.metadata)
        if marks.get("role") == "solution" and marks.get("exercise"):
            sources.setdefault(marks["exercise"], []).append(cell.source)
        elif (definition := _TOP_LEVEL_DEFINITION.search(cell.source)) is not None:
            sources.setdefault(f"def {definition['name']}", []).append(cell.source)
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
    definition = _TOP_LEVEL_DEFINITION.search(instructor_source)
    untagged = learner_sources.get(f"def {definition['name']}", []) if definition else []
    return untagged[-1] if untagged else None  # the last one: the learner's latest attempt


# ---------------------------------------------------------------------------
# Code that runs inside the learner's kernel
#
# These two functions are injected as source into every recorder cell, so a
# recorder depends on nothing the learner's earlier cells could have
# replaced. They must stay self-contained: imports inside, no module names.
# ---------------------------------------------------------------------------


def _course_grader_import_checks():
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


def _course_grader_record(check_name, get_answer, result_path):
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
                getattr(_course_grader_import_checks(), check_name)(recording)
            except BaseException as error:  # the learner's function stopped the check: SystemExit, the time limit
                record["stopped"] = describe(error)
    try:
        torch.save(record, result_path)
    except Exception as error:  # over the file size limit: keep the reason, drop the answers
        torch.save({**record, "calls": [], "stopped": f"the answers could not be saved ({describe(error)})"},
                   result_path)


def _recorder_source(exercise: Exercise, result_path: Path) -> str:
    """The cell that replaces the instructor's check cell of ``exercise`` in the graded copy."""
    return "\n\n".join([
        f"# Inserted by `course grade`: records the answers of exercise {exercise.exercise_id} for the grader.",
        inspect.getsource(_course_grader_import_checks),
        inspect.getsource(_course_grader_record),
        f"_course_grader_record({exercise.check_name!r}, lambda: ({exercise.answer_expression}), "
        f"{str(result_path)!r})",
        "del _course_grader_import_checks, _course_grader_record",
    ])


# ---------------------------------------------------------------------------
# Running a graded copy in a sandboxed kernel
# ---------------------------------------------------------------------------

# The kernel's first lines: limits are set before any learner code exists.
# An oversized file write then fails with an error instead of killing the kernel (SIGXFSZ).
_KERNEL_LAUNCHER = """\
import sys
memory, file_size = (int(value) for value in sys.argv[1:3])
del sys.argv[1:3]
try:
    import resource, signal
except ImportError:
    resource = None
if resource is not None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from ipykernel.kernelapp import launch_new_instance
launch_new_instance()
"""

_NETWORK_ISOLATION = ["--user", "--map-root-user", "--net"]


def network_isolation_command() -> list[str]:
    """The command prefix that starts a process without network, or [] where this system does not allow it.

    ``unshare`` puts the kernel in a new network namespace, which has no
    interface but a loopback that is down: no connection leaves it, not
    even to localhost. It needs Linux and user namespaces.
    """
    unshare = shutil.which("unshare")
    if not sys.platform.startswith("linux") or unshare is None:
        return []
    try:
        probe = subprocess.run([unshare, *_NETWORK_ISOLATION, "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [unshare, *_NETWORK_ISOLATION] if probe.returncode == 0 else []


def _write_kernelspec(root: Path, limits: SandboxLimits, isolation: list[str]) -> Path:
    """A kernelspec whose command sets the limits, then starts IPython's kernel. Returns its kernels folder."""
    kernels_dir = root / "kernels"
    (kernels_dir / _KERNEL_NAME).mkdir(parents=True)
    argv = [
        *isolation, sys.executable, "-c", _KERNEL_LAUNCHER,
        str(int(limits.memory_mb * 2**20)), str(int(limits.file_size_mb * 2**20)), "-f", "{connection_file}",
        "--HistoryManager.hist_file=:memory:",  # kernels side by side would fight over one history file
    ]
    spec = {
        "argv": argv,
        "display_name": "course grader",
        "language": "python",
        "interrupt_mode": "signal",
        "env": {
            # Two kernels run side by side on a small machine: one thread each keeps them from fighting over cores.
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            # An empty IPython profile: the instructor's startup scripts do not run in the learners' kernels.
            "IPYTHONDIR": str(root / "ipython"),
        },
    }
    (kernels_dir / _KERNEL_NAME / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return kernels_dir


@dataclass
class NotebookRun:
    """What happened when a graded copy ran: errors per cell, timeouts, and where it stopped."""

    errors: dict[int, str] = field(default_factory=dict)
    timed_out_cells: set[int] = field(default_factory=set)
    last_cell_started: int = -1
    notebook_timed_out: bool = False
    kernel_died_at: int | None = None
    grader_failure: str = ""
    seconds: float = 0.0


class _QuietClient(NotebookClient):
    """A notebook client that keeps only the errors cells raise, and drops printed text, displays and widgets.

    The grader never reads what a cell shows (so nothing shown can fake a
    pass), and a learner who prints a flood cannot fill the grader's memory.
    """

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] != "error" or outs:
            return None
        content = msg["content"]
        error = nbformat.v4.new_output(
            "error", ename=str(content.get("ename", ""))[:100],
            evalue=str(content.get("evalue", ""))[:_MAX_ERROR_TEXT], traceback=[],
        )
        outs.append(error)
        return error

    def handle_comm_msg(self, outs, msg, cell_index):
        return None


async def _run_in_kernel(notebook: nbformat.NotebookNode, run_dir: Path, kernels_dir: Path,
                         limits: SandboxLimits, isolated: bool) -> NotebookRun:
    """Execute every cell of ``notebook`` in a fresh sandboxed kernel whose working folder is ``run_dir/work``."""
    work_dir = run_dir / "work"
    work_dir.mkdir(parents=True)
    kernel_manager = AsyncKernelManager(
        kernel_name=_KERNEL_NAME,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)]),
        # Without a network, TCP on localhost is gone too: the kernel talks over Unix sockets in run_dir.
        transport="ipc" if isolated else "tcp",
        connection_file=str(run_dir / "kernel.json"),
    )
    client = _QuietClient(
        notebook, km=kernel_manager, timeout=limits.cell_timeout, interrupt_on_timeout=True,
        allow_errors=True, record_timing=False, resources={"metadata": {"path": str(work_dir)}},
    )
    run = NotebookRun()
    started_at = time.monotonic()

    async def execute_cells() -> None:
        for index, cell in enumerate(notebook.cells):
            run.last_cell_started = index
            cell_started_at = time.monotonic()
            try:
                await client.async_execute_cell(cell, index)
            except DeadKernelError:
                if not run.notebook_timed_out:  # else the deadline killed it
                    run.kernel_died_at = index
                return
            if time.monotonic() - cell_started_at >= limits.cell_timeout:
                run.timed_out_cells.add(index)  # nbclient interrupted it at the limit
            errors = [output for output in cell.outputs if output.output_type == "error"]
            if errors:
                run.errors[index] = f"{errors[0].ename}: {errors[0].evalue}"

    async def kill_at_deadline() -> None:
        # Killing, not interrupting: code that catches KeyboardInterrupt must stop too.
        await asyncio.sleep(limits.notebook_timeout)
        run.notebook_timed_out = True
        await kernel_manager.signal_kernel(signal.SIGKILL)

    try:
        # The kernel's own stdout and stderr would otherwise reach the grader's terminal.
        await client.async_start_new_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await client.async_start_new_kernel_client()
        deadline = asyncio.ensure_future(kill_at_deadline())
        try:
            await execute_cells()
        finally:
            deadline.cancel()
    except Exception as error:  # a kernel that does not start, or a fault of the grader: this notebook only
        run.grader_failure = f"{type(error).__name__}: {error}"
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
        if kernel_manager.has_kernel:
            await kernel_manager.shutdown_kernel(now=True)
    run.seconds = time.monotonic() - started_at
    return run


# ---------------------------------------------------------------------------
# From recorded answers to verdicts, in the grader's process
# ---------------------------------------------------------------------------


class _ReplayStopped(BaseException):
    """The replay cannot go on.

    A BaseException, like SystemExit, so that the check does not count it
    as a failed case of the learner's function and stops instead.
    """


class _CheckStopped(_ReplayStopped):
    """The learner's function stopped the check in the kernel (SystemExit, say): the replay stops there too."""


class _RecordingMismatch(_ReplayStopped):
    """The record does not fit the check: the kernel did not run the check as written, or the file was forged."""


def _stand_in(type_name: str) -> Any:
    """An object of a new, empty class named like the learner's: the check reports "received a <name>"."""
    return type(type_name, (), {})()


def _decode(encoded: Any) -> Any:
    """A value saved by the recorder; anything not shaped like the recorder's output is a _RecordingMismatch."""
    if not isinstance(encoded, tuple) or len(encoded) != 2:
        raise _RecordingMismatch(f"unexpected record {type(encoded).__name__}")
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
    raise _RecordingMismatch(f"unexpected record of kind {kind!r}")


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
                raise _CheckStopped(self._stopped)
            raise _RecordingMismatch("the check called the function more often than it was called in the kernel")
        call = self._calls.pop(0)
        try:
            _restore_inputs(args, kwargs, call["inputs_after"])
            if "raised" in call:
                learner_error = _rebuild_exception(call["raised"])
            else:
                learner_error, returned = None, _decode(call["returned"])
        except (KeyError, TypeError, ValueError, RuntimeError) as problem:  # a record not made by the recorder
            raise _RecordingMismatch(f"{type(problem).__name__}: {problem}") from problem
        if learner_error is not None:
            raise learner_error
        return returned

    def all_used(self) -> bool:
        return not self._calls


def replay_check(exercise: Exercise, record: dict) -> Any:
    """The verdict (a CheckResult) of the grader's own check on the answers recorded in the kernel.

    Raises _CheckStopped where the learner's function stopped the check, and
    _RecordingMismatch where the record does not fit the check.
    """
    if record["callable"]:
        answer = _Replay(record["calls"], str(record["stopped"]), exercise.exercise_id.split(".", 1)[1])
    else:
        answer = _stand_in(str(record["type"]))
    check = getattr(_course_grader_import_checks(), exercise.check_name)
    result = check(answer)
    if isinstance(answer, _Replay) and not answer.all_used():
        raise _RecordingMismatch("the function was called more often in the kernel than by the check")
    return result


def _load_record(path: Path, limits: SandboxLimits) -> dict:
    """The recorder's file, read with torch's safe loader (tensors and plain containers only, no code)."""
    if path.stat().st_size > limits.file_size_mb * 2**20:
        raise _RecordingMismatch("the recorded answers are larger than the file size limit")
    record = torch.load(path, weights_only=True)
    if not isinstance(record, dict) or not {"defined", "type", "callable", "calls", "stopped"} <= set(record):
        raise _RecordingMismatch("the recorded answers are not in the recorder's format")
    return record


def grade_exercise(plan: ExercisePlan, run: NotebookRun | None, learner: str, limits: SandboxLimits) -> GradeRow:
    """The row of one exercise, from the plan of the graded copy and what happened when it ran.

    ``run`` is None when no exercise of the notebook was attempted: then no kernel ran.
    """
    exercise = plan.exercise

    def row(status: str, feedback: str, score: float = 0.0) -> GradeRow:
        return GradeRow(learner, exercise.notebook, exercise.exercise_id, round(score, 2), exercise.max_score,
                        status, feedback)

    function_name = exercise.exercise_id.split(".", 1)[1]
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
        record = _load_record(plan.result_path, limits)
        if not record["defined"]:
            reasons = cell_errors or [f"`{function_name}` is not defined after your exercise cell ran "
                                      f"({record['stopped']})"]
            return row("failed", "\n".join(reasons))
        result = replay_check(exercise, record)
    except _CheckStopped as stop:
        return row("failed", f"Your function stopped the check: {stop}")
    except _RecordingMismatch as mismatch:
        return row("error", f"The check's record does not fit the check ({mismatch}): did code in your notebook "
                            "change how the check runs?")
    except FileNotFoundError:
        return row("error", "The check did not run: code in your notebook stopped it before it could record "
                            f"anything. {' '.join(cell_errors)}".strip())
    except Exception as error:  # whatever the kernel wrote, a bad record costs this exercise only
        return row("error", f"The check's record could not be used: {type(error).__name__}: {error}")
    if result.status == "not implemented":
        return row("not attempted", result.report())
    score = exercise.max_score * result.n_passed / result.n_total if result.n_total else 0.0
    return row(result.status, result.report(), score)


# ---------------------------------------------------------------------------
# A batch
# ---------------------------------------------------------------------------


def grade_submissions(
    submissions_dir: Path,
    solutions_dir: Path = Path("solutions"),
    *,
    limits: SandboxLimits = SandboxLimits(),
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[str], None] | None = None,
) -> GradeReport:
    """Grade every learner folder of ``submissions_dir`` against the course in ``solutions_dir``.

    ``workers`` notebooks run at the same time. ``progress`` is called with
    one line per notebook run. The learners' files are only read.
    """
    started_at = time.monotonic()
    submissions_dir = Path(submissions_dir)
    if not submissions_dir.is_dir():
        raise GradingError(f"submissions_dir: no directory {submissions_dir}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    course = load_course(solutions_dir)
    learner_dirs = sorted(path for path in submissions_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    isolation = network_isolation_command()
    rows: list[GradeRow] = []
    notes: dict[str, list[str]] = {}

    with tempfile.TemporaryDirectory(prefix="course-grade-") as temporary:
        root = Path(temporary)
        kernels_dir = _write_kernelspec(root, limits, isolation)
        jobs = []
        for learner_dir in learner_dirs:
            learner = learner_dir.name
            submissions, error_rows, notes[learner] = find_submissions(learner_dir, course)
            rows.extend(error_rows)
            for name, course_notebook in course.items():
                if name not in submissions:
                    rows.extend(
                        GradeRow(learner, name, exercise.exercise_id, 0.0, exercise.max_score, "missing",
                                 f"None of your notebooks is {name}.ipynb, which holds this exercise.")
                        for exercise in course_notebook.exercises
                    )
                    continue
                results_dir = root / "results" / secrets.token_hex(8)
                results_dir.mkdir(parents=True)
                notebook, plans = build_graded_copy(course_notebook, submissions[name], results_dir)
                jobs.append((submissions[name], notebook, plans, root / "runs" / str(len(jobs))))

        def run(job) -> NotebookRun | None:
            submission, notebook, plans, run_dir = job
            if not any(plan.found and plan.attempted for plan in plans):
                return None  # nothing to check: no kernel needed
            notebook_run = asyncio.run(_run_in_kernel(notebook, run_dir, kernels_dir, limits, bool(isolation)))
            if progress is not None:
                progress(f"ran {submission.learner} / {submission.notebook} in {notebook_run.seconds:.1f} s")
            return notebook_run

        with ThreadPoolExecutor(max_workers=workers) as pool:
            runs = list(pool.map(run, jobs))
        # Verdicts are reached here, one at a time: the grader's checks are imported afresh for each.
        grader_problems = []
        for (submission, _, plans, _), notebook_run in zip(jobs, runs):
            rows.extend(grade_exercise(plan, notebook_run, submission.learner, limits) for plan in plans)
            if notebook_run is not None and notebook_run.grader_failure:
                grader_problems.append(f"{submission.learner} / {submission.notebook}: {notebook_run.grader_failure}")

    rows.sort(key=lambda row: (row.learner, row.notebook, row.exercise))
    return GradeReport(rows, notes, grader_problems, bool(isolation), time.monotonic() - started_at)


# ---------------------------------------------------------------------------
# Reports: the CSV, the feedback files, the summary table
# ---------------------------------------------------------------------------


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
    """A table with one line per learner: total score and how many exercises ended in each status."""
    learners = sorted({row.learner for row in report.rows})
    width = max([len("learner"), *(len(learner) for learner in learners)])
    header = f"{'learner':<{width}}  {'score':>11}  " + "  ".join(status for status in STATUSES)
    lines = [header, "-" * len(header)]
    for learner in learners:
        rows = [row for row in report.rows if row.learner == learner]
        score = f"{sum(row.score for row in rows):g} / {sum(row.max_score for row in rows):g}"
        counts = "  ".join(f"{sum(row.status == status for row in rows):>{len(status)}}" for status in STATUSES)
        lines.append(f"{learner:<{width}}  {score:>11}  {counts}")
    network = "cut off" if report.network_isolated else "NOT cut off (unshare is not available here)"
    lines.append(f"{len(learners)} learners graded in {report.seconds:.1f} s; the kernels' network was {network}.")
    return "\n".join(lines)


def run_grade_command(submissions_dir: Path, *, out: Path, feedback_dir: Path | None, solutions_dir: Path,
                      limits: SandboxLimits, workers: int) -> int:
    """``course grade``: write the CSV (and feedback), print the summary; 1 only when the grader itself failed."""
    try:
        report = grade_submissions(submissions_dir, solutions_dir, limits=limits, workers=workers,
                                   progress=lambda line: print(line, file=sys.stderr))
        write_grades_csv(report.rows, out)
        if feedback_dir is not None:
            write_feedback(report, feedback_dir)
    except (GradingError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_summary(report))
    print(f"grades: {out}" + (f"; feedback: {feedback_dir}/" if feedback_dir is not None else ""))
    for problem in report.grader_problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if report.grader_problems else 0
