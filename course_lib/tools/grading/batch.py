"""A batch: every learner folder of a submissions folder, graded against the course, and ``course grade``."""
from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat

from course_lib.tools.grading.course import CourseNotebook, GradingError, load_course, select_notebooks
from course_lib.tools.grading.gradebook import write_gradebook
from course_lib.tools.grading.kernel_run import KernelRun, check_socket_paths, run_in_kernel
from course_lib.tools.grading.replay import grade_exercise
from course_lib.tools.grading.report import GradeReport, GradeRow, format_summary, write_feedback, write_grades_csv
from course_lib.tools.grading.resume import (
    GradedNotebook, fingerprint, grading_context, read_record, record_path, write_record,
)
from course_lib.tools.grading.sandbox import (
    BUBBLEWRAP, INSTALL_BUBBLEWRAP, SandboxLimits, choose_isolation, exposing_path,
)
from course_lib.tools.grading.shards import Shard
from course_lib.tools.grading.submissions import ExercisePlan, Submission, build_graded_copy, find_submissions

DEFAULT_WORKERS = 2


@dataclass(frozen=True)
class _Job:
    """One learner's notebook to run in a kernel: the graded copy, its plan, its scratch folder, its fingerprint."""

    submission: Submission
    notebook: nbformat.NotebookNode
    plans: list[ExercisePlan]
    run_dir: Path
    fingerprint: str


