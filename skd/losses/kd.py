"""The baseline (``"ce"``) and Hinton's knowledge distillation (``"kd"``)."""

from __future__ import annotations

from numbers import Real

from skd._constraints import Interval
from skd.losses.base import DistillationLoss, LossCapabilities, register_loss
from skd.losses.functional import kd_divergence_mean

__all__ = ["CE", "KD"]


@register_loss("ce")
class CE(DistillationLoss):
    """The student alone: cross-entropy on the labels, no teacher.

    Parameters
    ----------
    ce_weight : float, default=1.0
        Weight of the cross-entropy term.
    temperature : float or None, default=None
        Not used. Accepted so that a single-dict grid over losses and
        temperatures can include the baseline; a list of dicts, ``[{"loss":
        ["ce"]}, {"loss": ["kd", "dkd"], "loss__temperature": [2, 4]}]``, fits
        one CE candidate instead of one per temperature (the Pipelines page,
        "A grid over losses").
    """

    terms = ("ce",)
    capabilities = LossCapabilities(teacher=False, temperature=False)
    _parameter_constraints = {"temperature": [None, Interval(Real, 0, None, closed="neither")]}

    def __init__(self, ce_weight: float = 1.0, temperature: float | None = None):
        self.ce_weight = ce_weight
        self.temperature = temperature

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        return {}


@register_loss("kd")
class KD(DistillationLoss):
    """Knowledge distillation (Hinton, Vinyals & Dean, 2015).

    ``ce_weight * CE + kd_weight * T**2 * KL(p^T || p^S)``, with
    ``p = softmax(z / T)``. The defaults (T=4, 0.1 CE + 0.9 KD) are those of
    the CRD/mdistiller CIFAR-100 baselines.

    An unlabelled row (``y == -1``) gets the KD term only; CE is averaged
    over the labelled rows.

    Parameters
    ----------
    temperature : float, default=4.0
        Softening temperature T (> 0).
    ce_weight : float, default=0.1
        Weight of the cross-entropy on the labels.
    kd_weight : float, default=0.9
        Weight of the soft term.
    standardize : bool, default=False
        Z-score each row of student and teacher logits before the soft terms
        (logit standardization, Sun et al., CVPR 2024); CE sees the raw logits.
    """

    terms = ("ce", "kd")

    def __init__(self, temperature: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9,
                 standardize: bool = False):
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.standardize = standardize

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        return {"kd": kd_divergence_mean(student_logits, teacher_logits, temperature)}

    def term_weights(self, temperature):
        return {"kd": self.kd_weight * temperature**2}
