"""DIST's and R2KD's Pearson relations (exact convention) in one autograd Function (issue 18).

:func:`pearson_relations` is :func:`~skd.losses.functional.relation_distances`
with ``distance="pearson", convention="paper"``: the same values and student
gradients, with both directions (rows and columns), both sides (student and
teacher) and the softmax in one closed-form Function, so that each step of
the formula is one kernel. It also returns the gradient with respect to a
temperature that requires one (CTKD).

Costs (dispatched ops, B=256, C=100): 46 kernels forward and 20 backward
against 152 and 24 for the two generic correlation Functions and their
softmax. It saves the softmax, the column-scaled softmax and both centrings
of both sides for the backward: 8 values per class and sample (the generic
path: about 6). Double backward is not supported.
"""

from __future__ import annotations

import torch

from skd.losses.functional.basics import UNDEFINED_RTOL, compute_dtype

__all__ = ["pearson_relations", "row_pearson_distance"]


def _direction(centred: torch.Tensor, dim: int, limit: torch.Tensor | float):
    """Pearson statistics of centred student and teacher values (2, B, C) along ``dim``.

    An entry is undefined where either side's squared centred norm is at most
    ``limit`` (a NaN never is, so that it reaches the value). Returns ``rho``
    (0 where undefined), the undefined mask, ``1 / (|a_c| |b_c|)`` and the
    squared norms (1 where undefined).
    """
    products = (centred.unsqueeze(1) * centred.unsqueeze(0)).sum(dim)  # (side, side, length)
    squares = torch.diagonal(products, dim1=0, dim2=1).movedim(-1, 0)  # (side, length)
    undefined = (squares <= limit).any(0)
    # 1 where undefined (a one-sample batch's columns are 0), so that no 0/0 reaches the backward
    squares = torch.where(undefined, 1.0, squares)
    inverse_norms = (squares[0] * squares[1]).rsqrt()
    rho = torch.where(undefined, 0.0, products[0, 1] * inverse_norms)
    return rho, undefined, inverse_norms, squares


def _defined_mean(rho: torch.Tensor, undefined: torch.Tensor):
    """``(max(n, 1), mean of 1 - rho over the n defined entries)``; the mean is 0 if n = 0."""
    defined = undefined.numel() - undefined.sum(dtype=rho.dtype)
    count = defined.clamp_min(1)
    return count, (defined - rho.sum()) / count


def _side_gradients(weight, centred, stats, dim, both_sides):
    """``d value / d values`` along ``dim``: ``w (rho a_self / |a_self|^2 - a_other / (|a||b|))``.

    ``weight`` is minus ``d value / d rho`` per entry (0 where undefined). Of the
    student only (1, B, C), or of both sides (for the temperature).
    """
    rho, _, inverse_norms, squares = stats
    other = (weight * inverse_norms).unsqueeze(dim)
    own = (weight * rho / squares).unsqueeze(dim)
    if both_sides:
        return centred * own - centred.flip(0) * other
    return torch.addcmul(centred[:1] * own[:1], centred[1:], other, value=-1.0)


def _kappa(dtype: torch.dtype) -> float:
    """``rtol^2 / (1 - rtol^2)``: ``|a_c| <= rtol |a|`` is ``|a_c|^2 <= kappa n mean^2``."""
    rtol_sq = (UNDEFINED_RTOL * torch.finfo(dtype).eps) ** 2
    return rtol_sq / (1.0 - rtol_sq)


class _RowPearsonDistance(torch.autograd.Function):
    """``1 - rho`` per row (last dimension), exact convention, closed-form gradient to ``a`` only."""

    @staticmethod
    def forward(ctx, a, b):
        in_dtype = a.dtype
        compute = compute_dtype(in_dtype)
        values = torch.stack([a, b]).to(compute)
        mean = values.mean(-1, keepdim=True)
        centred = values - mean
        stats = _direction(centred, -1, mean.squeeze(-1).square() * (_kappa(compute) * a.shape[-1]))
        ctx.save_for_backward(centred, *stats)
        ctx.in_dtype = in_dtype
        return (1.0 - stats[0]).to(in_dtype)

    @staticmethod
    def backward(ctx, grad):
        centred, *stats = ctx.saved_tensors
        weight = torch.where(stats[1], 0.0, grad.to(centred.dtype))
        grad_a = _side_gradients(weight, centred, stats, -1, both_sides=False)[0]
        return grad_a.to(ctx.in_dtype), None


