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
are hard links to the course environment's files (nothing is copied: a link
costs no space, and the whole tree takes a few seconds), minus the editable
install, plus course_lib installed non-editably from a learners' copy that
has no solutions/ and no tests/. Hard links share their file with the
original, so nothing here ever writes into a linked file: a file that must
differ is unlinked and written anew.
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

# What a learner receives: the course without solutions/ and tests/.
LEARNER_FILES = ["README.md", "pyproject.toml", "constraints.txt", "course_lib", "notebooks", "exercises"]
LEARNER_HOME_FOLDERS = ["notebooks", "exercises"]


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


def learners_copy(target: Path) -> Path:
    """The course as a learner receives it (no solutions/, no tests/), at ``target``."""
    target.mkdir()
    for name in LEARNER_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, target / name)
    return target


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system: a copy, at the cost of the disk space
        shutil.copy2(source, target)


def _place_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` as a new file: a linked file at ``target`` is unlinked, never written into."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    shutil.copyfile(source, target)
    target.chmod(0o644)


def build_learner_environment(target: Path, course_copy: Path) -> Path:
    """The learners' Python environment at ``target`` (see the module's docstring); returns its interpreter."""
    subprocess.run([str(learner_interpreter()), "-m", "venv", "--without-pip", str(target)], check=True)
    site_packages = target / "lib" / f"python{PYTHON_VERSION}" / "site-packages"
    shutil.rmtree(site_packages)
    shutil.copytree(COURSE_VENV / "lib" / f"python{PYTHON_VERSION}" / "site-packages", site_packages,
                    symlinks=True, copy_function=_link_or_copy)
    for folder in ("share", "etc"):  # JupyterLab's assets, kernels and server extensions
        if (COURSE_VENV / folder).is_dir():
            shutil.copytree(COURSE_VENV / folder, target / folder, symlinks=True, copy_function=_link_or_copy)
    for editable in [*site_packages.glob("__editable__*course_lib*"), *site_packages.glob("course_lib-*.dist-info")]:
        shutil.rmtree(editable) if editable.is_dir() else editable.unlink()
    python = target / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
                    "--no-compile", str(course_copy)],
                   check=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    for source in (DEPLOY / "environment").rglob("*"):
        if source.is_file():
            _place_file(source, target / source.relative_to(DEPLOY / "environment"))
    return python


# -- the class: users and their homes --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Learner:
    name: str
    home: Path

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.name).pw_uid


def create_learner(name: str, home: Path, course_copy: Path) -> Learner:
    """A system user whose home (mode 0700) holds the learners' notebooks, as a handout leaves them."""
    subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash", "--user-group",
                    "--comment", "course hub test", name], check=True, capture_output=True)
    for folder in LEARNER_HOME_FOLDERS:
        shutil.copytree(course_copy / folder, home / folder)
    user = pwd.getpwnam(name)
    for path in [home, *home.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
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

    Yields once the hub answers; on exit stops the hub (and with it every
    server), then any process left of the learners, removes the users and
    every file.
    """
    root = Path(tempfile.mkdtemp(prefix="course-hub-"))
    root.chmod(0o755)  # the learners pass through it to their homes and the environment
    suffix = secrets.token_hex(2)
    learners: list[Learner] = []
    hub = None
    try:
        private = root / "private"  # only root: the hub's state and the instructor's files
        private.mkdir(mode=0o700)
        course_copy = learners_copy(private / "course")
        python = build_learner_environment(root / "env", course_copy)
        for name in names:
            learners.append(create_learner(f"{name}-{suffix}", root / "homes" / f"{name}-{suffix}", course_copy))
        password = secrets.token_urlsafe(12)
        port = free_port()
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
        running = RunningHub(f"http://127.0.0.1:{port}", password, learners, root, log, hub)
        shutil.copytree(REPO / "solutions", running.instructor_solutions)
        _wait_for_hub(running)
        yield running
    finally:
        if hub is not None:
            _stop_hub(hub, root / "private")
        for learner in learners:
            remove_learner(learner)
        shutil.rmtree(root, ignore_errors=True)


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
