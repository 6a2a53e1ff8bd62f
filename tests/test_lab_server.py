"""`make lab` works: JupyterLab starts headless, serves the course's notebooks, and stops cleanly.

The server runs as `make lab` runs it, plus what a test needs: no browser, a
free port on localhost, a random token, and Jupyter's folders in a temporary
directory so that neither the tester's home nor a previous run can change the
result. Nothing leaves localhost.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 60


def _free_port() -> int:
    """A port nobody listens on now (the operating system picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _jupyter_executable() -> str:
    """The `jupyter` of this test's environment, the one `make lab` uses."""
    bin_dir = Path(sys.executable).parent
    jupyter = shutil.which("jupyter", path=str(bin_dir))
    if jupyter is None:
        pytest.fail(f"no jupyter executable next to {sys.executable}: run make install")
    return jupyter


def _isolated_environment(tmp_path: Path) -> dict[str, str]:
    """This environment with every Jupyter folder moved under ``tmp_path``."""
    env = dict(os.environ)
    for variable, folder in [("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_CONFIG_DIR", "config"),
                             ("JUPYTER_DATA_DIR", "data"), ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
                             ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"), ("IPYTHONDIR", "ipython")]:
        (tmp_path / folder).mkdir()
        env[variable] = str(tmp_path / folder)
    return env


def _get(url: str) -> tuple[int, bytes]:
    """Status and body of a GET request; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait_until_answering(url: str, server: subprocess.Popen, log_path: Path) -> None:
    """Poll ``url`` until the server answers, it dies, or the start-up time runs out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            _get(url)
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


def test_jupyterlab_serves_the_notebooks(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        _jupyter_executable(), "lab", "notebooks/00_welcome.ipynb",
        "--no-browser", "--ServerApp.open_browser=False",
        "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        # IdentityProvider.token is jupyter_server 2's name for the deprecated ServerApp.token.
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO_ROOT}",
        # The defaults may ask pypi.org for updates and extensions; a test stays offline.
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Containers and CI runners often run as root, which Jupyter refuses without this flag.
        command.append("--allow-root")
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=REPO_ROOT, env=_isolated_environment(tmp_path),
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_answering(f"{base_url}/api/status?token={token}", server, log_path)

        status, body = _get(f"{base_url}/api/contents/notebooks?token={token}")
        assert status == 200, body[:500]
        listed = {item["name"] for item in json.loads(body)["content"]}
        assert "00_welcome.ipynb" in listed, sorted(listed)

        status, body = _get(f"{base_url}/lab?token={token}")
        assert status == 200, body[:500]
        assert b"JupyterLab" in body

        # The page `make lab` opens, and the kernel its notebooks ask for.
        status, body = _get(f"{base_url}/lab/tree/notebooks/00_welcome.ipynb?token={token}")
        assert status == 200, body[:500]
        status, body = _get(f"{base_url}/api/kernelspecs?token={token}")
        assert status == 200 and "python3" in json.loads(body)["kernelspecs"], body[:500]

        # Without the token the contents stay private.
        status, _ = _get(f"{base_url}/api/contents/notebooks")
        assert status == 403
    finally:
        _stop(server)
    assert server.returncode is not None
