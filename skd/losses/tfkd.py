"""Teacher-free knowledge distillation (``"tfkd"``)."""

from __future__ import annotations

from skd.losses.base import DistillationLoss, register_loss
from skd.losses.functional import (
    kd_divergence,
    soften,
    tempered_log_distribution,
    tfkd_reg_distribution,
)

__all__ = ["TfKD"]


@register_loss("tfkd")
class TfKD(DistillationLoss):
    """Teacher-free KD (Yuan et al., CVPR 2020).

    ``ce_weight * CE + kd_weight * T**2 * KL(q || softmax(z^S / T))``

    - ``mode="reg"`` (Tf-KD_reg): ``q`` is a hand-made teacher, ``a`` on the
      true class and ``(1 - a) / (C - 1)`` elsewhere, softened by ``T``. No
      teacher is needed. skd softens it as Hinton softens any teacher, by
      treating ``log p^d`` as its logits; the authors' code applies
      ``softmax(p^d / T)`` to the probabilities, which at their T = 20 is
      almost uniform (an entropy regulariser).
    - ``mode="self"`` (Tf-KD_self): a copy of the student is first fitted with
      cross-entropy alone, then serves as the teacher.

    Parameters
    ----------
    mode : {"reg", "self"}, default="reg"
    a : float, default=0.99
        Probability of the true class in the hand-made teacher (``reg``).
    temperature : float, default=4.0
    ce_weight : float, default=0.1
    kd_weight : float, default=0.9
    """

    terms = ("ce", "kd")

    def __init__(
        self,
        mode: str = "reg",
        a: float = 0.99,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
    ):
        self.mode = mode
        self.a = a
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight

    @property
    def requires_teacher(self):
        return self.mode == "self"

    def validate(self):
        super().validate()
        if self.mode not in ("reg", "self"):
            raise ValueError(f"loss__mode must be 'reg' or 'self', got {self.mode!r}.")
        if not 0.0 < self.a < 1.0:
            raise ValueError(f"loss__a must be in (0, 1), got {self.a!r}.")

    def make_teacher(self, net, X, y):
        if self.mode != "self":
            return None
        from skd.teachers import TorchTeacher

        params = {
            key: value
            for key, value in net.get_params(deep=False).items()
            if not key.startswith("loss__")
        }
        params.update(loss="ce", teacher=None)
        first = type(net)(**params)
        first.fit(X, y)
        return TorchTeacher(first.module_)

    def compute_terms(self, student_logits, teacher_logits, y):
        temperature = self.temperature_
        if self.mode == "reg":
            hand_made = tfkd_reg_distribution(y, student_logits.shape[1], self.a, student_logits.dtype)
            log_teacher = tempered_log_distribution(hand_made, temperature)
            log_student = soften(student_logits, temperature)
            kl = (log_teacher.exp() * (log_teacher - log_student)).sum(1).mean()
        else:
            kl = kd_divergence(student_logits, teacher_logits, temperature).mean()
        return {
            "ce": self.ce_weight * self.cross_entropy(student_logits, y),
            "kd": self.kd_weight * temperature**2 * kl,
        }
