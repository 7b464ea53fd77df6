"""Robustness-reinforced KD with correlation distances (``"r2kd"``)."""

from __future__ import annotations

from numbers import Real

from skd._constraints import Interval, Options
from skd.losses.base import DistillationLoss, register_loss
from skd.losses.functional import r2kd_value_terms, spearman_distance

__all__ = ["R2KD"]


@register_loss("r2kd")
class R2KD(DistillationLoss):
    """R2KD (Kim, Ham, Cho & Kim, IEEE TKDE 2024): value and rank correlation.

    ``ce_weight * CE + value_weight * T**2 * (d(rows) + d(columns))
    + rank_weight * mean_i (1 - rho_s(z^S_i / T, z^T_i / T))``

    - the value term is a correlation distance between softened predictions,
      per sample over classes and per class over the batch: the Pearson
      distance (``value="pearson"``, the paper's description) or the
      authors' released absolute cosine (``value="cosine"``);
    - the rank term is the Spearman distance on **differentiable** soft ranks
      (:func:`skd.losses.functional.soft_rank`). The released code ranks with
      ``argsort``, which passes no gradient, so its rank term only logs.
      The soft rank compares pairs with a clipped-linear ramp, computed by
      sorting in O(C log C).

    ``convention`` sets the value term's denominator, where the paper's
    correlation and the released code (``eisen_cosine_distance``, also DIST's
    reference) disagree: ``"paper"`` (default) is exact (an undefined
    correlation counts 0 with zero gradient, and a one-sample batch has no
    column term), invariant to the scale of the probabilities;
    ``"released"`` divides by ``|a| |b| + 1e-8`` as the released code does
    (up to 1.7e-2 relative difference on small batches with a confident
    teacher). It applies to both ``value`` distances.

    An unlabelled row (``y == -1``) takes part in the value and rank terms
    (they need no label); CE is averaged over the labelled rows.

    Use it with :class:`skd.PrunedTeacher` (``blend=0.7``, ``amount=0.1``) and
    batch augmentation for the full recipe. Defaults are the released code's.

    Parameters
    ----------
    value_weight : float, default=2.0
    rank_weight : float, default=2.0
    temperature : float, default=4.0
    rank_sharpness : float, default=5.0
        Slope of the clipped-linear comparison in the soft rank, on the ``z / T`` scale;
        larger is closer to hard ranks, with sparser gradients.
    value : {"pearson", "cosine"}, default="pearson"
    ce_weight : float, default=1.0
    convention : {"paper", "released"}, default="paper"
    standardize : bool, default=False
        Z-score each row of student and teacher logits before the soft terms
        (logit standardization, Sun et al., CVPR 2024); CE sees the raw logits.
    """

    terms = ("ce", "value", "rank")

    def __init__(
        self,
        value_weight: float = 2.0,
        rank_weight: float = 2.0,
        temperature: float = 4.0,
        rank_sharpness: float = 5.0,
        value: str = "pearson",
        ce_weight: float = 1.0,
        convention: str = "paper",
        standardize: bool = False,
    ):
        self.value_weight = value_weight
        self.rank_weight = rank_weight
        self.temperature = temperature
        self.rank_sharpness = rank_sharpness
        self.value = value
        self.ce_weight = ce_weight
        self.convention = convention
        self.standardize = standardize

    _parameter_constraints = {
        "value": [Options(("pearson", "cosine"))],
        "rank_sharpness": [Interval(Real, 0, None, closed="neither")],
    }

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        rows, columns = r2kd_value_terms(
            student_logits, teacher_logits, temperature, self.value, self.convention
        )
        rank = spearman_distance(
            student_logits / temperature, teacher_logits / temperature, self.rank_sharpness
        ).mean()
        return {"value": rows + columns, "rank": rank}

    def term_weights(self, temperature):
        return {"value": self.value_weight * temperature**2, "rank": self.rank_weight}
