"""The intra-op thread count of a fit: explicit choices respected, a busy machine not oversubscribed."""

import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from skd.training import threads
from skd.training.threads import choose_threads, fit_threads, usable_cores


@pytest.fixture
def machine(monkeypatch):
    """A 4-core machine where torch runs 4 threads by default and nobody chose a count."""
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    for name in threads.THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_BASELINE", 4)
    monkeypatch.setattr(threads, "_defaults", lambda: {4})
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    state = {"load": 1.0}
    monkeypatch.setattr(threads, "_load", lambda: state["load"])
    yield state
    torch.set_num_threads(before)


def test_an_idle_machine_keeps_torchs_default(machine):
    machine["load"] = 1.0  # this process only
    with fit_threads() as count:
        assert count == 4 == torch.get_num_threads()


@pytest.mark.parametrize("load, expected", [(2.0, 3), (3.0, 2), (4.0, 1), (9.5, 1)])
def test_a_busy_machine_leaves_the_busy_cores_alone_and_the_count_is_restored(machine, load, expected):
    machine["load"] = load
    with fit_threads() as count:
        assert count == expected == torch.get_num_threads()
    assert torch.get_num_threads() == 4


def test_the_count_is_restored_when_the_fit_fails(machine):
    machine["load"] = 6.0
    with pytest.raises(RuntimeError), fit_threads():
        assert torch.get_num_threads() == 1
        raise RuntimeError("the fit failed")
    assert torch.get_num_threads() == 4


@pytest.mark.parametrize("name", threads.THREAD_ENV)
def test_a_thread_count_in_the_environment_is_respected(machine, monkeypatch, name):
    machine["load"] = 6.0
    monkeypatch.setenv(name, "3")  # loky and Dask workers, or the user
    count, reason = choose_threads()
    assert count is None and name in reason
    with fit_threads() as count:
        assert count == 4 == torch.get_num_threads()


def test_a_count_the_user_set_is_respected(machine):
    machine["load"] = 6.0
    torch.set_num_threads(3)
    count, reason = choose_threads()
    assert count is None and "set to 3" in reason
    with fit_threads():
        assert torch.get_num_threads() == 3


def test_a_fit_outside_the_main_thread_leaves_the_process_wide_count_alone(machine):
    machine["load"] = 6.0
    seen = []
    worker = threading.Thread(target=lambda: seen.append(choose_threads()))
    worker.start()
    worker.join()
    assert seen[0][0] is None and "main thread" in seen[0][1]


def test_an_explicit_count_for_the_fit_wins(machine):
    with fit_threads(2) as count:
        assert count == 2 == torch.get_num_threads()
    assert torch.get_num_threads() == 4


def test_usable_cores_are_at_least_one():
    assert usable_cores() >= 1


class Clock:
    """A fake wall clock and process CPU time for :class:`threads.OwnLoad`."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def run(self, seconds, threads_busy):
        self.wall += seconds
        self.cpu += seconds * threads_busy


def test_this_process_share_of_the_load_average_follows_the_kernels_decay():
    clock = Clock()
    own = threads.OwnLoad(clock=lambda: clock.wall, cpu=lambda: clock.cpu)
    clock.run(60.0, 2)  # a fit on 2 threads for a minute
    assert own.update() == pytest.approx(2 * (1 - math.exp(-1)))
    clock.run(60.0, 0)  # a minute idle
    assert own.update() == pytest.approx(2 * (1 - math.exp(-1)) * math.exp(-1))
    clock.run(0.0, 0)
    assert own.update() == pytest.approx(2 * (1 - math.exp(-1)) * math.exp(-1))  # no time, no change


@pytest.fixture
def readings(monkeypatch):
    """The load average, this process's share of it and the other processes' runnable threads."""
    state = {"average": 2.0, "own": 2.0, "runnable": 0.0}
    monkeypatch.setattr(threads, "load_average", lambda: state["average"])
    monkeypatch.setattr(threads._OWN, "update", lambda: state["own"])
    monkeypatch.setattr(threads, "_runnable_others", lambda: state["runnable"])
    return state


def test_a_fit_after_a_fit_in_the_same_process_is_not_its_own_competitor(readings):
    # the previous fit raised the load average to 2; it was this process's own work
    assert threads.others_load() == 0.0
    readings.update(average=3.0)  # and one other process ran beside it
    assert threads.others_load() == pytest.approx(1.0)
    readings.update(average=0.5, own=0.0, runnable=2.0)  # a competitor that just started
    assert threads.others_load() == 2.0


def test_the_threads_runnable_now_are_counted_outside_this_process(monkeypatch):
    if not Path("/proc/loadavg").exists():
        pytest.skip("no /proc")
    assert threads._own_runnable() >= 1  # the thread reading is runnable
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 10
        while threads._runnable_others() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threads._runnable_others() >= 1
    finally:
        busy.kill()
        busy.wait()


def test_a_fit_counts_its_cpu_time_as_this_process_own_load(machine, monkeypatch):
    calls = []
    monkeypatch.setattr(threads._OWN, "update", lambda: calls.append(1) or 0.0)
    with fit_threads():
        pass
    assert calls  # at the fit's end, so the next fit does not see this one as a competitor
