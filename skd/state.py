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
    """:class:`EpochValues` and each term's coefficient, in 0-d float32 device tensors updated in place.

    Parameters
    ----------
    device : torch.device or str
    values : EpochValues, default=EpochValues()
    coefficients : dict of str to float, default={}
        The factor each term is multiplied by this epoch (its weight, ``T**2``
        where the loss has it, and the schedules' scale), computed on the host
        by :meth:`skd.losses.DistillationLoss.term_coefficients`: one multiply
        per term in the step, whatever the formula.
    labelled_only : bool, default=False
        Whether every training row of the fit has a label (no
        :data:`~skd.labels.UNLABELLED`): then CE needs no masking.
    dtype : torch.dtype, default=torch.float32
        Of the tensors: float32 in training (the terms are float32); a loss
        called on float64 logits outside a fit gets a float64 state, so its
        value is exact in float64.

    Attributes
    ----------
    temperature, ce_scale, soft_scale, warmup : 0-d Tensor
    coefficients : dict of str to 0-d Tensor
    """

    def __init__(self, device: torch.device | str = "cpu", values: EpochValues | None = None,
                 coefficients: dict | None = None, labelled_only: bool = False,
                 dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        self.labelled_only = labelled_only
        self.values = values if values is not None else EpochValues()
        for field in fields(EpochValues):
            setattr(self, field.name, self._tensor(getattr(self.values, field.name)))
        self.coefficients = {name: self._tensor(value) for name, value in (coefficients or {}).items()}

    def _tensor(self, value: float) -> torch.Tensor:
        # a fill kernel, not torch.tensor: that copies from pageable host memory, a sync on CUDA
        return torch.full((), float(value), dtype=self.dtype, device=self.device)

    def coefficient(self, term: str) -> torch.Tensor:
        """The coefficient tensor of ``term``."""
        try:
            return self.coefficients[term]
        except KeyError:
            raise ValueError(
                f"The loss returned a term {term!r} that has no coefficient in this EpochState "
                f"(it has {sorted(self.coefficients)}): list every term in the loss's `terms`, and "
                "make states with loss.epoch_state(...) or pass loss.term_coefficients(values)."
            ) from None

    def load(self, values: EpochValues, coefficients: dict | None = None) -> None:
        """Write new values into the same tensors (``fill_``: no host sync, no new tensor).

        A captured step keeps reading the tensors it was recorded with, so a
        schedule or a warm-up changes no graph. A coefficient seen for the
        first time gets a new tensor (before any capture: the first epoch).
        """
        self.values = values
        for field in fields(EpochValues):
            getattr(self, field.name).fill_(getattr(values, field.name))
        for name, value in (coefficients or {}).items():
            if name in self.coefficients:
                self.coefficients[name].fill_(float(value))
            else:
                self.coefficients[name] = self._tensor(value)

    def __repr__(self) -> str:
        coefficients = {name: float(value) for name, value in self.coefficients.items()}
        return f"EpochState({self.values!r}, coefficients={coefficients})"
