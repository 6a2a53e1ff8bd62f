"""`course handout`: the learners' copy as an archive and as a branch of a real git repository, and the link."""
from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from course_lib.tools.cli import main
from course_lib.tools.exercises import build_exercise_notebook, render_notebook
from course_lib.tools.handout import (
    HandoutError, commit_to_branch, make_handout, nbgitpuller_link, write_archive,
)
from grading_helpers import REPO

IDENTITY = {"GIT_AUTHOR_NAME": "Instructor", "GIT_AUTHOR_EMAIL": "instructor@example.org",
            "GIT_COMMITTER_NAME": "Instructor", "GIT_COMMITTER_EMAIL": "instructor@example.org",
            "GIT_AUTHOR_DATE": "1700000000 +0000", "GIT_COMMITTER_DATE": "1700000000 +0000"}
LEARNERS_FILES = [".gitignore", "Makefile", "README.md", "course_lib/__init__.py", "exercises/00_warmup.ipynb",
                  "notebooks/00_welcome.ipynb"]


def git(repository: Path, *args: str) -> str:
    completed = subprocess.run(["git", "-C", str(repository), *args], capture_output=True, text=True, check=True,
                               env={**os.environ, **IDENTITY})
    return completed.stdout.strip()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def repository(tmp_path) -> Path:
    """A small course repository: instructor-only files, and an exercise notebook that is out of date."""
    repository = tmp_path / "course-repo"
    for path in ("README.md", "Makefile", ".gitignore", "INSTRUCTORS.md", "solutions/00_warmup.ipynb",
                 "notebooks/00_welcome.ipynb"):
        write(repository / path, (REPO / path).read_bytes())
    write(repository / "exercises/00_warmup.ipynb", b'{"stale": true}')
    write(repository / "course_lib/__init__.py", b'"""The package."""\n')
    write(repository / "tests/test_solutions.py", b"def test(): pass\n")
    write(repository / ".ci/run", b"#!/bin/sh\nmake test\n")
    write(repository / "deploy/README.md", b"the hub\n")
    git(repository.parent, "init", "--quiet", "-b", "main", str(repository))
    git(repository, "add", "--all")
    git(repository, "commit", "--quiet", "-m", "The course")
    return repository


def archive_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()}


def test_the_archive_holds_the_learners_files_and_fresh_exercises(repository, tmp_path):
    write_archive(make_handout(repository), tmp_path / "learners.tar.gz")
    members = archive_members(tmp_path / "learners.tar.gz")
    assert sorted(members) == [f"course/{path}" for path in LEARNERS_FILES]
    built = render_notebook(build_exercise_notebook(repository / "solutions" / "00_warmup.ipynb")).encode()
    assert members["course/exercises/00_warmup.ipynb"] == built
    assert not any(b"### BEGIN SOLUTION" in data for data in members.values())


def test_the_archive_is_the_same_bytes_every_time(repository, tmp_path):
    handout = make_handout(repository)
    write_archive(handout, tmp_path / "first.tar.gz", folder="workshop")
    os.utime(repository / "README.md", (0, 0))  # the working tree's times play no part
    write_archive(make_handout(repository), tmp_path / "second.tar.gz", folder="workshop")
    assert (tmp_path / "first.tar.gz").read_bytes() == (tmp_path / "second.tar.gz").read_bytes()
    assert all(name.startswith("workshop/") for name in archive_members(tmp_path / "first.tar.gz"))


def test_the_branch_holds_the_same_files_and_no_history_of_the_course(repository):
    head, status = git(repository, "rev-parse", "HEAD"), git(repository, "status", "--porcelain")
    commit, is_new = commit_to_branch(make_handout(repository), repository, "learners")
    assert is_new and git(repository, "rev-parse", "learners") == commit
    assert git(repository, "ls-tree", "-r", "--name-only", "learners").splitlines() == LEARNERS_FILES
    assert git(repository, "rev-list", "learners").splitlines() == [commit]  # a root commit: no solutions behind it
    assert (git(repository, "rev-parse", "HEAD"), git(repository, "status", "--porcelain")) == (head, status)
    assert git(repository, "symbolic-ref", "HEAD") == "refs/heads/main"


