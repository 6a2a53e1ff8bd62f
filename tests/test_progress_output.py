"""Progress bars in notebooks: the saved output is the final state, and a time cap says so."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
COMMITTED_NOTEBOOKS = sorted(p for folder in ("notebooks", "solutions", "exercises")
                             for p in (REPO / folder).glob("*.ipynb") if ".backup-" not in p.name)
# tqdm's meter: "training: 100%|##########| 1500/1500 [00:48<00:00, ...]"
PROGRESS_COUNT = re.compile(r"(\d+)/(\d+) \[")

TRAINING_CELL = '''
import itertools, time
import torch
from course_lib.training import TrainConfig, train

model = torch.nn.Linear(4, 1)
batches = itertools.repeat((torch.randn(8, 4), torch.randn(8, 1)))

def slow_loss(model, batch):
    time.sleep(0.01)
    inputs, targets = batch
    return ((model(inputs) - targets) ** 2).mean()

history = train(model, batches, slow_loss, TrainConfig(steps=500, warmup_steps=10, eval_every=50), max_seconds=0.5)
'''


def progress_texts(notebook) -> list[str]:
    """The text that a saved notebook shows for each progress bar it holds."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/plain", "")
            if PROGRESS_COUNT.search(text):
                texts.append(text)
    return texts


@pytest.mark.parametrize("path", COMMITTED_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_notebooks_store_only_finished_progress_bars(path):
    for text in progress_texts(nbformat.read(path, as_version=4)):
        done, total = map(int, PROGRESS_COUNT.search(text).groups())
        assert done == total, f"{path.name} stores a progress bar that is not in its final state: {text!r}"


def test_the_scan_sees_a_stale_bar():
    stale = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output(
        "display_data", data={"text/plain": "training:   0%|          | 0/1500 [00:00<?, ?it/s]"})])])
    assert progress_texts(stale) == ["training:   0%|          | 0/1500 [00:00<?, ?it/s]"]


@pytest.mark.slow
def test_a_time_capped_run_in_a_kernel_says_so_and_saves_its_final_bar():
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(TRAINING_CELL)])
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    bars = progress_texts(notebook)
    assert len(bars) == 1, json.dumps(outputs, indent=1)
    done, total = map(int, PROGRESS_COUNT.search(bars[0]).groups())
    assert done == total < 500, bars[0]
    assert "(time cap)" in bars[0]
    printed = "".join(output.get("text", "") for output in outputs if output["output_type"] == "stream")
    assert f"Stopped by the time cap of 0.5 s after {done} of 500 steps" in printed
