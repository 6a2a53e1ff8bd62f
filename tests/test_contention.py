"""`course bench`'s contention section: a lesson run in a fresh kernel, idle and beside a busy core."""
import os

import nbformat
import pytest

from course_lib.tools import contention


def stand_in_lesson(folder, lesson="06_gpt"):
    """A notebook shaped like the lessons: it 'pretrains' by recording how many threads it had and stops early."""
    cells = [
        "import torch\nfrom course_lib.utils import seed_everything\nseed_everything(0);",
        "class History:\n    steps = list(range(9))\nclass Config:\n    steps = 10\n"
        "def pretrain_gpt(config):\n    return None, History()",
        "train_config = Config()\nmodel, history = pretrain_gpt(train_config)",
        "print('the rest of the lesson')",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    nbformat.write(notebook, folder / f"{lesson}.ipynb")


def test_the_kernel_gets_a_learners_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("COURSE_NUM_THREADS", "3")
    monkeypatch.setenv("JUPYTERHUB_USER", "ada")
    environment = contention.learner_environment()
    assert not {"OMP_NUM_THREADS", "COURSE_NUM_THREADS", "JUPYTERHUB_USER"} & set(environment)
    assert environment["PATH"] == os.environ["PATH"]


@pytest.mark.slow
def test_a_lesson_is_run_idle_and_beside_a_busy_core(tmp_path):
    stand_in_lesson(tmp_path)
    table = contention.contention_table(("06_gpt",), notebooks=tmp_path)
    assert table["notebook"] == "06_gpt"
    assert table["steps_fraction_idle"] == table["steps_fraction_contended"] == 0.9
    assert table["slowdown"] == pytest.approx(table["contended_seconds"] / table["idle_seconds"])
    # Beside a busy core the policy leaves it to the busy program: never more threads than when idle.
    assert 1 <= table["threads_contended"] <= table["threads_idle"]


def test_an_unknown_lesson_or_a_missing_notebook_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="lesson must be one of"):
        contention.run_lesson("03_transformer_encoder", busy=False)
    with pytest.raises(FileNotFoundError, match="from a copy of the repository"):
        contention.run_lesson("05_bert", busy=False, notebooks=tmp_path)
