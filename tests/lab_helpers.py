"""Starting JupyterLab the way `make lab` does, for the server test and the browser test.

The server gets what a test needs on top of `make lab`'s command: no browser,
a free port on localhost, a random token, and every Jupyter folder in a
temporary directory, so that neither the tester's home nor a previous run can
change the result. Nothing leaves localhost.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

STARTUP_TIMEOUT_S = 60
MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"
JUPYTER_FOLDERS = [("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                   ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"), ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
                   ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "matplotlib")]


@dataclass
class RunningLab:
    base_url: str
    token: str
    server: subprocess.Popen


def isolated_environment(root: Path) -> dict[str, str]:
    """This environment with a home and every Jupyter folder moved under ``root``."""
    env = dict(os.environ, HOME=str(root / "home"))
    (root / "home").mkdir(parents=True)
    for variable, folder in JUPYTER_FOLDERS:
        (root / folder).mkdir(parents=True)
        env[variable] = str(root / folder)
    return env


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    """Status and body of a GET request; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@contextlib.contextmanager
def running_jupyterlab(root_dir: Path, env: dict[str, str], log_path: Path) -> Iterator[RunningLab]:
    """JupyterLab serving ``root_dir`` as `make lab` starts it; stopped (and waited for) on exit."""
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        _jupyter_executable(), "lab", *make_lab_arguments(),
        "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        # IdentityProvider.token is jupyter_server 2's name for the deprecated ServerApp.token.
        f"--IdentityProvider.token={token}",
        # Offline: no update checks, no extension manager, no news feed.
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
        "--LabApp.news_url=",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # as `make lab` does for root (containers, CI runners)
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=root_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_answering(f"{base_url}/api/status?token={token}", server, log_path)
        yield RunningLab(base_url, token, server)
    finally:
        _stop(server)


def make_lab_arguments() -> list[str]:
    """The arguments `make lab` gives `jupyter lab` (the Makefile's LAB_ARGS), run from the repository root."""
    for line in MAKEFILE.read_text().splitlines():
        name, _, value = line.partition(":=")
        if name.strip() == "LAB_ARGS":
            return value.split()
    pytest.fail(f"no LAB_ARGS line in {MAKEFILE}")


def _free_port() -> int:
    """A port nobody listens on now (the operating system picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _jupyter_executable() -> str:
    """The `jupyter` of this test's environment, the one `make lab` uses."""
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    if jupyter is None:
        pytest.fail(f"no jupyter executable next to {sys.executable}: run make install")
    return jupyter


def _wait_until_answering(url: str, server: subprocess.Popen, log_path: Path) -> None:
    """Poll ``url`` until the server answers, it dies, or the start-up time runs out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            http_get(url, timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)  # not listening yet
    pytest.fail(f"JupyterLab did not answer within {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """Ask the server to stop, and insist if it does not."""
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=20)
