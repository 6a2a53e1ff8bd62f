"""What a re-run may keep: ``course grade --resume``.

Every run writes, beside its CSV, a record of what it graded: for each
learner and notebook it ran, a *fingerprint* and the rows (feedback
included). The fingerprint is a SHA-256 of everything the verdicts depend on:

- the learner's file that was graded (its path in the learner's folder and its bytes),
- the instructor's solutions notebook (its bytes),
- the ``course_lib`` package (every file: the checks, the grader, the models, the checkpoints),
- the limits (time, memory, file size) and the kind of sandbox.

``--resume`` keeps a learner's rows for a notebook when its fingerprint is
the same as last time, and grades it again otherwise. Rows ending in
``timeout`` or ``error`` are always graded again: a busy machine or a kernel
that failed to start may have caused them, not the learner.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import course_lib
from course_lib.tools.grading.course import CourseNotebook, GradingError
from course_lib.tools.grading.report import GradeRow
from course_lib.tools.grading.sandbox import Isolation, SandboxLimits

RECORD_FORMAT = 1
_REGRADED_STATUSES = ("timeout", "error")


@dataclass(frozen=True)
class GradedNotebook:
    """One learner's notebook as a run graded it: the fingerprint of what went in, and the rows that came out."""

    fingerprint: str
    rows: tuple[GradeRow, ...]

    @property
    def reusable(self) -> bool:
        return not any(row.status in _REGRADED_STATUSES for row in self.rows)


def record_path(grades_csv: Path) -> Path:
    """Where the record of the run that writes ``grades_csv`` goes: ``grades.csv`` -> ``grades.resume.json``."""
    grades_csv = Path(grades_csv)
    return grades_csv.with_name(f"{grades_csv.stem}.resume.json")


def grading_context(limits: SandboxLimits, isolation: Isolation) -> str:
    """A hash of what every verdict of a run depends on besides the notebooks: the package, the limits, the sandbox."""
    package = Path(course_lib.__file__).parent
    files = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files.update(str(path.relative_to(package)).encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    context = {"package": files.hexdigest(), "limits": asdict(limits), "isolation": isolation.kind}
    return hashlib.sha256(json.dumps(context, sort_keys=True).encode("utf-8")).hexdigest()


def fingerprint(context: str, course_notebook: CourseNotebook, learner_dir: Path, submission_path: Path) -> str:
    """The fingerprint of grading the file at ``submission_path`` against ``course_notebook`` in ``context``."""
    digest = hashlib.sha256()
    for part in (context, course_notebook.file_sha256, str(Path(submission_path).relative_to(learner_dir))):
        digest.update(part.encode("utf-8") + b"\0")
    digest.update(Path(submission_path).read_bytes())
    return digest.hexdigest()


def write_record(graded: dict[tuple[str, str], GradedNotebook], path: Path) -> None:
    """Save ``graded`` (by learner and notebook) as JSON at ``path``."""
    learners: dict[str, dict] = {}
    for (learner, notebook), item in sorted(graded.items()):
        learners.setdefault(learner, {})[notebook] = {
            "fingerprint": item.fingerprint,
            "rows": [[row.exercise, row.score, row.max_score, row.status, row.feedback] for row in item.rows],
        }
    text = json.dumps({"format": RECORD_FORMAT, "learners": learners}, indent=1, sort_keys=True, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def read_record(path: Path) -> dict[tuple[str, str], GradedNotebook]:
    """What the run that wrote ``path`` graded; {} when there is no such file (nothing to resume from yet)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {RECORD_FORMAT}")
        return {
            (learner, notebook): GradedNotebook(item["fingerprint"], tuple(
                GradeRow(learner, notebook, exercise, float(score), float(max_score), status, feedback)
                for exercise, score, max_score, status, feedback in item["rows"]
            ))
            for learner, notebooks in data["learners"].items()
            for notebook, item in notebooks.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise GradingError(f"resume (--resume): {path} is not a record written by `course grade` ({error}); "
                           "delete it to grade everything again") from error
