"""`course grade`: real learner notebooks, real kernels, and learners who try to break or fool the grader.

One batch of learners is graded once (the `batch` fixture); each test reads
the rows of one learner. Every learner is a scenario: an honest one, a
blank one, one who cheats in a given way, one whose code loops forever...
The course is a copy of the real solutions notebooks 00 and 01. The
learners who attack the grader's files and other learners are in
test_grading_sandbox.py.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib.checks import SUMMARY_MIME_TYPE
from course_lib.tools.cli import main
from course_lib.tools.grading import (
    BUBBLEWRAP, CSV_COLUMNS, NETWORK_NAMESPACE, NO_ISOLATION, Exercise, GradeReport, GradeRow, GradingError,
    Isolation, SandboxLimits, choose_isolation, format_summary, grade_submissions, load_course,
    network_isolation_command, replay_check, write_feedback, write_grades_csv,
)
from course_lib.tools.grading.replay import RecordingMismatch, load_record
from grading_helpers import (
    REPO, RIGHT_SOFTMAX, ZERO_SOFTMAX, Listener, copy_course, exercise_notebook, file_hashes, save, softmax_learner,
    solve,
)

COURSE_NOTEBOOKS = ("00_warmup", "01_attention")
LIMITS = SandboxLimits(cell_timeout=15, notebook_timeout=120, memory_mb=3072)

# Overflows on large scores: passes the small cases, fails the large ones.
NAIVE_SOFTMAX = '''def softmax(x, dim=-1):
    return x.exp() / x.exp().sum(dim=dim, keepdim=True)'''

RIGHT_SCORES = '''def attention_scores(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])'''

RIGHT_ATTENTION = '''def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights'''


# ---------------------------------------------------------------------------
# Writing learner notebooks
# ---------------------------------------------------------------------------


def attention_learner(root: Path, learner: str, scores: str, attention: str) -> None:
    """A learner who submits only notebook 01."""
    answers = {"01.attention_scores": scores, "01.scaled_dot_product_attention": attention}
    save(solve(exercise_notebook("01_attention"), answers), root / learner / "01_attention.ipynb")


def write_batch(root: Path, listener_port: int) -> None:
    """One folder per learner; each folder is one scenario."""
    # Honest, everything solved: both notebooks, file names of their choosing.
    softmax_learner(root, "honest", RIGHT_SOFTMAX, file_name="warmup done.ipynb")
    attention_learner(root, "honest", RIGHT_SCORES, RIGHT_ATTENTION)

    # Received the notebooks and did nothing.
    save(exercise_notebook("00_warmup"), root / "blank" / "00_warmup.ipynb")
    save(exercise_notebook("01_attention"), root / "blank" / "01_attention.ipynb")

    # Edited the cell but left the placeholder's raise in place.
    softmax_learner(root, "still_raising", "def softmax(x, dim=-1):\n    # thinking...\n    raise NotImplementedError()")

    # A real mistake: partial credit and a hint.
    softmax_learner(root, "naive", NAIVE_SOFTMAX)

    # Raises an error of its own.
    softmax_learner(root, "raises", "def softmax(x, dim=-1):\n    raise ValueError('no idea')")

    # Changes its input in place: the right answer, but the check must still see the change.
    softmax_learner(root, "in_place", "def softmax(x, dim=-1):\n    x -= x.amax(dim=dim, keepdim=True)\n"
                                      "    return x.exp() / x.exp().sum(dim=dim, keepdim=True)")

    # Deleted the tagged exercise cell and wrote the function in a new cell without metadata.
    notebook = exercise_notebook("00_warmup")
    notebook.cells = [cell for cell in notebook.cells if cell.metadata.get("course", {}).get("role") != "solution"]
    notebook.cells.insert(5, nbformat.v4.new_code_cell(RIGHT_SOFTMAX))
    save(notebook, root / "untagged" / "softmax.ipynb")

    # Lost the notebook's metadata entirely; the file keeps its course name.
    notebook = solve(exercise_notebook("00_warmup"), {"00.softmax": RIGHT_SOFTMAX})
    notebook.metadata = {}
    save(notebook, root / "no_metadata" / "00_warmup.ipynb")

    # Deleted the first exercise's cells of notebook 01 (and never submitted 00).
    notebook = solve(exercise_notebook("01_attention"), {"01.scaled_dot_product_attention": RIGHT_ATTENTION})
    notebook.cells = [cell for cell in notebook.cells
                      if cell.metadata.get("course", {}).get("exercise") != "01.attention_scores"]
    save(notebook, root / "deleted_cells" / "01_attention.ipynb")

    # A file that is not a notebook at all, next to a good one.
    (root / "malformed").mkdir()
    (root / "malformed" / "01_attention.ipynb").write_text('{"cells": [', encoding="utf-8")
    softmax_learner(root, "malformed", RIGHT_SOFTMAX)

    # Two copies of notebook 00: the blank original is newer, the work is in the copy.
    softmax_learner(root, "two_copies", RIGHT_SOFTMAX, file_name="00_warmup-Copy1.ipynb")
    save(exercise_notebook("00_warmup"), root / "two_copies" / "00_warmup.ipynb")

    # Replaces the checks (and the framework under them) with ones that always pass.
    softmax_learner(root, "patches_checks", ZERO_SOFTMAX + '''

import sys, types
import course_lib.checks
import course_lib.checks.framework as framework
from course_lib.checks.framework import CaseResult, CheckResult

def always_passes(learner_fn, **ignored):
    return CheckResult("00.softmax", "softmax", (CaseResult("everything", passed=True),))

framework.check_function = always_passes
course_lib.checks.check_softmax = always_passes
sys.modules["course_lib.checks.softmax_checks"].check_function = always_passes
sys.modules["course_lib.checks.softmax_checks"].check_softmax = always_passes
fake = types.ModuleType("course_lib.checks")
fake.check_softmax = always_passes
sys.modules["course_lib.checks"] = fake''')

    # Prints and displays what a passing check shows.
    fake_summary = {"exercise": "00.softmax", "function": "softmax", "status": "passed", "n_passed": 10, "n_total": 10}
    softmax_learner(root, "fakes_output", ZERO_SOFTMAX + f"""

