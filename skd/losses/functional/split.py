"""The two-group chain rule of the KL divergence: DKD and CAKD, in one autograd Function.

:func:`split_kl` (per sample) and :func:`split_kl_means` (batch means, what the
losses use) are the same closed-form Function, :class:`_SplitKL`, which stacks
student and teacher, and the in-group, out-group and full softmax of both, so
that each step of the formula is one kernel over all of them. It also returns
the gradient with respect to a learnable temperature (CTKD). The plain-autograd
form it is checked against lives in ``tests/reference.py``.

Costs (dispatched ops, B=256, C=100): 14 kernels forward and 7 backward for
the three batch means (autograd of the plain formula: 47 and 14). It saves 4
values per class and sample for the backward (the in-group probabilities and
group masses of both sides) and the mask; 4 more with a temperature that
requires a gradient. Double backward is not supported (the backward is in
closed form).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from skd.losses.functional.basics import class_indices, target_mask

__all__ = ["CAKDTerms", "DKDTerms", "SplitKL", "SplitKLMeans", "cakd_terms", "dkd_terms", "split_kl",
           "split_kl_means", "strong_class_mask"]


class SplitKL(NamedTuple):
    """Terms of the two-group chain rule of the KL divergence, each of shape (batch,)."""

    binary: torch.Tensor
    kl_in: torch.Tensor
    kl_out: torch.Tensor
    mass_in: torch.Tensor
    mass_out: torch.Tensor


class SplitKLMeans(NamedTuple):
    """Batch means of the two-group chain-rule terms of ``KL(p^T || p^S)``."""

    binary: torch.Tensor
    kl_in: torch.Tensor
    kl_out: torch.Tensor


def _group_masks(in_group: torch.Tensor) -> torch.Tensor:
    """``[in, out, all]`` as one (3, B, C) bool tensor: ``in_group != [0, 1, 2]`` is one kernel."""
    return in_group.unsqueeze(0) != class_indices(3, in_group.device).view(3, 1, 1)


class _SplitKL(torch.autograd.Function):
    """Forward of :func:`split_kl` / :func:`split_kl_means` and its closed-form backward.

    Notation: ``x = z / T`` (student S, teacher T), ``w`` the in-group
    log-probabilities, ``l`` the full log-softmax, ``q̂, p̂`` (student,
    teacher) the in-group probabilities, ``q, p`` the full ones, ``M_g`` the
    group masses and ``Δ = teacher − student``. Per sample and class ``i`` in
    group ``g``, with upstream weights ``a_b, a_in, a_out`` of the sample (the
    batch means' weights divided by B):

    - student: ``d/dx^S_i = q̂_i (a_g + a_b (M^S_g − M^T_g)) − a_g p̂_i``;
    - teacher (only for the temperature): ``d/dx^T_i = a_g p̂_i (Δw_i − KL_g)
      + a_b p_i (Δ log M_g − binary)``;
    - temperature: ``dT = −(1/T) Σ (d/dx^S · x^S + d/dx^T · x^T)``, since
      ``dx/dT = −x/T``; the student logits get ``d/dx^S / T``.

    ``per_sample`` returns the (B,) terms and the teacher's group masses (no
    gradient); otherwise the three batch means.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, in_group, temperature, per_sample):
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
        ctx.set_materialize_grads(False)
        ctx.needs_temperature = isinstance(temperature, torch.Tensor) and temperature.requires_grad
        for_temperature = [scaled, gaps, sums] if ctx.needs_temperature else [None] * 3
        ctx.save_for_backward(probs, in_group, *for_temperature,
                              temperature if isinstance(temperature, torch.Tensor) else None)
        ctx.temperature, ctx.per_sample = temperature, per_sample
        ctx.batch = 1 if per_sample else student_logits.shape[0]
        if not per_sample:
            means = sums.mean(-1)
            return means[2, 1], means[0, 0], means[1, 0]
        # the teacher's mass of each group: M^T_g of any of its classes (0 for an empty group)
        masses = torch.where(groups[:2], probs[1, 1], 0.0).amax(-1)
        mass_in, mass_out = masses.unbind(0)
        ctx.mark_non_differentiable(mass_in, mass_out)
        return sums[2, 1], sums[0, 0], sums[1, 0], mass_in, mass_out

    @staticmethod
    def backward(ctx, grad_binary, grad_in, grad_out, *_grad_masses):
        probs, in_group, scaled, gaps, sums, temperature = ctx.saved_tensors
        if temperature is None:
            temperature = ctx.temperature
        if ctx.per_sample:  # a weight per sample, broadcast over its classes (views: no kernel)
            grad_binary, grad_in, grad_out = (None if grad is None else grad.unsqueeze(1)
                                              for grad in (grad_binary, grad_in, grad_out))
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
        return grad_student, None, None, grad_temperature, None


