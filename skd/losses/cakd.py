"""Correlation-aware knowledge distillation (``"cakd"``)."""

from __future__ import annotations

from numbers import Integral, Real

from skd._constraints import Interval, Options
from skd.losses.base import DistillationLoss, LossCapabilities, register_loss
from skd.losses.functional import split_kl_means, strong_class_mask, target_or_teacher_top

__all__ = ["CAKD"]


@register_loss("cakd")
class CAKD(DistillationLoss):
    """Correlation-Aware KD (Zhang et al., 2024, arXiv 2410.14741), logit level.

    The KL divergence splits exactly into a binary divergence between the
    masses of a strong-correlation group S and a weak group W (BCD), and the
    divergences inside each group (SCD, WCD):
    ``KL = BCD + P_S^T SCD + P_W^T WCD``. CAKD replaces the teacher masses by
    tunable weights:

    ``ce_weight * CE + warmup * T**2 * (w_bcd BCD + w_scd SCD + w_wcd WCD)``.

    **The paper's own rule for choosing S, and its weights, are not public.**
    This is skd's definition: S = {true class} ∪ the teacher's top-``strong_k``
    non-target classes (``strong_rule="topk"``), or the fewest top non-target
    classes holding ``strong_mass`` of the teacher's non-target mass
    (``strong_rule="mass"``). With ``use_labels=False``, S is the teacher's
    top-(``strong_k`` + 1) classes. With ``strong_k=0`` and weights
    ``(alpha, any, beta)`` CAKD is DKD(alpha, beta).

    An unlabelled row (``y == -1``) puts the teacher's top class in S in
    place of the true class (as DKD does); BCD/SCD/WCD stay means over every
    row, CE over the labelled rows.

    The default weights come from the ablation in ``benchmarks/cakd_ablation.py``
    (MNIST-5k, see ``docs/benchmarks.md``); they follow the paper's finding
    that the strong group matters more under a confident teacher.

    Parameters
    ----------
    strong_k : int or None, default=None
        Non-target classes in the strong group (``strong_rule="topk"``).
        An int must be < the number of classes; None means ``min(4, C - 1)``,
        the best of the MNIST-5k ablation (C = 10) kept valid for any C.
    w_bcd, w_scd, w_wcd : float, default=1.0, 8.0, 2.0
        Weights of the binary, strong- and weak-correlation divergences.
    temperature : float, default=4.0
    ce_weight : float, default=1.0
    warmup : int, default=20
        Epochs of linear warm-up of the soft terms, as in DKD.
    strong_rule : {"topk", "mass"}, default="topk"
    strong_mass : float, default=0.5
        Share of the teacher's non-target mass for ``strong_rule="mass"``.
    use_labels : bool, default=True
        Whether the true class is always in S (False: label-free variant).
    standardize : bool, default=False
        Z-score each row of student and teacher logits before the soft terms
        (logit standardization, Sun et al., CVPR 2024); CE sees the raw logits.
    """

    terms = ("ce", "bcd", "scd", "wcd")

    def __init__(
        self,
        strong_k: int | None = None,
        w_bcd: float = 1.0,
        w_scd: float = 8.0,
        w_wcd: float = 2.0,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        warmup: int = 20,
        strong_rule: str = "topk",
        strong_mass: float = 0.5,
        use_labels: bool = True,
        standardize: bool = False,
    ):
        self.strong_k = strong_k
        self.w_bcd = w_bcd
        self.w_scd = w_scd
        self.w_wcd = w_wcd
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.warmup = warmup
        self.strong_rule = strong_rule
        self.strong_mass = strong_mass
        self.use_labels = use_labels
        self.standardize = standardize

    _parameter_constraints = {
        "strong_k": [None, Interval(Integral, 0, None)],
        "strong_rule": [Options(("topk", "mass"))],
        "strong_mass": [Interval(Real, 0, 1)],
        "use_labels": [Options((True, False))],
    }

    capabilities = LossCapabilities(labelled_only=True)

    def compute_terms(self, student_logits, teacher_logits, y, temperature, labelled_only=False):
        n_classes = student_logits.shape[1]
        strong_k = min(4, n_classes - 1) if self.strong_k is None else self.strong_k
        if self.strong_rule == "topk" and strong_k >= n_classes:
            raise ValueError(
                f"loss__strong_k={self.strong_k} is too large for {n_classes} classes: "
                f"it must be at most {n_classes - 1} (n_classes - 1). Lower strong_k."
            )
        target = None
        if self.use_labels:
            target = y if labelled_only else target_or_teacher_top(y, teacher_logits)
        mask = strong_class_mask(
            teacher_logits,
            target,
            strong_k=strong_k,
            rule=self.strong_rule,
            strong_mass=self.strong_mass,
            temperature=temperature,
        )
        # the batch means of cakd_terms, fused: split_kl_means
        terms = split_kl_means(student_logits, teacher_logits, mask, temperature)
        return {"bcd": terms.binary, "scd": terms.kl_in, "wcd": terms.kl_out}

    def term_weights(self, temperature):
        scale = temperature**2
        return {"bcd": self.w_bcd * scale, "scd": self.w_scd * scale, "wcd": self.w_wcd * scale}
