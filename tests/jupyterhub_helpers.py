"""A class on one machine: system users, the learners' environment and a real JupyterHub, for tests/test_jupyterhub.py.

The hub runs deploy/local/jupyterhub_config.py as root, as an instructor
would run it, and starts every learner's server as that learner's system
user. Everything lives under one temporary folder and is removed at the end,
users included; the hub and every process of the learners are stopped, also
when a test fails.

The learners' environment. The course's virtual environment cannot serve:
its package is an editable install (a learner who can import course_lib can
read the whole repository, solutions/ included), and its interpreter may sit
where other users may not go (pyenv under root's home). Installing a second
environment from the package index would cost minutes and 1.7 GB per run.
So the test builds one that is cheap and still honest: a new virtual
environment on the system's Python of the same version, whose site-packages
link to the course environment's packages (a few hundred symbolic links,
made and removed in a blink; hard links to every file where other users may
not enter the course's folder), minus the editable install, plus course_lib
installed non-editably from the learners' copy that `course handout` makes
(no solutions/, no tests/). A link leads into the course's environment, so
nothing here ever writes through one: a file that must differ is unlinked
and written anew, in a real folder.

The learners' copy is `course handout`'s archive of HEAD, as an instructor
hands it out; every learner's home gets it in ~/course, where the handout's
nbgitpuller link puts it. Changes not yet committed are not in it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import grp
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import nbformat
import psutil
import pytest
import requests
import websocket

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
HUB_CONFIG = DEPLOY / "local" / "jupyterhub_config.py"
HUB_PROXY = DEPLOY / "local" / "node_modules" / ".bin" / "configurable-http-proxy"
COURSE_VENV = Path(sys.prefix)
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
STARTUP_TIMEOUT_S = 120  # a hub or a learner's server, on a busy 2-core machine

# Where a learner's copy of the course lands in their home (`course handout`'s default folder).
COURSE_FOLDER = "course"


def require_class_machine() -> None:
    """Skip (under CI: fail) where this machine cannot host the test's class."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the hub must run as root to start servers as the learners' system users "
                        "(run the test as root, for example with `sudo -E make test`)")
    if not os.access(HUB_PROXY, os.X_OK):
        problems.append(f"no proxy at {HUB_PROXY.relative_to(REPO)} (run `make hub-proxy`)")
    if shutil.which("useradd") is None:
        problems.append("no useradd to create the learners' system users")
    if learner_interpreter() is None:
        problems.append(f"no Python {PYTHON_VERSION} that every user may run (install python{PYTHON_VERSION})")
    if problems:
        message = "cannot host a class here: " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the class deployment: {message}")
        pytest.skip(message)


# -- the learners' environment ---------------------------------------------------------------------

def learner_interpreter() -> Path | None:
    """This Python's version, installed where every user may run it (this one, or the system's)."""
    candidates = [Path(sys._base_executable).resolve(), Path(f"/usr/bin/python{PYTHON_VERSION}"),
                  Path(f"/usr/local/bin/python{PYTHON_VERSION}")]
    for candidate in candidates:
        if candidate.is_file() and _everyone_may_run(candidate):
            return candidate
    return None


def _everyone_may_run(path: Path) -> bool:
    folders_passable = all(folder.stat().st_mode & 0o001 for folder in path.parents)
    return folders_passable and bool(path.stat().st_mode & 0o001)


@dataclasses.dataclass(frozen=True)
class Handout:
    course_copy: Path  # the archive, unpacked: what the learners' environment installs
    link: str  # the nbgitpuller link that clones the branch into a learner's ~/course
    query: str  # the link's repository, branch and folder, as nbgitpuller's API takes them


def hand_out(private: Path, hub_url: str, git_port: int) -> Handout:
    """`course handout` as an instructor runs it: an archive, and a branch with its link, from HEAD.

    The branch goes to a clone of the repository (the test never writes into
    the repository itself), which ``serving_git`` then offers to the hub.
    """
    clone = private / "repository"
    subprocess.run(["git", "clone", "--quiet", "--shared", "--no-checkout", str(REPO), str(clone)], check=True)
    archive = private / "handout.tar.gz"
    made = subprocess.run([str(COURSE_VENV / "bin" / "course"), "handout", "--out", str(archive), "--hub", hub_url,
                           "--repo", f"git://127.0.0.1:{git_port}/repository", "--folder", COURSE_FOLDER],
                          cwd=clone, check=True, capture_output=True, text=True)
    link = next(word for word in made.stdout.split() if word.startswith(f"{hub_url}/hub/user-redirect/git-pull?"))
    with tarfile.open(archive) as tar:
        tar.extractall(private, filter="data")
    return Handout(private / COURSE_FOLDER, link, link.split("?", 1)[1])