from IPython.display import display
print("softmax (exercise 00.softmax): all 10 cases passed.")
print({json.dumps(fake_summary)!r})
display({{{SUMMARY_MIME_TYPE!r}: {fake_summary!r}}}, raw=True)""")

    # Makes torch's comparisons always say "equal".
    softmax_learner(root, "patches_torch", ZERO_SOFTMAX + '''

import torch.testing
torch.isclose = lambda a, b, **kwargs: torch.ones(torch.broadcast_shapes(a.shape, b.shape), dtype=torch.bool)
torch.Tensor.isclose = torch.isclose
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
torch.testing.assert_close = lambda *args, **kwargs: None
torch.Tensor.__eq__ = lambda self, other: torch.ones(self.shape, dtype=torch.bool)
torch.Tensor.all = lambda self, *args, **kwargs: torch.tensor(True)''')

    # Returns objects that claim to equal anything.
    softmax_learner(root, "bool_tricks", '''class Anything:
    shape = property(lambda self: self)
    def __eq__(self, other): return True
    def __bool__(self): return True
    def __getattr__(self, name): return lambda *args, **kwargs: self

def softmax(x, dim=-1):
    return Anything()''')

    # Returns a tensor subclass whose torch functions all answer "close".
    softmax_learner(root, "tensor_subclass", '''class Agreeable(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        result = super().__torch_function__(func, types, args, kwargs or {})
        if func in (torch.isclose, torch.Tensor.isclose, torch.Tensor.eq, torch.Tensor.__eq__):
            return torch.ones(result.shape, dtype=torch.bool)
        return result

def softmax(x, dim=-1):
    return torch.zeros_like(x).as_subclass(Agreeable)''')

    # Loops forever in the first exercise of 01; the second is right and must still be graded.
    attention_learner(root, "endless_loop", "def attention_scores(q, k):\n    while True:\n        pass", RIGHT_ATTENTION)

    # Exits the kernel in the second exercise of 01; the first was checked before.
    attention_learner(root, "exits_kernel", RIGHT_SCORES,
                      "def scaled_dot_product_attention(q, k, v, mask=None):\n    import os\n    os._exit(3)")

    # Leaves the check through SystemExit.
    softmax_learner(root, "sys_exit", "def softmax(x, dim=-1):\n    import sys\n    sys.exit('bye')")

    # Prints a flood (about 40 MB) when the cell runs and when the function is called.
    softmax_learner(root, "flood", RIGHT_SOFTMAX.replace(
        "    shifted", "    print('y' * 100_000)\n    shifted") + "\n\nfor _ in range(400):\n    print('x' * 100_000)")

    # Allocates far more memory than the limit, then would return the right answer.
    softmax_learner(root, "memory_hog", RIGHT_SOFTMAX.replace(
        "    shifted", "    hog = torch.ones(2**30)  # 4 GiB\n    shifted"))

    # Tries to reach a server on this machine from the kernel.
    softmax_learner(root, "network", RIGHT_SOFTMAX + f'''

import socket
try:
    socket.create_connection(("127.0.0.1", {listener_port}), timeout=3).close()
except OSError:
    pass''')


@pytest.fixture(scope="module")
def course_dir(tmp_path_factory) -> Path:
    """The course's solutions notebooks 00 and 01, copied."""
    return copy_course(tmp_path_factory.mktemp("course") / "solutions", COURSE_NOTEBOOKS)


