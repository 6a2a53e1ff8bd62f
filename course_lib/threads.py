"""How many CPU threads PyTorch uses: one policy for every notebook, decided from the machine.

PyTorch starts one thread per core and splits every operation between them;
an operation ends when its slowest thread does. On an idle machine that is
fastest. When other programs want the same cores (a browser, a video call,
the other learners' kernels on a shared server), the operating system pauses
one thread now and then and the whole operation waits for it. Measured on a
2-core machine with one busy program beside it and two threads, notebook 03
took 402 s instead of 18 s, and notebook 05's BERT reached 24 of its 800
steps before its time cap; on one thread they took 22 s and reached all 800.

So the course asks how many cores are really free, and uses that many threads.
The rules, in order; the first that applies decides:

1. ``COURSE_NUM_THREADS=n`` in the environment: the learner's own choice.
2. ``OMP_NUM_THREADS=n``: set by whoever started this process (a server's
   administrator, ``make test``); PyTorch has already followed it.
3. On a JupyterHub: one thread. Many kernels share the server's cores, and
   one thread each gives every learner the most steps (measured: 251 to 263
   steps of notebook 05 per learner with four learners on two cores,
   against 14 to 19 with PyTorch's default).
4. Otherwise: the cores this process may use (the machine's cores, cut by
   the CPU affinity mask and by a container's CPU quota), less the cores that
   other programs kept busy just now; at least one, at most PyTorch's default.

``use_fair_threads()`` applies the policy; ``seed_everything`` applies it once
per process (every notebook starts with it), and ``training.train`` calls
``FairThreads.check`` at every step, which looks again every few seconds, so
a machine that becomes busy during a run gets one thread fewer.

The thread count does not change what a model computes, only how fast,
except in the last bits of a few sums (LayerNorm's weight gradients are
summed in a different order): two runs on the same thread count give the
same numbers. Set ``COURSE_NUM_THREADS`` to fix the count for exact repeats
on a machine whose load changes.
"""
from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import psutil
import torch

__all__ = ["Machine", "ThreadChoice", "choose_threads", "read_machine", "use_fair_threads", "use_fair_threads_once",
           "FairThreads", "cpu_quota", "on_jupyterhub"]

# What PyTorch chose when this module was first imported, before the policy changed anything.
TORCH_DEFAULT_THREADS = torch.get_num_threads()

# Environment variables that a JupyterHub sets for every learner's server and, through it, every kernel.
HUB_VARIABLES = ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER", "JUPYTERHUB_SERVICE_PREFIX")

# Another program counts as holding a core once it keeps more than half of one busy.
BUSY_ROUNDING = 0.5


