"""The learners' home folders on a hub: ``course collect`` takes their notebooks, ``course return`` brings feedback.

On a JupyterHub every learner has a home folder, ``HOMES/<user>`` (for
example ``/home/jupyter-ada``), and the course in a folder of it,
``HOMES/<user>/<FOLDER>`` (``course`` by default, as ``course handout``
names it).

- ``course collect HOMES --folder FOLDER --out SUBMISSIONS`` copies every
  ``HOMES/<user>/<FOLDER>/exercises/*.ipynb`` into ``SUBMISSIONS/<user>/``,
  the layout ``course grade`` reads. A learner whose folder in SUBMISSIONS
  changed since the last collection keeps the old copy in
  ``SUBMISSIONS/.previous/<time>/<user>/`` (the grader skips hidden folders).
- ``course return FEEDBACK_DIR HOMES --folder FOLDER`` puts ``<user>.md``,
  written by ``course grade --feedback``, into the learner's course folder as
  ``feedback.md``, owned by the learner when run as root. A ``feedback.md``
  that differs is first renamed ``feedback.backup-<time>.md``.

Both run as root on a hub, in folders that learners control, so nothing is
ever followed through a symbolic link: each folder on the way is opened
relative to the one before it and refused when it is a link, which also
holds when a learner swaps a folder for a link while the command runs.
Only regular files are read, each at most MAX_NOTEBOOK_MB.
"""
from __future__ import annotations

import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

DEFAULT_FOLDER = "course"
FEEDBACK_NAME = "feedback.md"
MAX_NOTEBOOK_MB = 64
_PREVIOUS = ".previous"
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
# O_NONBLOCK: opening a named pipe that a learner left in place of a notebook returns at once.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


class HomesError(ValueError):
    """The command cannot work at all: no such folder of homes, or a course folder given as an absolute path."""


@dataclass
class LearnerOutcome:
    """What happened for one learner: the files taken or given, and the notes on what was left out."""

    user: str
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    action: str = ""

    def describe(self) -> str:
        text = f"{self.user}: {self.action}"
        return text + "".join(f"\n    {note}" for note in self.notes)


def check_folder(folder: str) -> tuple[str, ...]:
    """The parts of ``folder``, a path inside each home; a clear error for an absolute path or one with '..'."""
    parts = PurePosixPath(folder).parts
    if not parts or PurePosixPath(folder).is_absolute() or any(part in ("..", ".") for part in parts):
        raise HomesError(f"folder (--folder) must be a path inside each home, like 'course', got {folder!r}")
    return parts


def _learner_homes(homes: Path) -> list[str]:
    if not Path(homes).is_dir():
        raise HomesError(f"homes: no directory {homes}")
    return sorted(entry.name for entry in os.scandir(homes)
                  if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False))


