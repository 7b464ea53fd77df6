"""Correlation distances between softened predictions: DIST and R2KD's value term."""

from __future__ import annotations

import torch

from skd.losses.functional.basics import check_choice

__all__ = [
    "CONVENTIONS",
    "RELEASED_EPS",
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
# Below this product of sums of squares a correlation is undefined (constant input).
_UNDEFINED = 1e-24


class _CorrelationDistance(torch.autograd.Function):
    """``1 - rho`` (or ``1 - |rho|``) along ``dim`` with a closed-form gradient.

    ``rho = <a_c, b_c> / den`` where ``a_c`` is ``a`` centred along ``dim``
    (or ``a`` itself) and ``den = sqrt(|a_c|^2 |b_c|^2)`` (``eps=None``, with
    ``rho = 0`` and zero gradient where that is below ``1e-12``) or
    ``|a_c| |b_c| + eps``. ``d rho / d a_c = (b_c - rho (d den / d a_c)) / den``,
    projected back through the centring.
    """

    @staticmethod
    def forward(ctx, a, b, dim, centred, absolute, eps):
        a_c = a - a.mean(dim, keepdim=True) if centred else a
        b_c = b - b.mean(dim, keepdim=True) if centred else b
        saa = (a_c * a_c).sum(dim, keepdim=True)
        sbb = (b_c * b_c).sum(dim, keepdim=True)
        sab = (a_c * b_c).sum(dim, keepdim=True)
        if eps is None:
            product = saa * sbb
            # NaN is not 'undefined': a NaN input must give a NaN distance, so that the
            # non-finite guard sees it instead of a silent distance of 1
            defined = ~(product <= _UNDEFINED)
            denominator = product.clamp_min(_UNDEFINED).sqrt()
            rho = torch.where(defined, sab / denominator, 0.0)
            # d den / d a_c = den a_c / saa, so d rho / d a_c = (b_c - rho den a_c / saa) / den
            coef_a = torch.where(defined, rho / saa.clamp_min(_UNDEFINED), 0.0)
            coef_b = torch.where(defined, rho / sbb.clamp_min(_UNDEFINED), 0.0)
            scale = torch.where(defined, denominator.reciprocal(), 0.0)
        else:
            tiny = torch.finfo(a.dtype).tiny
            norm_a, norm_b = saa.sqrt(), sbb.sqrt()
            denominator = norm_a * norm_b + eps
            rho = sab / denominator
            # d den / d a_c = |b_c| a_c / |a_c| (0 where a_c = 0, as torch's norm)
            coef_a = rho * norm_b / (norm_a.clamp_min(tiny) * denominator)
            coef_b = rho * norm_a / (norm_b.clamp_min(tiny) * denominator)
            scale = denominator.reciprocal()
        sign = rho.sign() if absolute else None
        ctx.save_for_backward(a_c, b_c, coef_a, coef_b, scale, sign if absolute else rho)
        ctx.dim, ctx.centred, ctx.absolute = dim, centred, absolute
        return (1.0 - (rho.abs() if absolute else rho)).squeeze(dim)

    @staticmethod
    def backward(ctx, grad):
        a_c, b_c, coef_a, coef_b, scale, sign = ctx.saved_tensors
        dim = ctx.dim
        grad = -grad.unsqueeze(dim)
        if ctx.absolute:
            grad = grad * sign

        def one_side(own_c, other_c, coef):
            d = other_c * scale - coef * own_c
            if ctx.centred:
                d = d - d.mean(dim, keepdim=True)
            return grad * d

        grad_a = one_side(a_c, b_c, coef_a) if ctx.needs_input_grad[0] else None
        grad_b = one_side(b_c, a_c, coef_b) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None, None, None, None


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
    exact: ``<a, b> / sqrt(|a|^2 |b|^2)``, and a constant (zero) input, whose
    correlation is undefined, gives ``rho = 0`` with zero gradient. With a
    number, the denominator is ``|a| |b| + eps``, as in the DIST and R2KD
    reference code. Gradients are in closed form.
    """
    dim = dim % a.ndim
    return _CorrelationDistance.apply(a, b, dim, bool(centred), bool(absolute), eps)


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


_DISTANCES = {"pearson": pearson_distance, "cosine": abs_cosine_distance}


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
    (:func:`abs_cosine_distance`). ``convention="paper"`` is exact, and a
    batch of one sample has no relation across the batch, so ``columns`` is
    0; ``"released"`` divides by ``|a| |b| + 1e-8`` as the reference code
    does, which also gives a one-sample batch a column distance (1 for
    Pearson: its centred columns are zero).

    Returns
    -------
    (rows, columns) : scalar Tensors
    """
    check_choice(distance, tuple(_DISTANCES), "distance")
    check_choice(convention, CONVENTIONS, "convention")
    measure = _DISTANCES[distance]
    eps = None if convention == "paper" else RELEASED_EPS
    probs_s = torch.softmax(student_logits / temperature, dim=1)
    probs_t = torch.softmax(teacher_logits / temperature, dim=1)
    rows = measure(probs_s, probs_t, dim=1, eps=eps).mean()
    if convention == "paper" and probs_s.shape[0] < 2:
        return rows, probs_s.new_zeros(())
    return rows, measure(probs_s, probs_t, dim=0, eps=eps).mean()


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
