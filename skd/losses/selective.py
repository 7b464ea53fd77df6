"""Selective KD: a wrong teacher corrected progressively (``"selective_kd"``)."""

from __future__ import annotations

import torch.nn.functional as F

from skd.losses.base import DistillationLoss, register_loss
from skd.losses.functional import corrected_teacher_log_probs, soften

__all__ = ["SelectiveKD"]


@register_loss("selective_kd")
class SelectiveKD(DistillationLoss):
    """KD whose teacher is corrected on the rows it gets wrong (the response part of CCSKD).

    ``ce_weight * CE + kd_weight * T**2 * KL(q || p^S)``, where ``q`` is the
    teacher's softened distribution, except on a labelled row whose teacher
    top class is not the label: there ``q = (1 - rho) p + rho swap(p)``,
    with the probabilities of the teacher's top class and of the label
    exchanged in ``swap(p)``
    (:func:`~skd.losses.functional.corrected_teacher_log_probs`). ``rho``
    rises linearly from 0 to 1 over ``correction_epochs`` epochs (it is
    ``correction_`` at run time). The paper's formula could not be read; this
    is skd's (``docs/methods.md``).

    Parameters
    ----------
    temperature : float, default=4.0
    ce_weight : float, default=0.1
    kd_weight : float, default=0.9
    correction_epochs : int, default=10
        Epochs over which ``rho`` goes from 0 to 1 (0: fully corrected from the start).
    """

    terms = ("ce", "kd")

    def __init__(
        self,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        correction_epochs: int = 10,
    ):
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.correction_epochs = correction_epochs

    def initialize(self):
        super().initialize()
        self.correction_ = 0.0 if self.correction_epochs else 1.0
        return self

    def on_epoch_begin(self, net, **kwargs):
        super().on_epoch_begin(net, **kwargs)
        epoch = len(net.history)
        self.correction_ = min(epoch / self.correction_epochs, 1.0) if self.correction_epochs else 1.0

    def compute_terms(self, student_logits, teacher_logits, y):
        temperature = self.temperature_
        log_teacher = corrected_teacher_log_probs(teacher_logits, y, temperature, self.correction_)
        log_student = soften(student_logits, temperature)
        kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(1).mean()
        return {
            "ce": self.ce_weight * self.cross_entropy(student_logits, y),
            "kd": self.kd_weight * temperature**2 * kl,
        }
