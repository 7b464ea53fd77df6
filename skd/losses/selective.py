"""Selective KD: a wrong teacher corrected progressively (``"selective_kd"``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from numbers import Real

import torch

from skd._constraints import Interval
from skd.losses.base import DistillationLoss, register_loss
from skd.losses.functional import corrected_teacher_log_probs, kd_divergence, soften
from skd.state import EpochValues

__all__ = ["SelectiveKD"]


@dataclass(frozen=True)
class CorrectionValues(EpochValues):
    """:class:`EpochValues` plus the correction ``rho`` of this epoch (host float)."""

    correction: float = 1.0


@register_loss("selective_kd")
class SelectiveKD(DistillationLoss):
    """KD whose teacher is corrected on the rows it gets wrong (the response part of CCSKD).

    ``ce_weight * CE + kd_weight * T**2 * KL(q || p^S)``, where ``q`` is the
    teacher's softened distribution, except on a labelled row whose teacher
    top class is not the label: there ``q = (1 - rho) p + rho swap(p)``,
    with the probabilities of the teacher's top class and of the label
    exchanged in ``swap(p)``
    (:func:`~skd.losses.functional.corrected_teacher_log_probs`). ``rho``
    rises linearly from 0 to 1 over ``correction_epochs`` epochs. The paper's
    formula could not be read; this is skd's (``docs/methods.md``).

    As ``H(swap(p)) = H(p)``, ``KL(q || p^S)`` equals ``(1 - rho) KL(p || p^S)
    + rho KL(swap(p) || p^S)`` up to a term with no gradient, so the loss is
    three terms whose epoch coefficients carry ``rho`` (no per-epoch value
    inside the step): ``kd`` (rows the teacher gets right, and unlabelled
    rows), ``kd_wrong`` (``KL(p || p^S)`` on wrong rows, times ``1 - rho``)
    and ``kd_corrected`` (``KL(swap(p) || p^S)`` on wrong rows, times
    ``rho``); each is a sum over its rows divided by the batch size.

    Parameters
    ----------
    temperature : float, default=4.0
    ce_weight : float, default=0.1
    kd_weight : float, default=0.9
    correction_epochs : int, default=10
        Epochs over which ``rho`` goes from 0 to 1 (0: fully corrected from the start).
    standardize : bool, default=False
        Z-score each row of student and teacher logits before the soft terms
        (logit standardization, Sun et al., CVPR 2024); CE sees the raw logits.
    """

    terms = ("ce", "kd", "kd_wrong", "kd_corrected")
    _parameter_constraints = {"correction_epochs": [Interval(Real, 0, None, closed="left")]}

    def __init__(
        self,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        correction_epochs: int = 10,
        standardize: bool = False,
    ):
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.correction_epochs = correction_epochs
        self.standardize = standardize

    def epoch_values(self, epoch, schedules=None):
        values = super().epoch_values(epoch, schedules)
        correction = min(epoch / self.correction_epochs, 1.0) if self.correction_epochs else 1.0
        return CorrectionValues(**asdict(values), correction=correction)

    def term_coefficients(self, values):
        coefficients = super().term_coefficients(values)
        correction = getattr(values, "correction", 1.0)
        coefficients["kd_wrong"] *= 1.0 - correction
        coefficients["kd_corrected"] *= correction
        return coefficients

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        top = teacher_logits.argmax(dim=1)
        wrong = (y >= 0) & (top != y.long().clamp_min(0))
        plain = kd_divergence(student_logits, teacher_logits, temperature)
        swapped = corrected_teacher_log_probs(teacher_logits, y, temperature, 1.0)
        log_student = soften(student_logits, temperature)
        corrected = (swapped.exp() * (swapped - log_student)).sum(1)
        zero = torch.zeros_like(plain)
        return {
            "kd": torch.where(wrong, zero, plain).mean(),
            "kd_wrong": torch.where(wrong, plain, zero).mean(),
            "kd_corrected": torch.where(wrong, corrected, zero).mean(),
        }

    def term_weights(self, temperature):
        weight = self.kd_weight * temperature**2
        return {"kd": weight, "kd_wrong": weight, "kd_corrected": weight}
