"""The course's JupyterHub on one Linux machine, every learner a system user: what tests/test_jupyterhub.py starts.

Run it as root (the hub starts each learner's server as that learner):

    COURSE_HUB_PASSWORD=... COURSE_HUB_LEARNERS="ada grace" jupyterhub -f deploy/local/jupyterhub_config.py

The settings come from environment variables, so that a test (or you) can
run it without editing this file:

    COURSE_HUB_PASSWORD        the learners' shared password (8 characters or more); required
    COURSE_HUB_LEARNERS        the learners' user names, separated by spaces; each must be a system user; required
    COURSE_HUB_ADMIN           the instructor's user name (a system user too); optional
    COURSE_HUB_ADMIN_PASSWORD  the instructor's password (32 characters or more); optional
    COURSE_LEARNER_PYTHON      the learners' Python environment's interpreter (default /opt/course/bin/python)
    COURSE_HUB_STATE           a folder only root may read: database, cookie secret, pid files (default /srv/course-hub)
    COURSE_HUB_IP, COURSE_HUB_PORT   where learners connect (default 127.0.0.1 and 8000)
    COURSE_HUB_API_PORT, COURSE_PROXY_API_PORT   internal ports on 127.0.0.1 (default 8081 and 8001)

For a real class on one VM, The Littlest JupyterHub does all this and more
(deploy/README.md): it creates the system users, limits each learner's
memory and CPU, and serves HTTPS. This file exists so that the tests run the
course's settings on a real hub, and they are the same settings.
"""
import os
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        raise SystemExit(f"{__file__}: the environment variable {name} is not set; "
                         "the top of this file says what each one holds")
    return value


c = get_config()  # noqa: F821 (JupyterHub defines get_config when it loads this file)

# -- where it listens ------------------------------------------------------------------------------
c.JupyterHub.ip = setting("COURSE_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(setting("COURSE_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(setting("COURSE_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{setting('COURSE_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.command = [str(HERE / "node_modules" / ".bin" / "configurable-http-proxy")]

state = Path(setting("COURSE_HUB_STATE", "/srv/course-hub"))
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
c.ConfigurableHTTPProxy.pid_file = str(state / "jupyterhub-proxy.pid")
# When the hub stops, every learner's server stops with it.
c.JupyterHub.cleanup_servers = True

# -- who may log in ---------------------------------------------------------------------------------
# One password for the class, no identity provider, nothing to reach outside the
# machine. Anyone who knows it may log in under any learner's name: fine for a
# workshop among colleagues, not for graded work (deploy/README.md names the alternatives).
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = setting("COURSE_HUB_PASSWORD")
c.Authenticator.allowed_users = set(shlex.split(setting("COURSE_HUB_LEARNERS")))
if os.environ.get("COURSE_HUB_ADMIN"):
    c.Authenticator.admin_users = {os.environ["COURSE_HUB_ADMIN"]}
    c.SharedPasswordAuthenticator.admin_password = setting("COURSE_HUB_ADMIN_PASSWORD")
# The hub runs as root and starts a server as whoever logs in: never as root.
c.Authenticator.blocked_users = {"root"}

# -- each learner's server --------------------------------------------------------------------------
# Started as the learner's system user, in the learner's home, from the
# learners' environment: the course package installed from a copy without
# solutions/ (never editable), JupyterLab's class settings in its
# share/jupyter/lab/settings/overrides.json and kernel culling in its
# etc/jupyter (both from deploy/environment/).
learner_python = setting("COURSE_LEARNER_PYTHON", "/opt/course/bin/python")
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [learner_python, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.environment = {
    # The learners' own `python` and `pip` in a terminal are the learners' environment's.
    "PATH": os.pathsep.join([str(Path(learner_python).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
    # course_lib.threads gives every kernel under a hub one thread by itself
    # (its rule 3); this setting also covers code that runs before the
    # course's seed_everything, and programs other than the course's.
    "OMP_NUM_THREADS": "1",
}
# A busy machine starts servers slowly; the default 60 s was too short with three learners on two cores.
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120

# -- idle servers -----------------------------------------------------------------------------------
# Stop a learner's server after an hour without activity; the learner's files
# stay, a new login starts a fresh server. Idle kernels inside a running server
# are stopped by the server itself (deploy/environment/etc/jupyter/).
c.JupyterHub.services = [{
    "name": "idle-culler",
    "command": [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=3600", "--cull-every=300"],
}]
c.JupyterHub.load_roles = [{
    "name": "idle-culler",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": ["idle-culler"],
}]