def row_pearson_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson distance ``1 - rho`` per row, fused; ``b`` gets no gradient.

    :func:`~skd.losses.functional.pearson_distance` along the last dimension
    with ``eps=None`` (Huang et al., 2022, DIST, Sec. 3: ``d_p = 1 - rho_p``),
    same rules (an undefined correlation gives 1 with zero gradient, a NaN
    gives NaN), in 15 kernels forward and 7 backward instead of 68 and 9.
    Spearman's distance of R2KD's rank term runs through it.
    """
    return _RowPearsonDistance.apply(a, b.detach())


class _PearsonRelations(torch.autograd.Function):
    """Rows and columns Pearson distances of softened predictions, closed-form backward.

    ``P = softmax(z / T)``. Rows are correlated on ``P``, columns on ``P``
    divided by each column's maximum: Pearson's rho is invariant to that
    scale, which keeps sums of squares of a column of tiny probabilities from
    underflowing. A column whose centred norm is below the dtype's smallest
    normal number is undefined, as in the generic Function. ``d rho / d a_c = (u_b - rho u_a) /
    |a_c|`` needs no projection through the centring (it is centred already),
    and the softmax backward ``P (G - sum P G)`` takes the column part as
    ``P_scaled G_scaled``. Temperature: ``dT = -(1/T) sum(G_x x)`` over both
    sides, since ``dx/dT = -x/T``.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, temperature):
        in_dtype = student_logits.dtype
        compute = compute_dtype(in_dtype)
        kappa = _kappa(compute)
        scaled = torch.stack([student_logits, teacher_logits]).to(compute) / temperature
        probs = torch.softmax(scaled, dim=-1)
        # each column over its maximum (1 for a column of zeros), as the generic Function scales
        column_max = probs.amax(-2, keepdim=True)
        column_max = torch.where(column_max > 0, column_max, 1.0)
        column_scaled = probs / column_max
        n_classes = probs.shape[-1]
        # rows of P have mean 1/C exactly (not a rounded mean), so |a|^2 = |a_c|^2 + 1/C and the
        # test is a constant
        row_centred = probs - 1.0 / n_classes
        rows = _direction(row_centred, -1, kappa / n_classes)
        rows = (*rows, *_defined_mean(rows[0], rows[1]))
        mean = column_scaled.mean(-2, keepdim=True)
        column_centred = column_scaled - mean
        # constant: |a_c| <= max(rtol |a|, tiny) on the unscaled column
        relative = mean.squeeze(-2).square() * (kappa * probs.shape[-2])
        tiny = (torch.finfo(compute).tiny / column_max.squeeze(-2)).square()
        columns = _direction(column_centred, -2, torch.maximum(relative, tiny))
        columns = (*columns, *_defined_mean(columns[0], columns[1]))
        ctx.needs_temperature = isinstance(temperature, torch.Tensor) and temperature.requires_grad
        ctx.save_for_backward(probs, column_scaled, row_centred, column_centred, *rows[:5], *columns[:5],
                              scaled if ctx.needs_temperature else None,
                              temperature if isinstance(temperature, torch.Tensor) else None)
        ctx.temperature, ctx.in_dtype = temperature, in_dtype
        ctx.set_materialize_grads(False)
        return rows[5].to(in_dtype), columns[5].to(in_dtype)

    @staticmethod
    def backward(ctx, grad_rows, grad_columns):
        saved = ctx.saved_tensors
        probs, column_scaled, row_centred, column_centred = saved[:4]
        rows, columns, (scaled, temperature) = saved[4:9], saved[9:14], saved[14:]
        if temperature is None:
            temperature = ctx.temperature
        both = ctx.needs_temperature
        sides = slice(None) if both else slice(0, 1)
        parts = []
        for grad, stats, centred, values, dim in ((grad_rows, rows, row_centred, probs, -1),
                                                  (grad_columns, columns, column_centred, column_scaled, -2)):
            if grad is not None:
                # minus d mean / d rho: 1 / n on the defined entries
                weight = torch.where(stats[1], 0.0, grad.to(probs.dtype) / stats[4])
                parts.append((values[sides], _side_gradients(weight, centred, stats[:4], dim, both)))
        if not parts:
            return None, None, None
        mixed = parts[0][0] * parts[0][1]
        if len(parts) == 2:
            mixed = torch.addcmul(mixed, *parts[1])
        # softmax backward: P (G - sum_j P_j G_j), with P G = mixed
        grad_scaled = torch.addcmul(mixed, probs[sides], mixed.sum(-1, keepdim=True), value=-1.0)
        grad_student = (grad_scaled[0] / temperature).to(ctx.in_dtype) if ctx.needs_input_grad[0] else None
        grad_temperature = None
        if ctx.needs_temperature and ctx.needs_input_grad[2]:
            grad_temperature = -(grad_scaled * scaled).sum() / temperature
        return grad_student, None, grad_temperature


def pearson_relations(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean Pearson distances of softened predictions over rows and over columns, fused.

    Huang et al. (2022), DIST, Sec. 3.3, ``L_inter`` and ``L_intra`` (and R2KD's
    Pearson value term), in skd's exact convention: equal to
    ``relation_distances(student, teacher, T, "pearson", "paper")``, whose
    rules it keeps (an undefined correlation is left out of the mean, a mean
    over none is 0, a NaN input gives NaN). Gradients are in closed form, to
    the student and to a tensor ``temperature`` that requires one; the
    teacher gets none. No value is read back to the host.

    Returns
    -------
    (rows, columns) : 0-d Tensors
    """
    return _PearsonRelations.apply(student_logits, teacher_logits.detach(), temperature)
