"""The course in a real browser: JupyterLab runs notebook 01 and an exercises notebook, and everything renders.

JupyterLab starts as `make lab` starts it, on a temporary copy of the
course with a temporary home, and Debian's chromium drives it through
playwright (no browser is downloaded). The test runs every cell, then
checks that the attention explorer's controls are there and redraw on a
change, that plots arrive as images, and that no cell raised. Screenshots
go to $COURSE_ARTIFACTS, or artifacts/browser/ at the repository root.

Skipped, with the reason, where playwright or chromium is missing.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from lab_helpers import STARTUP_TIMEOUT_S, isolated_environment, running_jupyterlab

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
RUN_ALL_TIMEOUT_S = 120

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)


def artifacts_dir() -> Path:
    directory = Path(os.environ.get("COURSE_ARTIFACTS", REPO_ROOT / "artifacts" / "browser"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _write_user_settings(settings_dir: Path) -> None:
    """JupyterLab settings of the temporary home.

    Every cell stays in the page (JupyterLab 4 otherwise leaves cells far
    off screen out of it, and the checks below could not see them); the
    notebook's own kernel starts without asking, even when the page loads
    before the list of kernels (on a busy machine); no news is fetched.
    """
    settings = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
            "windowingMode": "none", "autoStartDefaultKernel": True,
        },
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false", "checkForUpdates": False,
        },
    }
    for relative_path, values in settings.items():
        path = settings_dir / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running JupyterLab on a copy of the course: yields (base URL, token, course copy)."""
    root = tmp_path_factory.mktemp("browser")
    course = root / "course"
    for folder in ("notebooks", "exercises"):
        shutil.copytree(REPO_ROOT / folder, course / folder)
    env = isolated_environment(root)
    _write_user_settings(root / "lab-settings")
    with running_jupyterlab(course, env, root / "jupyterlab.log") as running:
        yield running.base_url, running.token, course


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


def open_notebook(page, lab, path: str, workspace: str):
    """Open ``path`` alone in a fresh workspace and wait until its kernel is idle. Returns the notebook panel."""
    base_url, token, _ = lab
    page.goto(f"{base_url}/lab/workspaces/{workspace}/tree/{path}?reset&token={token}")
    panel = page.locator(".jp-NotebookPanel:visible").first
    panel.locator(".jp-Cell").first.wait_for(timeout=STARTUP_TIMEOUT_S * 1000)
    # The status bar reads "Python 3 (ipykernel) | Idle" once the kernel is ready ("No Kernel" before).
    page.locator("#jp-main-statusbar", has_text="ipykernel) | Idle").wait_for(timeout=STARTUP_TIMEOUT_S * 1000)
    return panel


def run_all_cells(page, panel) -> None:
    """Clear every output, run all cells, and wait until every code cell shows an execution count.

    Clearing first makes the committed outputs (and their counts) vanish, so
    what is checked afterwards is what this run produced.
    """
    page.get_by_role("menuitem", name="Edit", exact=True).click()
    page.get_by_role("menuitem", name="Clear Outputs of All Cells", exact=True).click()
    sync_api.expect(panel.locator(".jp-OutputArea-output")).to_have_count(0)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    prompts = panel.locator(".jp-CodeCell .jp-InputPrompt")
    deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
    while time.monotonic() < deadline:
        texts = prompts.all_inner_texts()
        if texts and all(text.strip("[]: ").isdigit() for text in texts):
            return
        time.sleep(0.5)
    pytest.fail(f"the notebook did not finish within {RUN_ALL_TIMEOUT_S} s; prompts: {prompts.all_inner_texts()}")


def save_and_read(page, lab, path: str) -> nbformat.NotebookNode:
    """Save the notebook from the browser and read what JupyterLab wrote: the outputs as the learner saw them."""
    file = lab[2] / path
    before = file.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while file.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert file.stat().st_mtime_ns != before, f"JupyterLab did not save {path}"
    return nbformat.read(file, as_version=4)


def errors_in(notebook: nbformat.NotebookNode) -> list[str]:
    return [f"cell {index}: {output.ename}: {output.evalue}"
            for index, cell in enumerate(notebook.cells, start=1)
            for output in cell.get("outputs", []) if output.output_type == "error"]


def test_lesson_01_runs_with_working_widgets_and_plots(page, lab):
    path = "notebooks/01_attention.ipynb"
    panel = open_notebook(page, lab, path, "lesson")
    run_all_cells(page, panel)
    page.screenshot(path=artifacts_dir() / "lesson-01_attention-after-run-all.png")

    saved = save_and_read(page, lab, path)
    assert errors_in(saved) == []
    plots = [output for cell in saved.cells for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]
    assert len(plots) >= 3, "the lesson's plots should be saved as images"
    assert panel.locator(".jp-RenderedImage img").count() >= len(plots), "every plot should be shown as an image"

    # The attention explorer: a story and a query dropdown, a scale slider, a reset button, and its bars.
    def label(text: str):
        return page.get_by_text(text, exact=True)

    explorer = panel.locator(".widget-vbox").filter(has=label("query")).first
    explorer.scroll_into_view_if_needed()
    assert explorer.locator(".widget-dropdown select").count() == 2  # story and query
    assert explorer.locator(".widget-slider").filter(has=label("scale")).count() == 1
    assert explorer.locator("button", has_text="d_k").count() == 1
    query = explorer.locator(".widget-dropdown").filter(has=label("query")).locator("select")
    bars = explorer.locator(".jp-OutputArea-output img").first
    bars.wait_for()
    before = bars.get_attribute("src")
    options = query.locator("option").all_inner_texts()
    assert len(options) > 2, options
    query.select_option(label=options[-1])
    deadline = time.monotonic() + 30
    while bars.get_attribute("src") == before and time.monotonic() < deadline:
        time.sleep(0.2)
    explorer.screenshot(path=artifacts_dir() / "lesson-01_attention-explorer-after-change.png")
    assert bars.get_attribute("src") != before, "the explorer did not redraw after the query changed"


def test_an_exercises_notebook_runs_and_reports_not_implemented(page, lab):
    path = "exercises/01_attention.ipynb"
    panel = open_notebook(page, lab, path, "exercises")
    run_all_cells(page, panel)
    page.screenshot(path=artifacts_dir() / "exercises-01_attention-after-run-all.png")

    saved = save_and_read(page, lab, path)
    assert errors_in(saved) == []
    assert panel.get_by_text("not implemented yet", exact=False).count() >= 2  # one per check cell
    assert panel.locator(".jp-RenderedImage img").count() >= 1
