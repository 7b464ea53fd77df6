"""Curriculum temperature (CTKD): gradient reversal, the lambda schedule, learnable temperatures."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "GlobalTemperature",
    "GradientReversal",
    "InstanceTemperature",
    "curriculum_lambda",
    "gradient_reversal",
    "kd_divergence_per_sample_temperature",
]


class GradientReversal(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``-strength``.

    Ganin & Lempitsky (2015), "Unsupervised Domain Adaptation by
    Backpropagation", ICML, as CTKD uses it (Li et al., AAAI 2023,
    the adversarial temperature): the temperature module is trained to *increase* the
    distillation loss. The released ``GradientReversalFunction``
    (zhengli97/CTKD, ``models/temp_global.py``) multiplies by ``lambda_``
    and feeds it the negative schedule (0 down to -1); here the schedule is
    the paper's positive lambda and the sign is in the function, so the two
    give the same gradient.

    ``strength`` is a tensor (0-d), saved for the backward, so a captured
    graph reads its current value.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(strength)
        return values.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (strength,) = ctx.saved_tensors
        return -strength.to(grad_output.dtype) * grad_output, None


def gradient_reversal(values: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
    """Apply :class:`GradientReversal` with ``strength`` (a number or a 0-d tensor)."""
    if not isinstance(strength, torch.Tensor):  # a fill, not a copy from host memory (a sync on CUDA)
        strength = torch.full((), float(strength), dtype=values.dtype, device=values.device)
    return GradientReversal.apply(values, strength)


def curriculum_lambda(
    epoch: float, max_value: float = 1.0, min_value: float = 0.0, n_epochs: float = 10
) -> float:
    """CTKD's cosine curriculum for the reversal strength lambda.

    Li et al. (2023), "Curriculum Temperature for Knowledge Distillation",
    AAAI, the curriculum: lambda rises from ``min_value`` to ``max_value``
    over ``n_epochs`` along a half cosine, then stays. The released
    ``CosineDecay(max_value=0, min_value=-1, num_loops=10)``
    (``train_student.py``, called with epochs 1, 2, ...) gives
    ``(cos(pi * e / n) + 1) / 2 * (0 - (-1)) - 1``, the negative of this
    function with the defaults.

    Returns
    -------
    float
        ``min_value + (max_value - min_value) * (1 - cos(pi * e / n)) / 2``
        with ``e = clip(epoch, 0, n_epochs)``.
    """
    if n_epochs <= 0:
        raise ValueError(f"n_epochs must be > 0, got {n_epochs!r}.")
    progress = min(max(float(epoch), 0.0), float(n_epochs)) / n_epochs
    return min_value + (max_value - min_value) * (1.0 - math.cos(math.pi * progress)) * 0.5


class GlobalTemperature(nn.Module):
    """CTKD's learnable global temperature, ``t_start + t_range * sigmoid(theta)``.

    Li et al. (2023), "global temperature": one parameter for the
    whole data set. Released (``models/temp_global.py``, ``Global_T``, and
    ``helper/loops.py``): ``theta`` starts at 1, passes through the gradient
    reversal layer, and the temperature is ``t_start + t_end *
    sigmoid(theta)`` with ``t_start = 1``, ``t_end = 20`` (so T starts near
    15.6 and stays in (1, 21)).

    Parameters
    ----------
    t_start : float, default=1.0
    t_range : float, default=20.0
        The released ``t_end``.
    init : float, default=1.0
        Initial ``theta``.
    """

    def __init__(self, t_start: float = 1.0, t_range: float = 20.0, init: float = 1.0):
        super().__init__()
        self.t_start = t_start
        self.t_range = t_range
        self.theta = nn.Parameter(torch.full((1,), float(init)))

    def forward(self, strength: float | torch.Tensor) -> torch.Tensor:
        """The temperature, shape (1,), with the reversal of ``strength`` on its gradient."""
        return self.t_start + self.t_range * torch.sigmoid(gradient_reversal(self.theta, strength))


class InstanceTemperature(nn.Module):
    """CTKD's instance-wise temperature: a 2-layer MLP on both models' logits.

    Li et al. (2023), "instance-wise temperature". The released
    repository links this module's code on a drive that could not be read;
    this follows the paper's description: the teacher's and the student's
    logits, concatenated, go through a 2-layer MLP to one number per sample,
    mapped to ``t_start + t_range * sigmoid(.)`` as the global one, after
    the gradient reversal layer. The logits enter detached, so the module
    changes the student's gradient only through the temperature.

    Parameters
    ----------
    n_classes : int
    hidden : int, default=256
    t_start, t_range : float
        As in :class:`GlobalTemperature`.
    """

    def __init__(self, n_classes: int, hidden: int = 256, t_start: float = 1.0, t_range: float = 20.0):
        super().__init__()
        self.t_start = t_start
        self.t_range = t_range
        self.mlp = nn.Sequential(nn.Linear(2 * n_classes, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, strength: float | torch.Tensor
    ) -> torch.Tensor:
        """Per-sample temperatures, shape (batch,)."""
        features = torch.cat([teacher_logits.detach(), student_logits.detach()], dim=1)
        raw = self.mlp(features.to(self.mlp[0].weight.dtype)).squeeze(1)
        return self.t_start + self.t_range * torch.sigmoid(gradient_reversal(raw, strength))


def kd_divergence_per_sample_temperature(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: torch.Tensor, eps: float = 0.0
) -> torch.Tensor:
    """Per-sample ``T_i**2 * KL(softmax(z^T_i / T_i) || softmax(z^S_i / T_i))``.

    Hinton et al. (2015), Sec. 2, with one temperature per sample, as
    CTKD's instance-wise variant uses it (the released README's ``KL_Loss``,
    which adds ``eps = 1e-7`` to the teacher's probabilities without
    renormalising; ``eps=0`` is the exact KL). The ``T**2`` is inside
    because it differs per sample; the batch mean is the caller's.

    Parameters
    ----------
    temperature : Tensor of shape (batch,) or broadcastable to it
        Positive; gradients flow into it.

    Returns
    -------
    Tensor of shape (batch,)
    """
    temperature = temperature.reshape(-1, 1)
    log_student = torch.log_softmax(student_logits / temperature, dim=1)
    if eps:
        teacher_probs = torch.softmax(teacher_logits / temperature, dim=1) + eps
        per_class = teacher_probs * (torch.log(teacher_probs) - log_student)
    else:
        log_teacher = torch.log_softmax(teacher_logits / temperature, dim=1)
        teacher_probs = log_teacher.exp()
        per_class = torch.where(teacher_probs > 0, teacher_probs * (log_teacher - log_student), 0.0)
    return temperature.squeeze(1) ** 2 * per_class.sum(1)