@pytest.fixture(scope="module")
def batch(tmp_path_factory, course_dir):
    """The batch graded once: (report, rows by learner and exercise, hashes before, hashes after, listener)."""
    submissions = tmp_path_factory.mktemp("submissions")
    listener = Listener()
    try:
        write_batch(submissions, listener.port)
        before = file_hashes(submissions)
        report = grade_submissions(submissions, course_dir, limits=LIMITS, workers=2)
        after = file_hashes(submissions)
    finally:
        listener.close()
    rows = {(row.learner, row.exercise): row for row in report.rows}
    return report, rows, before, after, listener


def row(batch, learner: str, exercise: str = "00.softmax") -> GradeRow:
    return batch[1][(learner, exercise)]


# ---------------------------------------------------------------------------
# Honest learners
# ---------------------------------------------------------------------------


def test_a_solved_notebook_gets_every_point(batch):
    for exercise in ("00.softmax", "01.attention_scores", "01.scaled_dot_product_attention"):
        graded = row(batch, "honest", exercise)
        assert (graded.status, graded.score, graded.max_score) == ("passed", 1.0, 1.0), graded.feedback
    assert "all 10 cases passed" in row(batch, "honest").feedback


def test_every_learner_has_one_row_per_exercise_of_the_course(batch):
    report = batch[0]
    learners = {row.learner for row in report.rows}
    exercises = {"00.softmax", "01.attention_scores", "01.scaled_dot_product_attention"}
    for learner in learners:
        graded = {row.exercise for row in report.rows if row.learner == learner and row.exercise}
        assert graded == exercises, learner


def test_an_untouched_notebook_is_not_attempted(batch):
    for exercise in ("00.softmax", "01.attention_scores", "01.scaled_dot_product_attention"):
        assert row(batch, "blank", exercise).status == "not attempted"


def test_a_cell_that_still_raises_not_implemented_is_not_attempted(batch):
    graded = row(batch, "still_raising")
    assert (graded.status, graded.score) == ("not attempted", 0.0)


def test_a_partly_right_function_gets_partial_credit_and_the_checks_hint(batch):
    graded = row(batch, "naive")
    assert graded.status == "failed"
    assert 0 < graded.score < graded.max_score
    assert "hint:" in graded.feedback


def test_a_function_that_raises_fails_with_its_error(batch):
    graded = row(batch, "raises")
    assert (graded.status, graded.score) == ("failed", 0.0)
    assert "ValueError: no idea" in graded.feedback