@contextlib.contextmanager
def serving_git(private: Path, port: int) -> Iterator[None]:
    """git's own read-only server on 127.0.0.1, offering the clone with the learners' branch.

    A learner's server clones over the network as it would from a course's
    git host; a path on disk would not do (git refuses a repository that
    another user owns).
    """
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}",
                               f"--base-path={private}", "--export-all", str(private / "repository")],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while subprocess.run(["git", "ls-remote", f"git://127.0.0.1:{port}/repository"],
                             capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"git daemon did not serve the learners' branch (exit code {daemon.poll()})")
            time.sleep(0.2)
        yield
    finally:
        _stop_processes([psutil.Process(daemon.pid)] if daemon.poll() is None else [])


ENVIRONMENT_FILES = DEPLOY / "environment"  # placed on top of the learners' environment
SITE_PACKAGES = Path("lib") / f"python{PYTHON_VERSION}" / "site-packages"


def build_learner_environment(target: Path, course_copy: Path) -> Path:
    """The learners' Python environment at ``target`` (see the module's docstring); returns its interpreter."""
    subprocess.run([str(learner_interpreter()), "-m", "venv", "--without-pip", str(target)], check=True)
    placed = [path.relative_to(ENVIRONMENT_FILES) for path in ENVIRONMENT_FILES.rglob("*") if path.is_file()]
    real_folders = {target / SITE_PACKAGES, *(target / path.parent for path in placed)}
    shared = _everyone_may_enter(COURSE_VENV / SITE_PACKAGES)
    for folder in (SITE_PACKAGES, Path("share"), Path("etc")):  # packages; JupyterLab's assets; server extensions
        if (COURSE_VENV / folder).is_dir():
            _mirror(COURSE_VENV / folder, target / folder, real_folders, shared)
    # The editable install: its finder, which points into the repository, and its record.
    for editable in [*(target / SITE_PACKAGES).glob("__editable__*course_lib*"),
                     *(target / SITE_PACKAGES).glob("course_lib-*.dist-info")]:
        _remove_entry(editable)
    python = target / "bin" / "python"
    with tempfile.TemporaryDirectory() as build:  # the build leaves files in its source folder: not in the handout
        source = shutil.copytree(course_copy, Path(build) / "course")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                        "--no-build-isolation", "--no-compile", str(source)],
                       check=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    for path in placed:
        _place_file(ENVIRONMENT_FILES / path, target / path)
    return python


def _everyone_may_enter(folder: Path) -> bool:
    return all(level.stat().st_mode & 0o005 == 0o005 for level in [folder, *folder.parents])


def _mirror(source: Path, target: Path, real_folders: set[Path], shared: bool) -> None:
    """Fill ``target`` with ``source``'s entries without copying them.

    The folders in ``real_folders``, and those on the way to them, are real
    folders filled the same way, so that entries can be added and removed in
    them. Every other entry is a symbolic link into ``source`` when every
    user may go there (``shared``), else a hard link (a folder: a tree of
    them; hard links need one file system, a copy is the last resort).
    """
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        destination = target / entry.name
        is_folder = entry.is_dir() and not entry.is_symlink()
        if is_folder and any(destination == folder or destination in folder.parents for folder in real_folders):
            _mirror(entry, destination, real_folders, shared)
        elif shared:
            destination.symlink_to(entry)
        elif is_folder:
            shutil.copytree(entry, destination, symlinks=True, copy_function=_link_or_copy)
        elif entry.is_symlink():
            destination.symlink_to(os.readlink(entry))
        else:
            _link_or_copy(entry, destination)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def _remove_entry(path: Path) -> None:
    """Remove ``path`` from the learners' environment: a link is unlinked, never followed into the course's."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _place_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` as a new file, never writing through a link into the course's environment."""
    assert not any(folder.is_symlink() for folder in [target.parent, *target.parent.parents]), target
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    shutil.copyfile(source, target)
    target.chmod(0o644)


