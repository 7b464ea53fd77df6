"""Transformed teacher matching (TTM, WTTM) and normalized KD (NKD)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from skd.losses.functional.basics import target_mask

__all__ = [
    "NKDTerms",
    "nkd_terms",
    "power_transformed_teacher",
    "ttm_divergence",
    "wttm_divergence",
]


def power_transformed_teacher(
    teacher_logits: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's power-transformed distribution and WTTM's sample weight.

    Zheng & Yang (2024), "Knowledge Distillation Based on Transformed Teacher
    Matching", ICLR: the power transform ``p^gamma / sum_j p_j^gamma``
    (gamma = 1/T) and WTTM's weight ``U_gamma(p) = sum_j p_j^gamma``. The released code
    (zkxufo/TTM, ``distiller_zoo/wttm.py``) computes
    ``pow(softmax(y_t), l)`` and its row sum ``norm``; here the same numbers
    come from ``log softmax(gamma * log p)`` and ``exp(logsumexp(gamma *
    log p))``, which do not underflow for extreme logits.

    Returns
    -------
    (log_q, weight) : Tensors of shape (batch, n_classes) and (batch,)
        ``log_q`` is the log of the transformed distribution; ``weight`` is
        ``sum_j p_j^gamma``, in ``[1, C^(1 - gamma)]`` for ``0 < gamma <= 1``.
    """
    scaled = gamma * torch.log_softmax(teacher_logits, dim=1)
    return torch.log_softmax(scaled, dim=1), torch.logsumexp(scaled, dim=1).exp()


def ttm_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample TTM term, ``KL(p^T_gamma || softmax(z^S))``.

    Zheng & Yang (2024), TTM: the student's softmax at T = 1
    (no temperature on the student side) matched to the teacher's
    power-transformed distribution. Released: ``distiller_zoo/ttm.py``
    (``loss = mean(KL)``; the batch mean is the caller's).

    Returns
    -------
    Tensor of shape (batch,)
    """
    log_q, _ = power_transformed_teacher(teacher_logits, gamma)
    log_student = torch.log_softmax(student_logits, dim=1)
    return F.kl_div(log_student, log_q, log_target=True, reduction="none").sum(1)


def wttm_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample WTTM term, ``U_gamma(p^T) * KL(p^T_gamma || softmax(z^S))``.

    Zheng & Yang (2024), WTTM: TTM weighted per sample by the
    power sum of the teacher's probabilities, which is large where the
    teacher is unsure. Released: ``distiller_zoo/wttm.py``, ``loss =
    mean(norm * KL)`` with ``norm = sum(softmax(y_t)**l)``; the batch mean is
    the caller's. The weight comes from the teacher and passes no gradient to
    the student.

    Returns
    -------
    Tensor of shape (batch,)
    """
    log_q, weight = power_transformed_teacher(teacher_logits, gamma)
    log_student = torch.log_softmax(student_logits, dim=1)
    return weight * F.kl_div(log_student, log_q, log_target=True, reduction="none").sum(1)


class NKDTerms(NamedTuple):
    """Per-sample terms of NKD, each of shape (batch,)."""

    #: ``-p^T_t * log p^S_t`` (T = 1), the target term.
    target: torch.Tensor
    #: ``-sum_{i != t} p̂^T_i log p̂^S_i`` over the non-target classes, renormalised, at temperature T.
    non_target: torch.Tensor


def nkd_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, temperature: float
) -> NKDTerms:
    """The two terms of normalized KD.

    Yang, Zeng, Yuan & Li (2023), "From Knowledge Distillation to
    Self-Knowledge Distillation: A Unified Approach with Normalized Loss and
    Customized Soft Labels", ICCV, the NKD loss ``L_NKD = -T_t log S_t
    - gamma * lambda^2 * sum_{i != t} T̂_i log Ŝ_i``, as the released code
    computes it (yzd-v/cls_KD, ``mmcls/models/dis_losses/nkd.py``):

    - target term: the teacher's target probability at T = 1 (detached) times
      the student's log-probability of the target, at T = 1;
    - non-target term: the cross-entropy between the teacher's and the
      student's distributions over the C - 1 non-target classes, each
      renormalised, at temperature T. It is a cross-entropy, as released,
      not a KL: the two differ by the teacher's non-target entropy, a
      constant with no gradient.

    The caller applies ``gamma * T**2`` to the second term and the batch
    mean. The released code drops the target column by boolean indexing;
    here it is set to ``-inf`` and selected away, so shapes stay static.

    Parameters
    ----------
    target : LongTensor of shape (batch,)
        Class indices (no -1: the caller replaces an unlabelled row's label,
        e.g. by :func:`target_or_teacher_top`).

    Returns
    -------
    NKDTerms
    """
    is_target = target_mask(target, student_logits.shape[1])
    log_student = torch.log_softmax(student_logits, dim=1)
    teacher_probs = torch.softmax(teacher_logits, dim=1).detach()
    index = target.long().unsqueeze(1)
    target_term = -(teacher_probs.gather(1, index) * log_student.gather(1, index)).squeeze(1)
    student_rest = torch.where(is_target, float("-inf"), student_logits / temperature)
    log_student_rest = torch.log_softmax(student_rest, dim=1)
    teacher_rest = torch.softmax(torch.where(is_target, float("-inf"), teacher_logits / temperature), dim=1)
    products = torch.where(is_target, 0.0, teacher_rest * torch.where(is_target, 0.0, log_student_rest))
    return NKDTerms(target=target_term, non_target=-products.sum(1))
