"""Data-parallel fits: one student trained by several processes with ``torch.distributed``.

Every process (rank) fits its own :class:`skd.DistillationClassifier` on its
shard of the book (:func:`shard`), with the :class:`GradientAllReduce`
callback. The callback starts all students from rank 0's weights and, after
each backward pass, replaces every gradient by its mean over the ranks, so
every rank takes the same optimizer step on the gradient of the union of the
batches: the students stay equal, as with ``DistributedDataParallel``.

Why a callback and not ``DistributedDataParallel``: skd's trainer runs its
own step (guard, ledger, CUDA graph), and ``on_grad_computed`` is the one
hook between backward and the optimizer step. The student stays a plain
module, so the saved student loads anywhere without ``torch.distributed``
(DDP would prefix its weights with ``module.``). The price is that
communication does not overlap the backward pass (one flat all-reduce per
step), which is small for students of distillation size.

The teacher runs once, before the processes start: write the book once
(e.g. ``PrunedTeacher(teacher, amount=0).fit_transform(X, y)``) and give
every rank its shard. See "Scale out" in the docs.
"""

from __future__ import annotations

import numpy as np
import torch.distributed as dist

from skd.book import features_of
from skd.book.rows import n_rows as count_rows
from skd.book.rows import take_rows

__all__ = ["shard", "world"]


def world(group=None) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "No torch.distributed process group: call torch.distributed.init_process_group(...) "
            "in every process before fitting with GradientAllReduce or calling shard()."
        )
    return dist.get_rank(group), dist.get_world_size(group)


def shard(X, y, rank: int | None = None, world_size: int | None = None):
    """This rank's rows of ``X`` (array, sparse matrix, tensor, DataFrame or book) and ``y``.

    Every ``world_size``-th row from ``rank`` on; the last ``n % world_size``
    rows are dropped so that every rank has as many rows, hence as many
    batches (the all-reduce needs every rank at every step). Rows are taken
    by position: a DataFrame (or Series) by ``.iloc``, never by its columns
    or index labels.

    Parameters
    ----------
    X : ndarray, scipy sparse matrix, Tensor, DataFrame or book
    y : array-like or Series
    rank, world_size : int or None
        Default: those of the initialised default process group.

    Returns
    -------
    X_shard, y_shard

    Raises
    ------
    ValueError
        If ``rank`` is not in ``[0, world_size)``, ``y`` has another
        number of rows than ``X``, or ``X`` has fewer rows than ``world_size``.
    """
    if rank is None or world_size is None:
        rank, world_size = world()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}.")
    n_rows = count_rows(features_of(X))
    y = np.asarray(y)  # by position, as before: a Series gives its values
    n_labels = y.shape[0] if y.ndim else 0
    if n_labels != n_rows:
        raise ValueError(
            f"shard(X, y): y has {n_labels} rows but X has {n_rows}; give one label per row of X "
            "(a book's rows are those of X['X'])."
        )
    if n_rows < world_size:
        raise ValueError(
            f"shard(X, y): X has {n_rows} rows for world_size={world_size} ranks; each rank needs at "
            "least one row (and as many rows as every other rank). Use fewer processes, or more data."
        )
    rows = np.arange(rank, n_rows // world_size * world_size, world_size)
    return take_rows(X, rows), y[rows]
