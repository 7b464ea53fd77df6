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


def _group_log_norms(log_probs, groups):
    """Log masses of both groups for student and teacher in one pass.

    ``log_probs`` is (2 sides, B, C) and ``groups`` (2 groups, B, C); returns
    (2 sides, 2 groups, B). The masses are summed in probability space, which
    is exact unless a whole group underflows (all its log-probabilities below
    about -87 in float32); only then are they recomputed with a per-group
    shift. Entries outside a group are filled with the dtype's most negative
    finite value, not ``-inf`` (whose arithmetic gives ``inf - inf``) nor a
    ``-1000`` constant (wrong in half precision). An empty group gets a log
    mass near that value; callers zero its terms.
    """
    probs = log_probs.exp()
    masses = torch.stack([(probs * groups[0]).sum(2), (probs * groups[1]).sum(2)], dim=1)
    tiny = torch.finfo(log_probs.dtype).tiny
    if bool((masses < 1e6 * tiny).any()):
        floor = torch.finfo(log_probs.dtype).min
        masked = torch.where(groups.unsqueeze(0), log_probs.unsqueeze(1), floor)
        peak = masked.amax(dim=3, keepdim=True)
        return (masked - peak).exp_().sum(dim=3).log_() + peak.squeeze(3)
    return masses.log()


class SplitKL(NamedTuple):
    """Terms of the two-group chain rule of the KL divergence (per sample)."""

    binary: torch.Tensor
    kl_in: torch.Tensor
    kl_out: torch.Tensor
    mass_in: torch.Tensor
    mass_out: torch.Tensor


class _SplitKL(torch.autograd.Function):
    """Forward of :func:`split_kl` with its closed-form gradient.

    With ``p`` the student's softened distribution, ``p̂`` its renormalised
    in-group distribution and ``b^T_g(i)`` the teacher's mass of the group of
    class ``i``, the gradients with respect to ``z / T`` are
    ``d binary = p - b^T_g(i) p̂^S`` and ``d KL_g = p̂^S - p̂^T`` (on the
    classes of group g). The teacher gets no gradient.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, in_group, temperature):
        n_classes = in_group.shape[1]
        counts = in_group.sum(dim=1)
        has = torch.stack([counts > 0, counts < n_classes])  # (group, B)
        groups = torch.stack([in_group, ~in_group])
        # student and teacher side by side: one kernel per step for both
        log_probs = torch.log_softmax(torch.stack([student_logits, teacher_logits]) / temperature, dim=2)
        norms = _group_log_norms(log_probs, groups)  # (side, group, B)
        own = torch.where(in_group, norms[:, 0].unsqueeze(2), norms[:, 1].unsqueeze(2))
        within = log_probs - own
        hat_t = within[1].exp()
        elementwise = hat_t * (within[1] - within[0])
        kl_all = elementwise.sum(1)
        kl_in = (elementwise * in_group).sum(1)
        masses = torch.where(has, norms[1].exp(), 0.0)  # teacher's (group, B)
        binary = torch.where(has, masses * (norms[1] - norms[0]), 0.0).sum(0)
        kl_in = torch.where(has[0], kl_in, 0.0)
        kl_out = torch.where(has[1], kl_all - kl_in, 0.0)
        ctx.save_for_backward(log_probs[0], within[0], hat_t, in_group, masses)
        ctx.temperature = temperature
        mass_in, mass_out = masses[0], masses[1]
        ctx.mark_non_differentiable(mass_in, mass_out)
        return binary, kl_in, kl_out, mass_in, mass_out

    @staticmethod
    def backward(ctx, grad_binary, grad_in, grad_out, _grad_mass_in, _grad_mass_out):
        lp_s, within_s, hat_t, in_group, masses = ctx.saved_tensors
        grad_student = None
        if ctx.needs_input_grad[0]:
            probs_s = lp_s.exp()
            hat_s = within_s.exp()
            group_mass = torch.where(in_group, masses[0].unsqueeze(1), masses[1].unsqueeze(1))
            group_grad = torch.where(in_group, grad_in.unsqueeze(1), grad_out.unsqueeze(1))
            grad_student = (
                grad_binary.unsqueeze(1) * (probs_s - group_mass * hat_s) + group_grad * (hat_s - hat_t)
            ) / ctx.temperature
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
    distributions renormalised inside each group. Gradients flow to the
    student only, in closed form (see ``_SplitKL``); the teacher is constant.

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
    return SplitKL(*_SplitKL.apply(student_logits, teacher_logits.detach(), in_group, float(temperature)))


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


# Below this product of sums of squares a correlation is undefined (constant input).
_UNDEFINED = 1e-24


class _PearsonDistance(torch.autograd.Function):
    """``1 - rho`` with a closed-form gradient; 0 gradient where rho is undefined."""

    @staticmethod
    def forward(ctx, a, b, dim):
        a_c = a - a.mean(dim, keepdim=True)
        b_c = b - b.mean(dim, keepdim=True)
        saa = (a_c * a_c).sum(dim, keepdim=True)
        sbb = (b_c * b_c).sum(dim, keepdim=True)
        product = saa * sbb
        defined = product > _UNDEFINED
        denominator = product.clamp_min(_UNDEFINED).sqrt()
        rho = torch.where(defined, (a_c * b_c).sum(dim, keepdim=True) / denominator, 0.0)
        ctx.save_for_backward(a_c, b_c, saa, sbb, denominator, rho, defined)
        ctx.dim = dim
        return (1.0 - rho).squeeze(dim)

    @staticmethod
    def backward(ctx, grad):
        a_c, b_c, saa, sbb, denominator, rho, defined = ctx.saved_tensors
        dim = ctx.dim
        grad = grad.unsqueeze(dim)

        def one_side(own_c, other_c, own_ss):
            # d rho / d own = P_centre(other_c / den - rho own_c / own_ss)
            d = other_c / denominator - rho * own_c / own_ss.clamp_min(_UNDEFINED)
            d = torch.where(defined, d, 0.0)
            return -grad * (d - d.mean(dim, keepdim=True))

        grad_a = one_side(a_c, b_c, saa) if ctx.needs_input_grad[0] else None
        grad_b = one_side(b_c, a_c, sbb) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


def pearson_distance(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Pearson correlation distance ``1 - rho(a, b)`` along ``dim``.

    Huang, You, Wang, Qian & Xu (2022), "Knowledge Distillation from A
    Stronger Teacher" (DIST), Sec. 3: ``d_p(u, v) = 1 - rho_p(u, v)`` with
    ``rho_p = Cov(u, v) / (Std(u) Std(v))``. Lies in [0, 2]; a constant input
    has no defined correlation and gives distance 1 with zero gradient.
    The gradient is computed in closed form.
    """
    dim = dim % a.ndim
    return _PearsonDistance.apply(a, b, dim)


