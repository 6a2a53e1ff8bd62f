"""Where a learner's kernel runs: its limits, and the walls around it.

With bubblewrap (``bwrap``, Debian package ``bubblewrap``) each kernel runs
in namespaces of its own. It sees the system's programs and libraries, the
Python installation, the virtual environment and the course package, all
read-only; a private ``/tmp``; and one scratch folder of its own, the only
place it can write. It has no network (not even the grader's localhost),
sees no other process, holds no capabilities, and gets a clean environment
(no variable of the grader's leaks in). The submissions, the solutions and
the grades are simply not there.

Without bubblewrap the grader falls back to what it did before: a network
namespace of its own where ``unshare`` allows one, else no isolation at
all. ``course grade --require-sandbox`` refuses to grade then.

Torch-free, so ``course doctor`` can ask whether bubblewrap works here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BUBBLEWRAP = "bubblewrap"
NETWORK_NAMESPACE = "network namespace"
NO_ISOLATION = "none"
ISOLATION_KINDS = (BUBBLEWRAP, NETWORK_NAMESPACE, NO_ISOLATION)

INSTALL_BUBBLEWRAP = "apt-get install bubblewrap"

KERNEL_NAME = "course-grader"

# Read-only inside the sandbox when they exist: what the C library, fonts and clocks look up.
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/fonts")
# Top-level folders that merged-/usr systems make symbolic links into /usr, and others keep as folders.
_SYSTEM_FOLDERS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

_NETWORK_ISOLATION = ["--user", "--map-root-user", "--net"]

# Two kernels run side by side on a small machine: one thread each keeps them from fighting over cores.
_THREADS_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Started inside the sandbox by the probe: proves Python, the course and the kernel import, and the scratch is writable.
_PROBE = "import course_lib, ipykernel; open('probe', 'w').write('ok')"

# The kernel's first lines: limits are set before any learner code exists.
# An oversized file write then fails with an error instead of killing the kernel (SIGXFSZ).
_KERNEL_LAUNCHER = """\
import sys
memory, file_size = (int(value) for value in sys.argv[1:3])
del sys.argv[1:3]
try:
    import resource, signal
except ImportError:
    resource = None
if resource is not None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from ipykernel.kernelapp import launch_new_instance
launch_new_instance()
"""


@dataclass(frozen=True)
class SandboxLimits:
    """What one learner notebook may use.

    cell_timeout: seconds a cell may run before it is interrupted.
    notebook_timeout: seconds the whole notebook may run before its kernel is killed.
    memory_mb: address space of the kernel process (RLIMIT_AS), in MiB.
    file_size_mb: largest file the kernel may write (RLIMIT_FSIZE), in MiB; also the size of its private /tmp.
    """

    cell_timeout: float = 60.0
    notebook_timeout: float = 300.0
    memory_mb: float = 4096
    file_size_mb: float = 256

    def __post_init__(self) -> None:
        for name in ("cell_timeout", "notebook_timeout", "memory_mb", "file_size_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive, finite number, got {value!r}")


@dataclass(frozen=True)
class Isolation:
    """How the learners' kernels are walled off.

    ``kind`` is one of ISOLATION_KINDS; ``shortfall`` says why bubblewrap
    is not used ("" when it is).
    """

    kind: str
    shortfall: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ISOLATION_KINDS:
            raise ValueError(f"kind must be one of {ISOLATION_KINDS}, got {self.kind!r}")

    def describe(self) -> str:
        """One sentence for the grade summary: what was isolated, and what was not."""
        if self.kind == BUBBLEWRAP:
            return ("bubblewrap: each kernel saw only the course's files and its own scratch folder, "
                    "had no network and saw no other process")
        missing = f"bubblewrap not used ({self.shortfall}; install it: {INSTALL_BUBBLEWRAP})"
        if self.kind == NETWORK_NAMESPACE:
            return (f"network namespace only: the kernels had no network, but could read and write every file "
                    f"the grader can; {missing}")
        return f"none: the kernels could reach the network and every file the grader can; {missing}"


def choose_isolation() -> Isolation:
    """The strongest isolation this machine allows: bubblewrap, else a network namespace, else none."""
    problem = bubblewrap_problem()
    if problem is None:
        return Isolation(BUBBLEWRAP)
    if network_isolation_command():
        return Isolation(NETWORK_NAMESPACE, problem)
    return Isolation(NO_ISOLATION, problem)


# ---------------------------------------------------------------------------
# bubblewrap
# ---------------------------------------------------------------------------


def read_only_paths() -> list[Path]:
    """What a kernel reads besides the system: the Python installation, the virtual environment, the course package.

    Only the package folder of the course, not its repository: submissions
    and grades often sit in the repository, and must stay out of sight.
    """
    import course_lib  # the top-level package only: no torch

    candidates = [sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix,
                  Path(os.path.realpath(sys.executable)).parent, Path(course_lib.__file__).parent]
    paths = []
    for candidate in candidates:
        for path in (Path(candidate).absolute(), Path(candidate).resolve()):  # as Python names it, and the real one
            if path not in paths:
                paths.append(path)
    return [path for path in paths if not any(other in path.parents for other in paths)]  # inner ones come with outer


def exposing_path(path: Path) -> Path | None:
    """The read-only path (see read_only_paths, and /usr) under which a kernel could read ``path``, or None."""
    path = Path(path).resolve()
    for exposed in [Path("/usr"), *read_only_paths()]:
        if path == exposed or exposed in path.parents:
            return exposed
    return None


def bubblewrap_command(scratch_dir: Path, working_dir: Path, tmp_size_mb: float = 256) -> list[str]:
    """The ``bwrap`` command line that runs a program in the sandbox, up to and including ``--``.

    ``scratch_dir`` is the one folder it can write (bound at the same path);
    ``working_dir`` (inside it) is where it starts; ``/tmp`` is private and
    holds at most ``tmp_size_mb`` MiB.
    """
    scratch_dir, working_dir = Path(scratch_dir).absolute(), Path(working_dir).absolute()
    if scratch_dir != working_dir and scratch_dir not in working_dir.parents:
        raise ValueError(f"working_dir must lie inside scratch_dir {scratch_dir}, got {working_dir}")
    command = [shutil.which("bwrap") or "bwrap",
               "--unshare-all",  # network, processes, IPC, hostname, users, cgroups: all its own
               "--die-with-parent",  # the grader gone, the sandbox goes too
               "--new-session",  # no controlling terminal to push keystrokes into
               "--cap-drop", "ALL",  # root inside gains nothing: no mounts, no devices
               "--ro-bind", "/usr", "/usr"]
    for folder in _SYSTEM_FOLDERS:
        if os.path.islink(folder):
            command += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            command += ["--ro-bind", folder, folder]
    for system_file in _SYSTEM_FILES:
        command += ["--ro-bind-try", system_file, system_file]
    command += ["--proc", "/proc", "--dev", "/dev",
                "--size", str(int(tmp_size_mb * 2**20)), "--tmpfs", "/tmp"]
    for path in read_only_paths():
        command += ["--ro-bind", str(path), str(path)]
    command += ["--bind", str(scratch_dir), str(scratch_dir), "--chdir", str(working_dir), "--clearenv"]
    for name, value in _sandbox_environment().items():
        command += ["--setenv", name, value]
    return [*command, "--"]


def _sandbox_environment() -> dict[str, str]:
    """The kernel's whole environment: nothing of the grader's (tokens, paths, home) leaks in."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",  # private and empty: configuration and caches land there and vanish
        "TMPDIR": "/tmp",
        "IPYTHONDIR": "/tmp/ipython",  # an empty profile: the instructor's startup scripts do not run
        "PYTHONDONTWRITEBYTECODE": "1",  # the package is read-only anyway
        **_THREADS_ENVIRONMENT,
    }