def grade_submissions(
    submissions_dir: Path,
    solutions_dir: Path = Path("solutions"),
    *,
    limits: SandboxLimits = SandboxLimits(),
    workers: int = DEFAULT_WORKERS,
    require_sandbox: bool = False,
    progress: Callable[[str], None] | None = None,
    notebooks: list[str] | None = None,
    shard: Shard | None = None,
    previous: dict[tuple[str, str], GradedNotebook] | None = None,
) -> GradeReport:
    """Grade every learner folder of ``submissions_dir`` against the course in ``solutions_dir``.

    ``workers`` notebooks run at the same time. ``require_sandbox`` refuses
    to grade (GradingError) where bubblewrap cannot isolate the kernels.
    ``progress`` is called with one line per notebook run. ``notebooks``
    grades only the notebooks it names (by number or name), ``shard`` only
    the learners of that shard. ``previous`` is what an earlier run graded
    (``resume.read_record``): a learner's notebook whose fingerprint did not
    change keeps its rows without running again. The learners' files are only read.
    """
    started_at = time.monotonic()
    submissions_dir = Path(submissions_dir)
    if not submissions_dir.is_dir():
        raise GradingError(f"submissions_dir: no directory {submissions_dir}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if shard is not None and not isinstance(shard, Shard):
        raise TypeError(f"shard must be a Shard or None, got {type(shard).__name__}")
    whole_course = load_course(solutions_dir)
    course = select_notebooks(whole_course, notebooks)
    isolation = choose_isolation()
    if require_sandbox and isolation.kind != BUBBLEWRAP:
        raise GradingError(f"require_sandbox (--require-sandbox) needs bubblewrap, but {isolation.shortfall}; "
                           f"install it ({INSTALL_BUBBLEWRAP}), or grade without --require-sandbox")
    if isolation.kind == BUBBLEWRAP and (exposed := exposing_path(submissions_dir)) is not None:
        raise GradingError(f"submissions_dir: {submissions_dir} lies inside {exposed}, which every learner's kernel "
                           "can read; move the submissions out of it")
    learner_dirs = sorted(path for path in submissions_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    learner_dirs = [path for path in learner_dirs if shard is None or shard.holds(path.name)]
    context = grading_context(limits, isolation)
    previous = previous or {}
    rows: list[GradeRow] = []
    notes: dict[str, list[str]] = {}
    graded: dict[tuple[str, str], GradedNotebook] = {}

    with tempfile.TemporaryDirectory(prefix="course-grade-") as temporary:
        check_socket_paths(Path(temporary) / "runs" / str(len(learner_dirs) * len(course)), isolation)
        jobs = []
        for learner_dir in learner_dirs:
            learner = learner_dir.name
            # Recognised against the whole course, so a notebook left out by --notebooks is not called foreign.
            submissions, unreadable_rows, notes[learner] = find_submissions(learner_dir, whole_course)
            rows.extend(_unreadable_rows_of(course, unreadable_rows, notes[learner]) if notebooks else unreadable_rows)
            for name, course_notebook in course.items():
                if name not in submissions:
                    rows.extend(_missing_rows(learner, course_notebook))
                    continue
                submission = submissions[name]
                submission_print = fingerprint(context, course_notebook, learner_dir, submission.path)
                kept = previous.get((learner, name))
                if kept is not None and kept.fingerprint == submission_print and kept.reusable:
                    rows.extend(kept.rows)
                    graded[(learner, name)] = kept
                    continue
                # The kernel's scratch folder: the only one it can write to, under bubblewrap the only one it sees.
                run_dir = Path(temporary) / "runs" / str(len(jobs))
                (run_dir / "results").mkdir(parents=True)
                notebook, plans = build_graded_copy(course_notebook, submission, run_dir / "results")
                jobs.append(_Job(submission, notebook, plans, run_dir, submission_print))

        def run(job: _Job) -> KernelRun | None:
            if not any(plan.found and plan.attempted for plan in job.plans):
                return None  # nothing to check: no kernel needed
            kernel_run = run_in_kernel(job.notebook, job.run_dir, limits, isolation)
            if progress is not None:
                progress(f"ran {job.submission.learner} / {job.submission.notebook} in {kernel_run.seconds:.1f} s")
            return kernel_run

        with ThreadPoolExecutor(max_workers=workers) as pool:
            runs = list(pool.map(run, jobs))
        # Verdicts are reached here, one at a time: the grader's checks are imported afresh for each.
        grader_problems = []
        for job, kernel_run in zip(jobs, runs):
            learner, name = job.submission.learner, job.submission.notebook
            job_rows = tuple(grade_exercise(plan, kernel_run, learner, limits) for plan in job.plans)
            rows.extend(job_rows)
            graded[(learner, name)] = GradedNotebook(job.fingerprint, job_rows)
            if kernel_run is not None and kernel_run.grader_failure:
                grader_problems.append(f"{learner} / {name}: {kernel_run.grader_failure}")

    rows.sort(key=lambda row: (row.learner, row.notebook, row.exercise))
    return GradeReport(rows, notes, grader_problems, isolation, time.monotonic() - started_at,
                       graded=graded, kept=len(graded) - len(jobs))


def _missing_rows(learner: str, course_notebook: CourseNotebook) -> list[GradeRow]:
    return [GradeRow(learner, course_notebook.name, exercise.exercise_id, 0.0, exercise.max_score, "missing",
                     f"None of your notebooks is {course_notebook.name}.ipynb, which holds this exercise.")
            for exercise in course_notebook.exercises]


def _unreadable_rows_of(course: dict[str, CourseNotebook], unreadable_rows: list[GradeRow],
                        notes: list[str]) -> list[GradeRow]:
    """The rows of unreadable files that a run of only the notebooks of ``course`` reports; the others become notes.

    A file belongs to the notebooks its name starts with ("01_attention-Copy1.ipynb"
    to notebook 01): so runs of different notebooks never report the same file twice.
    """
    numbers = {name.split("_", 1)[0] + "_" for name in course}
    kept = []
    for row in unreadable_rows:
        if Path(row.notebook).name[:3] in numbers:
            kept.append(row)
        else:
            notes.append(f"{row.notebook} was not graded. {row.feedback}")
    return kept


def run_grade_command(submissions_dir: Path, *, out: Path, feedback_dir: Path | None, solutions_dir: Path,
                      limits: SandboxLimits, workers: int, require_sandbox: bool = False,
                      notebooks: list[str] | None = None, shard: Shard | None = None, resume: bool = False,
                      gradebook: Path | None = None) -> int:
    """``course grade``: write the CSV, the record for --resume (and feedback, gradebook), print the summary.

    Returns 1 only when the grader itself failed.
    """
    record = record_path(out)
    try:
        previous = read_record(record) if resume else {}
        report = grade_submissions(submissions_dir, solutions_dir, limits=limits, workers=workers,
                                   require_sandbox=require_sandbox, progress=lambda line: print(line, file=sys.stderr),
                                   notebooks=notebooks, shard=shard, previous=previous)
        write_grades_csv(report.rows, out)
        write_record(report.graded, record)
        if gradebook is not None:
            write_gradebook(report.rows, gradebook)
        if feedback_dir is not None:
            write_feedback(report, feedback_dir)
    except (GradingError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_summary(report))
    if shard is not None:
        print(f"shard {shard}: the learners whose name falls in it (merge the shards with `course gradebook`).")
    if resume:
        print(f"kept {report.kept} notebooks unchanged since the last run ({record}); "
              f"graded {len(report.graded) - report.kept}.")
    outputs = [f"grades: {out}", f"record for --resume: {record}"]
    outputs += [f"gradebook: {gradebook}"] if gradebook is not None else []
    outputs += [f"feedback: {feedback_dir}/"] if feedback_dir is not None else []
    print("; ".join(outputs))
    for problem in report.grader_problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if report.grader_problems else 0
