"""Fast batches for in-memory data: index slicing of tensors on the device.

skorch's default ``DataLoader`` indexes and collates one sample at a time;
for arrays, tensors and books already in memory that per-sample work costs
more than a small student's step. :class:`DeviceBatches` moves the data to
the device once and yields batches by slicing, with the same order and
contents as the ``DataLoader`` when shuffling is off.

Sparse X (scipy CSR/CSC) is kept on the device as a torch sparse COO tensor;
each batch's rows are selected there and densified, so the dense matrix never
exists whole.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse
import torch
from skorch.dataset import Dataset as SkorchDataset
from torch.utils.data import DataLoader, Subset

__all__ = ["DeviceBatches", "holds_sparse", "in_memory_tensors", "make_iterator", "sparse_tensor"]


def _is_array(data) -> bool:
    return isinstance(data, (np.ndarray, torch.Tensor)) or scipy.sparse.issparse(data)


def _is_in_memory(data) -> bool:
    if isinstance(data, Mapping):
        return all(_is_array(v) for v in data.values())
    return _is_array(data)


def sparse_tensor(matrix) -> torch.Tensor:
    """A scipy sparse matrix as a coalesced float32 torch sparse COO tensor (on the CPU)."""
    coo = matrix.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32, copy=False))
    return torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=True).coalesce()


def _to_device(data, device):
    if isinstance(data, Mapping):
        return {key: _to_device(value, device) for key, value in data.items()}
    if scipy.sparse.issparse(data):
        tensor = sparse_tensor(data)
    else:
        tensor = torch.from_numpy(data) if isinstance(data, np.ndarray) else data
    return tensor.to(device) if device is not None else tensor


def _take(data, index, dense: bool = True):
    """Rows ``index`` of ``data``; sparse rows are densified unless ``dense=False``."""
    if isinstance(data, Mapping):
        return {key: _take(value, index, dense) for key, value in data.items()}
    if not data.is_sparse:
        if isinstance(index, slice):
            return data[index]  # a view
        # index_select, not data[index]: the same rows, 3x faster on the CPU at batch 256
        # (74 against 235 µs for X, the book's logits and y; benchmarks/speed.py's data)
        return data.index_select(0, index)
    if isinstance(index, slice):
        index = torch.arange(*index.indices(data.shape[0]), device=data.device)
    rows = data.index_select(0, index)
    return rows.to_dense() if dense else rows.coalesce()


def _is_sparse(data) -> bool:
    if isinstance(data, Mapping):
        return any(_is_sparse(value) for value in data.values())
    return data.is_sparse


def _unwrapped(dataset):
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def holds_sparse(dataset) -> bool:
    """Whether ``dataset`` is a skorch Dataset (or a Subset of one) over sparse X or a sparse book."""
    X = getattr(_unwrapped(dataset), "X", None)
    if isinstance(X, Mapping):
        return any(scipy.sparse.issparse(value) for value in X.values())
    return scipy.sparse.issparse(X)


def in_memory_tensors(dataset, device):
    """``(X, y)`` tensors on ``device`` for a skorch ``Dataset`` (or a
    ``Subset`` of one) over in-memory arrays; None for anything else."""
    indices = None
    while isinstance(dataset, Subset):
        inner = torch.as_tensor(np.asarray(dataset.indices), dtype=torch.long)
        indices = inner if indices is None else inner[indices]
        dataset = dataset.dataset
    if type(dataset) is not SkorchDataset or not _is_in_memory(dataset.X):
        return None
    y = dataset.y
    if y is not None and not isinstance(y, (np.ndarray, torch.Tensor)):
        return None
    X = _to_device(dataset.X, device)
    y = None if y is None else _to_device(y, device)
    if indices is not None:
        indices = indices.to(device) if device is not None else indices
        X = _take(X, indices, dense=False)
        y = None if y is None else y[indices]
    return X, y


class DeviceBatches:
    """An iterable of ``(X_batch, y_batch)`` made by slicing device tensors.

    Parameters
    ----------
    X : Tensor or dict of Tensors
    y : Tensor or None
    batch_size : int
    shuffle : bool, default=False
        A fresh permutation each epoch.
    drop_last : bool, default=False
    generator : callable or None, default=None
        Called at the start of each epoch for the ``torch.Generator`` of its
        permutation (or None: torch's global generator).
    """

    def __init__(self, X, y, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 generator=None):
        self.X = X
        self.y = y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        first = next(iter(X.values())) if isinstance(X, Mapping) else X
        self.n_samples = first.shape[0]
        self.device = first.device
        #: Whether some of X is a sparse tensor (its batches are densified by ``take``).
        self.sparse = _is_sparse(X)

    def __len__(self):
        if self.drop_last:
            return self.n_samples // self.batch_size
        return (self.n_samples + self.batch_size - 1) // self.batch_size

    def indices(self):
        """This epoch's batches as index tensors (or slices, when not shuffled)."""
        order = None
        if self.shuffle:
            generator = self.generator() if self.generator is not None else None
            order = torch.randperm(self.n_samples, generator=generator).to(self.device)
        stop = len(self) * self.batch_size if self.drop_last else self.n_samples
        for start in range(0, stop, self.batch_size):
            index = slice(start, min(start + self.batch_size, self.n_samples))
            yield index if order is None else order[index]

    def epoch_batches(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This epoch's batches at once, for a captured step that takes them in order.

        Returns ``(full, rest)``: the indices of the full batches as an
        ``(n_full, batch_size)`` tensor on the device, and those of the last,
        smaller batch (None if there is none, or with ``drop_last``). The
        order is the one :meth:`indices` gives (the same permutation, drawn
        once per epoch from the same generator).
        """
        n_full = self.n_samples // self.batch_size
        if self.shuffle:
            generator = self.generator() if self.generator is not None else None
            order = torch.randperm(self.n_samples, generator=generator).to(self.device)
        else:
            order = torch.arange(self.n_samples, device=self.device)
        full = order[: n_full * self.batch_size].view(n_full, self.batch_size)
        ragged = not self.drop_last and n_full * self.batch_size < self.n_samples
        return full, (order[n_full * self.batch_size:] if ragged else None)

    def take(self, index):
        """The batch ``(X, y)`` at ``index`` (a slice or an index tensor)."""
        return _take(self.X, index), (None if self.y is None else _take(self.y, index))

    def __iter__(self):
        for index in self.indices():
            yield self.take(index)


#: Iterator options the device batches honour; any other one needs the DataLoader.
FAST_ITERATOR_OPTIONS = frozenset({"batch_size", "shuffle", "drop_last"})


def make_iterator(dataset, iterator, kwargs: dict, batch_size: int, device, training: bool,
                  fast: bool, generator):
    """The batches of one pass: :class:`DeviceBatches` where possible, else ``iterator``.

    Parameters
    ----------
    dataset : skorch Dataset (or Subset of one), or torch Dataset
    iterator : type
        skorch's ``iterator_train``/``iterator_valid`` (a ``DataLoader`` by default).
    kwargs : dict
        The ``iterator_*__`` options.
    batch_size : int
        The net's ``batch_size`` (-1: the whole dataset), unless in ``kwargs``.
    device : str or torch.device
    training : bool
        Training batches are shuffled unless ``shuffle=False`` is given.
    fast : bool
        Whether device batches may be used at all (``batching="auto"``).
    generator : callable
        Returns this epoch's ``torch.Generator`` for the shuffle (or None).
    """
    kwargs = dict(kwargs)
    if training:
        kwargs.setdefault("shuffle", True)
    usable = iterator is DataLoader and set(kwargs) <= FAST_ITERATOR_OPTIONS
    if holds_sparse(dataset) and not usable:
        raise ValueError(
            "Sparse X is batched only by skd's device batches (the DataLoader cannot collate "
            "sparse rows): keep the default iterator_train/iterator_valid and only the "
            f"options {sorted(FAST_ITERATOR_OPTIONS)}, or densify X first."
        )
    usable = usable and (fast or holds_sparse(dataset))  # batching="loader" cannot take sparse X
    tensors = in_memory_tensors(dataset, device) if usable else None
    batch_size = kwargs.pop("batch_size", batch_size)
    if batch_size == -1:
        batch_size = len(dataset)
    shuffle = kwargs.get("shuffle", False)
    if tensors is None:
        if training and shuffle and iterator is DataLoader and "generator" not in kwargs:
            kwargs["generator"] = generator()
        return iterator(dataset, batch_size=batch_size, **kwargs)
    X, y = tensors
    return DeviceBatches(X, y, batch_size, shuffle=shuffle, drop_last=kwargs.get("drop_last", False),
                         generator=generator if training and shuffle else None)
