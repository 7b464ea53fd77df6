"""Label smoothing with a per-sample amount and self-knowledge as the prior (``"skls"``)."""

from __future__ import annotations

from numbers import Real

import torch

from skd._constraints import Interval
from skd.losses.base import DistillationLoss, LossCapabilities, register_loss
from skd.losses.functional import (
    adaptive_smoothing_alpha,
    labelled_mean,
    self_knowledge_smoothed_ce,
    target_or_teacher_top,
)

__all__ = ["SelfKnowledgeLS"]


@register_loss("skls")
class SelfKnowledgeLS(DistillationLoss):
    """Self-knowledge adaptive label smoothing (Lee, Cheung & Zhang, EMNLP 2022 Findings).

    A teacher-free loss beside Tf-KD: the label is smoothed towards the
    model's own earlier prediction (its self-knowledge: a first fit of the
    student, as Tf-KD self, so ``capabilities.self_teaching`` is True), by an amount
    ``alpha_i`` that varies per sample with the model's current entropy
    (:func:`~skd.losses.functional.adaptive_smoothing_alpha`):
    ``mean_i [(1 - alpha_i) CE(y_i, p^S_i) + alpha_i H(softmax(z^prior_i / T), p^S_i)]``
    over the labelled rows. The base class gives ``ce`` (the plain CE, weight
    1); the ``self_prior`` term adds ``alpha_i (H(prior_i, p^S_i) - CE_i)``,
    so that the two sum to the formula. The paper's exact expression for
    ``alpha`` could not be read; ``docs/methods.md`` says what is skd's.

    A row with ``y == -1`` has no label to smooth: its target is the prior
    alone (``alpha = 1``); ``self_prior`` adds its ``H(prior, p^S)`` divided
    by the batch size.

    Parameters
    ----------
    scale : float, default=1.0
        ``alpha_i = min(scale * H(p^S_i) / log C, 1)``.
    temperature : float, default=1.0
        Softening of the prior.
    """

    terms = ("ce", "self_prior")
    _parameter_constraints = {"scale": [Interval(Real, 0, None, closed="left")]}

    def __init__(self, scale: float = 1.0, temperature: float = 1.0):
        self.scale = scale
        self.temperature = temperature

    capabilities = LossCapabilities(self_teaching=True)

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        labelled = y >= 0
        alpha = adaptive_smoothing_alpha(student_logits, self.scale)
        label = target_or_teacher_top(y, teacher_logits)
        zeros, ones = torch.zeros_like(alpha), torch.ones_like(alpha)
        hard = self_knowledge_smoothed_ce(student_logits, teacher_logits, label, zeros, temperature)
        prior = self_knowledge_smoothed_ce(student_logits, teacher_logits, label, ones, temperature)
        shift = labelled_mean(alpha * (prior - hard), y)
        unlabelled = torch.where(labelled, 0.0, prior).mean()
        return {"self_prior": shift + unlabelled}
