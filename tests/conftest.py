"""Test selection: `make test-fast` runs everything not marked slow.

Whole modules that start kernels, servers or browsers are slow by nature;
they are listed here rather than marked line by line. Single slow tests
elsewhere carry ``@pytest.mark.slow`` themselves.
"""
from __future__ import annotations

import pytest

SLOW_MODULES = {"test_browser", "test_lab_server", "test_grading", "test_grading_sandbox"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
