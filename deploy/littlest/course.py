"""The course's addition to The Littlest JupyterHub: copy into /opt/tljh/config/jupyterhub_config.d/.

course_lib.threads gives every kernel under a hub one PyTorch thread by
itself; OMP_NUM_THREADS=1 also covers code that runs before a notebook's
first cell and programs that are not the course's. The other class settings
are tljh-config's (deploy/README.md lists the commands).
"""
c.SystemdSpawner.environment.update({"OMP_NUM_THREADS": "1"})  # noqa: F821 (c is the hub's configuration)
