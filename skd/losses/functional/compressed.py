"""The compressed book: the teacher's top-k log-probabilities and the mass of the tail."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["TopKBook", "compress_teacher", "topk_kd_divergence"]


class TopKBook(NamedTuple):
    """A teacher's distribution kept as its top-k classes plus one tail bucket.

    The top-k-plus-tail form used to distil over large vocabularies (issue
    21 cites TRL for it; TRL's code was not read here): ``k``
    log-probabilities and class indices per row, and the log of the mass of
    the other ``C - k`` classes. Memory per row: ``k`` floats, ``k``
    indices and one float, instead of ``C`` floats.
    """

    #: Teacher log-probabilities (softened by ``temperature``) of the top-k classes, (batch, k), descending.
    log_probs: torch.Tensor
    #: Their class indices, shape (batch, k), int64 (the caller may store a smaller int type).
    indices: torch.Tensor
    #: ``log sum_{i not in top-k} p_i``, shape (batch,); ``-inf`` when ``k == C``.
    log_tail: torch.Tensor
    #: Number of classes C of the full distribution.
    n_classes: int
    #: The temperature the book was written at (its ``log_probs`` are of ``softmax(z / temperature)``);
    #: a float, or a 0-d tensor during a fit (never read back to the host).
    temperature: float | torch.Tensor = 1.0


def _mask_out(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``values`` with the entries at ``indices`` (per row) set to ``-inf``."""
    return values.scatter(1, indices, float("-inf"))


def compress_teacher(
    teacher_logits: torch.Tensor, k: int, temperature: float | torch.Tensor = 1.0
) -> TopKBook:
    """Compress teacher logits into a :class:`TopKBook` written at ``temperature``.

    A book written at the temperature the loss will use gives exact buckets
    at that temperature (:func:`topk_kd_divergence`); the top k classes are
    the same at every temperature.

    The tail mass is a ``logsumexp`` over the classes outside the top k (not
    ``log(1 - sum of the top k)``, which loses all precision when the top k
    hold nearly all the mass).

    Parameters
    ----------
    teacher_logits : Tensor of shape (batch, n_classes)
    k : int
        ``1 <= k <= n_classes``.
    """
    n_classes = teacher_logits.shape[1]
    if not 1 <= k <= n_classes:
        raise ValueError(f"k must be in [1, n_classes={n_classes}], got {k!r}.")
    log_probs = torch.log_softmax(teacher_logits / temperature, dim=1)
    top_log_probs, indices = log_probs.topk(k, dim=1)
    log_tail = torch.logsumexp(_mask_out(log_probs, indices), dim=1)
    return TopKBook(top_log_probs, indices, log_tail, n_classes, temperature)


def _teacher_buckets(book: TopKBook, temperature: float) -> torch.Tensor:
    """Log-probabilities of the k + 1 buckets (top-k classes, tail) of the teacher softened by T.

    At the book's own temperature they are the book's values exactly. At
    another T the book does not say how the tail's mass is spread, so the
    tail is taken as uniform over its ``C - k`` classes (each ``log_tail -
    log(C - k)``), every class is re-softened by ``book.temperature / T``,
    and the tail's classes are summed back into one bucket. For T above the
    book's, a uniform tail is the spread that gains the most mass, so this
    overstates the tail.
    """
    n_tail = book.n_classes - book.log_probs.shape[1]
    ratio = book.temperature / temperature  # 1 at the book's temperature; no branch on T (maybe a tensor)
    if n_tail == 0:
        tail = book.log_tail
    else:
        tail = math.log(n_tail) + (book.log_tail - math.log(n_tail)) * ratio
    scores = torch.cat([book.log_probs * ratio, tail.unsqueeze(1)], dim=1)
    return torch.log_softmax(scores, dim=1)


def topk_kd_divergence(
    student_logits: torch.Tensor, book: TopKBook, temperature: float = 1.0
) -> torch.Tensor:
    """Per-sample KL between the teacher's and the student's k + 1 buckets.

    ``KL(b^T || b^S)`` where ``b`` holds the probabilities of the teacher's
    top-k classes and one bucket for the other ``C - k`` classes; the
    student's tail bucket is its summed probability there (aggregated, the
    chain rule of KL: the full KL is this plus the teacher's tail mass times
    the KL inside the tail, which the book cannot give). At the book's
    temperature and ``k = C - 1``, or at any T with ``k = C``, it equals the
    full ``KL(p^T || p^S)`` at that temperature.

    Returns
    -------
    Tensor of shape (batch,)
    """
    log_teacher = _teacher_buckets(book, temperature)
    log_student = torch.log_softmax(student_logits / temperature, dim=1)
    student_top = log_student.gather(1, book.indices)
    student_tail = torch.logsumexp(_mask_out(log_student, book.indices), dim=1)
    log_student_buckets = torch.cat([student_top, student_tail.unsqueeze(1)], dim=1)
    # kl_div(log_target=True) is exp(t) * (t - s): 0 for an empty tail (t = -inf) only if s is finite
    finite = torch.isfinite(log_teacher)
    safe_teacher = torch.where(finite, log_teacher, 0.0)
    safe_student = torch.where(finite, log_student_buckets, 0.0)
    per_bucket = F.kl_div(safe_student, safe_teacher, log_target=True, reduction="none")
    return torch.where(finite, per_bucket, 0.0).sum(1)
