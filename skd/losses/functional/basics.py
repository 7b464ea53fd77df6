"""Shared pieces: parameter checks, softening, the full KD divergence, masks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["check_choice", "check_temperature", "kd_divergence", "soften", "target_mask"]


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """Return ``temperature`` as a float, or raise if it is not positive."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a positive number, got {temperature!r} "
            f"({type(temperature).__name__})."
        ) from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(
            f"{name} must be a finite number > 0, got {temperature!r}. "
            f"Typical values are 1 to 8 (4 is the common default)."
        )
    return value


def check_choice(value, choices: tuple[str, ...], name: str, hint: str = "") -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        valid = " or ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be {valid}, got {value!r}.{' ' + hint if hint else ''}")
    return value


def soften(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log of the temperature-softened distribution, ``log softmax(z / T)``.

    Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural
    Network", Eq. (1): ``q_i = exp(z_i / T) / sum_j exp(z_j / T)``.
    """
    return torch.log_softmax(logits / temperature, dim=1)


def kd_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-sample ``KL(p^T || p^S)`` between softened distributions.

    Hinton et al. (2015), Sec. 2: the soft-target term of knowledge
    distillation. The ``T**2`` factor of that section is applied by the
    caller (it keeps gradients comparable across temperatures).

    Returns
    -------
    torch.Tensor of shape (batch,)
    """
    log_student = soften(student_logits, temperature)
    log_teacher = soften(teacher_logits, temperature)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(1)


def target_mask(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Boolean (batch, n_classes) mask of the target class.

    A comparison with ``arange`` rather than ``F.one_hot``, whose range check
    reads the labels back to the host on CUDA (a sync, fatal to graph capture).
    """
    classes = torch.arange(n_classes, device=target.device)
    return target.long().unsqueeze(1) == classes
