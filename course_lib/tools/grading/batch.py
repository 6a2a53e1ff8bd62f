"""A batch: every learner folder of a submissions folder, graded against the course, and ``course grade``."""
from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from course_lib.tools.grading.course import GradingError, load_course
from course_lib.tools.grading.kernel_run import KernelRun, check_socket_paths, run_in_kernel
from course_lib.tools.grading.replay import grade_exercise
from course_lib.tools.grading.report import GradeReport, GradeRow, format_summary, write_feedback, write_grades_csv
from course_lib.tools.grading.sandbox import (
    BUBBLEWRAP, INSTALL_BUBBLEWRAP, SandboxLimits, choose_isolation, exposing_path,
)
from course_lib.tools.grading.submissions import build_graded_copy, find_submissions

DEFAULT_WORKERS = 2


def grade_submissions(
    submissions_dir: Path,
    solutions_dir: Path = Path("solutions"),
    *,
    limits: SandboxLimits = SandboxLimits(),
    workers: int = DEFAULT_WORKERS,
    require_sandbox: bool = False,
    progress: Callable[[str], None] | None = None,
) -> GradeReport:
    """Grade every learner folder of ``submissions_dir`` against the course in ``solutions_dir``.

    ``workers`` notebooks run at the same time. ``require_sandbox`` refuses
    to grade (GradingError) where bubblewrap cannot isolate the kernels.
    ``progress`` is called with one line per notebook run. The learners'
    files are only read.
    """
    started_at = time.monotonic()
    submissions_dir = Path(submissions_dir)
    if not submissions_dir.is_dir():
        raise GradingError(f"submissions_dir: no directory {submissions_dir}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    course = load_course(solutions_dir)
    isolation = choose_isolation()
    if require_sandbox and isolation.kind != BUBBLEWRAP:
        raise GradingError(f"require_sandbox (--require-sandbox) needs bubblewrap, but {isolation.shortfall}; "
                           f"install it ({INSTALL_BUBBLEWRAP}), or grade without --require-sandbox")
    if isolation.kind == BUBBLEWRAP and (exposed := exposing_path(submissions_dir)) is not None:
        raise GradingError(f"submissions_dir: {submissions_dir} lies inside {exposed}, which every learner's kernel "
                           "can read; move the submissions out of it")
    learner_dirs = sorted(path for path in submissions_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    rows: list[GradeRow] = []
    notes: dict[str, list[str]] = {}

    with tempfile.TemporaryDirectory(prefix="course-grade-") as temporary:
        check_socket_paths(Path(temporary) / "runs" / str(len(learner_dirs) * len(course)), isolation)
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
                # The kernel's scratch folder: the only one it can write to, under bubblewrap the only one it sees.
                run_dir = Path(temporary) / "runs" / str(len(jobs))
                (run_dir / "results").mkdir(parents=True)
                notebook, plans = build_graded_copy(course_notebook, submissions[name], run_dir / "results")
                jobs.append((submissions[name], notebook, plans, run_dir))

        def run(job) -> KernelRun | None:
            submission, notebook, plans, run_dir = job
            if not any(plan.found and plan.attempted for plan in plans):
                return None  # nothing to check: no kernel needed
            kernel_run = run_in_kernel(notebook, run_dir, limits, isolation)
            if progress is not None:
                progress(f"ran {submission.learner} / {submission.notebook} in {kernel_run.seconds:.1f} s")
            return kernel_run

        with ThreadPoolExecutor(max_workers=workers) as pool:
            runs = list(pool.map(run, jobs))
        # Verdicts are reached here, one at a time: the grader's checks are imported afresh for each.
        grader_problems = []
        for (submission, _, plans, _), kernel_run in zip(jobs, runs):
            rows.extend(grade_exercise(plan, kernel_run, submission.learner, limits) for plan in plans)
            if kernel_run is not None and kernel_run.grader_failure:
                grader_problems.append(f"{submission.learner} / {submission.notebook}: {kernel_run.grader_failure}")

    rows.sort(key=lambda row: (row.learner, row.notebook, row.exercise))
    return GradeReport(rows, notes, grader_problems, isolation, time.monotonic() - started_at)


def run_grade_command(submissions_dir: Path, *, out: Path, feedback_dir: Path | None, solutions_dir: Path,
                      limits: SandboxLimits, workers: int, require_sandbox: bool = False) -> int:
    """``course grade``: write the CSV (and feedback), print the summary; 1 only when the grader itself failed."""
    try:
        report = grade_submissions(submissions_dir, solutions_dir, limits=limits, workers=workers,
                                   require_sandbox=require_sandbox, progress=lambda line: print(line, file=sys.stderr))
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
