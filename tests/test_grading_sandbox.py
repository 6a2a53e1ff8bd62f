"""The grader's sandbox against hostile learners: bubblewrap keeps each kernel to its own scratch folder.

One class is graded once (the `hostile` fixture), one learner after the
other, the victim first. Every other learner attacks what an instructor's
folder layout makes easy to guess: the victim's submission, the grader's
temporary folder, the grades folder, the course. Each attack is written so
that it would succeed without the sandbox (the fallback isolation); under
bubblewrap none has any effect.

These tests need bubblewrap; where it cannot run they are skipped, unless
the environment variable CI is set: there they fail.
"""
from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from pathlib import Path

import pytest

import course_lib
from course_lib.tools.cli import main
from course_lib.tools.grading import (
    BUBBLEWRAP, GradingError, Isolation, SandboxLimits, bubblewrap_problem, grade_submissions, write_feedback,
    write_grades_csv,
)
from course_lib.tools.grading.sandbox import bubblewrap_command, exposing_path
from grading_helpers import REPO, RIGHT_SOFTMAX, Listener, copy_course, file_hashes, softmax_learner

LIMITS = SandboxLimits(cell_timeout=30, notebook_timeout=120, memory_mb=3072)
VICTIM_MARK = "# ada's own softmax, mark 7f3a9c"
CANARY = "COURSE_GRADER_CANARY"
PACKAGE_FILE = Path(course_lib.__file__).resolve().parent / "checks" / "softmax_checks.py"


@pytest.fixture(scope="module")
def bubblewrap():
    """Skip (or, under CI, fail) where bubblewrap cannot sandbox a kernel."""
    problem = bubblewrap_problem()
    if problem is not None:
        message = f"bubblewrap cannot sandbox kernels here ({problem}); install it: apt-get install bubblewrap"
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the sandbox: {message}")
        pytest.skip(message)


