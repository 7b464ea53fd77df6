"""Pure, vectorised loss maths for knowledge distillation.

Every function here is stateless torch code with no skorch in sight: it takes
logits (or scores) and returns tensors. There is one function per formula, and
its docstring names the paper and equation it implements. Per-sample functions
return a tensor of shape ``(batch,)`` so that callers choose the reduction.

Notation: ``z`` logits, ``T`` temperature, ``p = softmax(z / T)``, ``t`` the
target class, superscripts T / S for teacher / student.

Masking never uses a large negative constant (the ``-1000`` trick of the
reference implementations overflows in half precision): masked entries are
set to ``-inf`` before a log-softmax or log-sum-exp and are replaced by exact
zeros before any product, so neither the values nor the gradients see
``inf - inf``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "soften",
    "kd_divergence",
    "split_kl",
    "dkd_terms",
    "strong_class_mask",
    "cakd_terms",
    "pearson_distance",
    "abs_cosine_distance",
    "soft_rank",
    "hard_rank",
    "spearman_distance",
    "dist_terms",
    "r2kd_value_terms",
    "tfkd_reg_distribution",
    "tempered_log_distribution",
]

# Elements per chunk of pairwise (rank) work: 2**23 float32 is 32 MiB, so a
# few temporaries of that size stay far below 1 GiB even for C = 1000.
PAIRWISE_CHUNK_ELEMENTS = 2**23


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """Return ``temperature`` as a float, or raise if it is not positive."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a positive number, got {temperature!r} "
            f"({type(temperature).__name__})."
        ) from None
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(
            f"{name} must be a finite number > 0, got {temperature!r}. "
            f"Typical values are 1 to 8 (4 is the common default)."
        )
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


def _group_log_probs(scaled_logits, log_norm, mask, nonempty):
    """Log group mass and in-group log distribution (0 outside the group)."""
    # An empty group is computed over all classes to stay finite; the caller
    # zeroes its terms with ``nonempty``.
    safe = mask | ~nonempty.unsqueeze(1)
    masked = scaled_logits.masked_fill(~safe, float("-inf"))
    group_norm = torch.logsumexp(masked, dim=1)
    log_mass = group_norm - log_norm
    log_within = torch.where(safe, masked - group_norm.unsqueeze(1), 0.0)
    return log_mass, log_within


class SplitKL(NamedTuple):
    """Terms of the two-group chain rule of the KL divergence (per sample)."""

    binary: torch.Tensor
    kl_in: torch.Tensor
    kl_out: torch.Tensor
    mass_in: torch.Tensor
    mass_out: torch.Tensor


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
    distributions renormalised inside each group.

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
    zs = student_logits / temperature
    zt = teacher_logits / temperature
    norm_s = torch.logsumexp(zs, dim=1)
    norm_t = torch.logsumexp(zt, dim=1)
    out_group = ~in_group
    has_in = in_group.any(dim=1)
    has_out = out_group.any(dim=1)

    mass_in_s, within_in_s = _group_log_probs(zs, norm_s, in_group, has_in)
    mass_in_t, within_in_t = _group_log_probs(zt, norm_t, in_group, has_in)
    mass_out_s, within_out_s = _group_log_probs(zs, norm_s, out_group, has_out)
    mass_out_t, within_out_t = _group_log_probs(zt, norm_t, out_group, has_out)

    def kl_of_logs(log_t, log_s):
        return (log_t.exp() * (log_t - log_s)).sum(dim=-1)

    zero = zs.new_zeros(())
    binary = torch.where(has_in, mass_in_t.exp() * (mass_in_t - mass_in_s), zero) + torch.where(
        has_out, mass_out_t.exp() * (mass_out_t - mass_out_s), zero
    )
    kl_in = torch.where(has_in, kl_of_logs(within_in_t, within_in_s), zero)
    kl_out = torch.where(has_out, kl_of_logs(within_out_t, within_out_s), zero)
    return SplitKL(
        binary=binary,
        kl_in=kl_in,
        kl_out=kl_out,
        mass_in=torch.where(has_in, mass_in_t.exp(), zero),
        mass_out=torch.where(has_out, mass_out_t.exp(), zero),
    )