def test_a_second_handout_is_one_commit_on_top_of_the_first(repository):
    first, _ = commit_to_branch(make_handout(repository), repository, "learners")
    assert commit_to_branch(make_handout(repository), repository, "learners") == (first, False)
    (repository / "README.md").write_text("Day two.\n")
    git(repository, "commit", "--quiet", "-am", "Day two")
    second, is_new = commit_to_branch(make_handout(repository), repository, "learners")
    assert is_new and git(repository, "rev-list", "learners").splitlines() == [second, first]
    assert git(repository, "show", "learners:README.md") == "Day two."
    assert git(repository, "log", "--format=%H", "learners", "--", "solutions") == ""


def test_a_branch_that_would_expose_the_solutions_is_refused(repository):
    with pytest.raises(HandoutError, match="--branch.*main is checked out"):
        commit_to_branch(make_handout(repository), repository, "main")
    git(repository, "branch", "old-copy")
    with pytest.raises(HandoutError, match="old-copy has solutions/ in its history"):
        commit_to_branch(make_handout(repository), repository, "old-copy")


def test_the_nbgitpuller_link_is_exact():
    link = nbgitpuller_link("https://hub.example.org/", "https://git.example.org/teach/attention course.git",
                            "learners", "course")
    assert link == (
        "https://hub.example.org/hub/user-redirect/git-pull?"
        "repo=https%3A%2F%2Fgit.example.org%2Fteach%2Fattention+course.git&branch=learners&targetpath=course"
        "&urlpath=lab%2Ftree%2Fcourse%2Fnotebooks%2F00_welcome.ipynb"
    )
    query = parse_qs(urlsplit(link).query)
    assert query["repo"] == ["https://git.example.org/teach/attention course.git"]
    assert query["urlpath"] == ["lab/tree/course/notebooks/00_welcome.ipynb"]
    assert nbgitpuller_link("https://example.org/jupyter", "r", "b").startswith(
        "https://example.org/jupyter/hub/user-redirect/git-pull?repo=r&branch=b&")


@pytest.mark.parametrize("hub", ["hub.example.org", "ftp://hub.example.org", "https://hub.example.org/?a=1"])
def test_a_hub_that_is_not_an_address_is_refused(hub):
    with pytest.raises(HandoutError, match="--hub"):
        nbgitpuller_link(hub, "https://git.example.org/course.git", "learners")


def test_the_command_makes_archive_branch_and_link(repository, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repository)
    assert main(["handout", "--out", str(tmp_path / "c.tar.gz"), "--hub", "https://hub.example.org",
                 "--repo", "https://git.example.org/course.git"]) == 0
    output = capsys.readouterr().out
    assert "exercises/00_warmup.ipynb at" in output and "rebuilt" in output
    assert "branch: learners at" in output and "git-pull?repo=" in output
    assert (tmp_path / "c.tar.gz").exists() and git(repository, "rev-parse", "--verify", "learners")


def test_the_command_says_what_is_missing(repository, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repository)
    assert main(["handout"]) == 1
    assert "--out" in capsys.readouterr().err
    assert main(["handout", "--hub", "https://hub.example.org"]) == 1
    assert "--repo" in capsys.readouterr().err
    assert main(["handout", "--out", str(tmp_path / "c.tar.gz"), "--from", "no-such-tag"]) == 1
    assert "--from" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["handout", "--out", str(tmp_path / "c.tar.gz")]) == 1
    assert "not a git repository" in capsys.readouterr().err.lower()


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="the course is not a git checkout here")
def test_the_real_courses_handout_has_no_solutions(tmp_path):
    handout = make_handout(REPO)
    assert not any(path.startswith(("solutions/", "tests/")) or path == "INSTRUCTORS.md" for path in handout.files)
    assert sum(path.startswith("exercises/") for path in handout.files) >= 10
    assert not any(b"### BEGIN SOLUTION" in data for path, (_, data) in handout.files.items()
                   if path.endswith(".ipynb"))
    write_archive(handout, tmp_path / "course.tar.gz")
    with tarfile.open(tmp_path / "course.tar.gz") as tar:
        assert "course/notebooks/00_welcome.ipynb" in tar.getnames()
