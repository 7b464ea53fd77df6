"""How many intra-op threads one fit uses, so that a busy machine does not make it collapse.

torch's default intra-op thread count is the number of cores. On a machine
where other processes already keep cores busy (a notebook beside a build, a
CI runner, two fits in two terminals) those threads compete with them, and
OpenMP's threads spin while they wait for each other: a small student's fit
then takes many times its fair share (issue 18 measured 10.9x its idle time
beside 3 busy processes, up to 100x; with one thread, 1.5x beside 2 busy
processes). joblib's loky and Dask workers already cap each worker to one
thread through ``OMP_NUM_THREADS``; a plain ``fit`` is not protected.

:func:`fit_threads` chooses the count for one fit and restores the previous
one after it:

1. an explicit choice wins and nothing is changed: ``OMP_NUM_THREADS`` or
   ``MKL_NUM_THREADS`` in the environment (loky, Dask and joblib's
   ``inner_max_num_threads`` set them in their workers), a
   ``torch.set_num_threads`` or ``threadpoolctl`` limit made by the user
   (the count differs from the one torch had when skd was imported, or from
   every default torch picks), or a fit outside the main thread (the
   setting is process-wide; a threaded backend's fits share it);
2. otherwise ``min(torch's count, usable cores, cores left free)``, where the
   usable cores are the process's CPU affinity capped by a cgroup CPU quota,
   and the cores left free are the usable cores minus the other processes'
   runnable threads (:func:`others_load`), at least 1. On an idle machine
   this is torch's default: nothing changes. In a container,
   ``/proc/loadavg`` may count the whole host's processes: then a fit runs
   with fewer threads than it could, never more.

This process's own work is not "other": the fits before this one (and any
torch work between them) raise the load average for a minute, and torch's
OpenMP threads stay runnable for a moment after each parallel region. Read
naively, a second fit in a loop, or each fit of a ``GridSearchCV`` with
``n_jobs=1`` after the first, would see its own predecessor as a competitor
and run with half the threads (measured on 2 cores: 1.81-2.26 s against
1.58-1.61 s for the same fit). So the load average is reduced by this
process's own share, estimated from its CPU time with the kernel's one-minute
decay, and the threads runnable now are counted outside this process only.
"""

from __future__ import annotations

import math
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = ["OwnLoad", "choose_threads", "fit_threads", "load_average", "others_load", "usable_cores"]

#: The environment variables that fix the thread count of OpenMP / MKL, hence of torch.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: Process-wide, written once at import: torch's intra-op thread count then (a later change is the
#: user's, which fit_threads leaves alone).
_BASELINE = torch.get_num_threads()


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _defaults() -> set[int]:
    """The counts torch picks by itself: physical or logical cores, or the affinity."""
    counts = {_BASELINE, os.cpu_count() or 1}
    try:
        counts.add(len(os.sched_getaffinity(0)))
    except AttributeError:
        pass
    try:
        import psutil

        counts.add(psutil.cpu_count(logical=False) or 1)
    except ImportError:
        pass
    return counts


#: The time constant of the kernel's 1-minute load average, in seconds.
LOAD_WINDOW = 60.0
#: Readings of the threads runnable right now, :data:`READING_GAP` seconds apart; the fewest counts
#: (a competitor's busy thread is runnable in every reading, a thread that just woke is not).
RUNNABLE_READINGS = 5
READING_GAP = 5e-4


class OwnLoad:
    """This process's share of the 1-minute load average: its busy threads, decayed as the kernel's.

    Between two :meth:`update` calls the process is taken to have run
    ``Δ cpu time / Δ wall time`` threads on average (all its threads: the
    CPU time is the process's), and the estimate decays as the load average
    does: ``own = own e^(-Δt/60) + rate (1 - e^(-Δt/60))``.
    """

    def __init__(self, clock=time.monotonic, cpu=time.process_time):
        self.clock, self.cpu = clock, cpu
        self.wall, self.used, self.value = clock(), cpu(), 0.0

    def update(self) -> float:
        """The estimate now (and remember this moment)."""
        wall, used = self.clock(), self.cpu()
        elapsed = wall - self.wall
        if elapsed > 0:
            decay = math.exp(-elapsed / LOAD_WINDOW)
            rate = max(0.0, used - self.used) / elapsed
            self.value = self.value * decay + rate * (1.0 - decay)
        self.wall, self.used = wall, used
        return self.value