def test_changing_the_input_in_place_is_seen_as_in_the_learners_notebook(batch):
    graded = row(batch, "in_place")
    assert graded.status == "failed"
    assert "changed its input in place" in graded.feedback


def test_an_exercise_written_in_an_untagged_cell_is_found_by_its_function_name(batch):
    assert row(batch, "untagged").status == "passed"


def test_a_notebook_without_metadata_is_recognised_by_its_file_name(batch):
    assert row(batch, "no_metadata").status == "passed"


def test_deleted_exercise_cells_and_notebooks_are_missing(batch):
    assert row(batch, "deleted_cells", "01.attention_scores").status == "missing"
    assert row(batch, "deleted_cells", "01.scaled_dot_product_attention").status == "passed"
    assert row(batch, "deleted_cells", "00.softmax").status == "missing"  # never submitted


def test_a_malformed_notebook_is_an_error_row_and_the_rest_is_graded(batch):
    report = batch[0]
    errors = [row for row in report.rows if row.learner == "malformed" and row.exercise == ""]
    assert [(row.notebook, row.status) for row in errors] == [("01_attention.ipynb", "error")]
    assert row(batch, "malformed").status == "passed"
    assert row(batch, "malformed", "01.attention_scores").status == "missing"


def test_of_two_copies_the_one_with_work_is_graded(batch):
    assert row(batch, "two_copies").status == "passed"
    assert any("00_warmup.ipynb was not graded" in note for note in batch[0].notes["two_copies"])


# ---------------------------------------------------------------------------
# Learners who try to fool the grader
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("learner", ["patches_checks", "fakes_output", "patches_torch", "bool_tricks",
                                     "tensor_subclass"])
def test_cheating_scores_nothing(batch, learner):
    graded = row(batch, learner)
    assert (graded.status, graded.score) == ("failed", 0.0), graded.feedback


def test_an_object_that_equals_anything_is_reported_by_its_type(batch):
    assert "received a Anything" in row(batch, "bool_tricks").feedback


# ---------------------------------------------------------------------------
# Learners whose code breaks things
# ---------------------------------------------------------------------------


def test_an_endless_loop_times_out_and_the_next_exercise_is_still_graded(batch):
    assert row(batch, "endless_loop", "01.attention_scores").status == "timeout"
    assert row(batch, "endless_loop", "01.scaled_dot_product_attention").status == "passed"


def test_exiting_the_kernel_costs_the_exercises_not_yet_checked(batch):
    assert row(batch, "exits_kernel", "01.attention_scores").status == "passed"
    graded = row(batch, "exits_kernel", "01.scaled_dot_product_attention")
    assert (graded.status, graded.score) == ("error", 0.0)
    assert "kernel stopped" in graded.feedback


def test_sys_exit_in_the_function_fails_the_exercise(batch):
    graded = row(batch, "sys_exit")
    assert (graded.status, graded.score) == ("failed", 0.0)
    assert "SystemExit" in graded.feedback


def test_a_flood_of_output_costs_nothing_but_time(batch):
    assert row(batch, "flood").status == "passed"


def test_memory_beyond_the_limit_fails_the_function(batch):
    graded = row(batch, "memory_hog")
    assert (graded.status, graded.score) == ("failed", 0.0)
    assert "allocate" in graded.feedback.lower() or "memory" in graded.feedback.lower()


@pytest.mark.skipif(choose_isolation().kind == NO_ISOLATION,
                    reason="neither bubblewrap nor unshare with user namespaces is available here")
def test_the_kernel_has_no_network(batch):
    assert batch[0].isolation.kind in (BUBBLEWRAP, NETWORK_NAMESPACE)
    assert batch[4].connections == 0
    assert row(batch, "network").status == "passed"  # the failed connection cost nothing else


def test_the_learners_files_are_never_modified(batch):
    _, _, before, after, _ = batch
    assert before == after


# ---------------------------------------------------------------------------
# Time limits of a whole notebook
# ---------------------------------------------------------------------------