def write_class(root: Path, paths: dict[str, Path], listener_port: int) -> None:
    """The victim and the attackers; ``paths`` are the places an attacker guesses from the folder layout."""
    submissions, grades, grader_tmp = paths["submissions"], paths["grades"], paths["grader_tmp"]
    victim_file = submissions / "ada" / "00_warmup.ipynb"

    # The victim: honest, right, and first in line.
    softmax_learner(submissions, "ada", RIGHT_SOFTMAX.replace("    shifted", f"    {VICTIM_MARK}\n    shifted", 1),
                    file_name=victim_file.name)

    # Writes over every file it can guess: the victim's submission, everything under the grader's temporary
    # folder (where the graded copies, the kernels' files and the recorded answers of the others are),
    # and the course's solutions.
    softmax_learner(submissions, "vandal", RIGHT_SOFTMAX + f'''

import glob, os
targets = [{str(victim_file)!r}, *glob.glob({str(paths["course"])!r} + "/*")]
targets += glob.glob({str(grader_tmp)!r} + "/**", recursive=True)
for target in targets:
    try:
        if os.path.isfile(target) and not os.path.islink(target):
            with open(target, "w") as file:
                file.write("vandalised")
    except OSError:
        pass''')

    # Reads the victim's notebook and hands in the victim's softmax as its own.
    softmax_learner(submissions, "copier", f'''def softmax(x, dim=-1):
    import json
    with open({str(victim_file)!r}) as file:
        cells = json.load(file)["cells"]
    source = next("".join(cell["source"]) for cell in cells if "def softmax" in "".join(cell["source"]))
    namespace = {{"torch": torch}}
    exec(source, namespace)
    return namespace["softmax"](x, dim=dim)''')

    # Drops files beside the grades, into the feedback, into the submissions (a learner of its own
    # making, a notebook in the victim's folder), and gives itself points in yesterday's grades.
    planted = [grades / "planted.txt", grades / "feedback" / "planted.md",
               submissions / "zz_planted" / "00_warmup.ipynb", submissions / "ada" / "planted.ipynb"]
    softmax_learner(submissions, "planter", RIGHT_SOFTMAX + f'''

import os
for target in {[str(path) for path in planted]!r}:
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as file:
            file.write("planted")
    except OSError:
        pass
try:
    with open({str(grades / "grades-day1.csv")!r}, "a") as file:
        file.write("planter,00_warmup,00.softmax,1,1,passed\\n")
except OSError:
    pass''')

    # Reports, through its error message (which reaches its own feedback), what it can see.
    softmax_learner(submissions, "spy", f'''def softmax(x, dim=-1):
    import json, os, socket
    seen = {{"processes": len([name for name in os.listdir("/proc") if name.isdigit()]),
            "canary": {CANARY!r} in os.environ,
            "package_writable": os.access({str(PACKAGE_FILE)!r}, os.W_OK),
            "repository_visible": os.path.exists({str(REPO / "pyproject.toml")!r}),
            "submissions_visible": os.path.exists({str(submissions)!r})}}
    try:
        socket.create_connection(("127.0.0.1", {listener_port}), timeout=2).close()
        seen["network"] = "connected"
    except OSError as error:
        seen["network"] = type(error).__name__
    raise ValueError("SPY " + json.dumps(seen))''')


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, bubblewrap):
    """The class graded once under --require-sandbox, with everything a test compares before and after."""
    root = tmp_path_factory.mktemp("hostile")
    paths = {"course": root / "solutions", "submissions": root / "submissions", "grades": root / "grades",
             "grader_tmp": root / "grader_tmp"}
    copy_course(paths["course"], ("00_warmup",))
    (paths["grades"] / "feedback").mkdir(parents=True)
    (paths["grades"] / "grades-day1.csv").write_text("learner,notebook,exercise,score,max_score,status\n")
    paths["grader_tmp"].mkdir()
    listener = Listener()
    try:
        write_class(root, paths, listener.port)
        before = {name: file_hashes(paths[name]) for name in ("submissions", "grades", "course")}
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tempfile, "tempdir", str(paths["grader_tmp"]))  # where the vandal looks for the others
            patch.setenv(CANARY, "a secret of the instructor's")
            report = grade_submissions(paths["submissions"], paths["course"], limits=LIMITS, workers=1,
                                       require_sandbox=True)
        after = {name: file_hashes(paths[name]) for name in ("submissions", "grades", "course")}
    finally:
        listener.close()
    write_grades_csv(report.rows, paths["grades"] / "grades.csv")
    write_feedback(report, paths["grades"] / "feedback")
    rows = {row.learner: row for row in report.rows if row.exercise == "00.softmax"}
    return {"report": report, "rows": rows, "before": before, "after": after, "paths": paths, "listener": listener}


@pytest.mark.slow
def test_the_class_was_graded_under_bubblewrap(hostile):
    assert hostile["report"].isolation.kind == BUBBLEWRAP
    assert hostile["report"].grader_problems == []


@pytest.mark.slow
def test_the_vandal_changes_nothing_and_the_victim_keeps_full_marks(hostile):
    victim = hostile["rows"]["ada"]
    assert (victim.status, victim.score) == ("passed", 1.0), victim.feedback
    assert hostile["rows"]["vandal"].status == "passed"  # its attack failed quietly; its own work still counts
    assert hostile["before"]["submissions"] == hostile["after"]["submissions"]
    assert hostile["before"]["course"] == hostile["after"]["course"]


@pytest.mark.slow
def test_the_copier_cannot_read_the_victims_notebook(hostile):
    copier = hostile["rows"]["copier"]
    assert (copier.status, copier.score) == ("failed", 0.0), copier.feedback
    assert "No such file or directory" in copier.feedback
    assert VICTIM_MARK not in copier.feedback


