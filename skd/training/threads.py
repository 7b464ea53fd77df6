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
   and the cores left free are the usable cores minus the other runnable
   processes (the larger of the 1-minute load average and the number
   runnable right now, less one for this process), at least 1. On an idle
   machine this is torch's default: nothing changes. In a container,
   ``/proc/loadavg`` may count the whole host's processes: then a fit runs
   with fewer threads than it could, never more.
"""

from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = ["choose_threads", "fit_threads", "usable_cores"]

#: The environment variables that fix the thread count of OpenMP / MKL, hence of torch.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: torch's intra-op thread count when skd was imported (a later change is the user's).
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


def _load() -> float:
    """Runnable processes, this one included: the larger of the 1-minute load average and
    the number runnable right now (``/proc/loadavg``), since the average lags a minute
    behind a competitor that just started."""
    try:
        fields = Path("/proc/loadavg").read_text().split()
        return max(float(fields[0]), float(fields[3].split("/")[0]))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


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
    if count is None or count == previous:
        yield previous
        return
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)