def split_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    in_group: torch.Tensor,
    temperature: float | torch.Tensor,
) -> SplitKL:
    """Split ``KL(p^T || p^S)`` over a two-group partition of the classes, per sample.

    The chain rule of the KL divergence (Zhao et al., 2022, DKD, Eq. (5) and
    App. A.1, for the partition {t} / rest; it holds for any partition):

    ``KL(p^T||p^S) = KL(b^T||b^S) + P_in^T KL(p̂_in^T||p̂_in^S)
    + P_out^T KL(p̂_out^T||p̂_out^S)``

    where ``b = [P_in, P_out]`` are the group masses and ``p̂`` the
    distributions renormalised inside each group, computed as a log-softmax
    over each group's own logits (exact at any logit scale). Either group may
    be empty, in which case its terms are 0. Gradients are in closed form
    (:class:`_SplitKL`), to the student and to a tensor ``temperature`` that
    requires one; the teacher gets none. No value is read back to the host.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor of shape (batch, n_classes)
    in_group : bool Tensor of shape (batch, n_classes)
        The first group, per sample; the second group is its complement.
    temperature : float or 0-d Tensor

    Returns
    -------
    SplitKL
        ``binary``, ``kl_in``, ``kl_out`` and the teacher's masses
        ``mass_in``, ``mass_out`` (no gradient), each of shape (batch,).
    """
    return SplitKL(*_SplitKL.apply(student_logits, teacher_logits.detach(), in_group, temperature, True))


def split_kl_means(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    in_group: torch.Tensor,
    temperature: float | torch.Tensor,
) -> SplitKLMeans:
    """Batch means of the two-group split of ``KL(p^T || p^S)`` (Zhao et al., 2022, DKD, Eq. (5)).

    The means over the rows of :func:`split_kl`'s ``binary``, ``kl_in`` and
    ``kl_out``, by the same Function: what DKD, CAKD and CTKD train on. The
    backward takes the batch mean in its last kernel, so the means cost no
    kernel more than the per-sample terms.

    Returns
    -------
    SplitKLMeans
        ``binary``, ``kl_in``, ``kl_out``: 0-d tensors.
    """
    means = _SplitKL.apply(student_logits, teacher_logits.detach(), in_group, temperature, False)
    return SplitKLMeans(*means)


class DKDTerms(NamedTuple):
    """Per-sample DKD terms and the teacher's target probability."""

    tckd: torch.Tensor
    nckd: torch.Tensor
    teacher_target_prob: torch.Tensor


def dkd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
) -> DKDTerms:
    """Target-class (TCKD) and non-target-class (NCKD) knowledge distillation.

    Zhao, Cui, Song, Qiu & Liang (2022), "Decoupled Knowledge Distillation",
    Eq. (5)-(6): ``KD = TCKD + (1 - p_t^T) NCKD`` with
    ``TCKD = KL(b^T || b^S)``, ``b = [p_t, 1 - p_t]``, and
    ``NCKD = KL(p̂^T || p̂^S)`` over the non-target classes. The DKD loss of
    Eq. (7) weights them as ``alpha TCKD + beta NCKD``.

    Returns
    -------
    DKDTerms
        ``tckd``, ``nckd`` and ``teacher_target_prob`` (= ``p_t^T``), each of
        shape (batch,).
    """
    mask = target_mask(target, student_logits.shape[1])
    split = split_kl(student_logits, teacher_logits, mask, temperature)
    return DKDTerms(tckd=split.binary, nckd=split.kl_out, teacher_target_prob=split.mass_in)


