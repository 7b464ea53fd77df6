"""Decoupled knowledge distillation (``"dkd"``)."""

from __future__ import annotations

from skd.losses.base import DistillationLoss, LossCapabilities, register_loss
from skd.losses.functional import split_kl_means, target_mask, target_or_teacher_top

__all__ = ["DKD"]


@register_loss("dkd")
class DKD(DistillationLoss):
    """Decoupled Knowledge Distillation (Zhao et al., CVPR 2022).

    ``ce_weight * CE + warmup * T**2 * (alpha * TCKD + beta * NCKD)``, Eq. (7),
    where the warm-up factor rises linearly from 1/``warmup`` to 1 over the
    first ``warmup`` epochs. Defaults are the official code's (mdistiller
    ``DKD``: CE 1, alpha 1, beta 8, T 4, warm-up 20). The paper tunes beta per
    teacher: 2 for ResNet56/110, 6 for WRN-40-2/VGG13, 8 for ResNet32x4/50.

    An unlabelled row (``y == -1``) has no target class: its split uses the
    teacher's top class instead (:func:`~skd.losses.functional.target_or_teacher_top`),
    so TCKD + (1 - p_t^T) NCKD is still its full KL, and TCKD/NCKD stay means
    over every row. CE is averaged over the labelled rows.

    Parameters
    ----------
    alpha : float, default=1.0
        Weight of TCKD, the binary target-vs-rest divergence.
    beta : float, default=8.0
        Weight of NCKD, the divergence among non-target classes.
    temperature : float, default=4.0
    ce_weight : float, default=1.0
    warmup : int, default=20
        Epochs of linear warm-up of the soft terms (0 turns it off).
    standardize : bool, default=False
        Z-score each row of student and teacher logits before the soft terms
        (logit standardization, Sun et al., CVPR 2024); CE sees the raw logits.
    """

    terms = ("ce", "tckd", "nckd")

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        warmup: int = 20,
        standardize: bool = False,
    ):
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.warmup = warmup
        self.standardize = standardize

    capabilities = LossCapabilities(labelled_only=True)

    def compute_terms(self, student_logits, teacher_logits, y, temperature, labelled_only=False):
        # the batch means of dkd_terms, fused: split_kl_means
        target = y if labelled_only else target_or_teacher_top(y, teacher_logits)
        target = target_mask(target, student_logits.shape[1])
        terms = split_kl_means(student_logits, teacher_logits, target, temperature)
        return {"tckd": terms.binary, "nckd": terms.kl_out}

    def term_weights(self, temperature):
        return {"tckd": self.alpha * temperature**2, "nckd": self.beta * temperature**2}
