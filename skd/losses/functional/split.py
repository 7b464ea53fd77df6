"""The two-group chain rule of the KL divergence: DKD and CAKD."""

from __future__ import annotations

from typing import NamedTuple

import torch

from skd.losses.functional.basics import target_mask

__all__ = ["CAKDTerms", "DKDTerms", "SplitKL", "cakd_terms", "dkd_terms", "split_kl", "strong_class_mask"]


class SplitKL(NamedTuple):
    """Terms of the two-group chain rule of the KL divergence (per sample)."""

    binary: torch.Tensor
    kl_in: torch.Tensor
    kl_out: torch.Tensor
    mass_in: torch.Tensor
    mass_out: torch.Tensor


def _grouped_log_softmax(scaled: torch.Tensor, in_group: torch.Tensor):
    """In-group log-probabilities and group log-masses, in one pass.

    ``scaled`` is (..., B, C) and ``in_group`` (B, C). Each class is shifted by
    the maximum of its own group, so the in-group log-softmax
    ``(z_i - max_g) - log sum_{j in g} exp(z_j - max_g)`` is exact even where
    the whole group underflows in the full softmax (no ``log p_i - log P_g``
    cancellation). Returns ``within`` (log p̂, every class in its own group),
    ``hat`` (p̂) and ``log_mass`` (..., B, 2), ``-inf`` for an empty group.
    Masked maxima use ``-inf``, which never meets another infinity: every
    class reads the maximum of a group it belongs to.
    """
    neg_inf = float("-inf")
    max_in = scaled.masked_fill(~in_group, neg_inf).amax(-1, keepdim=True)
    max_out = scaled.masked_fill(in_group, neg_inf).amax(-1, keepdim=True)
    shifted = scaled - torch.where(in_group, max_in, max_out)
    exps = shifted.exp()
    sum_in = torch.where(in_group, exps, 0.0).sum(-1, keepdim=True)
    sum_out = torch.where(in_group, 0.0, exps).sum(-1, keepdim=True)
    # a non-empty group holds its own maximum, exp(0) = 1, so its sum is >= 1
    log_sum_in = sum_in.clamp_min(1.0).log()
    log_sum_out = sum_out.clamp_min(1.0).log()
    within = shifted - torch.where(in_group, log_sum_in, log_sum_out)
    hat = exps / torch.where(in_group, sum_in, sum_out).clamp_min(1.0)
    group_lse = torch.cat([max_in + log_sum_in, max_out + log_sum_out], dim=-1)
    log_mass = group_lse - torch.logsumexp(group_lse, dim=-1, keepdim=True)
    return within, hat, log_mass


class _SplitKL(torch.autograd.Function):
    """Forward of :func:`split_kl` with its closed-form gradient.

    With ``p̂`` the renormalised in-group distributions and ``P_g`` the group
    masses, the gradients with respect to ``z^S / T`` of class ``i`` in group
    ``g`` are ``d binary = p̂^S_i (P^S_g - P^T_g)`` and
    ``d KL_g = p̂^S_i - p̂^T_i``. The teacher gets no gradient.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, in_group, temperature):
        has = torch.stack([in_group.any(1), (~in_group).any(1)], dim=1)  # (B, group)
        # student and teacher side by side: one kernel per step for both
        scaled = torch.stack([student_logits, teacher_logits]) / temperature
        within, hat, log_mass = _grouped_log_softmax(scaled, in_group)
        elementwise = hat[1] * (within[1] - within[0])
        kl_in = torch.where(in_group, elementwise, 0.0).sum(1)
        kl_out = torch.where(in_group, 0.0, elementwise).sum(1)
        masses = log_mass.exp()  # (side, B, group); exactly 0 for an empty group
        binary = torch.where(has, masses[1] * (log_mass[1] - log_mass[0]), 0.0).sum(1)
        ctx.save_for_backward(hat[0], hat[1], in_group, masses[0] - masses[1])
        ctx.temperature = temperature
        mass_in, mass_out = masses[1].unbind(1)
        ctx.mark_non_differentiable(mass_in, mass_out)
        return binary, kl_in, kl_out, mass_in, mass_out

    @staticmethod
    def backward(ctx, grad_binary, grad_in, grad_out, _grad_mass_in, _grad_mass_out):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        hat_s, hat_t, in_group, mass_gap = ctx.saved_tensors
        group_grad = torch.where(in_group, grad_in.unsqueeze(1), grad_out.unsqueeze(1))
        gap = torch.where(in_group, mass_gap[:, :1], mass_gap[:, 1:])
        student_coef = group_grad + grad_binary.unsqueeze(1) * gap
        grad_student = (student_coef * hat_s - group_grad * hat_t) / ctx.temperature
        return grad_student, None, None, None


def split_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    in_group: torch.Tensor,
    temperature: float,
) -> SplitKL:
    """Split ``KL(p^T || p^S)`` over a two-group partition of the classes.

    The chain rule of the KL divergence (Zhao et al., 2022, DKD, Eq. (5) and
    App. A.1, for the partition {t} / rest; it holds for any partition):

    ``KL(p^T||p^S) = KL(b^T||b^S) + P_in^T KL(p̂_in^T||p̂_in^S)
    + P_out^T KL(p̂_out^T||p̂_out^S)``

    where ``b = [P_in, P_out]`` are the group masses and ``p̂`` the
    distributions renormalised inside each group, computed as a log-softmax
    over each group's own logits (exact at any logit scale). Gradients flow
    to the student only, in closed form (see ``_SplitKL``); the teacher is
    constant. No value is read back to the host.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor of shape (batch, n_classes)
    in_group : bool Tensor of shape (batch, n_classes)
        The first group, per sample; the second group is its complement.
        Either group may be empty, in which case its terms are 0.
    temperature : float

    Returns
    -------
    SplitKL
        ``binary``, ``kl_in``, ``kl_out`` and the teacher's masses
        ``mass_in``, ``mass_out``, each of shape (batch,).
    """
    return SplitKL(*_SplitKL.apply(student_logits, teacher_logits.detach(), in_group, temperature))


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