def _open_inside(homes: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of ``homes/part/part/...``, each part opened without following a link (OSError if one is)."""
    descriptor = os.open(homes, os.O_RDONLY | os.O_DIRECTORY)
    for part in parts:
        try:
            inner = os.open(part, _FOLDER_FLAGS, dir_fd=descriptor)
        finally:
            os.close(descriptor)
        descriptor = inner
    return descriptor


def _read_regular_file(name: str, folder: int) -> tuple[bytes, os.stat_result] | str:
    """The bytes and status of the regular file ``name`` in the folder ``folder``, or why it was not read."""
    try:
        descriptor = os.open(name, _FILE_FLAGS, dir_fd=folder)
    except OSError as error:
        return f"{name} was not read: it is a link, or cannot be opened ({error.strerror})"
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            return f"{name} was not read: it is not a regular file"
        if status.st_size > MAX_NOTEBOOK_MB * 2**20:
            return f"{name} was not read: {status.st_size / 2**20:.0f} MiB, more than {MAX_NOTEBOOK_MB} MiB"
        return file.read(MAX_NOTEBOOK_MB * 2**20 + 1), status


# ---------------------------------------------------------------------------
# Collecting
# ---------------------------------------------------------------------------


def collect_submissions(homes: Path, out: Path, *, folder: str = DEFAULT_FOLDER) -> list[LearnerOutcome]:
    """Copy each learner's ``<folder>/exercises/*.ipynb`` into ``out/<user>/``; one outcome per home.

    A home without the course folder gets no folder in ``out`` (so the
    instructor's own home is not graded). Files keep their modification time:
    the grader uses it to choose between two copies of a notebook.
    """
    parts = check_folder(folder)
    out = Path(out)
    outcomes = []
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for user in _learner_homes(homes):
        outcome = LearnerOutcome(user)
        outcomes.append(outcome)
        try:
            exercises = _open_inside(homes, (user, *parts, "exercises"))
        except OSError as error:
            outcome.action = f"skipped: no folder {'/'.join(parts)}/exercises ({error.strerror})"
            continue
        try:
            taken = {}
            for name in sorted(os.listdir(exercises)):
                if name.endswith(".ipynb") and not name.startswith("."):
                    read = _read_regular_file(name, exercises)
                    if isinstance(read, str):
                        outcome.notes.append(read)
                    else:
                        taken[name] = read
        finally:
            os.close(exercises)
        outcome.files = sorted(taken)
        outcome.action = _store_submission(out, user, taken, stamp) + f": {len(taken)} notebooks"
    return outcomes


def _store_submission(out: Path, user: str, taken: dict[str, tuple[bytes, os.stat_result]], stamp: str) -> str:
    """Write ``out/<user>/`` from ``taken``; an older, different folder is moved under ``.previous``."""
    target = out / user
    if target.is_dir() and _same_files(target, taken):
        return "unchanged"
    staging = out / f".collecting-{user}-{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    for name, (data, status) in taken.items():
        (staging / name).write_bytes(data)
        os.utime(staging / name, ns=(status.st_atime_ns, status.st_mtime_ns))
    action = "collected"
    if target.exists():
        kept = out / _PREVIOUS / stamp / user
        kept.parent.mkdir(parents=True, exist_ok=True)
        target.rename(kept)
        action = f"collected again (the previous copy is in {kept})"
    staging.rename(target)
    return action


def _same_files(folder: Path, taken: dict[str, tuple[bytes, os.stat_result]]) -> bool:
    present = sorted(path.name for path in folder.iterdir())
    return present == sorted(taken) and all((folder / name).read_bytes() == data for name, (data, _) in taken.items())


# ---------------------------------------------------------------------------
# Returning feedback
# ---------------------------------------------------------------------------


def return_feedback(feedback_dir: Path, homes: Path, *, folder: str = DEFAULT_FOLDER) -> list[LearnerOutcome]:
    """Put ``feedback_dir/<user>.md`` into ``homes/<user>/<folder>/feedback.md``; one outcome per feedback file."""
    parts = check_folder(folder)
    feedback_dir = Path(feedback_dir)
    if not feedback_dir.is_dir():
        raise HomesError(f"feedback_dir: no directory {feedback_dir}")
    known_homes = set(_learner_homes(homes))
    outcomes = []
    for path in sorted(feedback_dir.glob("*.md")):
        outcome = LearnerOutcome(path.stem)
        outcomes.append(outcome)
        if path.stem not in known_homes:
            outcome.action = f"skipped: no home folder {Path(homes) / path.stem}"
            continue
        try:
            course_folder = _open_inside(homes, (path.stem, *parts))
        except OSError as error:
            outcome.action = f"skipped: no folder {'/'.join(parts)} ({error.strerror})"
            continue
        try:
            home_owner = os.lstat(Path(homes) / path.stem)  # the home itself is the administrator's, not the learner's
            outcome.action = _give(path.read_bytes(), course_folder, home_owner)
        except OSError as error:
            outcome.action = f"failed: {error}"
        finally:
            os.close(course_folder)
        outcome.files = [FEEDBACK_NAME]
    return outcomes


def _give(content: bytes, folder: int, owner: os.stat_result) -> str:
    """Write ``content`` as FEEDBACK_NAME in ``folder``, never over a different file; owned by ``owner`` as root."""
    try:
        existing = os.stat(FEEDBACK_NAME, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    backup = None
    if existing is not None:
        read = _read_regular_file(FEEDBACK_NAME, folder)
        if not isinstance(read, str) and read[0] == content:
            return "unchanged"
        backup = _free_backup_name(folder)
        os.rename(FEEDBACK_NAME, backup, src_dir_fd=folder, dst_dir_fd=folder)
    temporary = f".{FEEDBACK_NAME}-{secrets.token_hex(8)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
    try:
        with os.fdopen(descriptor, "wb", closefd=False) as file:
            file.write(content)
        if os.geteuid() == 0:
            os.fchown(descriptor, owner.st_uid, owner.st_gid)
    finally:
        os.close(descriptor)
    try:
        # A link, unlike a rename, never replaces a file that appeared meanwhile.
        os.link(temporary, FEEDBACK_NAME, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    finally:
        os.unlink(temporary, dir_fd=folder)
    return "returned" + (f" (the learner's previous {FEEDBACK_NAME} is now {backup})" if backup else "")


def _free_backup_name(folder: int) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    stem, suffix = FEEDBACK_NAME.rsplit(".", 1)
    for attempt in range(1, 1000):
        name = f"{stem}.backup-{stamp}{'' if attempt == 1 else f'-{attempt}'}.{suffix}"
        try:
            os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return name
    raise FileExistsError(f"no free backup name for {FEEDBACK_NAME}")


# ---------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------


def run_collect_command(homes: Path, *, folder: str, out: Path) -> int:
    """``course collect``: one line per home; 1 when the homes cannot be read at all."""
    try:
        outcomes = collect_submissions(homes, out, folder=folder)
    except (HomesError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        print(outcome.describe())
    collected = [outcome for outcome in outcomes if not outcome.action.startswith("skipped")]
    print(f"{len(collected)} learners collected into {out}/, {len(outcomes) - len(collected)} homes skipped; "
          f"grade them with `course grade {out}`")
    return 0


def run_return_command(feedback_dir: Path, homes: Path, *, folder: str) -> int:
    """``course return``: one line per feedback file; 1 when one could not be written or nothing can be read."""
    try:
        outcomes = return_feedback(feedback_dir, homes, folder=folder)
    except (HomesError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        print(outcome.describe(), file=sys.stderr if outcome.action.startswith("failed") else sys.stdout)
    given = sum(outcome.action.startswith(("returned", "unchanged")) for outcome in outcomes)
    print(f"{given} of {len(outcomes)} feedback files are in the learners' {folder}/{FEEDBACK_NAME}")
    return 1 if any(outcome.action.startswith("failed") for outcome in outcomes) else 0