def test_code_that_ignores_interrupts_is_stopped_by_the_notebook_time_limit(tmp_path, course_dir):
    softmax_learner(tmp_path / "submissions", "stubborn", RIGHT_SOFTMAX + '''

while True:
    try:
        while True:
            pass
    except KeyboardInterrupt:
        pass''')
    limits = SandboxLimits(cell_timeout=2, notebook_timeout=15)
    report = grade_submissions(tmp_path / "submissions", course_dir, limits=limits, workers=1)
    graded = {row.exercise: row for row in report.rows}["00.softmax"]
    assert graded.status == "timeout", graded.feedback
    assert "15 s for the notebook" in graded.feedback
    assert report.seconds < 45


# ---------------------------------------------------------------------------
# Reports and the command line
# ---------------------------------------------------------------------------


def test_the_csv_has_one_line_per_row_with_the_documented_columns(batch, tmp_path):
    report = batch[0]
    write_grades_csv(report.rows, tmp_path / "grades.csv")
    with open(tmp_path / "grades.csv", newline="", encoding="utf-8") as file:
        lines = list(csv.reader(file))
    assert tuple(lines[0]) == CSV_COLUMNS
    assert len(lines) == len(report.rows) + 1
    assert ["honest", "00_warmup", "00.softmax", "1", "1", "passed"] in lines


def test_feedback_has_one_markdown_file_per_learner_with_each_checks_report(batch, tmp_path):
    report = batch[0]
    written = write_feedback(report, tmp_path / "feedback")
    assert {path.stem for path in written} == {row.learner for row in report.rows}
    text = (tmp_path / "feedback" / "naive.md").read_text(encoding="utf-8")
    assert text.startswith("# Feedback for naive")
    assert "| 00_warmup | 00.softmax |" in text and "hint:" in text


def test_the_summary_has_one_line_per_learner():
    report = GradeReport(
        rows=[GradeRow("ada", "00_warmup", "00.softmax", 1.0, 1.0, "passed"),
              GradeRow("ada", "01_attention", "01.attention_scores", 0.0, 1.0, "timeout")],
        notes={}, grader_problems=[], isolation=Isolation(BUBBLEWRAP), seconds=1.0,
    )
    lines = format_summary(report).splitlines()
    assert lines[0].split()[:2] == ["learner", "score"]
    assert lines[2].split()[:4] == ["ada", "1", "/", "2"]
    assert lines[-1].startswith("isolation: bubblewrap: ")


def test_the_summary_says_what_a_fallback_leaves_open():
    fallback = Isolation(NETWORK_NAMESPACE, "bwrap is not installed")
    report = GradeReport(rows=[], notes={}, grader_problems=[], isolation=fallback, seconds=1.0)
    last_line = format_summary(report).splitlines()[-1]
    assert "network namespace only" in last_line and "every file the grader can" in last_line
    assert "bwrap is not installed" in last_line and "apt-get install bubblewrap" in last_line


def test_the_command_writes_csv_and_feedback(tmp_path, course_dir, capsys):
    softmax_learner(tmp_path / "submissions", "ada", RIGHT_SOFTMAX)
    code = main(["grade", str(tmp_path / "submissions"), "--out", str(tmp_path / "grades.csv"),
                 "--feedback", str(tmp_path / "feedback"), "--solutions", str(course_dir), "--timeout", "30"])
    assert code == 0
    assert "ada" in capsys.readouterr().out
    assert (tmp_path / "feedback" / "ada.md").exists()
    assert "ada,00_warmup,00.softmax,1,1,passed" in (tmp_path / "grades.csv").read_text(encoding="utf-8")


