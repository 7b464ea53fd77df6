"""The distillation-loss base class and the registry of named losses."""

from __future__ import annotations

from typing import Any

import torch
from sklearn.base import clone
from skorch.callbacks import Callback

from skd.losses.functional import CONVENTIONS, check_choice, check_temperature, labelled_cross_entropy
from skd.losses.schedules import SoftLossSchedule, TemperatureSchedule, find_schedule

__all__ = ["DistillationLoss", "available_losses", "get_loss_class", "make_loss", "register_loss"]

_REGISTRY: dict[str, type[DistillationLoss]] = {}


def register_loss(name: str):
    """Class decorator: make a :class:`DistillationLoss` available by ``name``."""

    def decorator(cls):
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_losses() -> list[str]:
    """Names accepted by ``DistillationClassifier(loss=...)``."""
    return sorted(_REGISTRY)


def get_loss_class(name: str) -> type[DistillationLoss]:
    """Return the loss class registered under ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown loss {name!r}. Valid names are: {', '.join(available_losses())}; "
            "or pass an instance of a skd.losses.DistillationLoss subclass."
        ) from None


def make_loss(spec: str | DistillationLoss, params: dict[str, Any]) -> DistillationLoss:
    """Build a fresh, initialised loss callback from a name or an instance.

    ``params`` are the ``loss__<param>`` values routed by the classifier. An
    instance is cloned first, so the user's object is never changed.
    """
    if isinstance(spec, str):
        cls = get_loss_class(spec)
        loss = cls()
    elif isinstance(spec, DistillationLoss):
        loss = clone(spec)
    elif isinstance(spec, type) and issubclass(spec, DistillationLoss):
        loss = spec()
    else:
        raise TypeError(
            f"loss must be a name ({', '.join(available_losses())}) or a "
            f"skd.losses.DistillationLoss instance, got {type(spec).__name__}: {spec!r}."
        )
    valid = loss.get_params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"loss__{unknown[0]} is not a parameter of {type(loss).__name__}; "
            f"its parameters are: {', '.join(sorted(valid)) or '(none)'}."
        )
    loss.set_params(**params)
    return loss.initialize()


class DistillationLoss(Callback):
    """Base class of skd's distillation losses (a skorch callback).

    A loss turns a batch of student logits, teacher logits and encoded labels
    into named, weighted terms; ``DistillationClassifier.get_loss`` sums them
    and records each term in ``history`` (per batch, and averaged per epoch).
    The term named ``"ce"`` is the hard-label loss; every other term is a soft
    (distillation) term.

    Subclasses store their hyper-parameters in ``__init__`` and nothing else
    (so ``get_params``/``set_params``, ``clone`` and ``loss__<param>``
    routing work), declare ``terms``, and implement :meth:`compute_terms`.

    Run-time state, set in :meth:`initialize` and, at each epoch begin, by
    the loss's own :meth:`on_epoch_begin` (its only writer), which reads the
    schedules among ``net.callbacks_`` (:meth:`SoftLossSchedule.scales`,
    :meth:`TemperatureSchedule.value`), whatever the callbacks' order:

    - ``temperature_``: the temperature in use (``TemperatureSchedule``, else
      ``temperature``);
    - ``soft_scale_`` and ``ce_scale_``: multipliers of the soft terms and of
      the CE term (``SoftLossSchedule``, else 1);
    - ``warmup_scale_``: the linear warm-up of the soft terms, from the
      ``warmup`` parameter where a loss has one.
    """

    #: Names of the terms returned by :meth:`compute_terms`, the same for every call.
    terms: tuple[str, ...] = ("ce",)
    #: Whether the loss needs teacher logits.
    requires_teacher: bool = True
    #: Whether a ``temperature`` parameter is used (and so must be a number > 0).
    uses_temperature: bool = True
    #: Parameters (besides ``*weight``) that must be >= 0 where a loss has them.
    non_negative_params = ("alpha", "beta", "gamma", "w_bcd", "w_scd", "w_wcd")

    # -- hooks for subclasses -------------------------------------------------
    def compute_terms(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        y: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Return ``{term name: weighted scalar tensor}`` for one batch.

        Parameters
        ----------
        student_logits : Tensor of shape (batch, n_classes)
        teacher_logits : Tensor of shape (batch, n_classes), or None
            Aligned to the classifier's ``classes_``; None when
            ``requires_teacher`` is False.
        y : LongTensor of shape (batch,)
            Encoded labels, indices into ``classes_``; -1 marks an unlabelled
            row, which gets the teacher's terms only. Every loss documents
            what it does with such a row, and keeps each term a mean over
            the rows that define it (no boolean indexing, no host read).
        """
        raise NotImplementedError

    @property
    def self_teaching(self) -> bool:
        """Whether the teacher is a first fit of the student itself (Tf-KD self).

        Then the classifier fits a clone of itself with ``loss="ce"`` first and
        passes that fit's module as the teacher.
        """
        return False

    def validate(self) -> None:
        """Raise a clear error for a bad hyper-parameter. Called at fit."""
        temperature = getattr(self, "temperature", None)
        if self.uses_temperature and hasattr(self, "temperature") or temperature is not None:
            check_temperature(temperature, "loss__temperature")
        for name, value in self.get_params().items():
            weight_like = name.endswith("weight") or name in self.non_negative_params
            if weight_like and isinstance(value, (int, float)) and value < 0:
                raise ValueError(f"loss__{name} must be >= 0, got {value!r}.")
        warmup = getattr(self, "warmup", 0)
        if not isinstance(warmup, (int, float)) or warmup < 0:
            raise ValueError(f"loss__warmup must be a number of epochs >= 0, got {warmup!r}.")
        if hasattr(self, "convention"):
            check_choice(
                self.convention, CONVENTIONS, "loss__convention",
                f"'paper' is the published formula (skd's default); 'released' reproduces the "
                f"authors' code (see help({type(self).__name__})).",
            )

    # -- machinery ------------------------------------------------------------
    def initialize(self):
        self.validate()
        scheduled = self.uses_temperature and hasattr(self, "temperature")
        self.temperature_ = float(self.temperature) if scheduled else 1.0
        self.soft_scale_ = 1.0
        self.ce_scale_ = 1.0
        self.warmup_scale_ = 1.0
        return self

    def on_epoch_begin(self, net, **kwargs):
        warmup = getattr(self, "warmup", 0)
        epoch = len(net.history)  # 1 in the first epoch, as in mdistiller
        self.warmup_scale_ = min(epoch / warmup, 1.0) if warmup else 1.0
        soft_schedule = find_schedule(net, SoftLossSchedule)
        self.soft_scale_, self.ce_scale_ = soft_schedule.scales(net) if soft_schedule else (1.0, 1.0)
        temperature_schedule = find_schedule(net, TemperatureSchedule)
        if self.uses_temperature and hasattr(self, "temperature"):
            scheduled = temperature_schedule is not None
            self.temperature_ = float(temperature_schedule.value(net) if scheduled else self.temperature)

    def __call__(self, student_logits, teacher_logits, y) -> dict[str, torch.Tensor]:
        """The batch's terms with the schedules' scales applied."""
        terms = self.compute_terms(student_logits, teacher_logits, y)
        soft = self.soft_scale_ * self.warmup_scale_
        return {
            name: value * (self.ce_scale_ if name == "ce" else soft) for name, value in terms.items()
        }

    @staticmethod
    def cross_entropy(student_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on logits, averaged over the labelled rows of the batch.

        Rows with ``y == -1`` (unlabelled) are left out: the sum over the
        labelled rows is divided by ``max(n_labelled, 1)``, so a batch with
        no labelled row has a CE term of 0 (see
        :func:`skd.losses.functional.labelled_cross_entropy`).
        """
        return labelled_cross_entropy(student_logits, y)
