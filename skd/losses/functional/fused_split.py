"""The two-group split of the KL divergence as batch means, in few kernels (DKD, CAKD; issue 18).

:func:`~skd.losses.functional.split_kl` returns per-sample terms and is the
reference. :func:`split_kl_means` returns the batch means the losses need, with
the same value and student gradient, and also the gradient with respect to a
learnable temperature (CTKD). It stacks student and teacher, and the in-group,
out-group and full softmax of both, so that each step of the formula is one
kernel over all of them.

Costs (dispatched ops, B=256, C=100): 14 kernels forward and 7 backward for
all three terms, against 47 and 14 for ``split_kl`` and its means. It saves
4 values per class and sample for the backward (the in-group probabilities
and group masses of both sides) and the mask, against 2 and the mask for
``split_kl``; 4 more with a temperature that requires a gradient.
Double backward is not supported (the backward is in closed form).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from skd.losses.functional.basics import class_indices

__all__ = ["SplitKLMeans", "split_kl_means"]


class SplitKLMeans(NamedTuple):
    """Batch means of the two-group chain-rule terms of ``KL(p^T || p^S)``."""

    binary: torch.Tensor
    kl_in: torch.Tensor
    kl_out: torch.Tensor


def _group_masks(in_group: torch.Tensor) -> torch.Tensor:
    """``[in, out, all]`` as one (3, B, C) bool tensor: ``in_group != [0, 1, 2]`` is one kernel."""
    return in_group.unsqueeze(0) != class_indices(3, in_group.device).view(3, 1, 1)


class _SplitKLMeans(torch.autograd.Function):
    """Forward of :func:`split_kl_means` and its closed-form backward.

    Notation: ``x = z / T`` (student S, teacher T), ``w`` the in-group
    log-probabilities, ``l`` the full log-softmax, ``q̂, p̂`` (student,
    teacher) the in-group probabilities, ``q, p`` the full ones, ``M_g`` the
    group masses and ``Δ = teacher − student``. Per sample and class ``i`` in
    group ``g``, with upstream weights ``a_b, a_in, a_out`` (divided by B):

    - student: ``d/dx^S_i = q̂_i (a_g + a_b (M^S_g − M^T_g)) − a_g p̂_i``;
    - teacher (only for the temperature): ``d/dx^T_i = a_g p̂_i (Δw_i − KL_g)
      + a_b p_i (Δ log M_g − binary)``;
    - temperature: ``dT = −(1/T) Σ (d/dx^S · x^S + d/dx^T · x^T)``, since
      ``dx/dT = −x/T``; the student logits get ``d/dx^S / T``.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, in_group, temperature):
        groups = _group_masks(in_group)  # (group, B, C): in, out, all
        scaled = torch.stack([student_logits, teacher_logits]) / temperature  # (side, B, C)
        # one log-softmax for the in-group, out-group and full distributions of both sides;
        # an empty group's row is NaN there, and is never selected below
        logs = torch.log_softmax(torch.where(groups.unsqueeze(1), scaled, float("-inf")), dim=-1)
        # [w, l]: each class's in-group log-probability (in or out) and its full one, then
        # [w, l - w]: l - w = log M_g, the log-mass of the class's group
        kept = torch.where(groups[0::2].unsqueeze(1), logs[0::2], logs[1:2])  # (kind, side, B, C)
        kept[1].sub_(kept[0])
        probs = kept.exp()  # [[q̂, p̂], [M^S_g, M^T_g]] per class
        gaps = kept[:, 1] - kept[:, 0]  # [Δw, Δ log M_g]
        weighted = probs[0, 1] * gaps  # [p̂ Δw, p̂ Δ log M_g]
        weighted[1].mul_(probs[1, 1])  # p = p̂ M^T_g
        # per group: sum_{i in g} p̂_i Δw_i = KL_g; over all classes: sum_i p_i Δ log M = binary
        sums = torch.where(groups.unsqueeze(1), weighted, 0.0).sum(-1)  # (group, kind, B)
        means = sums.mean(-1)
        ctx.set_materialize_grads(False)
        ctx.needs_temperature = isinstance(temperature, torch.Tensor) and temperature.requires_grad
        for_temperature = [scaled, gaps, sums] if ctx.needs_temperature else [None] * 3
        ctx.save_for_backward(probs, in_group, *for_temperature,
                              temperature if isinstance(temperature, torch.Tensor) else None)
        ctx.temperature = temperature
        ctx.batch = student_logits.shape[0]
        return means[2, 1], means[0, 0], means[1, 0]

    @staticmethod
    def backward(ctx, grad_binary, grad_in, grad_out):
        probs, in_group, scaled, gaps, sums, temperature = ctx.saved_tensors
        if temperature is None:
            temperature = ctx.temperature
        (student_hat, teacher_hat), (student_mass, teacher_mass) = probs
        group_grad = torch.where(in_group, 0.0 if grad_in is None else grad_in,
                                 0.0 if grad_out is None else grad_out)
        # q̂ (a_g + a_b (M^S_g - M^T_g)) - p̂ a_g
        student_coef = group_grad
        if grad_binary is not None:
            student_coef = torch.addcmul(group_grad, student_mass - teacher_mass, grad_binary)
        grad_scaled = torch.addcmul(student_hat * student_coef, teacher_hat, group_grad, value=-1.0)
        grad_student = grad_scaled / (temperature * ctx.batch) if ctx.needs_input_grad[0] else None
        grad_temperature = None
        if ctx.needs_temperature and ctx.needs_input_grad[3]:
            kl_in, kl_out, binary = sums[0, 0], sums[1, 0], sums[2, 1]
            group_kl = torch.where(in_group, kl_in.unsqueeze(1), kl_out.unsqueeze(1))
            grad_teacher = group_grad * teacher_hat * (gaps[0] - group_kl)
            if grad_binary is not None:
                teacher_probs = teacher_hat * teacher_mass
                grad_teacher = grad_teacher + grad_binary * teacher_probs * (gaps[1] - binary.unsqueeze(1))
            total = (grad_scaled * scaled[0] + grad_teacher * scaled[1]).sum()
            grad_temperature = -total / (temperature * ctx.batch)
        return grad_student, None, None, grad_temperature


