"""Test selection: `make test-fast` runs everything not marked slow.

Whole modules that start kernels, servers or browsers are slow by nature;
they are listed here rather than marked line by line, and so are notebook
cells when nbval collects them in the same session (`make test`). Single slow tests
elsewhere carry ``@pytest.mark.slow`` themselves.
"""
from __future__ import annotations

import pytest

SLOW_MODULES = {"test_browser", "test_lab_server", "test_grading", "test_grading_sandbox"}


def pytest_collection_modifyitems(items):
    for item in items:
        # Notebook cells collected by nbval in the same session have no module; they run kernels.
        module = getattr(item, "module", None)
        if module is None or module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
