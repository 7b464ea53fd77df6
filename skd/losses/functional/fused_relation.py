"""DIST's and R2KD's Pearson relations (exact convention) in one autograd Function (issue 18).

:func:`pearson_relations` is :func:`~skd.losses.functional.relation_distances`
with ``distance="pearson", convention="paper"``: the same values and student
gradients, with both directions (rows and columns), both sides (student and
teacher) and the softmax in one closed-form Function, so that each step of
the formula is one kernel. It also returns the gradient with respect to a
temperature that requires one (CTKD).

Costs (``benchmarks/ops.py``): about 45 kernels forward and 20 backward
against 150 and 40 for the two generic correlation Functions and their
softmax. It saves the softmax, the column-scaled softmax and the centred
probabilities of both sides for the backward: about 8 values per class and
sample (the generic path: about 10). Double backward is not supported.
"""

from __future__ import annotations

import torch

from skd.losses.functional.correlation import UNDEFINED_RTOL, _compute_dtype

__all__ = ["pearson_relations"]


def _direction(values: torch.Tensor, dim: int, kappa: float):
    """Pearson statistics of student and teacher ``values`` (2, B, C) along ``dim``.

    Returns the centred values, ``rho`` (0 where undefined), the undefined
    mask, ``1 / (|a_c| |b_c|)``, the squared norms and the mean distance over
    the defined entries with its divisor ``max(n_defined, 1)``.
    """
    mean = values.mean(dim, keepdim=True)
    centred = values - mean
    products = (centred.unsqueeze(1) * centred.unsqueeze(0)).sum(dim)  # (side, side, length)
    squares = torch.diagonal(products, dim1=0, dim2=1).movedim(-1, 0)  # (side, length)
    cross = products[0, 1]
    # undefined: |a_c| <= rtol |a|, i.e. |a_c|^2 <= kappa n mean^2 with |a|^2 = |a_c|^2 + n mean^2; a NaN is
    # never undefined, so that it reaches the value
    undefined = (squares <= mean.squeeze(dim).square() * (kappa * values.shape[dim])).any(0)
    inverse_norms = (squares[0] * squares[1]).rsqrt()
    rho = torch.where(undefined, 0.0, cross * inverse_norms)
    count = (undefined.numel() - undefined.sum()).clamp_min(1).to(values.dtype)
    value = (count - rho.sum()) / count
    return centred, rho, undefined, inverse_norms, squares, count, value


def _side_gradients(grad, stats, dim):
    """``d value / d values`` for both sides, (2, B, C): ``w (a_other / (|a||b|) - rho a_self / |a_self|^2)``."""
    centred, rho, undefined, inverse_norms, squares, count = stats
    weight = torch.where(undefined, 0.0, -grad / count)  # d value / d rho per entry
    other = (weight * inverse_norms).unsqueeze(dim)
    own = (weight * rho / squares).unsqueeze(dim)
    return centred.flip(0) * other - centred * own


class _PearsonRelations(torch.autograd.Function):
    """Rows and columns Pearson distances of softened predictions, closed-form backward.

    ``P = softmax(z / T)``. Rows are correlated on ``P``, columns on ``P``
    scaled by each column's maximum (``exp(log P - max_b log P)``): Pearson's
    rho is invariant to that scale, which keeps sums of squares of a column of
    tiny probabilities from underflowing. ``d rho / d a_c = (u_b - rho u_a) /
    |a_c|`` needs no projection through the centring (it is centred already),
    and the softmax backward ``P (G - sum P G)`` takes the column part as
    ``P_scaled G_scaled``. Temperature: ``dT = -(1/T) sum(G_x x)`` over both
    sides, since ``dx/dT = -x/T``.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, temperature):
        in_dtype = student_logits.dtype
        compute = _compute_dtype(in_dtype)
        kappa = (UNDEFINED_RTOL * torch.finfo(compute).eps) ** 2
        kappa = kappa / (1.0 - kappa)
        scaled = torch.stack([student_logits, teacher_logits]).to(compute) / temperature
        logs = torch.log_softmax(scaled, dim=-1)
        probs = logs.exp()
        column_scaled = (logs - logs.amax(-2, keepdim=True)).exp()
        rows = _direction(probs, -1, kappa)
        columns = _direction(column_scaled, -2, kappa)
        ctx.needs_temperature = isinstance(temperature, torch.Tensor) and temperature.requires_grad
        tensors = [probs, column_scaled, *rows[:6], *columns[:6]]
        ctx.save_for_backward(*tensors, scaled if ctx.needs_temperature else None,
                              temperature if isinstance(temperature, torch.Tensor) else None)
        ctx.temperature, ctx.in_dtype = temperature, in_dtype
        ctx.set_materialize_grads(False)
        return rows[6].to(in_dtype), columns[6].to(in_dtype)

    @staticmethod
    def backward(ctx, grad_rows, grad_columns):
        saved = ctx.saved_tensors
        probs, column_scaled, rows, columns = saved[0], saved[1], saved[2:8], saved[8:14]
        scaled, temperature = saved[14], saved[15]
        if temperature is None:
            temperature = ctx.temperature
        sides = slice(None) if ctx.needs_temperature else slice(0, 1)
        mixed = None
        if grad_rows is not None:
            mixed = probs * _side_gradients(grad_rows.to(probs.dtype), rows, -1)
        if grad_columns is not None:
            part = column_scaled * _side_gradients(grad_columns.to(probs.dtype), columns, -2)
            mixed = part if mixed is None else mixed + part
        if mixed is None:
            return None, None, None
        mixed = mixed[sides]
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
