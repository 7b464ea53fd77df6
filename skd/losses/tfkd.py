"""Teacher-free knowledge distillation (``"tfkd"``)."""

from __future__ import annotations

from numbers import Real

from skd._constraints import Interval, Options
from skd.losses.base import DistillationLoss, LossCapabilities, register_loss
from skd.losses.functional import (
    kd_divergence_mean,
    labelled_mean,
    tfkd_reg_kl,
    tfkd_reg_log_distribution,
    tfkd_reg_released,
)

__all__ = ["TfKD"]


@register_loss("tfkd")
class TfKD(DistillationLoss):
    """Teacher-free KD (Yuan et al., CVPR 2020).

    ``ce_weight * CE + kd_weight * T**2 * KL(q || softmax(z^S / T))``

    - ``mode="reg"`` (Tf-KD_reg): ``q`` is a hand-made teacher, ``a`` on the
      true class and ``(1 - a) / (C - 1)`` elsewhere, softened by ``T``. No
      teacher is needed.
    - ``mode="self"`` (Tf-KD_self): a first fit of the student with
      cross-entropy alone is the teacher. ``capabilities.self_teaching`` is True: the
      classifier fits a clone of itself with ``loss="ce"`` first and passes
      its module as the teacher.

    The hand-made teacher of ``mode="reg"`` is made from the label, so an
    unlabelled row (``y == -1``) adds nothing to either term in that mode
    (both are means over the labelled rows); the classifier refuses
    unlabelled rows for teacher-free losses. In ``mode="self"`` it gets the
    KD term only.

    ``convention`` (where the paper's formula and the authors' released code,
    ``my_loss_function.py``, disagree):

    - ``"paper"`` (default): the paper's ``D_KL(p^d_tau, p_tau)`` softened as
      Hinton softens any teacher: ``q = softmax(log p^d / T)`` (``log p^d`` as
      logits), student ``softmax(z / T)``, times ``T**2``, batch mean. It is
      the formula the paper states, and keeps the soft term's scale
      independent of ``T`` and ``C``, so ``kd_weight`` means the same at any
      temperature and number of classes.
    - ``"released"``: ``loss_kd_regularization`` as released, which differs
      in four ways: the student's logits are not divided by ``T``; the
      teacher is ``softmax(p^d / T)`` of the probabilities (nearly uniform at
      the released T = 20-40: an entropy regulariser); there is no ``T**2``;
      and ``nn.KLDivLoss()`` averages over B·C elements, not B. For
      ``mode="self"``, the released ``loss_kd_self`` also averages over B·C
      (``T**2 * KL / C`` per sample). The released weights map as
      ``ce_weight = 1 - alpha`` and ``kd_weight = alpha * multiplier``
      (ResNet18: alpha 0.1, multiplier 100, T 20).

    Parameters
    ----------
    mode : {"reg", "self"}, default="reg"
    a : float, default=0.99
        Probability of the true class in the hand-made teacher (``reg``).
    temperature : float, default=4.0
    ce_weight : float, default=0.1
    kd_weight : float, default=0.9
    convention : {"paper", "released"}, default="paper"
    """

    terms = ("ce", "kd")

    def __init__(
        self,
        mode: str = "reg",
        a: float = 0.99,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        convention: str = "paper",
    ):
        self.mode = mode
        self.a = a
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.convention = convention

    @property
    def capabilities(self) -> LossCapabilities:
        """``mode="self"``: a teacher, the student's own first fit; ``"reg"``: none."""
        return LossCapabilities(teacher=self.mode == "self", self_teaching=self.mode == "self",
                                labelled_only=True)

    _parameter_constraints = {
        "mode": [Options(("reg", "self"))],
        "a": [Interval(Real, 0, 1, closed="neither")],
    }

    def compute_terms(self, student_logits, teacher_logits, y, temperature, labelled_only=False):
        released = self.convention == "released"
        if self.mode == "reg" and released:
            # the released value has its own T**2 (see term_weights); labelled rows only
            return {"kd": tfkd_reg_released(student_logits, y, self.a, temperature)}
        if self.mode == "reg":
            if labelled_only:  # every row labelled: the fused mean of tfkd_reg_kl
                n_classes = student_logits.shape[1]
                hand_made = tfkd_reg_log_distribution(y, n_classes, self.a, student_logits.dtype)
                return {"kd": kd_divergence_mean(student_logits, hand_made, temperature)}
            per_row = tfkd_reg_kl(student_logits, y.clamp_min(0), self.a, temperature)
            return {"kd": labelled_mean(per_row, y)}
        kl = kd_divergence_mean(student_logits, teacher_logits, temperature)
        return {"kd": kl / student_logits.shape[1] if released else kl}

    def term_weights(self, temperature):
        released_reg = self.mode == "reg" and self.convention == "released"
        return {"kd": self.kd_weight * (1.0 if released_reg else temperature**2)}
