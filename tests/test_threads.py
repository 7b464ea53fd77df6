"""The intra-op thread count of a fit: explicit choices respected, a busy machine not oversubscribed."""

import threading

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