def test_the_command_fails_only_when_the_grader_cannot_work(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nowhere"), "--solutions", str(REPO / "solutions")]) == 1
    assert "submissions_dir: no directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["grade", str(tmp_path / "empty"), "--solutions", str(tmp_path / "nothing")]) == 1
    assert "solutions_dir" in capsys.readouterr().err


def test_a_kernel_that_cannot_start_is_a_failure_of_the_grader(tmp_path, course_dir, capsys):
    softmax_learner(tmp_path / "submissions", "ada", RIGHT_SOFTMAX)
    code = main(["grade", str(tmp_path / "submissions"), "--out", str(tmp_path / "grades.csv"),
                 "--solutions", str(course_dir), "--memory", "20"])  # too little for Python itself
    assert code == 1
    assert "ada / 00_warmup" in capsys.readouterr().err
    assert "ada,00_warmup,00.softmax,0,1,error" in (tmp_path / "grades.csv").read_text(encoding="utf-8")


@pytest.mark.parametrize("option", ["--timeout", "--notebook-timeout", "--memory"])
def test_limits_must_be_positive_numbers(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["grade", str(tmp_path), option, "-5"])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


def test_sandbox_limits_name_the_bad_argument():
    with pytest.raises(ValueError, match="cell_timeout"):
        SandboxLimits(cell_timeout=0)


# ---------------------------------------------------------------------------
# The course and the replay, without kernels
# ---------------------------------------------------------------------------


def test_the_course_lists_every_exercise_with_its_check(course_dir):
    course = load_course(course_dir)
    assert sorted(course) == list(COURSE_NOTEBOOKS)
    softmax = course["00_warmup"].exercises[0]
    assert (softmax.exercise_id, softmax.check_name, softmax.answer_expression) == (
        "00.softmax", "check_softmax", "softmax")


def test_a_course_without_solutions_is_a_grading_error(tmp_path):
    with pytest.raises(GradingError, match="solutions_dir"):
        load_course(tmp_path)


def replay_record(calls, stopped="", callable_=True):
    return {"defined": True, "type": "function", "callable": callable_, "calls": calls, "stopped": stopped}


def test_a_record_that_does_not_fit_the_check_is_never_a_pass():
    softmax = Exercise("00.softmax", "00_warmup", 1.0, "check_softmax", "softmax")
    with pytest.raises(RecordingMismatch):  # no calls recorded, and nothing stopped the check
        replay_check(softmax, replay_record([]))
    forged = {"returned": ("tensor", "all cases passed"), "inputs_after": {"args": [], "kwargs": {}}}
    with pytest.raises(RecordingMismatch):
        replay_check(softmax, replay_record([forged] * 9))


def test_the_grader_reads_no_record_through_a_link_or_from_a_pipe(tmp_path):
    """The kernel owns its results folder: it may leave links to other files, or a pipe that never ends."""
    results = tmp_path / "results"
    results.mkdir()
    secret = tmp_path / "another learner's file"
    torch.save({"defined": True, "type": "", "callable": False, "calls": [], "stopped": ""}, secret)
    (results / "link.pt").symlink_to(secret)
    with pytest.raises(OSError):
        load_record(results / "link.pt", SandboxLimits())
    os.mkfifo(results / "pipe.pt")
    with pytest.raises(RecordingMismatch, match="not a regular file"):
        load_record(results / "pipe.pt", SandboxLimits())  # returns at once instead of waiting for a writer
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "swapped").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(RecordingMismatch, match="link"):
        load_record(tmp_path / "swapped" / "record.pt", SandboxLimits())


def test_replayed_answers_reach_the_same_verdict_as_the_check():
    softmax = Exercise("00.softmax", "00_warmup", 1.0, "check_softmax", "softmax")
    calls = []

    def record(x, dim=-1):  # what the recorder saves for the right softmax
        answer = torch.softmax(x, dim=dim)
        calls.append({"returned": ("tensor", answer), "inputs_after": {"args": [("tensor", x.clone())], "kwargs": {}}})
        return answer

    from course_lib.checks import check_softmax

    assert check_softmax(record)
    assert replay_check(softmax, replay_record(calls)).status == "passed"
    not_callable = {"defined": True, "type": "int", "callable": False, "calls": [], "stopped": ""}
    verdict = replay_check(softmax, not_callable)
    assert verdict.status == "failed" and "a int was given" in verdict.report()


def test_the_grader_runs_without_network_isolation_when_unshare_is_missing(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert network_isolation_command() == []
    isolation = choose_isolation()
    assert (isolation.kind, isolation.shortfall) == (NO_ISOLATION, "bwrap is not installed")
