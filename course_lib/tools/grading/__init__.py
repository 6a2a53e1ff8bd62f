"""``course grade``: grade every learner's exercise notebooks in one batch.

The submissions folder holds one folder per learner, with that learner's
exercise notebooks under any file names. For each one the grader builds a
*graded copy* (the instructor's solutions notebook with the learner's
exercise cells in it, and a recorder where each check cell was), runs it in
a fresh kernel in a sandbox, and reaches the verdicts in its own process by
replaying what the learner's functions returned.

    course       what is graded: the exercises of the solutions notebooks
    submissions  which learner file is which notebook; the graded copy
    recorder     the code that records the learner's answers in the kernel
    sandbox      limits, bubblewrap and its fallbacks, the kernel spec
    kernel_run   running a graded copy in a kernel
    replay       verdicts from the recorded answers, one row per exercise
    report       the rows, the CSV, the feedback files, the summary
    shards       the split of a class into N parts (``--shard i/N``)
    resume       what a re-run keeps (``--resume``): fingerprints and the record
    gradebook    reports merged (``course gradebook``), one row per learner
    batch        a whole class, and the ``course grade`` command

Statuses (GRADE_STATUSES): ``passed``, ``failed`` (partial credit: the
share of the check's cases that passed), ``not attempted`` (the exercise
cell is unchanged or still raises NotImplementedError), ``missing`` (no
notebook or no cell of the learner holds the exercise), ``timeout``, and
``error`` (the kernel stopped, or a notebook could not be read).
"""
from course_lib.tools.grading.batch import DEFAULT_WORKERS, grade_submissions, run_grade_command
from course_lib.tools.grading.course import CourseNotebook, Exercise, GradingError, load_course, select_notebooks
from course_lib.tools.grading.gradebook import (
    GradebookError, gradebook_table, merge_grade_reports, read_grades_csv, write_gradebook,
)
from course_lib.tools.grading.replay import grade_exercise, replay_check
from course_lib.tools.grading.report import (
    CSV_COLUMNS, GRADE_STATUSES, GradeReport, GradeRow, format_summary, write_feedback, write_grades_csv,
)
from course_lib.tools.grading.sandbox import (
    BUBBLEWRAP, ISOLATION_KINDS, NETWORK_NAMESPACE, NO_ISOLATION, Isolation, SandboxLimits, bubblewrap_problem,
    choose_isolation, network_isolation_command,
)
from course_lib.tools.grading.resume import GradedNotebook, read_record, record_path
from course_lib.tools.grading.shards import Shard, shard_of

__all__ = [
    "DEFAULT_WORKERS", "grade_submissions", "run_grade_command",
    "CourseNotebook", "Exercise", "GradingError", "load_course", "select_notebooks",
    "GradebookError", "gradebook_table", "merge_grade_reports", "read_grades_csv", "write_gradebook",
    "GradedNotebook", "read_record", "record_path", "Shard", "shard_of",
    "grade_exercise", "replay_check",
    "CSV_COLUMNS", "GRADE_STATUSES", "GradeReport", "GradeRow", "format_summary", "write_feedback", "write_grades_csv",
    "BUBBLEWRAP", "ISOLATION_KINDS", "NETWORK_NAMESPACE", "NO_ISOLATION", "Isolation", "SandboxLimits",
    "bubblewrap_problem", "choose_isolation", "network_isolation_command",
]
