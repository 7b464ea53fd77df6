"""Per-epoch state of a fit, as one value.

The loss's scalars that change from epoch to epoch (the temperature of a
:class:`~skd.callbacks.TemperatureSchedule`, the factors of a
:class:`~skd.callbacks.SoftLossSchedule`, the linear warm-up of DKD and CAKD)
are computed once per epoch from the loss's parameters and the schedules, by
:meth:`skd.losses.DistillationLoss.epoch_values`, into an
:class:`EpochValues` (host floats). The trainer loads them into an
:class:`EpochState`: 0-d device tensors updated **in place**, so a captured
step (a CUDA graph) reads the new values on its next replay without being
captured again. The loss, the step and the monitor receive the state as an
argument; nobody reads them back from another object's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["EpochState", "EpochValues"]


@dataclass(frozen=True)
class EpochValues:
    """The loss's per-epoch scalars, as host floats.

    Attributes
    ----------
    temperature : float
        The softening temperature in use this epoch (1.0 for a loss without one).
    ce_scale : float
        Factor on the CE term (a ``SoftLossSchedule``'s, else 1).
    soft_scale : float
        Factor on every soft (distillation) term: the schedule's factor times
        the warm-up factor.
    warmup : float
        The linear warm-up factor alone, ``min(epoch / warmup, 1)`` (1 without one);
        already included in ``soft_scale``, kept for the record.
    """

    temperature: float = 1.0
    ce_scale: float = 1.0
    soft_scale: float = 1.0
    warmup: float = 1.0

    def scale_of(self, term: str) -> float:
        """The factor on the term named ``term`` (``"ce"`` or a soft term, ``*_aug`` too)."""
        return self.ce_scale if term.removesuffix("_aug") == "ce" else self.soft_scale


class EpochState:
    """:class:`EpochValues` held in 0-d float32 tensors on the device, updated in place.

    Parameters
    ----------
    device : torch.device or str
    values : EpochValues, default=EpochValues()
    """

    __slots__ = ("values", "temperature", "ce_scale", "soft_scale", "warmup")

    def __init__(self, device: torch.device | str = "cpu", values: EpochValues | None = None):
        values = values if values is not None else EpochValues()
        self.values = values
        for field in fields(EpochValues):
            setattr(self, field.name, torch.tensor(getattr(values, field.name), dtype=torch.float32,
                                                   device=device))

    def load(self, values: EpochValues) -> None:
        """Write ``values`` into the tensors in place (``fill_``: no host sync, no new tensor)."""
        if values == self.values:
            return
        self.values = values
        for field in fields(EpochValues):
            getattr(self, field.name).fill_(getattr(values, field.name))

    def __repr__(self) -> str:
        return f"EpochState({self.values!r})"