@pytest.mark.slow
def test_the_planter_leaves_no_file_beside_the_grades_or_in_the_submissions(hostile):
    paths = hostile["paths"]
    assert hostile["before"]["grades"] == hostile["after"]["grades"]  # yesterday's grades untouched, nothing new
    assert hostile["before"]["submissions"] == hostile["after"]["submissions"]  # no new learner, no new notebook
    written = sorted(str(path.relative_to(paths["grades"])) for path in paths["grades"].rglob("*") if path.is_file())
    learners = sorted(hostile["rows"])
    assert written == sorted(["grades-day1.csv", "grades.csv", *(f"feedback/{learner}.md" for learner in learners)])
    assert hostile["rows"]["planter"].status == "passed"


@pytest.mark.slow
def test_the_spy_sees_no_process_no_secret_no_network_and_nothing_of_the_grader(hostile):
    feedback = hostile["rows"]["spy"].feedback
    seen = json.loads(re.search(r"SPY (\{[^{}]*\})", feedback).group(1))
    assert seen["processes"] <= 3, seen  # bwrap's init, the kernel, and nothing else of the machine
    assert seen == {**seen, "canary": False, "package_writable": False, "repository_visible": False,
                    "submissions_visible": False}
    assert seen["network"] != "connected" and hostile["listener"].connections == 0


@pytest.mark.slow
def test_the_grades_csv_lists_every_learner_once(hostile):
    with open(hostile["paths"]["grades"] / "grades.csv", newline="", encoding="utf-8") as file:
        learners = [row["learner"] for row in csv.DictReader(file)]
    assert sorted(learners) == ["ada", "copier", "planter", "spy", "vandal"]


# ---------------------------------------------------------------------------
# Refusing to grade, and the command line bubblewrap gets (no kernels)
# ---------------------------------------------------------------------------


def test_require_sandbox_refuses_to_grade_without_bubblewrap(tmp_path, monkeypatch, capsys):
    course = copy_course(tmp_path / "solutions", ("00_warmup",))
    softmax_learner(tmp_path / "submissions", "ada", RIGHT_SOFTMAX)
    monkeypatch.setattr("course_lib.tools.grading.sandbox.shutil.which",
                        lambda name: None if name == "bwrap" else "/usr/bin/" + name)
    code = main(["grade", str(tmp_path / "submissions"), "--out", str(tmp_path / "grades.csv"),
                 "--solutions", str(course), "--require-sandbox"])
    assert code == 1
    error = capsys.readouterr().err
    assert "--require-sandbox" in error and "bwrap is not installed" in error and "apt-get install bubblewrap" in error
    assert not (tmp_path / "grades.csv").exists()


def test_submissions_that_every_kernel_could_read_are_refused(tmp_path, monkeypatch):
    course = copy_course(tmp_path / "solutions", ("00_warmup",))
    environment = tmp_path / "venv"  # stands for the virtual environment, which every kernel reads
    softmax_learner(environment / "submissions", "ada", RIGHT_SOFTMAX)
    monkeypatch.setattr("course_lib.tools.grading.sandbox.read_only_paths", lambda: [environment])
    monkeypatch.setattr("course_lib.tools.grading.batch.choose_isolation", lambda: Isolation(BUBBLEWRAP))
    assert exposing_path(environment / "submissions") == environment
    assert exposing_path(tmp_path / "elsewhere") is None
    with pytest.raises(GradingError, match=f"submissions_dir: .* lies inside {environment}"):
        grade_submissions(environment / "submissions", course)


def test_the_bubblewrap_command_binds_only_the_course_and_the_scratch_folder(tmp_path):
    command = bubblewrap_command(tmp_path, tmp_path / "work")
    assert command[-1] == "--"
    for option in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv"):
        assert option in command
    assert command[command.index("--cap-drop") + 1] == "ALL"
    writable = [command[index + 1] for index, word in enumerate(command) if word == "--bind"]
    assert writable == [str(tmp_path)]
    read_only = {command[index + 1] for index, word in enumerate(command) if word == "--ro-bind"}
    assert str(Path(course_lib.__file__).resolve().parent) in read_only
    assert str(REPO) not in read_only  # the repository, where submissions and grades often sit, stays out
    with pytest.raises(ValueError, match="working_dir"):
        bubblewrap_command(tmp_path / "scratch", tmp_path / "elsewhere")