def abs_cosine_distance(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Uncentred absolute-cosine distance ``1 - |cos(a, b)|`` along ``dim``.

    The "value" distance of the R2KD authors' released code
    (``eisen_cosine_distance`` in Seonghak35/R2KD, ``mdistiller/distillers/R2KD.py``),
    Kim et al. (2024). Lies in [0, 1].
    """
    return 1.0 - _cosine(a, b, dim).abs()


def _chunk_rows(n_cols):
    return max(1, PAIRWISE_CHUNK_ELEMENTS // max(1, n_cols * n_cols))


class _SoftRank(torch.autograd.Function):
    """Pairwise-sigmoid soft rank with a closed-form, chunked backward.

    The pairwise sigmoids are kept for the backward pass when they fit in one
    chunk (``PAIRWISE_CHUNK_ELEMENTS``), and recomputed chunk by chunk
    otherwise, so memory stays O(B·C) plus one chunk.
    """

    @staticmethod
    def forward(ctx, x, sharpness):
        flat = x.reshape(-1, x.shape[-1])
        n_rows, n_cols = flat.shape
        chunk = _chunk_rows(n_cols)
        ranks = torch.empty_like(flat)
        kept = None
        for start in range(0, n_rows, chunk):
            rows = flat[start : start + chunk]
            sig = torch.sigmoid((rows.unsqueeze(2) - rows.unsqueeze(1)).mul_(sharpness))
            ranks[start : start + chunk] = sig.sum(2).add_(0.5)
            if n_rows <= chunk:
                kept = sig
        ctx.save_for_backward(x, kept if kept is not None else x.new_empty(0))
        ctx.keep = kept is not None
        ctx.sharpness = sharpness
        return ranks.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad_ranks):
        x, kept = ctx.saved_tensors
        sharpness = ctx.sharpness
        flat = x.reshape(-1, x.shape[-1])
        grad_flat = grad_ranks.reshape(flat.shape)
        n_rows, n_cols = flat.shape
        chunk = _chunk_rows(n_cols)
        grad_x = torch.empty_like(flat)
        for start in range(0, n_rows, chunk):
            if ctx.keep:
                sig = kept
            else:
                rows = flat[start : start + chunk]
                sig = torch.sigmoid((rows.unsqueeze(2) - rows.unsqueeze(1)).mul_(sharpness))
            grads = grad_flat[start : start + chunk]
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

    The O(C^2) pairwise work is done in row chunks with a closed-form
    backward: memory is O(B·C) plus one chunk of ``PAIRWISE_CHUNK_ELEMENTS``.
    """
    return _SoftRank.apply(x, float(sharpness))


def hard_rank(x: torch.Tensor) -> torch.Tensor:
    """Average ranks along the last dimension (1 = smallest; ties averaged).

    The ranks of Spearman's rho (Spearman, 1904). O(C log C) by sorting;
    not differentiable.
    """
    with torch.no_grad():
        ordered = x.sort(dim=-1).values.contiguous()
        below = torch.searchsorted(ordered, x.contiguous(), right=False)
        upto = torch.searchsorted(ordered, x.contiguous(), right=True)
        return (below + upto + 1).to(x.dtype) / 2


def spearman_distance(
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    sharpness: float | None = None,
) -> torch.Tensor:
    """Spearman rank-correlation distance ``1 - rho_s`` per row.

    Spearman's rho is Pearson's correlation of the ranks (Kim et al., 2024,
    R2KD, the rank-based term). The teacher's ranks are exact
    (:func:`hard_rank`). With ``sharpness=None`` so are the student's (no
    gradient); otherwise the student's are :func:`soft_rank`, so the gradient
    flows to the student.

    Returns
    -------
    torch.Tensor of shape (batch,)
    """
    ranks_t = hard_rank(teacher_scores)
    if sharpness is None:
        ranks_s = hard_rank(student_scores)
    else:
        ranks_s = soft_rank(student_scores, sharpness)
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