#: Process-wide, owned by this module (updated by :func:`others_load` and :func:`fit_threads`): this
#: process's own share of the load average, which must outlive one fit to decay as the kernel's does.
_OWN = OwnLoad()


def load_average() -> float | None:
    """The 1-minute load average (``os.getloadavg``), or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _own_runnable() -> int:
    """This process's threads in state R (Linux ``/proc/self/task``)."""
    own = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            # the state follows the command name, which is in parentheses and may hold spaces
            own += (task / "stat").read_text().rpartition(")")[2].split()[0] == "R"
        except (OSError, IndexError):
            pass  # a thread that ended meanwhile
    return own


def _runnable_others() -> float:
    """Threads of other processes runnable now, the fewest of :data:`RUNNABLE_READINGS` readings
    (Linux: ``/proc/loadavg``'s count less this process's threads in state R, counted just before
    and just after it, the larger taken: a thread of ours that falls asleep meanwhile is ours); 0
    where ``/proc`` cannot tell."""
    fewest = None
    for reading in range(RUNNABLE_READINGS):
        if reading:
            time.sleep(READING_GAP)
        try:
            before = _own_runnable()
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
            own = max(before, _own_runnable())
        except (OSError, ValueError, IndexError):
            return 0.0
        others = max(0, running - own)
        fewest = others if fewest is None else min(fewest, others)
    return float(fewest or 0)


def others_load() -> float:
    """The other processes' runnable threads: the larger of the 1-minute load average less this
    process's own share (:class:`OwnLoad`), and the number runnable now, since the average lags a
    minute behind a competitor that just started."""
    average = load_average()
    own = _OWN.update()
    behind = 0.0 if average is None else max(0.0, average - own)
    return max(behind, _runnable_others())


def _load() -> float:
    """Runnable threads, this process counted as one: ``1 + others_load()``."""
    return 1.0 + others_load()


def choose_threads(current: int | None = None) -> tuple[int | None, str]:
    """The intra-op thread count for a fit starting now, and why.

    Returns ``(None, reason)`` where the count must be left as it is (an
    explicit choice), else ``(count, reason)``.
    """
    current = torch.get_num_threads() if current is None else current
    for name in THREAD_ENV:
        if os.environ.get(name):
            return None, f"{name}={os.environ[name]} is set"
    if threading.current_thread() is not threading.main_thread():
        return None, "the fit runs outside the main thread (the thread count is process-wide)"
    if current != _BASELINE or current not in _defaults():
        return None, f"the thread count was set to {current} (torch.set_num_threads or threadpoolctl)"
    cores = usable_cores()
    others = max(0.0, _load() - 1.0)  # the load average counts this process too
    free = max(1, math.floor(cores - others + 0.5))
    count = max(1, min(current, cores, free))
    return count, f"{cores} usable cores, load {others + 1.0:.1f}: {count} of torch's {current} threads"


@contextmanager
def fit_threads(n_threads: int | None = None):
    """Run a fit with a thread count that does not oversubscribe the machine; restore it after.

    Parameters
    ----------
    n_threads : int or None
        An explicit count for this fit; None chooses one (:func:`choose_threads`).

    Yields
    ------
    int
        The intra-op thread count in use during the fit.
    """
    previous = torch.get_num_threads()
    count = n_threads if n_threads is not None else choose_threads(previous)[0]
    changed = count is not None and count != previous
    if changed:
        torch.set_num_threads(count)
    try:
        yield count if changed else previous
    finally:
        _OWN.update()  # the fit's CPU time is this process's own load, not a competitor's
        if changed:
            torch.set_num_threads(previous)
