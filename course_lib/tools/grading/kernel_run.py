"""Running a graded copy in a fresh, sandboxed kernel, and what happened when it ran."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from course_lib.tools.grading.course import GradingError
from course_lib.tools.grading.sandbox import KERNEL_NAME, NO_ISOLATION, Isolation, SandboxLimits, write_kernelspec

_MAX_ERROR_TEXT = 500
# The longest path of a Unix socket (sun_path holds 108 bytes with the final NUL on Linux, 104 on macOS).
_MAX_SOCKET_PATH = 103
_CONNECTION_FILE = "kernel.json"  # its sockets are named after it: kernel-ipc-1 ... kernel-ipc-5


@dataclass
class KernelRun:
    """What happened when a graded copy ran in its kernel: errors per cell, timeouts, and where it stopped."""

    errors: dict[int, str] = field(default_factory=dict)
    timed_out_cells: set[int] = field(default_factory=set)
    last_cell_started: int = -1
    notebook_timed_out: bool = False
    kernel_died_at: int | None = None
    grader_failure: str = ""
    seconds: float = 0.0


class _QuietClient(NotebookClient):
    """A notebook client that keeps only the errors cells raise, and drops printed text, displays and widgets.

    The grader never reads what a cell shows (so nothing shown can fake a
    pass), and a learner who prints a flood cannot fill the grader's memory.
    """

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] != "error" or outs:
            return None
        content = msg["content"]
        error = nbformat.v4.new_output(
            "error", ename=str(content.get("ename", ""))[:100],
            evalue=str(content.get("evalue", ""))[:_MAX_ERROR_TEXT], traceback=[],
        )
        outs.append(error)
        return error

    def handle_comm_msg(self, outs, msg, cell_index):
        return None


def check_socket_paths(run_dir: Path, isolation: Isolation) -> None:
    """Raise GradingError when the kernel sockets in ``run_dir`` (the longest of a batch) would have too long a path.

    Without a network the kernel talks over Unix sockets in its scratch folder,
    whose paths are short by law; a deep temporary folder would make every
    kernel fail to start.
    """
    if isolation.kind == NO_ISOLATION:
        return  # TCP on localhost: no socket files
    socket_path = run_dir / f"{Path(_CONNECTION_FILE).stem}-ipc-5"
    if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
        raise GradingError(f"TMPDIR: the kernels' sockets would have paths like {socket_path} "
                         f"({len(os.fsencode(socket_path))} bytes, at most {_MAX_SOCKET_PATH} allowed); "
                         "set TMPDIR to a shorter folder, e.g. TMPDIR=/tmp")


def run_in_kernel(notebook: nbformat.NotebookNode, run_dir: Path, limits: SandboxLimits,
                  isolation: Isolation) -> KernelRun:
    """Execute every cell of ``notebook`` in a fresh kernel whose scratch folder is ``run_dir``.

    The kernel starts in ``run_dir/work``; its connection file and sockets
    lie in ``run_dir`` too, so under bubblewrap it needs nothing outside it.
    """
    work_dir = run_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    kernels_dir = write_kernelspec(run_dir.parent / f"{run_dir.name}-kernelspec", run_dir, work_dir, limits, isolation)
    return asyncio.run(_run_cells(notebook, run_dir, work_dir, kernels_dir, limits, isolation))


async def _run_cells(notebook: nbformat.NotebookNode, run_dir: Path, work_dir: Path, kernels_dir: Path,
                     limits: SandboxLimits, isolation: Isolation) -> KernelRun:
    kernel_manager = AsyncKernelManager(
        kernel_name=KERNEL_NAME,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)]),
        # Without a network, TCP on localhost is gone too: the kernel talks over Unix sockets in run_dir.
        transport="tcp" if isolation.kind == NO_ISOLATION else "ipc",
        connection_file=str(run_dir / _CONNECTION_FILE),
    )
    client = _QuietClient(
        notebook, km=kernel_manager, timeout=limits.cell_timeout, interrupt_on_timeout=True,
        allow_errors=True, record_timing=False, resources={"metadata": {"path": str(work_dir)}},
    )
    run = KernelRun()
    started_at = time.monotonic()

    async def execute_cells() -> None:
        for index, cell in enumerate(notebook.cells):
            run.last_cell_started = index
            cell_started_at = time.monotonic()
            try:
                await client.async_execute_cell(cell, index)
            except DeadKernelError:
                if not run.notebook_timed_out:  # else the deadline killed it
                    run.kernel_died_at = index
                return
            if time.monotonic() - cell_started_at >= limits.cell_timeout:
                run.timed_out_cells.add(index)  # nbclient interrupted it at the limit
            errors = [output for output in cell.outputs if output.output_type == "error"]
            if errors:
                run.errors[index] = f"{errors[0].ename}: {errors[0].evalue}"

    async def kill_at_deadline() -> None:
        # Killing, not interrupting: code that catches KeyboardInterrupt must stop too.
        # Under bubblewrap this kills bwrap, and with it every process of the sandbox.
        await asyncio.sleep(limits.notebook_timeout)
        run.notebook_timed_out = True
        await kernel_manager.signal_kernel(signal.SIGKILL)

    try:
        # The kernel's own stdout and stderr would otherwise reach the grader's terminal.
        await client.async_start_new_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await client.async_start_new_kernel_client()
        deadline = asyncio.ensure_future(kill_at_deadline())
        try:
            await execute_cells()
        finally:
            deadline.cancel()
    except Exception as error:  # a kernel that does not start, or a fault of the grader: this notebook only
        run.grader_failure = f"{type(error).__name__}: {error}"
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
        if kernel_manager.has_kernel:
            try:
                await kernel_manager.shutdown_kernel(now=True)
            except Exception:  # jupyter_client cannot ask a kernel that died while starting to stop: kill it
                await kernel_manager.signal_kernel(signal.SIGKILL)
    run.seconds = time.monotonic() - started_at
    return run
