"""The learners' copy of the course: ``course handout``.

The copy is made from a commit of the repository (HEAD unless ``--from``
names another), never from the working tree, so what learners get is what
you can name and review. It holds every file git tracks at that commit
except the instructor's (LEFT_OUT: the solutions, the tests, which read the
solutions, CI, the deployment files and the instructor guide), and its
``exercises/`` is built afresh from that commit's ``solutions/``, so it is
never out of date.

- ``--out FILE.tar.gz`` writes an archive with one top folder (``--folder``,
  ``course`` by default). The same commit always gives the same bytes.
- ``--branch NAME`` commits the same files to the branch NAME without
  touching the working tree, the index or HEAD. The branch shares no
  history with the course's own (a learner who clones it cannot dig the
  solutions out of old commits); each handout adds one commit on top of the
  last, so learners who pulled it before get the new one as a fast-forward.
- ``--hub URL --repo GIT_URL`` prints the nbgitpuller link that clones the
  branch into ``~/<folder>`` of each learner on the hub and opens notebook 00.
"""
from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlencode, urlsplit

from course_lib.tools.exercises import ExerciseError, NOTEBOOK_NAME, build_exercise_notebook, render_notebook

# Paths of the repository that learners do not get: a folder ends with "/".
LEFT_OUT = ("solutions/", "tests/", ".ci/", "deploy/", "INSTRUCTORS.md")
DEFAULT_FOLDER = "course"
FIRST_NOTEBOOK = "notebooks/00_welcome.ipynb"
_EXECUTABLE = 0o100755


class HandoutError(RuntimeError):
    """The handout cannot be made: not a git repository, an unknown commit, a branch it must not write."""


@dataclass(frozen=True)
class Handout:
    """The learners' files (path -> (git mode, bytes)), their commit and its date, and notes for the instructor."""

    files: dict[str, tuple[int, bytes]]
    commit: str
    date: int
    notes: tuple[str, ...]


def _git(repository: Path, *args: str, env: dict | None = None, cwd: Path | None = None) -> str:
    """Run git on ``repository`` and return what it prints; a HandoutError with git's own message if it fails."""
    command = ["git", "-C", str(cwd or repository), *args]
    try:
        completed = subprocess.run(command, capture_output=True, env={**os.environ, **(env or {})}, check=False)
    except OSError as error:
        raise HandoutError(f"git could not be started ({error}); `course handout` needs git") from error
    if completed.returncode != 0:
        message = completed.stderr.decode("utf-8", "replace").strip()
        raise HandoutError(f"git {' '.join(args[:2])} failed in {repository}: {message}")
    return completed.stdout.decode("utf-8")


def _is_left_out(path: str) -> bool:
    return any(path == item or (item.endswith("/") and path.startswith(item)) for item in LEFT_OUT)