# -- the class: users and their homes --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Learner:
    name: str
    home: Path

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.name).pw_uid


def create_learner(name: str, home: Path) -> Learner:
    """A system user with a home of its own (mode 0700); the course arrives there through the handout's link."""
    subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash", "--user-group",
                    "--comment", "course hub test", name], check=True, capture_output=True)
    home.chmod(0o700)
    return Learner(name, home)


def remove_learner(learner: Learner) -> None:
    """Stop every process of the learner, then remove the system user and its group."""
    with contextlib.suppress(KeyError):
        stop_processes_of(pwd.getpwnam(learner.name).pw_uid)
        subprocess.run(["userdel", learner.name], check=False, capture_output=True)
    with contextlib.suppress(KeyError):
        grp.getgrnam(learner.name)
        subprocess.run(["groupdel", learner.name], check=False, capture_output=True)


def stop_processes_of(uid: int) -> None:
    """Terminate, then kill, every process that runs as ``uid`` (the test's own learners only)."""
    processes = [process for process in psutil.process_iter(["uids"]) if process.info["uids"].real == uid]
    _stop_processes(processes)


def _stop_processes(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=10)


# -- the hub ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class RunningHub:
    url: str
    password: str
    learners: list[Learner]
    root: Path  # everything of this class: the environment, the homes, and private/ (root only)
    handout: Handout
    log: Path
    process: subprocess.Popen

    @property
    def environment(self) -> Path:
        return self.root / "env"

    @property
    def instructor_solutions(self) -> Path:
        """The instructor's solutions, kept where only root may read them, as on a real class's server."""
        return self.root / "private" / "instructor" / "solutions"

    def log_tail(self, characters: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-characters:]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def class_hub(names: list[str], log_dir: Path) -> Iterator[RunningHub]:
    """A JupyterHub on 127.0.0.1 for learners called ``names``, run with deploy/local's configuration.

    Yields once the hub answers. On exit, also after a failure: the hub stops
    (and with it every server), then any process left of the learners, the
    users, the git server and every file go.
    """
    with contextlib.ExitStack() as cleanup:
        root = Path(tempfile.mkdtemp(prefix="course-hub-"))
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        root.chmod(0o755)  # the learners pass through it to their homes and the environment
        private = root / "private"  # only root: the hub's state and the instructor's files
        private.mkdir(mode=0o700)
        port, git_port = free_port(), free_port()
        handout = hand_out(private, f"http://127.0.0.1:{port}", git_port)
        cleanup.enter_context(serving_git(private, git_port))
        python = build_learner_environment(root / "env", handout.course_copy)
        suffix = secrets.token_hex(2)
        learners = []
        for name in names:
            learners.append(create_learner(f"{name}-{suffix}", root / "homes" / f"{name}-{suffix}"))
            cleanup.callback(remove_learner, learners[-1])
        shutil.copytree(REPO / "solutions", private / "instructor" / "solutions")
        password = secrets.token_urlsafe(12)
        env = {
            "PATH": os.pathsep.join([str(COURSE_VENV / "bin"), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": str(private), "LANG": "C.UTF-8",
            "COURSE_HUB_PASSWORD": password,
            "COURSE_HUB_LEARNERS": " ".join(learner.name for learner in learners),
            "COURSE_LEARNER_PYTHON": str(python),
            "COURSE_HUB_STATE": str(private),
            "COURSE_HUB_PORT": str(port), "COURSE_HUB_API_PORT": str(free_port()),
            "COURSE_PROXY_API_PORT": str(free_port()),
        }
        log = log_dir / "jupyterhub.log"
        with open(log, "wb") as log_file:
            hub = subprocess.Popen([str(COURSE_VENV / "bin" / "jupyterhub"), "-f", str(HUB_CONFIG)], cwd=private,
                                   env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        cleanup.callback(_stop_hub, hub, private)
        running = RunningHub(f"http://127.0.0.1:{port}", password, learners, root, handout, log, hub)
        _wait_for_hub(running)
        yield running


def _wait_for_hub(hub: RunningHub) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if hub.process.poll() is not None:
            pytest.fail(f"JupyterHub exited with code {hub.process.returncode}:\n{hub.log_tail()}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{hub.url}/hub/api/", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"JupyterHub did not answer within {STARTUP_TIMEOUT_S} s:\n{hub.log_tail()}")


def _stop_hub(hub: subprocess.Popen, state: Path) -> None:
    """Stop the hub as Ctrl+C does (it then stops the servers and the proxy), and the proxy if it stayed."""
    if hub.poll() is None:
        hub.send_signal(signal.SIGINT)
        try:
            hub.wait(timeout=60)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait(timeout=20)
    proxy_pid_file = state / "jupyterhub-proxy.pid"
    if proxy_pid_file.exists():
        with contextlib.suppress(ValueError, psutil.NoSuchProcess):
            proxy = psutil.Process(int(proxy_pid_file.read_text()))
            if "configurable-http-proxy" in " ".join(proxy.cmdline()):
                _stop_processes([proxy])


# -- a learner's browser-less visit: the login form, then the server's REST and kernel APIs -----------

class LearnerSession:
    """A learner logged in through the hub's login form, talking to their own server as JupyterLab does."""

    def __init__(self, hub: RunningHub, learner: Learner):
        self.hub, self.learner = hub, learner
        self.http = requests.Session()
        self.server_url = f"{hub.url}/user/{learner.name}"

    def log_in(self) -> None:
        """Fill in the login form, and wait until the hub has started this learner's server."""
        form = self.http.get(f"{self.hub.url}/hub/login", timeout=30)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
        assert xsrf, f"no _xsrf field in the hub's login form:\n{form.text[:2000]}"
        answer = self.http.post(f"{self.hub.url}/hub/login?next=/hub/spawn",
                                data={"username": self.learner.name, "password": self.hub.password,
                                      "_xsrf": xsrf.group(1)}, timeout=STARTUP_TIMEOUT_S)
        assert answer.ok, f"login of {self.learner.name} answered {answer.status_code}:\n{answer.text[:2000]}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            # While the server starts, the hub answers with its progress page; once it runs, the
            # server answers itself, after the OAuth round trip that gives this session its cookies.
            page = self.http.get(f"{self.server_url}/lab", timeout=60)
            if page.ok and page.url.startswith(self.server_url) and self._xsrf():
                return
            time.sleep(1)
        pytest.fail(f"the server of {self.learner.name} did not start within {STARTUP_TIMEOUT_S} s:\n"
                    f"{self.hub.log_tail()}")

    def pull_course(self) -> None:
        """What the handout's link does once the learner is in: nbgitpuller clones the branch into ~/course.

        The link's page runs nbgitpuller's API and shows its progress; this
        calls the API directly and reads the progress to its end.
        """
        events = self.http.get(f"{self.server_url}/git-pull/api?{self.hub.handout.query}",
                               headers={"X-XSRFToken": self._xsrf()}, stream=True, timeout=STARTUP_TIMEOUT_S)
        events.raise_for_status()
        for line in events.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                if event.get("phase") == "finished":
                    return
                if event.get("phase") == "error":
                    pytest.fail(f"nbgitpuller failed for {self.learner.name}: {event.get('message')}\n"
                                f"{event.get('output', '')}")
        pytest.fail(f"nbgitpuller's progress for {self.learner.name} ended without finishing")

    def _xsrf(self) -> str | None:
        """The server's XSRF cookie, which every API request authenticated by cookie must repeat in a header."""
        return self.http.cookies.get("_xsrf", path=f"/user/{self.learner.name}/")

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """A request to the learner's server's REST API, authenticated as JupyterLab does it (cookie and XSRF)."""
        response = self.http.request(method, f"{self.server_url}/{path}", headers={"X-XSRFToken": self._xsrf()},
                                     timeout=60, **kwargs)
        response.raise_for_status()
        return response

    def open_kernel(self, notebook_path: str) -> "KernelConnection":
        """Start a kernel for ``notebook_path`` (relative to the home) as opening it in JupyterLab does."""
        session = self.api("POST", "api/sessions", json={
            "path": notebook_path, "name": Path(notebook_path).name, "type": "notebook",
            "kernel": {"name": "python3"}}).json()
        return KernelConnection(self, session["id"], session["kernel"]["id"])


@dataclasses.dataclass
class CellRun:
    source: str
    outputs: list[dict]
    seconds: float

    @property
    def text(self) -> str:
        """Everything the cell printed or displayed as text."""
        parts = []
        for output in self.outputs:
            if output["msg_type"] == "stream":
                parts.append(output["content"]["text"])
            elif output["msg_type"] in ("execute_result", "display_data", "update_display_data"):
                parts.append(output["content"]["data"].get("text/plain", ""))
        return "".join(parts)

    @property
    def errors(self) -> list[str]:
        return [f"{output['content']['ename']}: {output['content']['evalue']}" for output in self.outputs
                if output["msg_type"] == "error"]


class KernelConnection:
    """A kernel of the learner's server, reached over its websocket as JupyterLab reaches it."""

    def __init__(self, session: LearnerSession, session_id: str, kernel_id: str):
        self.owner, self.session_id, self.kernel_id = session, session_id, kernel_id
        self.client_session = uuid.uuid4().hex
        url = (session.server_url.replace("http://", "ws://") +
               f"/api/kernels/{kernel_id}/channels?session_id={self.client_session}")
        cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in session.http.cookies)
        self.socket = websocket.create_connection(url, header=[f"Cookie: {cookies}"], timeout=STARTUP_TIMEOUT_S)

    def execute(self, code: str, timeout: float = 300) -> CellRun:
        """Run ``code`` and collect what it sent back until the kernel is idle again."""
        msg_id = uuid.uuid4().hex
        self.socket.send(json.dumps({
            "header": {"msg_id": msg_id, "username": self.owner.learner.name, "session": self.client_session,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        outputs, start = [], time.monotonic()
        while True:
            self.socket.settimeout(max(1.0, timeout - (time.monotonic() - start)))
            message = json.loads(self.socket.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id or message.get("channel") != "iopub":
                continue
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return CellRun(code, outputs, time.monotonic() - start)
            if message["msg_type"] in ("stream", "execute_result", "display_data", "update_display_data", "error"):
                outputs.append(message)

    def run_cells(self, sources: list[str], timeout_per_cell: float = 300) -> list[CellRun]:
        """Run the cells in order, as Run All does; stop at the first that raises."""
        runs = []
        for source in sources:
            runs.append(self.execute(source, timeout_per_cell))
            if runs[-1].errors:
                break
        return runs

    def run_notebook(self, path: Path) -> list[CellRun]:
        return self.run_cells(code_cells(path))

    def evaluate(self, expression_code: str) -> object:
        """Run code whose last line prints one JSON document, and return it decoded."""
        run = self.execute(expression_code, timeout=120)
        assert not run.errors, run.errors
        return json.loads(run.text.strip().splitlines()[-1])

    def close(self) -> None:
        self.socket.close()
        with contextlib.suppress(requests.RequestException):
            self.owner.api("DELETE", f"api/sessions/{self.session_id}")


def code_cells(path: Path) -> list[str]:
    return [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def peak_memory_bytes(pid: int) -> int:
    """The most resident memory the process ever held (Linux's VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM line in /proc/{pid}/status")


def server_process(learner: Learner) -> psutil.Process:
    """The learner's single-user server (the hub's child that runs jupyterhub.singleuser as the learner)."""
    for process in psutil.process_iter(["uids", "cmdline"]):
        if process.info["uids"].real == learner.uid and "jupyterhub.singleuser" in (process.info["cmdline"] or []):
            return process
    raise LookupError(f"no server process of {learner.name}")


def hub_memory_bytes(hub: RunningHub) -> int:
    """Resident memory of the hub and the processes it runs for itself (proxy, idle culler), not the learners'."""
    learner_uids = {learner.uid for learner in hub.learners}
    hub_process = psutil.Process(hub.process.pid)
    own = [hub_process] + [child for child in hub_process.children(recursive=True)
                           if child.uids().real not in learner_uids]
    return sum(process.memory_info().rss for process in own)


def run_concurrently(functions: list) -> list:
    """Call every function at once, each in a thread; return their results in order, or raise the first error."""
    results: list = [None] * len(functions)
    errors: list[BaseException] = []

    def call(index, function):
        try:
            results[index] = function()
        except BaseException as error:  # noqa: BLE001 (raised again in the caller's thread)
            errors.append(error)

    threads = [threading.Thread(target=call, args=(index, function)) for index, function in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