def strong_class_mask(
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    strong_k: int = 1,
    rule: str = "topk",
    strong_mass: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Boolean mask of CAKD's strong-correlation group S, per sample.

    skd's definition (the CAKD paper's own rule for S is not public):

    - ``rule="topk"``: S = {t} ∪ the teacher's top-``strong_k`` non-target
      classes. Without labels (``target=None``), S is the teacher's
      top-(``strong_k`` + 1) classes.
    - ``rule="mass"``: S = {t} ∪ the fewest top non-target classes whose share
      of the teacher's (softened) non-target mass reaches ``strong_mass``.
      Without labels, the fewest top classes whose mass reaches ``strong_mass``.

    Ties are never broken by position: every class whose teacher logit equals
    the last one taken joins S too (``topk``: every class at least as large as
    the ``strong_k``-th largest; ``mass``: a class joins when the mass of the
    classes strictly above it is below ``strong_mass``). So S may hold more
    than ``strong_k`` non-target classes when the teacher ties (scikit-learn
    teachers tie routinely: their logits are ``log(max(p, 1e-7))``), and the
    mask commutes with any permutation of the classes. No value is read back
    to the host and every shape is fixed by the input's.

    Returns
    -------
    bool Tensor of shape (batch, n_classes)
    """
    n_classes = teacher_logits.shape[1]
    if target is not None:
        fixed = target_mask(target, n_classes)
        ranked = torch.where(fixed, float("-inf"), teacher_logits)
        n_top = strong_k
    else:
        fixed = torch.zeros_like(teacher_logits, dtype=torch.bool)
        ranked = teacher_logits
        n_top = strong_k + 1
    if rule == "topk":
        n_top = min(n_top, n_classes - int(target is not None))
        if n_top <= 0:
            return fixed
        kth = ranked.topk(n_top, dim=1).values[:, -1:]
        # the target's -inf may tie with the k-th: the target is in S already
        return fixed | (ranked >= kth)
    if rule == "mass":
        probs = torch.softmax(ranked / temperature, dim=1)
        sorted_probs, order = probs.sort(dim=1, descending=True)
        mass_before = sorted_probs.cumsum(dim=1) - sorted_probs
        # a run of tied classes shares the mass before its first member
        positions = torch.arange(n_classes, device=probs.device).expand_as(sorted_probs)
        starts_run = torch.ones_like(sorted_probs, dtype=torch.bool)
        starts_run[:, 1:] = sorted_probs[:, 1:] != sorted_probs[:, :-1]
        run_start = torch.where(starts_run, positions, 0).cummax(dim=1).values
        include = mass_before.gather(1, run_start) < strong_mass
        return fixed | torch.zeros_like(fixed).scatter(1, order, include)
    raise ValueError(f"rule must be 'topk' or 'mass', got {rule!r}.")


class CAKDTerms(NamedTuple):
    """Per-sample CAKD divergences and the teacher's group masses."""

    bcd: torch.Tensor
    scd: torch.Tensor
    wcd: torch.Tensor
    mass_strong: torch.Tensor
    mass_weak: torch.Tensor


def cakd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    strong_mask: torch.Tensor,
    temperature: float,
) -> CAKDTerms:
    """Binary, strong- and weak-correlation divergences of CAKD.

    Zhang, Chen, Ning, Yang & Yuan (2024), "Correlation-Aware Knowledge
    Distillation" (arXiv 2410.14741), the logit-level decomposition
    ``KL = BCD + P_S^T SCD + P_W^T WCD`` (stated in the paper's abstract and
    method; exact by the chain rule, see :func:`split_kl`). How the paper
    chooses S is not public: the mask comes from :func:`strong_class_mask`,
    skd's definition.

    Returns
    -------
    CAKDTerms
        ``bcd``, ``scd``, ``wcd`` and the teacher masses ``mass_strong``
        (P_S^T) and ``mass_weak`` (P_W^T), each of shape (batch,).
    """
    split = split_kl(student_logits, teacher_logits, strong_mask, temperature)
    return CAKDTerms(
        bcd=split.binary,
        scd=split.kl_in,
        wcd=split.kl_out,
        mass_strong=split.mass_in,
        mass_weak=split.mass_out,
    )