def make_handout(repository: Path, revision: str = "HEAD") -> Handout:
    """The learners' files at ``revision`` of the git repository ``repository``."""
    repository = Path(repository)
    _git(repository, "rev-parse", "--git-dir")  # "not a git repository", in git's words
    commit = _branch_tip(repository, f"{revision}^{{commit}}")
    if not commit:
        raise HandoutError(f"revision (--from): {repository} has no commit {revision!r}")
    archive = subprocess.run(["git", "-C", str(repository), "archive", "--format=tar", commit],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise HandoutError(f"git archive failed in {repository}: {archive.stderr.decode('utf-8', 'replace').strip()}")
    files = {}
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        for member in tar.getmembers():
            if member.isdir() or member.name == "pax_global_header":
                continue
            if not member.isfile():
                raise HandoutError(f"{member.name} at {commit[:12]} is a link; a handout copies regular files only")
            mode = _EXECUTABLE if member.mode & 0o111 else 0o100644
            files[member.name] = (mode, tar.extractfile(member).read())
    notes = _rebuild_exercises(files, commit)
    kept = {path: value for path, value in files.items() if not _is_left_out(path)}
    date = int(_git(repository, "show", "-s", "--format=%ct", commit))
    return Handout(kept, commit, date, tuple(notes))


def _rebuild_exercises(files: dict[str, tuple[int, bytes]], commit: str) -> list[str]:
    """Replace the exercise notebooks in ``files`` with the ones built from its solutions; say which were stale."""
    notes = []
    with tempfile.TemporaryDirectory(prefix="course-handout-") as temporary:
        for path, (_, data) in list(files.items()):
            solutions_path = PurePosixPath(path)
            if solutions_path.parent.as_posix() != "solutions" or not NOTEBOOK_NAME.match(solutions_path.name):
                continue
            source = Path(temporary) / "solutions" / solutions_path.name
            source.parent.mkdir(exist_ok=True)
            source.write_bytes(data)
            try:
                built = render_notebook(build_exercise_notebook(source)).encode("utf-8")
            except ExerciseError as error:
                raise HandoutError(f"{path} at {commit[:12]}: {error}") from error
            target = f"exercises/{solutions_path.name}"
            if files.get(target, (0, b""))[1] != built:
                notes.append(f"{target} at {commit[:12]} was not what `course exercises build` writes; "
                             "the handout holds it rebuilt")
            files[target] = (0o100644, built)
    solutions = {PurePosixPath(path).name for path in files if path.startswith("solutions/")}
    for path in list(files):
        name = PurePosixPath(path).name
        if path.startswith("exercises/") and NOTEBOOK_NAME.match(name) and name not in solutions:
            del files[path]
            notes.append(f"{path} has no solutions notebook and was left out")
    return notes


# ---------------------------------------------------------------------------
# An archive
# ---------------------------------------------------------------------------


def write_archive(handout: Handout, out: Path, *, folder: str = DEFAULT_FOLDER) -> None:
    """Write ``handout`` as a gzipped tar at ``out``, every file under ``folder/``, dated by its commit.

    Nothing of the machine that wrote it (owner, time, file order) goes in,
    so the same commit gives the same bytes.
    """
    _check_folder_name(folder)
    partial = Path(out).with_name(Path(out).name + ".partial")
    with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(handout.files):
            mode, data = handout.files[path]
            info = tarfile.TarInfo(f"{folder}/{path}")
            info.size, info.mtime, info.mode = len(data), handout.date, 0o755 if mode == _EXECUTABLE else 0o644
            tar.addfile(info, io.BytesIO(data))
    partial.replace(out)


def _check_folder_name(folder: str) -> None:
    if not folder or "/" in folder or folder in (".", "..") or folder.startswith("-"):
        raise HandoutError(f"folder (--folder) must be one folder name, like 'course', got {folder!r}")


# ---------------------------------------------------------------------------
# A branch
# ---------------------------------------------------------------------------


def commit_to_branch(handout: Handout, repository: Path, branch: str) -> tuple[str, bool]:
    """Commit ``handout`` on ``branch`` of ``repository``; returns the branch's commit and whether it is new.

    Only objects and the branch's ref are written. Refuses a branch that is
    checked out, and one whose history holds ``solutions/``.
    """
    repository = Path(repository)
    _git(repository, "check-ref-format", "--branch", branch)
    ref = f"refs/heads/{branch}"
    checked_out = [line for line in _git(repository, "worktree", "list", "--porcelain").splitlines()
                   if line == f"branch {ref}"]
    if checked_out:
        raise HandoutError(f"branch (--branch) {branch} is checked out; the handout must go to a branch of its own, "
                           "like 'learners'")
    parent = _branch_tip(repository, ref)
    if parent and _git(repository, "rev-list", "-1", parent, "--", "solutions").strip():
        raise HandoutError(f"branch (--branch) {branch} has solutions/ in its history, which learners could read; "
                           "name a new branch, like 'learners'")
    git_dir = _git(repository, "rev-parse", "--absolute-git-dir").strip()
    with tempfile.TemporaryDirectory(prefix="course-handout-") as temporary:
        tree_dir = Path(temporary) / "tree"
        for path, (mode, data) in handout.files.items():
            (tree_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (tree_dir / path).write_bytes(data)
            os.chmod(tree_dir / path, 0o755 if mode == _EXECUTABLE else 0o644)
        # A private index: the repository's own index (and the work under it) is never touched.
        index = {"GIT_INDEX_FILE": str(Path(temporary) / "index"), "GIT_DIR": git_dir, "GIT_WORK_TREE": str(tree_dir)}
        _git(repository, "-c", "core.autocrlf=false", "-c", "core.fileMode=true", "add", "--all", "--force", ".",
             env=index, cwd=tree_dir)
        tree = _git(repository, "write-tree", env=index, cwd=tree_dir).strip()
    if parent and _git(repository, "rev-parse", f"{parent}^{{tree}}").strip() == tree:
        return parent, False
    author = _git(repository, "show", "-s", "--format=%an%n%ae%n%ad%n%cn%n%ce%n%cd", "--date=raw", handout.commit)
    name, email, date, committer, committer_email, committer_date = author.splitlines()
    identity = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date,
                "GIT_COMMITTER_NAME": committer, "GIT_COMMITTER_EMAIL": committer_email,
                "GIT_COMMITTER_DATE": committer_date}
    message = (f"Learners' copy of {handout.commit[:12]}\n\nMade by `course handout`: without "
               f"{', '.join(LEFT_OUT)}; exercises/ built from solutions/.\n")
    commit = _git(repository, "commit-tree", tree, *(["-p", parent] if parent else []), "-m", message,
                  env=identity).strip()
    _git(repository, "update-ref", ref, commit, parent or "0" * 40)
    return commit, True


def _branch_tip(repository: Path, ref: str) -> str:
    completed = subprocess.run(["git", "-C", str(repository), "rev-parse", "--verify", "--quiet", ref],
                               capture_output=True, text=True, check=False)
    return completed.stdout.strip() if completed.returncode == 0 else ""


# ---------------------------------------------------------------------------
# The nbgitpuller link
# ---------------------------------------------------------------------------


def nbgitpuller_link(hub: str, repo: str, branch: str, folder: str = DEFAULT_FOLDER) -> str:
    """The link that makes a hub clone (or update) ``branch`` of ``repo`` into ``~/folder`` and open notebook 00.

    nbgitpuller's documented format, ``HUB/hub/user-redirect/git-pull?repo=
    ...&branch=...&urlpath=...``, plus ``targetpath``: without it the folder
    is the last part of the repository's URL, ``.git`` included.
    """
    _check_folder_name(folder)
    parts = urlsplit(hub)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise HandoutError(f"hub (--hub) must be the hub's address, like https://hub.example.org, got {hub!r}")
    if not repo or not branch:
        raise HandoutError(f"repo (--repo) and branch (--branch) are both needed for the link, "
                           f"got {repo!r} and {branch!r}")
    query = urlencode([("repo", repo), ("branch", branch), ("targetpath", folder),
                       ("urlpath", f"lab/tree/{folder}/{FIRST_NOTEBOOK}")])
    return f"{hub.rstrip('/')}/hub/user-redirect/git-pull?{query}"


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def run_handout_command(repository: Path, *, revision: str, out: Path | None, branch: str | None,
                        hub: str | None, repo: str | None, folder: str) -> int:
    """``course handout``: write the archive and/or the branch, print the link; 1 when it cannot."""
    if out is None and branch is None and hub is None:
        print("error: say what to make: --out FILE.tar.gz, --branch NAME, or --hub URL --repo GIT_URL "
              "(which writes the branch 'learners' unless --branch names another)", file=sys.stderr)
        return 1
    if (hub is None) != (repo is None):
        print("error: --hub and --repo go together: the link needs the hub's address and the repository's",
              file=sys.stderr)
        return 1
    branch = branch or ("learners" if hub is not None else None)
    try:
        link = nbgitpuller_link(hub, repo, branch, folder) if hub is not None else None
        handout = make_handout(repository, revision)
        for note in handout.notes:
            print(f"note: {note}")
        if out is not None:
            write_archive(handout, out, folder=folder)
            print(f"archive: {out} ({len(handout.files)} files of {handout.commit[:12]} under {folder}/)")
        if branch is not None:
            commit, is_new = commit_to_branch(handout, repository, branch)
            print(f"branch: {branch} at {commit[:12]}" + ("" if is_new else " (unchanged)") +
                  f"; publish it where learners can read it: git push <remote> {branch}")
    except (HandoutError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if link is not None:
        print(f"nbgitpuller link (clones into ~/{folder} and opens {FIRST_NOTEBOOK}):\n{link}")
    uncommitted = _git(repository, "status", "--porcelain", "--untracked-files=no").strip()
    if uncommitted and revision == "HEAD":
        print("note: the working tree has uncommitted changes; they are not in the handout (commit them first)")
    return 0