@dataclass(frozen=True)
class Machine:
    """What the policy looks at; ``read_machine`` measures it, tests make it up.

    cpu_count: the machine's logical cores.
    affinity: how many of them this process may run on (None where the system cannot say).
    quota: cores' worth of CPU time a container's quota allows (None: no quota).
    others_busy: cores that other processes kept busy over the last moments.
    on_hub: running under a JupyterHub.
    course_threads, omp_threads: the environment variables' values, or None.
    torch_default: PyTorch's own thread count before the policy.
    """

    cpu_count: int
    affinity: int | None = None
    quota: float | None = None
    others_busy: float = 0.0
    on_hub: bool = False
    course_threads: str | None = None
    omp_threads: str | None = None
    torch_default: int = TORCH_DEFAULT_THREADS

    @property
    def usable_cores(self) -> int:
        """Cores this process may use: the machine's, cut by affinity and quota (at least one)."""
        limits = [self.cpu_count] + [limit for limit in (self.affinity, self.quota) if limit is not None]
        return max(1, math.floor(min(limits)))


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads, and the rule that decided it in words (``course doctor`` prints it)."""

    threads: int
    reason: str
    rule: str  # "learner", "environment", "hub" or "cores"


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive whole number of threads, got {text!r}")
    return value


def choose_threads(machine: Machine) -> ThreadChoice:
    """The thread count the policy gives ``machine`` (the rules are in the module's docstring)."""
    if machine.course_threads is not None:
        threads = _positive_int("COURSE_NUM_THREADS", machine.course_threads)
        return ThreadChoice(threads, f"COURSE_NUM_THREADS={machine.course_threads} chose it", "learner")
    if machine.omp_threads is not None:
        threads = _positive_int("OMP_NUM_THREADS", machine.omp_threads)
        return ThreadChoice(threads, f"OMP_NUM_THREADS={machine.omp_threads} is set for this process",
                            "environment")
    if machine.on_hub:
        return ThreadChoice(1, "a JupyterHub shares its cores between many learners' kernels", "hub")
    usable = machine.usable_cores
    free = max(1, min(usable, math.floor(usable - machine.others_busy + BUSY_ROUNDING)))
    threads = min(free, machine.torch_default)
    reason = f"{usable} usable core{'s' * (usable != 1)}"
    if free < usable:
        reason += f", other programs keep {machine.others_busy:.1f} busy"
    if threads < free:
        reason += f", PyTorch's default is {machine.torch_default}"
    return ThreadChoice(threads, reason, "cores")


# -- measuring the machine -------------------------------------------------------------------------

def on_jupyterhub(environ: Mapping[str, str] = os.environ) -> bool:
    return any(name in environ for name in HUB_VARIABLES)


def cpu_quota(cgroup_file: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Cores' worth of CPU time this process's control groups allow, or None without a quota.

    A container started with ``--cpus=2`` (or a Kubernetes pod with a CPU
    limit) may see all of a large machine's cores while it may use only two
    of them. Reads cgroup v2's ``cpu.max`` and v1's ``cpu.cfs_quota_us`` for
    the process's group and every group above it; the smallest quota counts.
    """
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError:
        return None  # not Linux, or no control groups
    quotas = []
    for line in lines:
        _, controllers, group = line.split(":", 2)
        if controllers == "":  # cgroup v2: one tree for every controller
            folders = [root]
            read = _read_cpu_max
        elif "cpu" in controllers.split(","):
            folders = [root / controllers, root / "cpu"]
            read = _read_cfs_quota
        else:
            continue
        for folder in folders:
            path = Path(group.lstrip("/"))
            for level in [path, *path.parents]:
                quota = read(folder / level)
                if quota is not None:
                    quotas.append(quota)
    return min(quotas) if quotas else None


def _read_cpu_max(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _read_cfs_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else quota / period


class _CpuSample:
    """The machine's busy CPU time and this process's own, at one moment (seconds)."""

    def __init__(self):
        machine = psutil.cpu_times()
        self.machine_busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        own = os.times()
        self.own = own.user + own.system
        self.wall = time.perf_counter()

    def others_busy_since(self, earlier: "_CpuSample") -> float:
        """Cores that other processes kept busy between ``earlier`` and this sample."""
        elapsed = self.wall - earlier.wall
        if elapsed <= 0:
            return 0.0
        others = (self.machine_busy - earlier.machine_busy) - (self.own - earlier.own)
        return max(0.0, others / elapsed)


def _affinity() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask to read
        return None


# The first look at the load needs a stretch of time to count other programs' CPU time over. The seconds
# between importing this module and the notebook's first seed_everything (importing torch and the rest) are
# such a stretch, so a notebook's first cell usually has its measurement without waiting for it.
_AT_IMPORT = _CpuSample()
_RECENT = 10.0  # seconds; an older sample would average the load over too long a past


def read_machine(window: float = 0.25, others_busy: float | None = None, since: _CpuSample | None = None) -> Machine:
    """Measure this machine now; other programs' load is watched for at least ``window`` seconds.

    others_busy: a load measured already (``FairThreads`` measures it over
    its own interval), instead of watching for ``window`` seconds.
    since: a sample taken earlier to measure from (at most ``_RECENT`` seconds
    old); only the part of ``window`` not yet elapsed since it is waited for.
    """
    if others_busy is None:
        if since is None or time.perf_counter() - since.wall > _RECENT:
            since = _CpuSample()
        time.sleep(max(0.0, window - (time.perf_counter() - since.wall)))
        others_busy = _CpuSample().others_busy_since(since)
    return Machine(cpu_count=os.cpu_count() or 1, affinity=_affinity(), quota=cpu_quota(),
                   others_busy=others_busy, on_hub=on_jupyterhub(),
                   course_threads=os.environ.get("COURSE_NUM_THREADS"),
                   omp_threads=os.environ.get("OMP_NUM_THREADS"))


def use_fair_threads(machine: Machine | None = None, since: _CpuSample | None = None) -> ThreadChoice:
    """Set PyTorch's thread count by the policy and return the choice.

    Without ``machine`` the machine is measured, and other programs' load is
    watched for a quarter of a second (counted from ``since``, when given)
    only when rule 4 decides.
    """
    if machine is None:
        machine = read_machine(others_busy=0.0)
        if choose_threads(machine).rule == "cores":
            machine = read_machine(since=since)
    choice = choose_threads(machine)
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice


@functools.cache
def use_fair_threads_once() -> ThreadChoice:
    """``use_fair_threads()`` on the first call in this process; the same choice afterwards."""
    return use_fair_threads(since=_AT_IMPORT)


class FairThreads:
    """Applies the policy again every ``interval`` seconds of a long run, for a machine whose load changes.

    ``check()`` costs a clock read; every ``interval`` seconds it also reads
    the CPU counters and measures the load since its previous look, so it
    never waits. Under rules 1 to 3 (a setting, a hub) there is nothing to
    watch and it does nothing.
    """

    def __init__(self, interval: float = 3.0):
        self.interval = interval
        self.machine = read_machine(others_busy=0.0)
        self.rule = choose_threads(self.machine).rule
        self.watching = self.rule == "cores"
        self.last = _CpuSample() if self.watching else None
        self.busiest = 0.0  # the most cores other programs kept busy over one interval

    def check(self) -> None:
        if not self.watching or time.perf_counter() - self.last.wall < self.interval:
            return
        now = _CpuSample()
        others_busy = now.others_busy_since(self.last)
        self.busiest = max(self.busiest, others_busy)
        use_fair_threads(read_machine(others_busy=others_busy))
        self.last = now

    def why_slow(self) -> str:
        """A sentence on what slowed a run down, when the run saw it; empty otherwise."""
        if self.machine.on_hub:  # the hub rule, or a hub that sets OMP_NUM_THREADS itself
            return (" This JupyterHub shares its cores between its learners: when many train at once, each run "
                    "gets fewer steps.")
        if self.busiest >= BUSY_ROUNDING:
            return (f" Other programs kept up to {self.busiest:.1f} of this machine's {self.machine.usable_cores} "
                    "usable cores busy meanwhile; close them and run the cell again for the full run.")
        return ""
