"""`course doctor`: is this environment ready for the course?

Every check is a plain function that returns a ``CheckResult``; tests call
them with made-up data to see the failure paths. ``run_doctor`` runs them
all and prints one line per check::

    [OK] Python 3.11.7
    [FAIL] numpy 2.3.0 installed, constraints.txt pins 2.4.6 -> fix: .venv/bin/python -m pip install ...

A line that is not ``[OK]`` always ends with a command that fixes it.
Nothing here touches the network: the doctor only looks at what is installed.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

OK, WARN, FAIL = "OK", "WARN", "FAIL"
STATUSES = (OK, WARN, FAIL)

MIN_PYTHON = (3, 10)
TESTED_PYTHON = (3, 11)

# The package is installed editable, so the repository sits right above it.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parent
CONSTRAINTS_PATH = REPO_ROOT / "constraints.txt"

# What the course imports, by distribution name (the name pip knows).
REQUIRED_PACKAGES = ("torch", "jupyterlab", "ipywidgets", "ipykernel", "matplotlib", "tqdm", "numpy",
                     "nbval", "pytest", "nbformat", "nbclient")

# JupyterLab only shows widgets when this front-end extension is installed.
WIDGETS_EXTENSION = Path("share", "jupyter", "labextensions", "@jupyter-widgets", "jupyterlab-manager")

# Kernel specs may name the interpreter loosely; jupyter_client then starts the
# Python that runs Jupyter itself (see KernelManager.format_kernel_cmd).
_LOOSE_PYTHON_NAMES = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check: a status, what was found and, unless OK, how to fix it."""

    status: str
    message: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status != OK and not self.fix:
            raise ValueError(f"a {self.status} result needs a fix, got fix={self.fix!r}")

    def line(self) -> str:
        """The line ``course doctor`` prints, for example ``[FAIL] ... -> fix: make install``."""
        text = f"[{self.status}] {self.message}"
        return text if self.fix is None else f"{text} -> fix: {self.fix}"


# -- fix commands -------------------------------------------------------------------------------

def _python_for_hints() -> str:
    """This interpreter as a learner would type it in the repository: ``.venv/bin/python``."""
    executable = Path(sys.executable)
    try:
        return str(executable.relative_to(REPO_ROOT))
    except ValueError:
        return shlex.quote(str(executable))


def _in_repo(command: str) -> str:
    """``command`` prefixed with a ``cd`` to the repository, where constraints.txt lives."""
    return f"cd {shlex.quote(str(REPO_ROOT))} && {command}"


def pip_fix() -> str:
    """The command that installs every dependency at its pinned version."""
    return _in_repo(f'{_python_for_hints()} -m pip install -c constraints.txt -e ".[dev]"')


# -- Python -------------------------------------------------------------------------------------

def check_python(version_info: Sequence[int] | None = None) -> CheckResult:
    """Python must be 3.10 or newer; 3.11 is the version the course is tested on."""
    version = tuple(sys.version_info[:3] if version_info is None else version_info[:3])
    if len(version) < 2 or not all(isinstance(part, int) for part in version):
        raise ValueError(f"version_info must start with integers (major, minor), got {version_info!r}")
    shown = ".".join(str(part) for part in version)
    if version[:2] < MIN_PYTHON:
        return CheckResult(FAIL, f"Python {shown} is too old: the course needs 3.10 or newer",
                           "install Python 3.11, then: make clean && make install PYTHON=python3.11")
    if version[:2] != TESTED_PYTHON:
        return CheckResult(OK, f"Python {shown} (supported; the course is tested on 3.11)")
    return CheckResult(OK, f"Python {shown}")


# -- packages and their pinned versions -------------------------------------------------------

