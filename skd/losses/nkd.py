"""Normalized knowledge distillation (``"nkd"``)."""

from __future__ import annotations

from numbers import Real

from skd._constraints import Interval
from skd.losses.base import DistillationLoss, register_loss
from skd.losses.functional import nkd_terms, target_or_teacher_top

__all__ = ["NKD"]


@register_loss("nkd")
class NKD(DistillationLoss):
    """Normalized KD (Yang, Zeng, Yuan & Li, ICCV 2023).

    ``ce_weight * CE + mean(-p^T_t log p^S_t) + gamma * T**2 * mean(H(p̂^T, p̂^S))``:
    a target term at T = 1 (the teacher's target probability times the
    student's target log-probability) plus the cross-entropy between the
    teacher's and the student's distributions over the non-target classes,
    each renormalised, at temperature T
    (:func:`~skd.losses.functional.nkd_terms`), equal to the released
    ``NKDLoss`` (yzd-v/cls_KD, ``mmcls/models/dis_losses/nkd.py``) plus the
    classifier's CE (weight 1 in the released configs).

    Defaults are the released ImageNet config's (``res34_distill_res18_img``:
    T 1, gamma 1.5); its CIFAR-100 config uses T 3, gamma 3.5.

    An unlabelled row (``y == -1``) has no target: it uses the teacher's top
    class instead (:func:`~skd.losses.functional.target_or_teacher_top`), as
    DKD does. CE is averaged over the labelled rows.

    Parameters
    ----------
    temperature : float, default=1.0
    gamma : float, default=1.5
        Weight of the non-target term (times ``T**2``).
    ce_weight : float, default=1.0
    standardize : bool, default=False
        Z-score each row of student and teacher logits before the NKD terms
        (logit standardization, Sun et al., CVPR 2024); CE sees the raw logits.
    """

    terms = ("ce", "nkd_target", "nkd_non_target")

    _parameter_constraints = {"gamma": [Interval(Real, 0, None, closed="left")]}

    def __init__(
        self, temperature: float = 1.0, gamma: float = 1.5, ce_weight: float = 1.0, standardize: bool = False
    ):
        self.temperature = temperature
        self.gamma = gamma
        self.ce_weight = ce_weight
        self.standardize = standardize

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        target = target_or_teacher_top(y, teacher_logits)
        terms = nkd_terms(student_logits, teacher_logits, target, temperature)
        return {"nkd_target": terms.target.mean(), "nkd_non_target": terms.non_target.mean()}

    def term_weights(self, temperature):
        return {"nkd_target": 1.0, "nkd_non_target": self.gamma * temperature**2}
