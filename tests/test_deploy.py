"""The class deployment's files, checked without a container engine or a cluster (deploy/).

The development machine can run neither Docker nor Kubernetes, so the image
and the chart's values are checked for what would break them or the class:
files the image copies that do not exist, packages it installs that
constraints.txt does not pin, an editable install, solutions/ or tests/ in the
build, JupyterLab settings under a plugin id this JupyterLab does not know
(a slash instead of the colon is silently ignored), limits below what a
learner was measured to need. tests/test_jupyterhub.py runs the same
settings on a real hub.
"""
from __future__ import annotations

import fnmatch
import json
import re
import shlex
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from traitlets.config.loader import PyFileConfigLoader

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
ENVIRONMENT = DEPLOY / "environment"
DOCKERFILE = DEPLOY / "image" / "Dockerfile"
LAB_SCHEMAS = Path(sys.prefix) / "share" / "jupyter" / "lab" / "schemas"
GIB = 2**30

# Measured on the 2-core development machine (deploy/README.md, "Sizing"): a learner's server
# without kernels, the most any lesson's kernel held (notebook 06), and an exercises notebook's kernel.
SERVER_GIB, LESSON_PEAK_GIB, EXERCISES_KERNEL_GIB = 0.16, 1.04, 0.43


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


# -- the learners' environment: JupyterLab's class settings and the server's kernel culling -----------

def class_settings() -> list[tuple[str, str, object]]:
    files = sorted((ENVIRONMENT / "share" / "jupyter" / "lab" / "settings" / "overrides.d").glob("*.json"))
    assert files, "no JupyterLab settings for the class"
    return [(plugin, key, value) for file in files for plugin, values in json.loads(file.read_text()).items()
            for key, value in values.items()]


@pytest.mark.parametrize("plugin, key, value", class_settings())
def test_each_class_setting_is_a_valid_value_of_a_real_jupyterlab_setting(plugin, key, value):
    package, colon, name = plugin.partition(":")
    assert colon and "/" not in name, f"{plugin}: JupyterLab ignores a plugin id without the colon"
    schema_file = LAB_SCHEMAS / package / f"{name}.json"
    assert schema_file.is_file(), f"{plugin}: this JupyterLab has no such plugin"
    properties = json.loads(schema_file.read_text())["properties"]
    assert key in properties, f"{plugin} has no setting {key!r}"
    jsonschema.validate(value, properties[key])


def test_the_class_settings_keep_news_and_windowing_out_of_a_class():
    settings = {(plugin, key): value for plugin, key, value in class_settings()}
    assert settings[("@jupyterlab/apputils-extension:notification", "fetchNews")] == "false"
    assert settings[("@jupyterlab/notebook-extension:tracker", "windowingMode")] == "none"


def test_kernel_culling_names_real_settings_of_the_server():
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    config = json.loads((ENVIRONMENT / "etc" / "jupyter" / "jupyter_server_config.d" / "course-class.json").read_text())
    assert set(config) == {"MappingKernelManager"}
    traits = MappingKernelManager.class_traits(config=True)
    for name, value in config["MappingKernelManager"].items():
        assert name in traits, f"MappingKernelManager has no setting {name!r}"
        traits[name].validate(None, value)
    assert config["MappingKernelManager"]["cull_idle_timeout"] >= 1800, "a kernel must survive a break"


# -- the image ---------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                                if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def copied_sources() -> list[str]:
    return [source for instruction, arguments in dockerfile_instructions() if instruction == "COPY"
            for source in shlex.split(arguments)[:-1] if not source.startswith("--")]


def pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` the image runs."""
    commands = []
    for instruction, arguments in dockerfile_instructions():
        if instruction == "RUN":
            for command in arguments.split("&&"):
                words = shlex.split(command)
                if words[:2] == ["pip", "install"]:
                    commands.append(words[2:])
    return commands


def test_the_image_copies_files_that_exist_and_never_the_solutions_or_the_tests():
    sources = copied_sources()
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        top = Path(source).parts[0]
        assert top not in {"solutions", "tests", ".", ".venv", ".git"}, f"the image must not hold {source}"


def test_the_build_context_lets_in_what_the_image_copies_and_keeps_solutions_and_tests_out():
    patterns = [line.strip() for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def sent_to_the_build(path: str) -> bool:
        """Docker's rule: the last pattern that matches the path, or a folder above it, decides."""
        included = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            parents = [str(Path(*Path(path).parts[:count])) for count in range(1, len(Path(path).parts) + 1)]
            if any(fnmatch.fnmatch(part, bare) for part in parents):
                included = negated
        return included

    for source in copied_sources():
        assert sent_to_the_build(source.rstrip("/") + "/__init__.py" if (REPO / source).is_dir() else source), source
    for kept_out in ("solutions/01_attention.ipynb", "tests/test_models.py", ".venv/bin/python", ".git/HEAD"):
        assert not sent_to_the_build(kept_out), f"{kept_out} would be sent to the build"


def test_the_image_installs_torch_from_the_cpu_index_and_the_course_never_editable():
    installs = pip_installs()
    assert installs
    for arguments in installs:
        assert "-e" not in arguments and "--editable" not in arguments, arguments
        assert "-c" in arguments and arguments[arguments.index("-c") + 1].endswith("constraints.txt"), arguments
    torch_installs = [arguments for arguments in installs if "torch" in arguments]
    assert torch_installs and torch_installs[0][torch_installs[0].index("--index-url") + 1] == \
        "https://download.pytorch.org/whl/cpu"
    assert any(any(word.startswith("/tmp/course") for word in arguments) for arguments in installs)


def test_every_package_the_image_installs_is_pinned_and_is_what_the_tests_ran():
    """What the image asks for, and all they need in turn, is in constraints.txt at the version installed here."""
    pins = constraints()
    requested = {canonicalize_name(word) for arguments in pip_installs() for word in arguments
                 if re.fullmatch(r"[A-Za-z][\w.-]*", word) and not word.startswith("-")}
    requested |= {"course-lib"}  # the package itself, installed from its folder
    seen, queue = set(), sorted(requested)
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        distribution = metadata.distribution(name)
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                queue.append(canonicalize_name(requirement.name))
    unpinned = sorted(name for name in seen - {"course-lib"} if name not in pins)
    assert not unpinned, f"installed into the image but not pinned by constraints.txt: {unpinned}"
    drifted = {name: (pins[name], metadata.version(name)) for name in seen - {"course-lib"}
               if metadata.version(name).split("+")[0] != pins[name]}
    assert not drifted, f"constraints.txt pins other versions than the tested environment holds: {drifted}"


def test_the_image_sets_the_thread_policy_and_places_the_class_settings_on_its_environment():
    instructions = dockerfile_instructions()
    environment = dict(argument.split("=", 1) for instruction, argument in instructions if instruction == "ENV")
    assert environment["OMP_NUM_THREADS"] == "1"
    copies = [shlex.split(arguments) for instruction, arguments in instructions if instruction == "COPY"]
    assert ["deploy/environment/", environment["VIRTUAL_ENV"] + "/"] in copies


# -- Zero to JupyterHub ------------------------------------------------------------------------------

def values() -> dict:
    return yaml.safe_load((DEPLOY / "kubernetes" / "values.yaml").read_text())


def gibibytes(quantity: str) -> float:
    """A Kubernetes memory quantity ("1G", "2Gi", "512M", "512Mi") in GiB."""
    number, unit = re.fullmatch(r"([\d.]+)([KMG]i?)", quantity).groups()
    scale = {"K": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[unit]
    return float(number) * scale / GIB


def test_the_chart_values_size_each_learner_from_the_measurements():
    singleuser = values()["singleuser"]
    guarantee, limit = gibibytes(singleuser["memory"]["guarantee"]), gibibytes(singleuser["memory"]["limit"])
    assert guarantee >= SERVER_GIB + LESSON_PEAK_GIB, "the guarantee must hold a server with a lesson at its peak"
    assert limit >= SERVER_GIB + LESSON_PEAK_GIB + EXERCISES_KERNEL_GIB, \
        "the limit must hold a lesson at its peak beside an exercises notebook"
    assert 0 < singleuser["cpu"]["guarantee"] <= singleuser["cpu"]["limit"] == 1, "one thread: one core at most"


def test_the_chart_values_open_lab_cull_idle_servers_set_one_thread_and_hold_no_password():
    config = values()
    assert config["singleuser"]["defaultUrl"] == "/lab"
    assert config["singleuser"]["extraEnv"]["OMP_NUM_THREADS"] == "1"
    assert config["cull"]["enabled"] and config["cull"]["timeout"] >= 1800
    assert config["hub"]["config"]["JupyterHub"]["authenticator_class"] == "shared-password"
    assert "SharedPasswordAuthenticator" not in config["hub"]["config"], "passwords belong in passwords.yaml"


# -- the hub's own configuration files ------------------------------------------------------------------

def test_the_local_hub_starts_lab_with_one_thread_never_as_root(monkeypatch):
    monkeypatch.setenv("COURSE_HUB_PASSWORD", "a-class-password")
    monkeypatch.setenv("COURSE_HUB_LEARNERS", "ada grace")
    config = PyFileConfigLoader("jupyterhub_config.py", path=str(DEPLOY / "local")).load_config()
    assert config.Spawner.default_url == "/lab"
    assert config.Spawner.environment["OMP_NUM_THREADS"] == "1"
    assert config.JupyterHub.authenticator_class == "shared-password"
    assert config.Authenticator.allowed_users == {"ada", "grace"}
    assert "root" in config.Authenticator.blocked_users
    assert config.JupyterHub.ip == "127.0.0.1"


def test_the_local_hub_refuses_to_start_without_a_class_password(monkeypatch):
    monkeypatch.delenv("COURSE_HUB_PASSWORD", raising=False)
    monkeypatch.setenv("COURSE_HUB_LEARNERS", "ada")
    with pytest.raises(SystemExit, match="COURSE_HUB_PASSWORD is not set"):
        PyFileConfigLoader("jupyterhub_config.py", path=str(DEPLOY / "local")).load_config()


def test_the_littlest_jupyterhub_snippet_adds_one_thread_to_the_servers_environment():
    config = PyFileConfigLoader("course.py", path=str(DEPLOY / "littlest")).load_config()
    assert config.SystemdSpawner.environment.get_value({"TLJH": "kept"}) == {"TLJH": "kept", "OMP_NUM_THREADS": "1"}
