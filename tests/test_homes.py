"""`course collect` and `course return` on a made-up folder of hub homes, with learners who plant links and pipes."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from course_lib.tools.cli import main
from course_lib.tools.homes import FEEDBACK_NAME, HomesError, collect_submissions, return_feedback

AS_ROOT = os.geteuid() == 0
UIDS = {"ada": 2001, "bob": 2002, "cleo": 2003, "dan": 2004}


def notebook_bytes(text: str) -> bytes:
    return ('{"cells": [], "metadata": {"note": "%s"}, "nbformat": 4, "nbformat_minor": 5}\n' % text).encode()


def make_homes(root: Path) -> Path:
    """Homes as a hub leaves them; when the tests run as root, each learner owns their home."""
    homes = root / "home"
    ada = homes / "ada" / "course" / "exercises"
    ada.mkdir(parents=True)
    (ada / "00_warmup.ipynb").write_bytes(notebook_bytes("ada 00"))
    (ada / "01 my attention.ipynb").write_bytes(notebook_bytes("ada 01"))
    os.utime(ada / "00_warmup.ipynb", (1_700_000_000, 1_700_000_000))
    (ada / "notes.txt").write_text("not a notebook")
    (ada / ".ipynb_checkpoints").mkdir()
    (ada / ".ipynb_checkpoints" / "00_warmup-checkpoint.ipynb").write_bytes(notebook_bytes("old"))

    bob = homes / "bob" / "course" / "exercises"
    bob.mkdir(parents=True)
    (bob / "01_attention.ipynb").symlink_to(ada / "01 my attention.ipynb")  # hands in another learner's work
    os.mkfifo(bob / "02_pipe.ipynb")  # would block a reader forever
    (bob / "03_real.ipynb").write_bytes(notebook_bytes("bob 03"))

    (homes / "cleo").mkdir()
    (homes / "cleo" / "course").symlink_to(homes / "ada" / "course", target_is_directory=True)
    (homes / "dan" / "course" / "exercises").mkdir(parents=True)  # opened the course, handed in nothing
    (homes / "instructor").mkdir()  # no course folder: not a learner
    (homes / ".snapshots").mkdir()
    if AS_ROOT:
        for user, uid in UIDS.items():
            for path in [homes / user, *(homes / user).rglob("*")]:
                os.lchown(path, uid, uid)
    return homes


@pytest.fixture
def homes(tmp_path) -> Path:
    return make_homes(tmp_path)


def test_collect_copies_each_learners_notebooks_into_one_folder_per_learner(homes, tmp_path):
    outcomes = {outcome.user: outcome for outcome in collect_submissions(homes, tmp_path / "submissions")}
    submissions = tmp_path / "submissions"
    assert sorted(path.name for path in submissions.iterdir()) == ["ada", "bob", "dan"]
    assert sorted(path.name for path in (submissions / "ada").iterdir()) == ["00_warmup.ipynb", "01 my attention.ipynb"]
    assert (submissions / "ada" / "00_warmup.ipynb").read_bytes() == notebook_bytes("ada 00")
    assert (submissions / "ada" / "00_warmup.ipynb").stat().st_mtime == 1_700_000_000  # the grader compares times
    assert list((submissions / "dan").iterdir()) == []
    assert outcomes["instructor"].action.startswith("skipped") and outcomes["cleo"].action.startswith("skipped")


def test_collect_follows_no_link_and_reads_no_pipe(homes, tmp_path):
    outcomes = {outcome.user: outcome for outcome in collect_submissions(homes, tmp_path / "submissions")}
    assert sorted(path.name for path in (tmp_path / "submissions" / "bob").iterdir()) == ["03_real.ipynb"]
    notes = " ".join(outcomes["bob"].notes)
    assert "01_attention.ipynb was not read: it is a link" in notes
    assert "02_pipe.ipynb was not read: it is not a regular file" in notes
    assert not (tmp_path / "submissions" / "cleo").exists()  # her course folder is a link to ada's


def test_collecting_again_keeps_the_previous_copy_of_a_changed_learner(homes, tmp_path):
    submissions = tmp_path / "submissions"
    collect_submissions(homes, submissions)
    (homes / "ada" / "course" / "exercises" / "00_warmup.ipynb").write_bytes(notebook_bytes("ada 00, later"))
    outcomes = {outcome.user: outcome.action for outcome in collect_submissions(homes, submissions)}
    assert outcomes["bob"].startswith("unchanged") and outcomes["ada"].startswith("collected again")
    assert (submissions / "ada" / "00_warmup.ipynb").read_bytes() == notebook_bytes("ada 00, later")
    [previous] = (submissions / ".previous").glob("*/ada/00_warmup.ipynb")
    assert previous.read_bytes() == notebook_bytes("ada 00")


def test_return_puts_feedback_in_each_course_folder_and_keeps_the_learners_own_file(homes, tmp_path):
    feedback = tmp_path / "feedback"
    feedback.mkdir()
    for user in ("ada", "bob", "cleo", "dan", "zed"):
        (feedback / f"{user}.md").write_text(f"# Feedback for {user}\n")
    (homes / "ada" / "course" / FEEDBACK_NAME).write_text("my own notes")
    secret = tmp_path / "secret"
    secret.write_text("root's file")
    (homes / "bob" / "course" / FEEDBACK_NAME).symlink_to(secret)  # would make root write over it

    outcomes = {outcome.user: outcome.action for outcome in return_feedback(feedback, homes)}
    assert outcomes["zed"].startswith("skipped: no home") and outcomes["cleo"].startswith("skipped")
    for user in ("ada", "bob", "dan"):  # cleo's link to ada's folder would have put cleo's file in ada's place
        given = homes / user / "course" / FEEDBACK_NAME
        assert given.read_text() == f"# Feedback for {user}\n" and not given.is_symlink()
        assert stat.S_IMODE(given.stat().st_mode) == 0o600
        if AS_ROOT:
            assert (given.stat().st_uid, given.stat().st_gid) == (UIDS[user], UIDS[user])
    [backup] = (homes / "ada" / "course").glob("feedback.backup-*.md")
    assert backup.read_text() == "my own notes" and "feedback.backup-" in outcomes["ada"]
    assert secret.read_text() == "root's file"

    again = {outcome.user: outcome.action for outcome in return_feedback(feedback, homes)}
    assert again["ada"] == "unchanged"
    assert len(list((homes / "ada" / "course").glob("feedback.backup-*.md"))) == 1


def test_the_commands_print_one_line_per_learner(homes, tmp_path, capsys):
    assert main(["collect", str(homes), "--out", str(tmp_path / "submissions")]) == 0
    output = capsys.readouterr().out
    assert "ada: collected: 2 notebooks" in output and "3 learners collected" in output
    (tmp_path / "feedback").mkdir()
    (tmp_path / "feedback" / "dan.md").write_text("well done")
    assert main(["return", str(tmp_path / "feedback"), str(homes)]) == 0
    assert "1 of 1 feedback files" in capsys.readouterr().out


@pytest.mark.parametrize("folder", ["/etc", "../ada", ""])
def test_a_folder_outside_the_homes_is_refused(homes, tmp_path, folder, capsys):
    with pytest.raises(HomesError, match="--folder"):
        collect_submissions(homes, tmp_path / "submissions", folder=folder)
    assert main(["collect", str(homes), "--folder", folder, "--out", str(tmp_path / "submissions")]) == 1
    assert "--folder" in capsys.readouterr().err


def test_missing_folders_are_named(tmp_path):
    with pytest.raises(HomesError, match="homes: no directory"):
        collect_submissions(tmp_path / "nowhere", tmp_path / "submissions")
    with pytest.raises(HomesError, match="feedback_dir: no directory"):
        return_feedback(tmp_path / "nowhere", tmp_path)
