"""Teacher-free KD (Tf-KD): the hand-made teacher and its two conventions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from skd.losses.functional.basics import labelled_mean, soften, target_mask

__all__ = ["tempered_log_distribution", "tfkd_reg_distribution", "tfkd_reg_kl", "tfkd_reg_log_distribution",
           "tfkd_reg_released"]


def tfkd_reg_distribution(
    target: torch.Tensor, n_classes: int, a: float = 0.99, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The manually designed teacher of Tf-KD_reg.

    Yuan, Tay, Li, Wang & Feng (2020), "Revisiting Knowledge Distillation via
    Label Smoothing Regularization", Sec. 4 (Tf-KD_reg): ``p^d(k) = a`` for
    the correct class and ``(1 - a) / (K - 1)`` otherwise (``a = 0.99`` in
    the authors' code, ``correct_prob``).

    Returns
    -------
    Tensor of shape (batch, n_classes), rows summing to 1.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}.")
    off = (1.0 - a) / (n_classes - 1)
    dist = torch.full((target.shape[0], n_classes), off, device=target.device, dtype=dtype)
    return dist.scatter(1, target.long().unsqueeze(1), a)


def tfkd_reg_log_distribution(
    target: torch.Tensor, n_classes: int, a: float = 0.99, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``log`` of :func:`tfkd_reg_distribution` (Yuan et al., 2020, Sec. 4, Tf-KD_reg), in two kernels.

    ``log a`` on the target class, ``log((1 - a) / (K - 1))`` elsewhere: the
    hand-made teacher as logits, for a softmax at ``T``.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}.")
    off = math.log((1.0 - a) / (n_classes - 1))
    mask = target_mask(target, n_classes)
    # a CPU 0-d tensor of the dtype (a scalar to the kernel, no copy): the result has that dtype
    return torch.where(mask, torch.scalar_tensor(math.log(a), dtype=dtype), off)


def tempered_log_distribution(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log softmax(log p / T)``: a distribution softened by temperature.

    Treats ``log p`` as logits, as Hinton et al. (2015), Eq. (1), soften a
    teacher. Used for Tf-KD_reg's hand-made teacher in skd's ``"paper"``
    convention (the authors' code applies ``softmax(p / T)`` to the
    probabilities instead, see :func:`tfkd_reg_released`).
    """
    return torch.log_softmax(torch.log(probs) / temperature, dim=1)


def tfkd_reg_kl(
    student_logits: torch.Tensor, target: torch.Tensor, a: float, temperature: float
) -> torch.Tensor:
    """Per-sample ``KL(p^d_T || p^S_T)`` of Tf-KD_reg, the paper's form.

    Yuan et al. (2020), Sec. 4, ``L_reg = (1 - alpha) H(q, p) + alpha
    D_KL(p^d_tau, p_tau)``: both distributions softened by ``T`` as Hinton et
    al. (2015) soften a teacher (``p^d_T = softmax(log p^d / T)``,
    ``p^S_T = softmax(z / T)``). The caller applies ``T**2`` and the batch
    mean, as for any KD term.

    Returns
    -------
    torch.Tensor of shape (batch,)
    """
    hand_made = tfkd_reg_distribution(target, student_logits.shape[1], a, student_logits.dtype)
    log_teacher = tempered_log_distribution(hand_made, temperature)
    log_student = soften(student_logits, temperature)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(1)


def tfkd_reg_released(
    student_logits: torch.Tensor, target: torch.Tensor, a: float, temperature: float
) -> torch.Tensor:
    """Tf-KD_reg's soft term as the authors' released code computes it.

    ``loss_kd_regularization`` in yuanli2333/Teacher-free-Knowledge-Distillation
    (``my_loss_function.py``): ``nn.KLDivLoss()(log_softmax(z),
    softmax(p^d / T))``. Unlike :func:`tfkd_reg_kl`, the student's logits are
    not divided by ``T``, the teacher is ``softmax`` of the *probabilities*
    over ``T`` (nearly uniform at the released T = 20-40), there is no
    ``T**2``, and ``KLDivLoss``'s default reduction averages over all B·C
    elements instead of B. The released ``alpha * multiplier`` is the
    caller's weight. Rows with ``target == -1`` (unlabelled) have no
    hand-made teacher and are left out of the mean (B counts labelled rows).

    Returns
    -------
    Scalar Tensor.
    """
    hand_made = tfkd_reg_distribution(target.clamp_min(0), student_logits.shape[1], a, student_logits.dtype)
    log_teacher = torch.log_softmax(hand_made / temperature, dim=1)
    log_student = torch.log_softmax(student_logits, dim=1)
    # reduction="mean" of nn.KLDivLoss() (sum over B*C elements / (B*C)), written per row
    per_row = F.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(1)
    return labelled_mean(per_row / student_logits.shape[1], target)
