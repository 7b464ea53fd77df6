"""The KD divergence, per sample and as a batch mean, in one autograd Function (KD, Tf-KD, CTKD).

:func:`kd_divergence` (per sample) and :func:`kd_divergence_mean` (what KD and
Tf-KD train on) are :class:`_KDDivergence`, whose gradient
``(softmax(z^S / T) - p^T) / T`` (per sample; over B for the mean) is in
closed form (Hinton et al., 2015, Sec. 2). The mean costs 8 kernels forward
and 4 backward (autograd of the composite: 9 and 6) and saves both sides'
probabilities: 2 values per class and sample (autograd: about 4). With a
temperature that requires a gradient it returns that too (CTKD). Double
backward is not supported. The plain-autograd form it is checked against is
``tests/reference.py``.
"""

from __future__ import annotations

import torch

__all__ = ["kd_divergence", "kd_divergence_mean"]


class _KDDivergence(torch.autograd.Function):
    """``KL(p^T_b || p^S_b)`` per row ``b`` (or its batch mean), ``p = softmax(z / T)``, closed-form backward.

    Student: ``d/dz^S = a_b (q - p) / T`` with ``a_b`` the row's upstream
    weight (``a / B`` for the mean). Temperature (``dx/dT = -x/T``):
    ``dT = -(1/T) sum_b a_b sum((q - p) x^S + p (Δl - KL_b) x^T)``, ``Δl = l^T - l^S``.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, temperature, per_sample):
        scaled = torch.stack([student_logits, teacher_logits]) / temperature
        logs = torch.log_softmax(scaled, dim=-1)
        probs = logs.exp()  # both sides in one kernel: the backward needs the student's
        teacher_probs = probs[1]
        gaps = logs[1] - logs[0]
        batch = student_logits.shape[0]
        needs_temperature = isinstance(temperature, torch.Tensor) and temperature.requires_grad
        if per_sample or needs_temperature:
            per_row = (teacher_probs * gaps).sum(-1, keepdim=True)
            value = per_row.squeeze(-1) if per_sample else per_row.mean()
        else:
            per_row = None
            value = (teacher_probs * gaps).sum() / batch
        for_temperature = (scaled, gaps, per_row) if needs_temperature else (None,) * 3
        ctx.save_for_backward(probs, *for_temperature,
                              temperature if isinstance(temperature, torch.Tensor) else None)
        ctx.temperature, ctx.needs_temperature, ctx.per_sample = temperature, needs_temperature, per_sample
        ctx.batch = 1 if per_sample else batch
        return value

    @staticmethod
    def backward(ctx, grad):
        probs, scaled, gaps, per_row, temperature = ctx.saved_tensors
        if temperature is None:
            temperature = ctx.temperature
        teacher_probs = probs[1]
        grad_scaled = probs[0] - teacher_probs  # d (B * value) / d x^S
        if ctx.per_sample:
            grad = grad.unsqueeze(-1)  # one weight per row (a view: no kernel)
        scale = grad / (temperature * ctx.batch)
        grad_student = grad_scaled * scale if ctx.needs_input_grad[0] else None
        grad_temperature = None
        if ctx.needs_temperature and ctx.needs_input_grad[2]:
            grad_teacher = teacher_probs * (gaps - per_row)
            both = grad_scaled * scaled[0] + grad_teacher * scaled[1]
            if ctx.per_sample:
                grad_temperature = -(scale * both).sum().reshape(temperature.shape)
            else:
                grad_temperature = -scale * both.sum()
        return grad_student, None, grad_temperature, None


def kd_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float | torch.Tensor
) -> torch.Tensor:
    """Per-sample ``KL(p^T || p^S)`` between softened distributions, ``p = softmax(z / T)``.

    Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural
    Network", Sec. 2: the soft-target term of knowledge distillation. The
    ``T**2`` factor of that section is applied by the caller (it keeps
    gradients comparable across temperatures). Gradients in closed form, to
    the student and to a tensor ``temperature`` that requires one; the teacher
    gets none.

    Returns
    -------
    torch.Tensor of shape (batch,)
    """
    return _KDDivergence.apply(student_logits, teacher_logits.detach(), temperature, True)


def kd_divergence_mean(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float | torch.Tensor
) -> torch.Tensor:
    """Batch mean of :func:`kd_divergence` (Hinton et al., 2015, Sec. 2), by the same Function.

    Returns
    -------
    0-d Tensor
    """
    return _KDDivergence.apply(student_logits, teacher_logits.detach(), temperature, False)
