"""`make lab` works: JupyterLab starts headless, serves the course's notebooks, and stops cleanly.

The server runs as `make lab` runs it (tests/lab_helpers.py), with its
Jupyter folders in a temporary directory. Nothing leaves localhost.
"""
from __future__ import annotations

import json
from pathlib import Path

from lab_helpers import http_get, isolated_environment, running_jupyterlab

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_jupyterlab_serves_the_notebooks(tmp_path):
    with running_jupyterlab(REPO_ROOT, isolated_environment(tmp_path), tmp_path / "jupyterlab.log") as lab:
        status, body = http_get(f"{lab.base_url}/api/contents/notebooks?token={lab.token}")
        assert status == 200, body[:500]
        listed = {item["name"] for item in json.loads(body)["content"]}
        assert "00_welcome.ipynb" in listed, sorted(listed)

        status, body = http_get(f"{lab.base_url}/lab?token={lab.token}")
        assert status == 200, body[:500]
        assert b"JupyterLab" in body

        # The page `make lab` opens, and the kernel its notebooks ask for.
        status, body = http_get(f"{lab.base_url}/lab/tree/notebooks/00_welcome.ipynb?token={lab.token}")
        assert status == 200, body[:500]
        status, body = http_get(f"{lab.base_url}/api/kernelspecs?token={lab.token}")
        assert status == 200 and "python3" in json.loads(body)["kernelspecs"], body[:500]

        # The README's exercise workflow starts in the file browser: exercises and
        # solutions are served too, not only the folder of the notebook it opens.
        for path in ("exercises/01_attention.ipynb", "solutions/01_attention.ipynb"):
            status, body = http_get(f"{lab.base_url}/api/contents/{path}?token={lab.token}")
            assert status == 200, f"{path}: {body[:300]!r}"
            assert json.loads(body)["type"] == "notebook"

        # Without the token the contents stay private.
        status, _ = http_get(f"{lab.base_url}/api/contents/notebooks")
        assert status == 403
    assert lab.server.returncode is not None  # stopped