def bubblewrap_problem() -> str | None:
    """Why learners' kernels cannot run under bubblewrap here, or None when they can.

    Starts a real sandboxed Python, as the grader will, so a bwrap that is
    installed but not allowed to create namespaces (some containers) shows up.
    """
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux, this is {sys.platform}"
    if shutil.which("bwrap") is None:
        return "bwrap is not installed"
    with tempfile.TemporaryDirectory(prefix="course-sandbox-probe-") as scratch:
        command = [*bubblewrap_command(Path(scratch), Path(scratch)), sys.executable, "-c", _PROBE]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"bwrap could not be started ({error})"
        if completed.returncode != 0 or not (Path(scratch) / "probe").is_file():
            last_line = (completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"])[-1]
            return f"bwrap cannot start a sandboxed Python here ({last_line})"
    return None


def bubblewrap_version() -> str:
    """What ``bwrap --version`` says ("bubblewrap 0.8.0"), or "" when it cannot say."""
    try:
        completed = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return completed.stdout.strip()


# ---------------------------------------------------------------------------
# The fallback: a network namespace only
# ---------------------------------------------------------------------------


def network_isolation_command() -> list[str]:
    """The command prefix that starts a process without network, or [] where this system does not allow it.

    ``unshare`` puts the kernel in a new network namespace, which has no
    interface but a loopback that is down: no connection leaves it, not
    even to localhost. It needs Linux and user namespaces.
    """
    unshare = shutil.which("unshare")
    if not sys.platform.startswith("linux") or unshare is None:
        return []
    try:
        probe = subprocess.run([unshare, *_NETWORK_ISOLATION, "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [unshare, *_NETWORK_ISOLATION] if probe.returncode == 0 else []


# ---------------------------------------------------------------------------
# The kernel spec: how jupyter_client starts one learner's kernel
# ---------------------------------------------------------------------------


def write_kernelspec(kernels_dir: Path, scratch_dir: Path, working_dir: Path, limits: SandboxLimits,
                     isolation: Isolation) -> Path:
    """A kernel spec named KERNEL_NAME that starts IPython's kernel with ``limits`` inside ``isolation``.

    Returns ``kernels_dir``, for a KernelSpecManager. One spec per kernel:
    under bubblewrap the command names that kernel's own scratch folder.
    """
    if isolation.kind == BUBBLEWRAP:
        prefix = bubblewrap_command(scratch_dir, working_dir, tmp_size_mb=limits.file_size_mb)
        environment = {}  # bwrap clears it and sets its own
    else:
        prefix = network_isolation_command() if isolation.kind == NETWORK_NAMESPACE else []
        environment = {**_THREADS_ENVIRONMENT, "IPYTHONDIR": str(scratch_dir / "ipython")}
    argv = [
        *prefix, sys.executable, "-c", _KERNEL_LAUNCHER,
        str(int(limits.memory_mb * 2**20)), str(int(limits.file_size_mb * 2**20)), "-f", "{connection_file}",
        "--HistoryManager.hist_file=:memory:",  # kernels side by side would fight over one history file
    ]
    spec = {
        "argv": argv,
        "display_name": "course grader",
        "language": "python",
        # A signal would reach bwrap, not the kernel inside (and kill it): the kernel interrupts itself on request.
        "interrupt_mode": "message" if isolation.kind == BUBBLEWRAP else "signal",
        "env": environment,
    }
    (kernels_dir / KERNEL_NAME).mkdir(parents=True)
    (kernels_dir / KERNEL_NAME / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return kernels_dir
