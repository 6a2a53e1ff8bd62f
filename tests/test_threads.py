"""The thread policy (course_lib.threads) and `course doctor`'s advice about it."""
import os
import subprocess
import sys
import time

import pytest
import torch

from course_lib import threads
from course_lib.threads import Machine, choose_threads
from course_lib.tools import doctor
from course_lib.tools.doctor import OK, WARN


def laptop(**changes) -> Machine:
    """An idle 8-core laptop with nothing set; ``changes`` make it something else."""
    return Machine(**{"cpu_count": 8, "affinity": 8, "quota": None, "others_busy": 0.0, "on_hub": False,
                      "course_threads": None, "omp_threads": None, "torch_default": 8, **changes})


# -- the policy's decisions ------------------------------------------------------------------------

def test_an_idle_machine_uses_every_core():
    choice = choose_threads(laptop())
    assert (choice.threads, choice.rule) == (8, "cores")


def test_another_busy_program_takes_its_core():
    assert choose_threads(laptop(others_busy=1.0)).threads == 7
    assert choose_threads(laptop(cpu_count=2, affinity=2, torch_default=2, others_busy=1.0)).threads == 1
    # A program using a third of a core leaves the core to PyTorch; one using most of it does not.
    assert choose_threads(laptop(others_busy=0.3)).threads == 8
    assert choose_threads(laptop(others_busy=0.7)).threads == 7


def test_a_fully_busy_machine_still_gets_one_thread():
    choice = choose_threads(laptop(cpu_count=2, affinity=2, torch_default=2, others_busy=3.5))
    assert choice.threads == 1 and "3.5 busy" in choice.reason


def test_the_affinity_mask_limits_the_cores():
    assert choose_threads(laptop(affinity=3)).threads == 3


def test_a_container_quota_limits_the_cores():
    # docker --cpus=2.5 on a 16-core host: two threads, not sixteen.
    assert choose_threads(laptop(cpu_count=16, affinity=16, torch_default=16, quota=2.5)).threads == 2
    assert choose_threads(laptop(quota=0.5)).threads == 1


def test_never_more_threads_than_pytorch_would_start():
    # PyTorch counts physical cores; hyper-threads do not help its arithmetic.
    choice = choose_threads(laptop(cpu_count=16, affinity=16, torch_default=8))
    assert choice.threads == 8 and "PyTorch's default is 8" in choice.reason


def test_a_jupyterhub_gets_one_thread_per_kernel():
    choice = choose_threads(laptop(on_hub=True))
    assert (choice.threads, choice.rule) == (1, "hub")


def test_the_learner_overrides_everything():
    choice = choose_threads(laptop(on_hub=True, omp_threads="1", others_busy=7.0, course_threads="4"))
    assert (choice.threads, choice.rule) == (4, "learner")


def test_omp_num_threads_is_followed_before_the_hub_rule():
    assert choose_threads(laptop(on_hub=True, omp_threads="2")).threads == 2
    assert choose_threads(laptop(omp_threads="1")).rule == "environment"


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_a_bad_setting_is_a_clear_error(value):
    with pytest.raises(ValueError, match=f"COURSE_NUM_THREADS must be a positive whole number.*{value!r}"):
        choose_threads(laptop(course_threads=value))


def test_hub_detection_reads_the_environment():
    assert threads.on_jupyterhub({"JUPYTERHUB_USER": "ada"})
    assert threads.on_jupyterhub({"JUPYTERHUB_API_TOKEN": "x"})
    assert not threads.on_jupyterhub({"HOME": "/home/ada"})


# -- reading a container's CPU quota ---------------------------------------------------------------

def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "proc").write_text("0::/kubepods/pod1\n")
    group = tmp_path / "cg" / "kubepods" / "pod1"
    group.mkdir(parents=True)
    (group / "cpu.max").write_text("150000 100000\n")
    (group.parent / "cpu.max").write_text("max 100000\n")
    assert threads.cpu_quota(tmp_path / "proc", tmp_path / "cg") == 1.5


def test_cgroup_v2_without_a_quota(tmp_path):
    (tmp_path / "proc").write_text("0::/\n")
    (tmp_path / "cg").mkdir()
    (tmp_path / "cg" / "cpu.max").write_text("max 100000\n")
    assert threads.cpu_quota(tmp_path / "proc", tmp_path / "cg") is None


