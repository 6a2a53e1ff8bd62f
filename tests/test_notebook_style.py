"""The lesson notebooks stay readable: short markdown cells, and every figure they link to exists."""

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
MAX_MARKDOWN_CHARACTERS = 2000  # about a screen or two (CURRICULUM.md, "Style of the notebooks")
FIGURE_LINK = re.compile(r"\]\((figures/[^)\s]+)")


def markdown_cells(path):
    notebook = nbformat.read(path, as_version=4)
    return [(index, cell.source) for index, cell in enumerate(notebook.cells) if cell.cell_type == "markdown"]


def test_there_are_notebooks_to_check():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_no_markdown_cell_is_longer_than_a_screen_or_two(path):
    too_long = [(index, len(source)) for index, source in markdown_cells(path) if len(source) > MAX_MARKDOWN_CHARACTERS]
    assert not too_long, (f"{path.name}: markdown cells (index, characters) over {MAX_MARKDOWN_CHARACTERS} "
                          f"characters; split them at a natural boundary: {too_long}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_every_figure_link_points_to_a_file(path):
    missing = [(index, link) for index, source in markdown_cells(path) for link in FIGURE_LINK.findall(source)
               if not (path.parent / link).is_file()]
    assert not missing, f"{path.name}: image links (cell index, path) to files that do not exist: {missing}"


# A fixed thread count above one: on a laptop it wastes cores; under `make test`, whose workers
# run one thread each (OMP_NUM_THREADS=1), it makes threads spin against each other (a notebook
# that did this ran ten times slower).
FIXED_THREADS = re.compile(r"set_num_threads\(\s*(?!1\s*\))\d+\s*\)")
EVERY_NOTEBOOK = sorted(NOTEBOOKS[0].parent.parent.glob("[nse]*/*.ipynb"))


@pytest.mark.parametrize("path", EVERY_NOTEBOOK, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_no_notebook_fixes_the_number_of_threads(path):
    notebook = nbformat.read(path, as_version=4)
    fixed = [index for index, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and FIXED_THREADS.search(cell.source)]
    assert not fixed, f"{path.parent.name}/{path.name}: cells {fixed} set a fixed number of threads above one"


def test_the_thread_rule_catches_what_it_names():
    assert FIXED_THREADS.search("torch.set_num_threads(2)") and FIXED_THREADS.search("torch.set_num_threads(16)")
    assert not FIXED_THREADS.search("torch.set_num_threads(1)")
    assert not FIXED_THREADS.search("torch.set_num_threads(cores)")