def _target_mask(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    return F.one_hot(target.long(), n_classes).bool()


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
    mask = _target_mask(target, student_logits.shape[1])
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

    Returns
    -------
    bool Tensor of shape (batch, n_classes)
    """
    batch, n_classes = teacher_logits.shape
    if target is not None:
        fixed = _target_mask(target, n_classes)
        ranked = teacher_logits.masked_fill(fixed, float("-inf"))
        n_top = strong_k
    else:
        fixed = torch.zeros_like(teacher_logits, dtype=torch.bool)
        ranked = teacher_logits
        n_top = strong_k + 1
    if rule == "topk":
        n_top = min(n_top, n_classes - int(target is not None))
        top = ranked.topk(n_top, dim=1).indices
        return fixed.scatter(1, top, True)
    if rule == "mass":
        probs = torch.softmax(ranked / temperature, dim=1)
        sorted_probs, order = probs.sort(dim=1, descending=True)
        mass_before = sorted_probs.cumsum(dim=1) - sorted_probs
        include = mass_before < strong_mass
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


def _cosine(a, b, dim, eps=1e-12):
    numerator = (a * b).sum(dim)
    # clamp_min before sqrt keeps the gradient finite for constant inputs
    denominator = (a.pow(2).sum(dim) * b.pow(2).sum(dim)).clamp_min(eps * eps).sqrt()
    return numerator / denominator


def pearson_distance(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Pearson correlation distance ``1 - rho(a, b)`` along ``dim``.

    Huang, You, Wang, Qian & Xu (2022), "Knowledge Distillation from A
    Stronger Teacher" (DIST), Sec. 3: ``d_p(u, v) = 1 - rho_p(u, v)`` with
    ``rho_p = Cov(u, v) / (Std(u) Std(v))``. Lies in [0, 2]; a constant input
    has no defined correlation and gives distance 1.
    """
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return 1.0 - _cosine(a, b, dim)


def abs_cosine_distance(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Uncentred absolute-cosine distance ``1 - |cos(a, b)|`` along ``dim``.

    The "value" distance of the R2KD authors' released code
    (``eisen_cosine_distance`` in Seonghak35/R2KD, ``mdistiller/distillers/R2KD.py``),
    Kim et al. (2024). Lies in [0, 1].
    """
    return 1.0 - _cosine(a, b, dim).abs()


def _pairwise_rank(x: torch.Tensor, step) -> torch.Tensor:
    """``0.5 + sum_j step(x_i - x_j)`` per row, in bounded-memory chunks."""
    flat = x.reshape(-1, x.shape[-1])
    n_rows, n_cols = flat.shape
    chunk = max(1, PAIRWISE_CHUNK_ELEMENTS // max(1, n_cols * n_cols))
    ranks = torch.empty_like(flat)
    for start in range(0, n_rows, chunk):
        rows = flat[start : start + chunk]
        ranks[start : start + chunk] = step(rows.unsqueeze(2) - rows.unsqueeze(1)).sum(2) + 0.5
    return ranks.reshape(x.shape)


class _SoftRank(torch.autograd.Function):
    """Pairwise-sigmoid soft rank with an O(B·C) memory backward."""

    @staticmethod
    def forward(ctx, x, sharpness):
        ctx.save_for_backward(x)
        ctx.sharpness = sharpness
        return _pairwise_rank(x, lambda diff: torch.sigmoid(sharpness * diff))

    @staticmethod
    def backward(ctx, grad_ranks):
        (x,) = ctx.saved_tensors
        sharpness = ctx.sharpness
        flat = x.reshape(-1, x.shape[-1])
        grad_flat = grad_ranks.reshape(flat.shape)
        n_rows, n_cols = flat.shape
        chunk = max(1, PAIRWISE_CHUNK_ELEMENTS // max(1, n_cols * n_cols))
        grad_x = torch.empty_like(flat)
        for start in range(0, n_rows, chunk):
            rows = flat[start : start + chunk]
            grads = grad_flat[start : start + chunk]
            sig = torch.sigmoid(sharpness * (rows.unsqueeze(2) - rows.unsqueeze(1)))
            weight = sig * (1.0 - sig)  # sigma'(d_kj), symmetric in (k, j)
            # d r_i / d x_k = s (delta_ik sum_j w_ij - w_ik)  =>
            # grad_k = s (g_k sum_j w_kj - sum_j w_kj g_j)
            grad_x[start : start + chunk] = sharpness * (
                grads * weight.sum(2) - torch.bmm(weight, grads.unsqueeze(2)).squeeze(2)
            )
        return grad_x.reshape(x.shape), None


def soft_rank(x: torch.Tensor, sharpness: float = 1.0) -> torch.Tensor:
    """Differentiable ranks along the last dimension (pairwise sigmoid).

    ``r_i = 1/2 + sum_j sigmoid(s (x_i - x_j))``. As ``s -> inf`` this tends
    to the average rank (1 = smallest, ties share their mean rank), see
    :func:`hard_rank`. The soft-rank relaxation follows Qin, Liu & Li (2010),
    "A general approximation framework for direct optimization of information
    retrieval measures", Eq. (11); skd uses it for R2KD's rank term, whose
    released code ranks with ``argsort`` and so passes no gradient.

    The O(C^2) pairwise work is done in row chunks, and the backward pass
    recomputes it rather than storing it: memory is O(B·C) plus one chunk.
    """
    return _SoftRank.apply(x, float(sharpness))


def hard_rank(x: torch.Tensor) -> torch.Tensor:
    """Average ranks along the last dimension (1 = smallest; ties averaged).

    The ranks of Spearman's rho (Spearman, 1904). Not differentiable.
    """
    with torch.no_grad():
        return _pairwise_rank(x, lambda diff: (diff > 0).to(x.dtype) + 0.5 * (diff == 0).to(x.dtype))


def spearman_distance(
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    sharpness: float | None = None,
) -> torch.Tensor:
    """Spearman rank-correlation distance ``1 - rho_s`` per row.

    Spearman's rho is Pearson's correlation of the ranks (Kim et al., 2024,
    R2KD, the rank-based term). With ``sharpness=None`` the ranks are exact
    (:func:`hard_rank`, no gradient); otherwise both sides use
    :func:`soft_rank`, so the gradient flows to the student.

    Returns
    -------
    torch.Tensor of shape (batch,)
    """
    if sharpness is None:
        ranks_s, ranks_t = hard_rank(student_scores), hard_rank(teacher_scores)
    else:
        ranks_s = soft_rank(student_scores, sharpness)
        ranks_t = soft_rank(teacher_scores.detach(), sharpness)
    return pearson_distance(ranks_s, ranks_t, dim=-1)


def dist_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inter-class and intra-class relation losses of DIST.

    Huang et al. (2022), DIST, Sec. 3.3: ``L_inter = 1/B sum_i d_p(Y^s_i,:,
    Y^t_i,:)`` (per sample, over classes) and ``L_intra = 1/C sum_j
    d_p(Y^s_:,j, Y^t_:,j)`` (per class, over the batch), on ``Y =
    softmax(Z / tau)``. The ``tau**2`` factor of the official code is applied
    by the caller. A batch of one sample has no intra-class relation: 0.

    Returns
    -------
    (inter, intra) : scalar Tensors
    """
    probs_s = torch.softmax(student_logits / temperature, dim=1)
    probs_t = torch.softmax(teacher_logits / temperature, dim=1)
    inter = pearson_distance(probs_s, probs_t, dim=1).mean()
    if probs_s.shape[0] < 2:
        return inter, probs_s.new_zeros(())
    intra = pearson_distance(probs_s, probs_t, dim=0).mean()
    return inter, intra


def r2kd_value_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    value: str = "pearson",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Value-based correlation distances of R2KD, over rows and over columns.

    Kim, Ham, Cho & Kim (2024), "Robustness-Reinforced Knowledge Distillation
    with Correlation Distance and Network Pruning" (IEEE TKDE), the value term:
    a correlation distance between softened predictions per sample over
    classes and per class over the batch. ``value="pearson"`` uses the Pearson
    distance (the paper's description); ``value="cosine"`` the uncentred
    absolute cosine of the authors' released code.

    Returns
    -------
    (rows, columns) : scalar Tensors
    """
    distance = {"pearson": pearson_distance, "cosine": abs_cosine_distance}[value]
    probs_s = torch.softmax(student_logits / temperature, dim=1)
    probs_t = torch.softmax(teacher_logits / temperature, dim=1)
    rows = distance(probs_s, probs_t, dim=1).mean()
    if probs_s.shape[0] < 2:
        return rows, probs_s.new_zeros(())
    return rows, distance(probs_s, probs_t, dim=0).mean()


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


def tempered_log_distribution(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log softmax(log p / T)``: a distribution softened by temperature.

    Treats ``log p`` as logits, as Hinton et al. (2015), Eq. (1), soften a
    teacher. Used for Tf-KD_reg's hand-made teacher (the authors' code applies
    ``softmax(p / T)`` to the probabilities instead, see the TfKD docs).
    """
    return torch.log_softmax(torch.log(probs) / temperature, dim=1)
