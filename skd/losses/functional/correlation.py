"""Correlation distances between softened predictions: DIST and R2KD's value term."""

from __future__ import annotations

import torch

from skd.losses.functional.basics import UNDEFINED_RTOL, check_choice, compute_dtype
from skd.losses.functional.fused_relation import pearson_relations

__all__ = [
    "CONVENTIONS",
    "RELEASED_EPS",
    "UNDEFINED_RTOL",
    "abs_cosine_distance",
    "correlation_distance",
    "dist_terms",
    "pearson_distance",
    "r2kd_value_terms",
    "relation_distances",
]

#: ``"paper"``: the exact formula; ``"released"``: the authors' code.
CONVENTIONS = ("paper", "released")
#: The ``eps`` the DIST and R2KD reference code adds to ``||a|| ||b||``.
RELEASED_EPS = 1e-8

def _norm_and_unit(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``|x|`` and ``x / |x|`` along ``dim`` (0 for a zero vector), scaled by ``max |x|`` first.

    The scaling keeps sums of squares from underflowing (``1e-30 ** 2`` is 0 in
    float32) or overflowing; a NaN in ``x`` gives NaN in both.
    """
    largest = x.abs().amax(dim, keepdim=True)
    zero = largest == 0
    scaled = x / torch.where(zero, 1.0, largest)
    length = (scaled * scaled).sum(dim, keepdim=True).sqrt()
    unit = torch.where(zero, 0.0, scaled / torch.where(zero, 1.0, length))
    return largest * length, unit


class _CorrelationDistance(torch.autograd.Function):
    """``1 - rho`` (or ``1 - |rho|``) along ``dim`` with a closed-form gradient.

    ``a_c`` is ``a`` centred along ``dim`` (or ``a`` itself), ``u_a = a_c / |a_c|``
    (0 where ``a_c = 0``, as torch's ``norm`` gradient).

    - ``eps=None`` (exact): ``rho = <u_a, u_b>``, computed on the unit vectors so
      that no product of sums of squares can underflow; ``d rho / d a_c =
      (u_b - rho u_a) / |a_c|``. The correlation is *undefined* (``rho = 0``, zero
      gradient, ``defined`` False) where ``|a_c| <= UNDEFINED_RTOL * eps_dtype * |a|``
      (the spread is rounding noise: a relative test, invariant to the scale of
      ``a``) or ``|a_c|`` is below the dtype's smallest normal number (``1 / |a_c|``
      would overflow); likewise for ``b``.
    - ``eps`` a number (the reference code): ``rho = <a_c, b_c> / (|a_c| |b_c| + eps)``
      and ``d rho / d a_c = (b_c - rho |b_c| u_a) / (|a_c| |b_c| + eps)``: every factor
      is bounded (``|rho| <= 1``, ``|u_a| <= 1``, the denominator ``>= eps``), so the
      gradient is finite in any precision, and 0 where both sides are constant (a
      batch of one row), as autograd of the reference code gives.

    The gradient is projected back through the centring. Half-precision inputs
    are computed in float32.
    """

    @staticmethod
    def forward(ctx, a, b, dim, centred, absolute, eps):
        in_dtype = a.dtype
        compute = compute_dtype(in_dtype)
        a, b = a.to(compute), b.to(compute)
        a_c = a - a.mean(dim, keepdim=True) if centred else a
        b_c = b - b.mean(dim, keepdim=True) if centred else b
        norm_a, unit_a = _norm_and_unit(a_c, dim)
        norm_b, unit_b = _norm_and_unit(b_c, dim)
        if eps is None:
            finfo = torch.finfo(compute)
            rtol = UNDEFINED_RTOL * finfo.eps

            def constant(x, norm_c):
                scale = _norm_and_unit(x, dim)[0] if centred else norm_c
                return norm_c <= torch.clamp_min(rtol * scale, finfo.tiny)

            # NaN is not 'undefined': a NaN input must give a NaN distance, so that the
            # non-finite guard sees it instead of a silent distance of 1
            defined = ~(constant(a, norm_a) | constant(b, norm_b))
            rho = torch.where(defined, (unit_a * unit_b).sum(dim, keepdim=True), 0.0)
            inv_a = torch.where(defined, norm_a.reciprocal(), 0.0)
            inv_b = torch.where(defined, norm_b.reciprocal(), 0.0)
            # d rho / d a_c = (u_b - rho u_a) / |a_c|
            parts_a = (unit_b, rho, unit_a, inv_a)
            parts_b = (unit_a, rho, unit_b, inv_b)
        else:
            denominator = norm_a * norm_b + eps
            rho = (a_c * b_c).sum(dim, keepdim=True) / denominator
            defined = torch.ones_like(rho, dtype=torch.bool)
            inv = denominator.reciprocal()
            # d rho / d a_c = (b_c - rho |b_c| u_a) / den
            parts_a = (b_c, rho * norm_b, unit_a, inv)
            parts_b = (a_c, rho * norm_a, unit_b, inv)
        sign = rho.sign() if absolute else None
        ctx.save_for_backward(*parts_a, *parts_b, sign)
        ctx.dim, ctx.centred, ctx.absolute, ctx.in_dtype = dim, centred, absolute, in_dtype
        distance = 1.0 - (rho.abs() if absolute else rho)
        defined = defined.squeeze(dim)
        ctx.mark_non_differentiable(defined)
        return distance.squeeze(dim).to(in_dtype), defined

    @staticmethod
    def backward(ctx, grad, _grad_defined):
        saved = ctx.saved_tensors
        parts_a, parts_b, sign = saved[:4], saved[4:8], saved[8]
        dim = ctx.dim
        grad = -grad.unsqueeze(dim).to(parts_a[0].dtype)
        if ctx.absolute:
            grad = grad * sign

        def one_side(parts):
            other, coef, own_unit, scale = parts
            d = (other - coef * own_unit) * scale
            if ctx.centred:
                d = d - d.mean(dim, keepdim=True)
            return (grad * d).to(ctx.in_dtype)

        grad_a = one_side(parts_a) if ctx.needs_input_grad[0] else None
        grad_b = one_side(parts_b) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None, None, None, None


def _distances(a, b, dim, centred, absolute, eps):
    """``(distance, defined)`` along ``dim``; see :class:`_CorrelationDistance`."""
    return _CorrelationDistance.apply(a, b, dim % a.ndim, bool(centred), bool(absolute), eps)


def correlation_distance(
    a: torch.Tensor,
    b: torch.Tensor,
    dim: int = -1,
    centred: bool = True,
    absolute: bool = False,
    eps: float | None = None,
) -> torch.Tensor:
    """Correlation distance ``1 - rho(a, b)`` (or ``1 - |rho|``) along ``dim``.

    ``rho`` is the cosine of ``a`` and ``b``, centred along ``dim`` when
    ``centred`` (then it is Pearson's correlation). With ``eps=None`` it is
    exact, ``<a, b> / (|a| |b|)``, computed on unit vectors, and invariant to
    the scale of either input. A constant input (centred: its spread is within
    ``UNDEFINED_RTOL`` units of rounding of its size; uncentred: zero) has no
    defined correlation and gives ``rho = 0``, distance 1, with zero gradient;
    :func:`relation_distances` leaves such entries out of its means. With a
    number, the denominator is ``|a| |b| + eps``, as in the DIST and R2KD
    reference code, and the gradient is finite everywhere (0 where both
    inputs are constant). Gradients are in closed form; float16 and bfloat16
    inputs are computed in float32.
    """
    return _distances(a, b, dim, centred, absolute, eps)[0]


def pearson_distance(
    a: torch.Tensor, b: torch.Tensor, dim: int = -1, eps: float | None = None
) -> torch.Tensor:
    """Pearson correlation distance ``1 - rho(a, b)`` along ``dim``.

    Huang, You, Wang, Qian & Xu (2022), "Knowledge Distillation from A
    Stronger Teacher" (DIST), Sec. 3: ``d_p(u, v) = 1 - rho_p(u, v)`` with
    ``rho_p = Cov(u, v) / (Std(u) Std(v))``. Lies in [0, 2]; with
    ``eps=None`` a constant input has no defined correlation and gives
    distance 1 with zero gradient (see :func:`correlation_distance`).
    """
    return correlation_distance(a, b, dim, centred=True, absolute=False, eps=eps)


def abs_cosine_distance(
    a: torch.Tensor, b: torch.Tensor, dim: int = -1, eps: float | None = None
) -> torch.Tensor:
    """Uncentred absolute-cosine distance ``1 - |cos(a, b)|`` along ``dim``.

    The "value" distance of the R2KD authors' released code
    (``eisen_cosine_distance`` in Seonghak35/R2KD, ``mdistiller/distillers/R2KD.py``),
    Kim et al. (2024). Lies in [0, 1].
    """
    return correlation_distance(a, b, dim, centred=False, absolute=True, eps=eps)


#: Whether each distance centres its inputs (Pearson) or not (absolute cosine).
_DISTANCES = {"pearson": True, "cosine": False}


def _mean_defined(distance: torch.Tensor, defined: torch.Tensor) -> torch.Tensor:
    """Mean of ``distance`` over the entries whose correlation is defined; 0 if none is."""
    total = torch.where(defined, distance, 0.0).sum()
    return total / defined.sum().clamp_min(1).to(distance.dtype)


def relation_distances(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    distance: str = "pearson",
    convention: str = "paper",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean distance between softened predictions over rows and over columns.

    With ``Y = softmax(Z / T)``: ``rows = 1/B sum_i d(Y^S_i,:, Y^T_i,:)`` (per
    sample, over classes) and ``columns = 1/C sum_j d(Y^S_:,j, Y^T_:,j)`` (per
    class, over the batch): DIST's inter- and intra-class relations (Huang et
    al., 2022, Sec. 3.3) and R2KD's value term (Kim et al., 2024).

    ``distance`` is ``"pearson"`` (:func:`pearson_distance`) or ``"cosine"``
    (:func:`abs_cosine_distance`).

    - ``convention="paper"`` is exact. One rule for every batch size: a row or
      column whose correlation is undefined (a constant student or teacher
      vector, see :func:`correlation_distance`) is left out of the mean, and a
      mean over no defined entry is 0. So a batch of one sample, whose
      centred columns are all zero, has no relation across the batch
      (``columns`` is 0), and a constant student row passes no gradient.
      It runs fused (:func:`~skd.losses.functional.fused_relation.pearson_relations`)
      for the Pearson distance.
    - ``convention="released"`` divides by ``|a| |b| + 1e-8`` as the
      reference code does and averages over every row and column: a constant
      vector gets ``rho = 0`` (distance 1 for Pearson), so a one-sample batch
      has ``columns`` 1 for Pearson, with zero gradient. The gradient is
      finite in every precision.

    Returns
    -------
    (rows, columns) : scalar Tensors
    """
    check_choice(distance, tuple(_DISTANCES), "distance")
    check_choice(convention, CONVENTIONS, "convention")
    if distance == "pearson" and convention == "paper":
        return pearson_relations(student_logits, teacher_logits, temperature)
    return _generic_relation_distances(student_logits, teacher_logits, temperature, distance, convention)


def _generic_relation_distances(student_logits, teacher_logits, temperature, distance, convention):
    """:func:`relation_distances` by the generic correlation Function, along each dimension.

    The path of the cosine distance and of the released convention; with the Pearson distance and the
    exact convention, :func:`~skd.losses.functional.pearson_relations` computes the same in fewer kernels
    (``tests/reference.py`` checks one against the other).
    """
    centred = _DISTANCES[distance]
    eps = None if convention == "paper" else RELEASED_EPS
    probs_s = torch.softmax(student_logits / temperature, dim=1)
    probs_t = torch.softmax(teacher_logits / temperature, dim=1)
    means = []
    for dim in (1, 0):
        values, defined = _distances(probs_s, probs_t, dim, centred, distance == "cosine", eps)
        means.append(values.mean() if eps is not None else _mean_defined(values, defined))
    return means[0], means[1]


def dist_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    convention: str = "paper",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inter-class and intra-class relation losses of DIST.

    Huang et al. (2022), DIST, Sec. 3.3: ``L_inter = 1/B sum_i d_p(Y^s_i,:,
    Y^t_i,:)`` (per sample, over classes) and ``L_intra = 1/C sum_j
    d_p(Y^s_:,j, Y^t_:,j)`` (per class, over the batch), on ``Y =
    softmax(Z / tau)``: :func:`relation_distances` with the Pearson distance.
    The ``tau**2`` factor of the official code is applied by the caller.

    Returns
    -------
    (inter, intra) : scalar Tensors
    """
    return relation_distances(student_logits, teacher_logits, temperature, "pearson", convention)


def r2kd_value_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    value: str = "pearson",
    convention: str = "paper",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Value-based correlation distances of R2KD, over rows and over columns.

    Kim, Ham, Cho & Kim (2024), "Robustness-Reinforced Knowledge Distillation
    with Correlation Distance and Network Pruning" (IEEE TKDE), the value term:
    :func:`relation_distances` with the Pearson distance (``value="pearson"``,
    the paper's description) or the uncentred absolute cosine of the authors'
    released code (``value="cosine"``).

    Returns
    -------
    (rows, columns) : scalar Tensors
    """
    return relation_distances(student_logits, teacher_logits, temperature, value, convention)
