"""The batch-mean KD divergence in one autograd Function (KD, Tf-KD; issue 18).

:func:`kd_divergence_mean` equals ``kd_divergence(...).mean()`` in value and
student gradient, in 8 kernels forward and 4 backward (autograd of the composite: 9
and 6); the gradient ``(softmax(z^S / T) - p^T) / (T B)`` is in closed form
(Hinton et al., 2015, Sec. 2). It saves both sides' probabilities: 2 values
per class and sample (autograd: about 4). With
a temperature that requires a gradient it returns that too (CTKD). Double
backward is not supported.
"""

from __future__ import annotations

import torch

__all__ = ["kd_divergence_mean"]


class _KDDivergenceMean(torch.autograd.Function):
    """``mean_b KL(p^T_b || p^S_b)`` with ``p = softmax(z / T)``, closed-form backward.

    Student: ``d/dz^S = (q - p) / (T B)``. Temperature (``dx/dT = -x/T``):
    ``dT = -(1/(T B)) sum((q - p) x^S + p (Δl - KL_b) x^T)``, ``Δl = l^T - l^S``.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, temperature):
        scaled = torch.stack([student_logits, teacher_logits]) / temperature
        logs = torch.log_softmax(scaled, dim=-1)
        probs = logs.exp()  # both sides in one kernel: the backward needs the student's
        teacher_probs = probs[1]
        gaps = logs[1] - logs[0]
        batch = student_logits.shape[0]
        needs_temperature = isinstance(temperature, torch.Tensor) and temperature.requires_grad
        if needs_temperature:
            per_row = (teacher_probs * gaps).sum(-1, keepdim=True)
            value = per_row.mean()
        else:
            per_row = None
            value = (teacher_probs * gaps).sum() / batch
        for_temperature = (scaled, gaps, per_row) if needs_temperature else (None,) * 3
        ctx.save_for_backward(probs, *for_temperature,
                              temperature if isinstance(temperature, torch.Tensor) else None)
        ctx.temperature, ctx.batch, ctx.needs_temperature = temperature, batch, needs_temperature
        return value

    @staticmethod
    def backward(ctx, grad):
        probs, scaled, gaps, per_row, temperature = ctx.saved_tensors
        if temperature is None:
            temperature = ctx.temperature
        teacher_probs = probs[1]
        grad_scaled = probs[0] - teacher_probs  # d (B * value) / d x^S
        scale = grad / (temperature * ctx.batch)
        grad_student = grad_scaled * scale if ctx.needs_input_grad[0] else None
        grad_temperature = None
        if ctx.needs_temperature and ctx.needs_input_grad[2]:
            grad_teacher = teacher_probs * (gaps - per_row)
            grad_temperature = -scale * (grad_scaled * scaled[0] + grad_teacher * scaled[1]).sum()
        return grad_student, None, grad_temperature


def kd_divergence_mean(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float | torch.Tensor
) -> torch.Tensor:
    """Batch mean of ``KL(p^T || p^S)`` between softened distributions, fused.

    Hinton, Vinyals & Dean (2015), Sec. 2: the soft-target term, as
    :func:`~skd.losses.functional.kd_divergence` averaged over the rows (the
    ``T**2`` factor is the caller's). Gradients in closed form, to the student
    and to a tensor ``temperature`` that requires one; the teacher gets none.

    Returns
    -------
    0-d Tensor
    """
    return _KDDivergenceMean.apply(student_logits, teacher_logits.detach(), temperature)
