"""Distillation from a stronger teacher (``"dist"``)."""

from __future__ import annotations

from skd.losses.base import DistillationLoss, register_loss
from skd.losses.functional import dist_terms

__all__ = ["DIST"]


@register_loss("dist")
class DIST(DistillationLoss):
    """DIST (Huang et al., NeurIPS 2022): Pearson relations, not KL.

    ``ce_weight * CE + T**2 * (beta * L_inter + gamma * L_intra)`` with the
    Pearson distance between softened predictions per sample (inter-class)
    and per class over the batch (intra-class). The official CIFAR-100 recipe
    (``dist_t4``) uses T=4 and multiplies the distillation loss by 2, which is
    ``beta=gamma=2`` here; the paper's formulation is ``beta=gamma=1``.

    An unlabelled row (``y == -1``) takes part in both relation terms (they
    need no label); CE is averaged over the labelled rows.

    ``convention`` (where the paper's formula and the released code,
    ``lib/models/losses/dist_kd.py`` of hunto/image_classification_sota,
    disagree):

    - ``"paper"`` (default): the exact correlation ``Cov / (Std Std)``; rows
      and columns where it is undefined (a constant vector, e.g. every column
      of a one-sample batch, up to a tolerance relative to the vector's size)
      are left out of the mean, with zero gradient, so a batch of one sample
      has ``intra = 0``. This is the formula of the paper, invariant to the
      scale of the probabilities.
    - ``"released"``: ``Cov / (|a_c| |b_c| + 1e-8)`` as the released code
      computes it. The ``1e-8`` shrinks the correlation of small-variance
      vectors; the measured gap between the conventions is tabulated on the
      "Losses" docs page.

    Parameters
    ----------
    beta : float, default=1.0
        Weight of the inter-class (per-sample) relation loss.
    gamma : float, default=1.0
        Weight of the intra-class (per-class, across the batch) relation loss.
    temperature : float, default=4.0
    ce_weight : float, default=1.0
    convention : {"paper", "released"}, default="paper"
    standardize : bool, default=False
        Z-score each row of student and teacher logits before the soft terms
        (logit standardization, Sun et al., CVPR 2024); CE sees the raw logits.
    """

    terms = ("ce", "inter", "intra")

    def __init__(
        self,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        convention: str = "paper",
        standardize: bool = False,
    ):
        self.beta = beta
        self.gamma = gamma
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.convention = convention
        self.standardize = standardize

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        inter, intra = dist_terms(student_logits, teacher_logits, temperature, self.convention)
        return {"inter": inter, "intra": intra}

    def term_weights(self, temperature):
        return {"inter": self.beta * temperature**2, "intra": self.gamma * temperature**2}
