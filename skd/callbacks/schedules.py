"""Epoch schedules of a loss's weights and temperature (skorch callbacks).

A schedule is pure: :meth:`_EpochSchedule.value_at` gives its value at an
epoch, and the loss turns the schedules of a fit into that epoch's
:class:`~skd.state.EpochValues` (:meth:`skd.losses.DistillationLoss.epoch_values`).
The schedule itself only records its value in ``history``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from skorch.callbacks import Callback

from skd.losses.functional import check_temperature

__all__ = ["SoftLossSchedule", "TemperatureSchedule", "Schedules", "find_schedules"]


def _progress(epoch: int, max_epochs: int, epochs, kind):
    """Schedule position in [0, 1] at ``epoch`` (1 in the first epoch), shaped by ``kind``."""
    total = epochs if epochs is not None else max_epochs
    epoch = epoch - 1  # 0 in the first epoch
    frac = min(epoch / (total - 1), 1.0) if total and total > 1 else 1.0
    if kind == "linear":
        return frac
    if kind == "cosine":
        return (1.0 - math.cos(math.pi * frac)) / 2.0
    raise ValueError(f"kind must be 'linear' or 'cosine', got {kind!r}.")


def _check_epochs(epochs, owner):
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"{owner} epochs must be None or an int >= 1, got {epochs!r}.")


def _find(callbacks, kind):
    found = [(name, cb) for name, cb in callbacks if isinstance(cb, kind)]
    if len(found) > 1:
        names = ", ".join(repr(name) for name, _ in found)
        raise ValueError(
            f"Found {len(found)} {kind.__name__} callbacks ({names}); a loss follows one "
            f"{kind.__name__}. Remove all but one from callbacks=[...]."
        )
    return found[0][1] if found else None


@dataclass(frozen=True)
class Schedules:
    """The schedules of one fit, found once among its callbacks, and ``max_epochs``."""

    soft: SoftLossSchedule | None = None
    temperature: TemperatureSchedule | None = None
    max_epochs: int = 1


def find_schedules(callbacks, max_epochs: int) -> Schedules:
    """The :class:`Schedules` among ``callbacks`` (``(name, callback)`` pairs).

    Two schedules of one kind would disagree on the value: that is an error.
    """
    callbacks = list(callbacks or ())
    return Schedules(_find(callbacks, SoftLossSchedule), _find(callbacks, TemperatureSchedule),
                     max_epochs)


class _EpochSchedule(Callback):
    """A value moving from ``start`` to ``end`` over ``epochs``.

    The schedule is pure: :meth:`value` computes the value at the net's
    current epoch, and the loss reads it in its own ``on_epoch_begin``. The
    schedule itself only records the value to ``history``.
    """

    #: Column of ``history`` where the value is recorded.
    history_key = ""

    def _check_bound(self, name, value):
        raise NotImplementedError

    def initialize(self):
        owner = type(self).__name__
        self._check_bound("start", self.start)
        self._check_bound("end", self.end)
        _check_epochs(self.epochs, owner)
        if self.kind not in ("linear", "cosine"):
            raise ValueError(f"{owner} kind must be 'linear' or 'cosine', got {self.kind!r}.")
        return self

    def value_at(self, epoch: int, max_epochs: int) -> float:
        """The scheduled value at ``epoch`` (1 in the first epoch)."""
        return self.start + (self.end - self.start) * _progress(epoch, max_epochs, self.epochs, self.kind)

    def on_epoch_begin(self, net, **kwargs):
        net.history.record(self.history_key, self.value_at(len(net.history), net.max_epochs))


class SoftLossSchedule(_EpochSchedule):
    """Gradually reduce the soft loss (GSLR; Shin, Boo & Sung, SiPS 2020).

    At the start of each epoch the soft (distillation) terms are multiplied by
    ``lambda``, which goes from ``start`` to ``end`` over ``epochs`` epochs
    (default: ``max_epochs``), linearly or along a half cosine. The CE term is
    multiplied by ``1 + (start - lambda)``: what the soft terms lose, the
    hard-label term gains. The paper's exact schedule is not published.
    The loss reads both multipliers from :meth:`scales_at`;
    ``lambda`` is recorded in ``history`` as ``"soft_scale"``.

    Parameters
    ----------
    start : float, default=1.0
    end : float, default=0.0
    kind : {"linear", "cosine"}, default="linear"
    epochs : int or None, default=None
    """

    def __init__(self, start: float = 1.0, end: float = 0.0, kind: str = "linear", epochs=None):
        self.start = start
        self.end = end
        self.kind = kind
        self.epochs = epochs

    def _check_bound(self, name, value):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"SoftLossSchedule {name} must be a number >= 0, got {value!r}.")

    history_key = "soft_scale"

    def scales_at(self, epoch: int, max_epochs: int) -> tuple[float, float]:
        """``(soft, ce)`` multipliers at ``epoch``: ``(lambda, 1 + start - lambda)``."""
        lam = self.value_at(epoch, max_epochs)
        return lam, 1.0 + (self.start - lam)


class TemperatureSchedule(_EpochSchedule):
    """Move the loss's temperature from ``start`` to ``end`` over the epochs.

    The loss reads :meth:`value_at` at each epoch; the value is recorded
    in ``history`` as ``"temperature"``.

    Parameters
    ----------
    start : float, default=8.0
    end : float, default=4.0
    kind : {"linear", "cosine"}, default="linear"
    epochs : int or None, default=None
        Epochs over which to move (default: ``max_epochs``).
    """

    def __init__(self, start: float = 8.0, end: float = 4.0, kind: str = "linear", epochs=None):
        self.start = start
        self.end = end
        self.kind = kind
        self.epochs = epochs

    def _check_bound(self, name, value):
        check_temperature(value, f"TemperatureSchedule {name}")

    history_key = "temperature"