def split_kl_means(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    in_group: torch.Tensor,
    temperature: float | torch.Tensor,
) -> SplitKLMeans:
    """Batch means of the two-group split of ``KL(p^T || p^S)``, fused.

    The chain rule of the KL divergence (Zhao et al., 2022, DKD, Eq. (5) and
    App. A.1, for the partition {t} / rest; it holds for any partition):
    ``KL(p^T||p^S) = KL(b^T||b^S) + P_in^T KL(p̂_in^T||p̂_in^S) + P_out^T KL(p̂_out^T||p̂_out^S)``.
    Returns the means over the batch of ``KL(b^T||b^S)`` (``binary``) and of
    the two in-group divergences, equal to
    ``split_kl(...)`` averaged over the rows. In-group log-probabilities are
    a log-softmax over each group's own logits (exact at any logit scale);
    an empty group's terms are 0.

    Gradients are in closed form: to the student, and to ``temperature`` when
    it is a tensor that requires one (CTKD's learnable temperature; the
    teacher's softening depends on it too). The teacher gets none. No double
    backward. No value is read back to the host.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor of shape (batch, n_classes)
    in_group : bool Tensor of shape (batch, n_classes)
    temperature : float or 0-d Tensor

    Returns
    -------
    SplitKLMeans
        ``binary``, ``kl_in``, ``kl_out``: 0-d tensors.
    """
    return SplitKLMeans(*_SplitKLMeans.apply(student_logits, teacher_logits.detach(), in_group, temperature))
