"""A lesson on a busy machine: ``course bench``'s ``contention`` section.

Notebooks 05 and 06 pretrain live under a time cap, so a machine that is
busy with something else shows up twice: the lesson takes longer, and the
model gets fewer steps. This runs such a lesson top to bottom in a fresh
kernel, as JupyterLab would, once on the machine as it is and once beside
one program that keeps a core busy (``python -c "while True: pass"``), and
reports both run times and the share of the planned steps each run reached.

The kernel gets a learner's environment: no thread setting
(``OMP_NUM_THREADS``, ``COURSE_NUM_THREADS``) and no JupyterHub, so the
course's thread policy (``course_lib.threads``) decides as on a laptop.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import nbformat
from nbclient import NotebookClient

from course_lib.threads import HUB_VARIABLES

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

# The lessons that pretrain under a time cap, and what the cell that does it says.
LESSONS = {"06_gpt": "history = pretrain_gpt(", "05_bert": "history = pretrain_bert("}

# Printed by a cell added right after the training cell: what the run reached.
REPORT_CELL = ('import json as _json, torch as _torch\n'
               'print("CONTENTION " + _json.dumps({"steps": len(history.steps), "planned": train_config.steps, '
               '"threads": _torch.get_num_threads()}))')


@dataclass(frozen=True)
class LessonRun:
    """One run of a lesson: its wall time, the steps its pretraining reached of those planned, PyTorch's threads."""

    seconds: float
    steps: int
    planned: int
    threads: int

    @property
    def steps_fraction(self) -> float:
        return self.steps / self.planned


def learner_environment() -> dict[str, str]:
    """This process's environment without the settings that would overrule the thread policy."""
    overruling = {"OMP_NUM_THREADS", "COURSE_NUM_THREADS", *HUB_VARIABLES}
    return {name: value for name, value in os.environ.items() if name not in overruling}


@contextmanager
def busy_core(busy: bool) -> Iterator[None]:
    """With ``busy``, one more program keeps a core busy for as long as the block runs."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # the policy reads the machine's load over the last moments: let it be seen
        yield
    finally:
        spinner.kill()
        spinner.wait()


def run_lesson(lesson: str, busy: bool, timeout: float = 900, notebooks: Path = NOTEBOOKS) -> LessonRun:
    """Execute ``notebooks/<lesson>.ipynb`` in a fresh kernel, beside a busy core or not."""
    if lesson not in LESSONS:
        raise ValueError(f"lesson must be one of {sorted(LESSONS)}, got {lesson!r}")
    path = notebooks / f"{lesson}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not there: `course bench`'s contention section runs the course's "
                                "notebooks, so run it from a copy of the repository")
    notebook = nbformat.read(path, as_version=4)
    training = next(index for index, cell in enumerate(notebook.cells)
                    if cell.cell_type == "code" and LESSONS[lesson] in cell.source)
    notebook.cells.insert(training + 1, nbformat.v4.new_code_cell(REPORT_CELL))
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebooks)}})
    with busy_core(busy):
        start = time.perf_counter()
        client.execute(env=learner_environment())
        seconds = time.perf_counter() - start
    report = next(line for output in notebook.cells[training + 1].outputs if output.get("name") == "stdout"
                  for line in output.text.splitlines() if line.startswith("CONTENTION "))
    figures = json.loads(report.removeprefix("CONTENTION "))
    return LessonRun(seconds, figures["steps"], figures["planned"], figures["threads"])


def contention_table(lessons: tuple[str, ...] = ("06_gpt", "05_bert"), notebooks: Path = NOTEBOOKS) -> dict:
    """The first lesson's figures, idle and contended, and the same for the others under their names."""
    table = {}
    for lesson in lessons:
        idle = run_lesson(lesson, busy=False, notebooks=notebooks)
        contended = run_lesson(lesson, busy=True, notebooks=notebooks)
        figures = {"idle_seconds": idle.seconds, "contended_seconds": contended.seconds,
                   "slowdown": contended.seconds / idle.seconds,
                   "steps_fraction_idle": idle.steps_fraction, "steps_fraction_contended": contended.steps_fraction,
                   "threads_idle": idle.threads, "threads_contended": contended.threads}
        if not table:
            table = {"notebook": lesson, **figures}
        else:
            table[lesson] = figures
    return table
