"""`course doctor`: all OK in the course's own environment, and useful lines when something is wrong."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from course_lib.tools import doctor
from course_lib.tools.cli import main
from course_lib.tools.doctor import FAIL, OK, WARN, CheckResult

STATUS_PREFIXES = ("[OK] ", "[WARN] ", "[FAIL] ")


# -- the whole doctor in this environment -------------------------------------------------------

def test_every_check_passes_in_the_course_environment():
    results = doctor.run_checks()
    failed = [result.line() for result in results if result.status == FAIL]
    assert not failed, "\n".join(failed)
    # One result per package plus six other checks.
    assert len(results) == len(doctor.REQUIRED_PACKAGES) + 6


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


# -- versions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("installed, pinned, expected", [
    ("2.4.6", "2.4.6", True),
    ("2.13.0+cpu", "2.13.0", True),   # torch's build label is not a different release
    ("2.13.0+cu121", "2.13.0", True),
    ("2.13.0", "2.13.0+cpu", True),
    ("2.3.0", "2.4.6", False),
    ("2.13.1+cpu", "2.13.0", False),
])
def test_versions_match(installed, pinned, expected):
    assert doctor.versions_match(installed, pinned) is expected


def test_public_version_rejects_an_empty_version():
    with pytest.raises(ValueError, match="version"):
        doctor.public_version("  ")


def test_parse_constraints_keeps_exact_pins_and_normalizes_names():
    text = "# a comment\n\nJupyterLab_Widgets==3.0.17\ntorch==2.13.0  # CPU build\nnumpy>=2\n" \
           'pytest==9.2.0 ; python_version >= "3.10"\n'
    assert doctor.parse_constraints(text) == {"jupyterlab-widgets": "3.0.17", "torch": "2.13.0", "pytest": "9.2.0"}


def test_the_repository_constraints_pin_every_required_package():
    pins = doctor.read_constraints()
    assert pins is not None, f"{doctor.CONSTRAINTS_PATH} should exist next to the package"
    assert all(doctor.normalize_name(name) in pins for name in doctor.REQUIRED_PACKAGES)


def test_a_missing_constraints_file_is_a_warning_not_a_failure(tmp_path):
    missing = tmp_path / "constraints.txt"
    assert doctor.read_constraints(missing) is None
    result = doctor.check_constraints_file(None, missing)
    assert result.status == WARN and "not compared" in result.message
    assert doctor.check_package("numpy", "1.0.0", None).status == OK


# -- failure paths with made-up data -------------------------------------------------------------

def test_a_version_that_differs_from_its_pin_fails_with_a_fix():
    result = doctor.check_package("numpy", "2.3.0", {"numpy": "2.4.6"})
    assert result.status == FAIL
    line = result.line()
    assert line.startswith("[FAIL] numpy 2.3.0 installed, constraints.txt pins 2.4.6 -> fix: ")
    assert 'pip install -c constraints.txt -e ".[dev]"' in line


def test_torch_with_its_cpu_label_matches_its_pin():
    result = doctor.check_package("torch", "2.13.0+cpu", {"torch": "2.13.0"})
    assert result.status == OK and "2.13.0+cpu" in result.message


def test_a_missing_package_fails():
    results = doctor.check_packages({"torch": "2.13.0"}, version_of=lambda name: None)
    assert len(results) == len(doctor.REQUIRED_PACKAGES)
    assert all(r.status == FAIL and "is not installed" in r.message and r.fix for r in results)


def test_python_versions():
    assert doctor.check_python((3, 11, 7)).line() == "[OK] Python 3.11.7"
    assert doctor.check_python((3, 12, 1)).status == OK
    too_old = doctor.check_python((3, 9, 18))
    assert too_old.status == FAIL and "make install PYTHON=python3.11" in too_old.fix


def test_one_thread_on_a_multicore_machine_is_a_warning(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = doctor.check_threads(num_threads=1, cpu_count=8)
    assert result.status == WARN
    assert "OMP_NUM_THREADS=1" in result.message and "export OMP_NUM_THREADS=8" in result.fix
    assert doctor.check_threads(num_threads=1, cpu_count=1).status == OK
    assert doctor.check_threads(num_threads=4, cpu_count=8).status == OK


def test_a_missing_kernel_fails_with_the_install_command(tmp_path):
    # jupyter_client always finds "python3" while ipykernel is importable, so
    # ask for a kernel name that exists nowhere.
    empty = KernelSpecManager(kernel_dirs=[str(tmp_path)], ensure_native_kernel=False)
    result = doctor.check_kernel(empty, kernel_name="no-such-kernel")
    assert result.status == FAIL
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
    assert result.status == FAIL and "cannot be started" in result.message


@pytest.mark.skipif(sys.platform == "win32", reason="uses a POSIX shell script as the kernel's Python")
def test_a_kernel_whose_python_cannot_import_course_lib_fails(tmp_path):
    # `python -S` skips site-packages, where the editable install of course_lib
    # is registered: a Python that does not have the course installed.
    wrapper = tmp_path / "python-without-site"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    result = doctor.check_kernel(_kernel_manager_with(tmp_path, [str(wrapper)]))
    assert result.status == FAIL
    assert "cannot import course_lib" in result.message and "ModuleNotFoundError" in result.message


def test_a_loose_python_in_a_kernel_spec_means_this_python():
    assert doctor.kernel_python(["python", "-m", "ipykernel_launcher"]) == sys.executable
    assert doctor.kernel_python(["/opt/other/bin/python3"]) == "/opt/other/bin/python3"
    with pytest.raises(ValueError, match="argv"):
        doctor.kernel_python([])


def test_a_missing_widgets_extension_fails(tmp_path):
    result = doctor.check_widgets(prefix=tmp_path, version_of=lambda name: "3.0.17")
    assert result.status == FAIL and "extension is missing" in result.message
    not_installed = doctor.check_widgets(prefix=tmp_path, version_of=lambda name: None)
    assert not_installed.status == FAIL and "not installed" in not_installed.message


def test_a_crashing_check_becomes_a_fail_line():
    def broken_check():
        raise RuntimeError("boom")

    [result] = doctor._guarded(broken_check)
    assert result.status == FAIL and "broken_check crashed: RuntimeError: boom" in result.message


def test_check_result_needs_a_known_status_and_a_fix_unless_ok():
    with pytest.raises(ValueError, match="status"):
        CheckResult("BAD", "message")
    with pytest.raises(ValueError, match="fix"):
        CheckResult(FAIL, "something is broken")
    assert CheckResult(OK, "fine").line() == "[OK] fine"