def test_cgroup_v1_quota_of_a_parent_group_counts(tmp_path):
    (tmp_path / "proc").write_text("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n")
    parent = tmp_path / "cg" / "cpu,cpuacct" / "docker"
    (parent / "abc").mkdir(parents=True)
    (parent / "abc" / "cpu.cfs_quota_us").write_text("-1\n")
    (parent / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    (parent / "cpu.cfs_quota_us").write_text("200000\n")
    (parent / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cpu_quota(tmp_path / "proc", tmp_path / "cg") == 2.0


def test_no_control_groups_means_no_quota(tmp_path):
    assert threads.cpu_quota(tmp_path / "missing", tmp_path) is None


# -- measuring and applying ------------------------------------------------------------------------

def test_a_busy_program_is_seen():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        assert threads.read_machine(window=0.5).others_busy > 0.6
    finally:
        busy.kill()
        busy.wait()


def test_a_recent_sample_shortens_the_wait_and_still_sees_a_busy_program():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        earlier = threads._CpuSample()
        time.sleep(0.5)
        start = time.perf_counter()
        machine = threads.read_machine(window=0.5, since=earlier)
        assert time.perf_counter() - start < 0.1  # the half second already passed since the sample
        assert machine.others_busy > 0.6
    finally:
        busy.kill()
        busy.wait()


def test_a_stale_sample_is_not_measured_from(monkeypatch):
    stale = threads._CpuSample()
    stale.wall -= 2 * threads._RECENT
    stale.machine_busy -= 1000.0 * os.cpu_count()  # were it used, 50 times more cores than there are would be busy
    start = time.perf_counter()
    machine = threads.read_machine(window=0.2, since=stale)
    assert time.perf_counter() - start >= 0.2  # a fresh window instead
    assert machine.others_busy < 10 * os.cpu_count()  # busy programs beside it are fine; 50 times the cores is not


def test_use_fair_threads_sets_pytorch_and_follows_a_setting(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("COURSE_NUM_THREADS", "3")
        choice = threads.use_fair_threads()
        assert choice.threads == 3 and torch.get_num_threads() == 3
        assert threads.use_fair_threads(laptop(cpu_count=2, affinity=2, torch_default=2)).threads == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_long_run_does_not_watch_the_machine_when_a_setting_decides(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert not threads.FairThreads().watching
    monkeypatch.delenv("OMP_NUM_THREADS")
    for name in threads.HUB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("COURSE_NUM_THREADS", raising=False)
    assert threads.FairThreads().watching


def test_a_long_run_takes_a_core_back_when_the_machine_gets_busy(monkeypatch):
    for name in ("OMP_NUM_THREADS", "COURSE_NUM_THREADS", *threads.HUB_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr(threads, "use_fair_threads", lambda machine: seen.append(machine.others_busy))
    watch = threads.FairThreads(interval=0.2)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.perf_counter() + 1.5
        while time.perf_counter() < deadline:
            watch.check()
            time.sleep(0.05)
    finally:
        busy.kill()
        busy.wait()
        torch.set_num_threads(before)
    assert len(seen) >= 3 and max(seen) > 0.6


# -- course doctor's advice ------------------------------------------------------------------------

def test_doctor_on_an_idle_laptop():
    finding = doctor.check_threads(laptop())
    assert finding.level == OK
    assert "8 usable cores" in finding.message and "PyTorch uses 8 threads" in finding.message


def test_doctor_on_a_hub_that_sets_one_thread_says_ok():
    # The hub's one thread is the course's own advice: nothing to undo.
    finding = doctor.check_threads(laptop(on_hub=True, omp_threads="1"))
    assert finding.level == OK and "1 thread" in finding.message


def test_doctor_on_a_hub_without_a_setting_says_ok():
    finding = doctor.check_threads(laptop(on_hub=True))
    assert finding.level == OK and "JupyterHub" in finding.message


def test_doctor_on_a_laptop_held_to_one_thread_by_omp_num_threads_warns():
    finding = doctor.check_threads(laptop(cpu_count=2, affinity=2, torch_default=2, omp_threads="1"))
    assert finding.level == WARN
    assert "OMP_NUM_THREADS" in finding.message and finding.fix.startswith("unset OMP_NUM_THREADS")


def test_doctor_on_a_busy_laptop_held_to_one_thread_says_ok():
    # One core free and one thread used: the setting does what the policy would do.
    finding = doctor.check_threads(laptop(cpu_count=2, affinity=2, torch_default=2, omp_threads="1",
                                          others_busy=1.0))
    assert finding.level == OK


def test_doctor_warns_about_more_threads_than_cores():
    finding = doctor.check_threads(laptop(cpu_count=2, affinity=2, course_threads="8"))
    assert finding.level == WARN and "export COURSE_NUM_THREADS=2" in finding.fix


def test_doctor_reports_a_container_quota():
    finding = doctor.check_threads(laptop(cpu_count=16, affinity=16, torch_default=16, quota=2.0))
    assert finding.level == OK and "a CPU quota of 2" in finding.message and "2 threads" in finding.message


def test_doctor_on_a_machine_busy_to_the_last_core_warns():
    finding = doctor.check_threads(laptop(cpu_count=2, affinity=2, torch_default=2, others_busy=2.0))
    assert finding.level == WARN and "busy" in finding.message and "top" in finding.fix


def test_doctor_with_a_learner_choice_of_fewer_threads_warns_on_an_idle_machine():
    finding = doctor.check_threads(laptop(course_threads="1"))
    assert finding.level == WARN and finding.fix.startswith("unset COURSE_NUM_THREADS")


def test_a_run_says_what_slowed_it_down(monkeypatch):
    for name in ("OMP_NUM_THREADS", "COURSE_NUM_THREADS", *threads.HUB_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    watch = threads.FairThreads()
    assert watch.why_slow() == ""  # nothing seen: a slow machine, or nothing at all
    watch.busiest = 1.2
    assert "Other programs kept up to 1.2" in watch.why_slow() and "run the cell again" in watch.why_slow()
    monkeypatch.setenv("JUPYTERHUB_USER", "ada")
    assert "JupyterHub shares its cores" in threads.FairThreads().why_slow()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a hub that also sets the thread count itself
    assert "JupyterHub shares its cores" in threads.FairThreads().why_slow()