def normalize_name(name: str) -> str:
    """A distribution name as pip compares them: ``Jupyter_Client`` and ``jupyter-client`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """The version without its local label: ``2.13.0+cpu`` becomes ``2.13.0``.

    PyTorch labels its builds (``+cpu``, ``+cu121``); the label says how it was
    built, not which release it is, so it does not count as a different version.
    """
    if not isinstance(version, str) or not version.strip():
        raise ValueError(f"version must be a non-empty string, got {version!r}")
    return version.strip().split("+", 1)[0]


def versions_match(installed: str, pinned: str) -> bool:
    """True when ``installed`` is the release that ``pinned`` names (local labels ignored)."""
    return public_version(installed) == public_version(pinned)


def parse_constraints(text: str) -> dict[str, str]:
    """The exact pins of a constraints file: ``{normalized name: version}``.

    Only ``name==version`` lines pin one version; comments, blank lines and
    looser requirements (``name>=1.0``) are skipped.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    pins = {}
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].split(";", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*(\S+)", line)
        if match:
            pins[normalize_name(match.group(1))] = match.group(2)
    return pins


def read_constraints(path: str | Path | None = None) -> dict[str, str] | None:
    """The pins of ``constraints.txt`` (the repository's by default), or None if there is no such file."""
    path = CONSTRAINTS_PATH if path is None else Path(path)
    if not path.is_file():
        return None
    return parse_constraints(path.read_text(encoding="utf-8"))


def check_constraints_file(pins: dict[str, str] | None, path: str | Path | None = None) -> CheckResult:
    """Say whether versions can be compared: without constraints.txt they cannot."""
    path = CONSTRAINTS_PATH if path is None else Path(path)
    if pins is None:
        return CheckResult(WARN, f"{path} not found, so installed versions are not compared with the pinned ones",
                           "in a clone of the course repository (where constraints.txt is): make install")
    return CheckResult(OK, f"constraints.txt found ({len(pins)} pinned versions)")


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None if it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_package(name: str, installed: str | None, pins: dict[str, str] | None) -> CheckResult:
    """Compare one package's installed version with its pin.

    ``installed`` is None when the package is missing; ``pins`` is None when
    no constraints file was found (then any installed version is accepted).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty package name, got {name!r}")
    if installed is None:
        return CheckResult(FAIL, f"{name} is not installed", pip_fix())
    if pins is None:
        return CheckResult(OK, f"{name} {installed} (no constraints.txt to compare with)")
    pinned = pins.get(normalize_name(name))
    if pinned is None:
        return CheckResult(OK, f"{name} {installed} (not pinned in constraints.txt)")
    if not versions_match(installed, pinned):
        return CheckResult(FAIL, f"{name} {installed} installed, constraints.txt pins {pinned}", pip_fix())
    if installed != pinned:  # same release, different build label, such as torch's "+cpu"
        return CheckResult(OK, f"{name} {installed} (the pinned {pinned}; build label ignored)")
    return CheckResult(OK, f"{name} {installed}")


def check_packages(pins: dict[str, str] | None,
                   version_of: Callable[[str], str | None] = installed_version) -> list[CheckResult]:
    """One result per package the course needs (``version_of`` finds what is installed)."""
    return [check_package(name, version_of(name), pins) for name in REQUIRED_PACKAGES]


# -- PyTorch ------------------------------------------------------------------------------------

def check_torch_computes() -> CheckResult:
    """Multiply two tiny matrices on the device the course will use and check the answer.

    An installed torch can still be broken (a missing library, an unsupported
    CPU, a driver mismatch); only a real computation shows it works.
    """
    try:
        import torch

        from course_lib.utils import get_device
    except Exception as error:  # any import failure means the same thing here: torch is unusable
        return CheckResult(FAIL, f"PyTorch cannot be imported ({type(error).__name__}: {error})", pip_fix())
    device = get_device()
    try:
        a = torch.arange(6.0, device=device).reshape(2, 3)
        product = (a @ a.T).cpu()
    except Exception as error:
        return CheckResult(FAIL, f"PyTorch failed a 2x3 matrix product on {device} ({error})", pip_fix())
    if not torch.equal(product, torch.tensor([[5.0, 14.0], [14.0, 50.0]])):
        return CheckResult(FAIL, f"PyTorch computed a wrong 2x3 matrix product on {device}: {product.tolist()}",
                           pip_fix())
    return CheckResult(OK, f"PyTorch {torch.__version__} computes; get_device() picks {device}")


def check_threads(num_threads: int | None = None, cpu_count: int | None = None) -> CheckResult:
    """PyTorch should use the machine's cores: a single thread makes training several times slower."""
    if num_threads is None:
        import torch

        num_threads = torch.get_num_threads()
    cpu_count = os.cpu_count() if cpu_count is None else cpu_count
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
    if cpu_count is None:  # os.cpu_count() may not know; nothing to compare then
        return CheckResult(OK, f"PyTorch uses {num_threads} threads (number of cores unknown)")
    if num_threads == 1 and cpu_count > 1:
        # PyTorch takes its thread count from OMP_NUM_THREADS, which some
        # clusters and IDEs set to 1 for every process.
        setting = os.environ.get("OMP_NUM_THREADS")
        reason = f" because OMP_NUM_THREADS={setting}" if setting is not None else ""
        return CheckResult(WARN, f"PyTorch uses 1 thread{reason} although this machine has {cpu_count} cores",
                           f"unset OMP_NUM_THREADS (or export OMP_NUM_THREADS={cpu_count}), then restart Jupyter")
    return CheckResult(OK, f"PyTorch uses {num_threads} threads on {cpu_count} cores")


# -- Jupyter ------------------------------------------------------------------------------------

def kernel_python(argv: Sequence[str]) -> str:
    """The interpreter a kernel spec's ``argv`` starts.

    A bare ``python`` means the Python that runs Jupyter, which is this one
    when Jupyter comes from the same environment (``make lab``).
    """
    if not argv:
        raise ValueError("argv must name the kernel's program, got an empty list")
    program = argv[0]
    return sys.executable if program in _LOOSE_PYTHON_NAMES else program


def check_kernel(spec_manager=None, kernel_name: str = "python3") -> CheckResult:
    """The notebooks run on kernel ``python3``; its Python must be able to import course_lib."""
    fix = _in_repo(f"{_python_for_hints()} -m ipykernel install --user") + "  (or: make install)"
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError as error:
        return CheckResult(FAIL, f"jupyter_client cannot be imported ({error})", pip_fix())
    manager = KernelSpecManager() if spec_manager is None else spec_manager
    try:
        spec = manager.get_kernel_spec(kernel_name)
    except NoSuchKernel:
        return CheckResult(FAIL, f"no Jupyter kernel named {kernel_name!r}", fix)
    python = kernel_python(spec.argv)
    # Run from a neutral folder so that the repository on the current path
    # cannot make an uninstalled course_lib importable by accident.
    try:
        completed = subprocess.run([python, "-c", "import course_lib; print(course_lib.__file__)"],
                                   capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    except (OSError, subprocess.TimeoutExpired) as error:
        return CheckResult(FAIL, f"kernel {kernel_name!r} points to {python}, which cannot be started ({error})", fix)
    if completed.returncode != 0:
        last_error_line = (completed.stderr.strip().splitlines() or ["no error message"])[-1]
        return CheckResult(FAIL, f"kernel {kernel_name!r} runs {python}, which cannot import course_lib "
                                 f"({last_error_line})", fix)
    imported_from = Path(completed.stdout.strip()).resolve().parent
    if imported_from != PACKAGE_DIR:
        return CheckResult(WARN, f"kernel {kernel_name!r} imports course_lib from {imported_from}, "
                                 f"not from this copy ({PACKAGE_DIR})", fix)
    return CheckResult(OK, f"Jupyter kernel {kernel_name!r} runs {python} and imports course_lib")


def check_widgets(prefix: str | Path | None = None,
                  version_of: Callable[[str], str | None] = installed_version) -> CheckResult:
    """Interactive widgets need jupyterlab_widgets and its JupyterLab extension in this environment."""
    prefix = Path(sys.prefix if prefix is None else prefix)
    version = version_of("jupyterlab_widgets")
    if version is None:
        return CheckResult(FAIL, "jupyterlab_widgets is not installed, so widgets will not show in JupyterLab",
                           pip_fix())
    extension = prefix / WIDGETS_EXTENSION
    if not (extension / "package.json").is_file():
        return CheckResult(FAIL, f"jupyterlab_widgets {version} is installed but its extension is missing "
                                 f"from {extension}",
                           _in_repo(f"{_python_for_hints()} -m pip install --force-reinstall --no-deps "
                                    "-c constraints.txt jupyterlab_widgets"))
    return CheckResult(OK, f"widgets extension present (jupyterlab_widgets {version})")


# -- all together -------------------------------------------------------------------------------

def _guarded(check: Callable[[], CheckResult | list[CheckResult]]) -> list[CheckResult]:
    """Run one check; a check that crashes becomes a FAIL line instead of stopping the doctor."""
    try:
        result = check()
    except Exception as error:
        return [CheckResult(FAIL, f"{check.__name__} crashed: {type(error).__name__}: {error}", pip_fix())]
    return result if isinstance(result, list) else [result]


def run_checks() -> list[CheckResult]:
    """Every check, in the order ``course doctor`` prints them."""
    pins = read_constraints()
    checks = [
        check_python,
        lambda: check_constraints_file(pins),
        lambda: check_packages(pins),
        check_torch_computes,
        check_threads,
        check_kernel,
        check_widgets,
    ]
    return [result for check in checks for result in _guarded(check)]


def summary(results: Sequence[CheckResult]) -> str:
    """One closing line: how many checks passed, warned and failed."""
    counts = {status: sum(result.status == status for result in results) for status in STATUSES}
    verdict = "this environment is ready for the course" if counts[FAIL] == 0 else "fix the FAIL lines above"
    return f"{counts[OK]} OK, {counts[WARN]} WARN, {counts[FAIL]} FAIL: {verdict}"


def run_doctor(print_line: Callable[[str], object] = print) -> int:
    """Print one line per check and a summary; return 0 when nothing failed, 1 otherwise."""
    results = run_checks()
    for result in results:
        print_line(result.line())
    print_line(summary(results))
    return 0 if all(result.status != FAIL for result in results) else 1
