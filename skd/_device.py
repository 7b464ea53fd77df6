"""Device resolution and seeding: where a fit runs and how it draws random numbers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["resolve_device", "resolved_device", "checked_seed", "seeded", "epoch_generator"]

# Estimators fitted concurrently in threads must not interleave their seeded
# initialisations of torch's global generator.
_SEED_LOCK = threading.RLock()


def resolve_device(device):
    """Turn ``"auto"`` into ``"cuda"`` or ``"cpu"``; refuse CUDA where it is absent."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested, but CUDA is not available on this machine "
            "(torch.cuda.is_available() is False). Use device='auto' to train on CUDA "
            "when present and on the CPU otherwise, or device='cpu'."
        )
    return device


@contextlib.contextmanager
def resolved_device(estimator) -> Iterator[None]:
    """Run with ``estimator.device`` resolved (``"auto"`` is restored after).

    ``get_params()`` and pickles keep ``"auto"``; the work inside sees the
    device it runs on.
    """
    requested = estimator.device
    resolved = resolve_device(requested)
    if resolved == requested:
        yield
        return
    estimator.device = resolved
    try:
        yield
    finally:
        estimator.device = requested


def checked_seed(seed) -> int | None:
    """``random_state`` as an int, or None; raise a clear error for anything else."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(
            f"random_state must be an int or None, got {seed!r} ({type(seed).__name__})."
        )
    return None if seed is None else int(seed)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's global generator inside the block, then restore it.

    Held under a process-wide lock so that estimators fitted concurrently in
    threads cannot interleave their seeded initialisations. ``None`` leaves
    the generators alone.
    """
    if seed is None:
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with _SEED_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def epoch_generator(seed: int | None, epoch: int) -> torch.Generator | None:
    """A generator for one epoch's shuffle, from ``(seed, epoch)``.

    It depends only on the seed and the epoch number, so a fit resumed from a
    checkpoint shuffles exactly as an uninterrupted one.
    """
    if seed is None:
        return None
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)
