"""Epoch schedules of a loss's weights and temperature (skorch callbacks)."""

from __future__ import annotations

import math

from skorch.callbacks import Callback

from skd.losses.functional import check_temperature

__all__ = ["SoftLossSchedule", "TemperatureSchedule"]


def _progress(net, epochs, kind):
    """Schedule position in [0, 1] at the current epoch, shaped by ``kind``."""
    total = epochs if epochs is not None else net.max_epochs
    epoch = len(net.history) - 1  # 0 in the first epoch
    frac = min(epoch / (total - 1), 1.0) if total and total > 1 else 1.0
    if kind == "linear":
        return frac
    if kind == "cosine":
        return (1.0 - math.cos(math.pi * frac)) / 2.0
    raise ValueError(f"kind must be 'linear' or 'cosine', got {kind!r}.")


def _check_epochs(epochs, owner):
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"{owner} epochs must be None or an int >= 1, got {epochs!r}.")


class _EpochSchedule(Callback):
    """A value moving from ``start`` to ``end`` over ``epochs``, set at each epoch begin."""

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

    def value(self, net) -> float:
        """The scheduled value at the current epoch."""
        return self.start + (self.end - self.start) * _progress(net, self.epochs, self.kind)


class SoftLossSchedule(_EpochSchedule):
    """Gradually reduce the soft loss (GSLR; Shin, Boo & Sung, SiPS 2020).

    At the start of each epoch the soft (distillation) terms are multiplied by
    ``lambda``, which goes from ``start`` to ``end`` over ``epochs`` epochs
    (default: ``max_epochs``), linearly or along a half cosine. The CE term is
    multiplied by ``1 + (start - lambda)``: what the soft terms lose, the
    hard-label term gains. The paper's exact schedule is not published.

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

    def on_epoch_begin(self, net, **kwargs):
        lam = self.value(net)
        net.loss_.soft_scale_ = lam
        net.loss_.ce_scale_ = 1.0 + (self.start - lam)
        net.history.record("soft_scale", lam)


class TemperatureSchedule(_EpochSchedule):
    """Move the loss's temperature from ``start`` to ``end`` over the epochs.

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

    def on_epoch_begin(self, net, **kwargs):
        temperature = self.value(net)
        net.loss_.temperature_ = temperature
        net.history.record("temperature", temperature)
