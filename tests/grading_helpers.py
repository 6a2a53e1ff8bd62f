"""Learners, notebooks and listeners shared by the grader's tests (tests/test_grading*.py)."""
from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]

RIGHT_SOFTMAX = '''def softmax(x, dim=-1):
    shifted = x - x.amax(dim=dim, keepdim=True)
    return shifted.exp() / shifted.exp().sum(dim=dim, keepdim=True)'''

# Wrong on every case: what a cheat starts from.
ZERO_SOFTMAX = """def softmax(x, dim=-1):
    return torch.zeros_like(x)"""


def exercise_notebook(name: str) -> nbformat.NotebookNode:
    """A fresh copy of the generated exercise notebook, as a learner receives it."""
    return nbformat.read(REPO / "exercises" / f"{name}.ipynb", as_version=4)


def solve(notebook: nbformat.NotebookNode, answers: dict[str, str]) -> nbformat.NotebookNode:
    """Write each answer into the solution cell of its exercise id, as a learner does in JupyterLab."""
    for cell in notebook.cells:
        marks = cell.metadata.get("course", {})
        if marks.get("role") == "solution" and marks["exercise"] in answers:
            cell.source = answers[marks["exercise"]]
    return notebook


def save(notebook: nbformat.NotebookNode, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


def softmax_learner(root: Path, learner: str, source: str, file_name: str = "my_warmup.ipynb") -> None:
    """A learner who submits only notebook 00, with ``source`` as the softmax cell."""
    save(solve(exercise_notebook("00_warmup"), {"00.softmax": source}), root / learner / file_name)


class Listener:
    """A TCP server on localhost that records whether anyone connected: the kernels must not reach it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def file_hashes(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def copy_course(solutions: Path, names: tuple[str, ...]) -> Path:
    """The course's solutions notebooks ``names``, copied into ``solutions``: tests need not depend on them all."""
    solutions.mkdir(parents=True)
    for name in names:
        (solutions / f"{name}.ipynb").write_bytes((REPO / "solutions" / f"{name}.ipynb").read_bytes())
    return solutions
