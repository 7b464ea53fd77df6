"""Rows of the data a book is written for: counting, taking and slicing them, whatever their type.

The one home of these helpers (the book, its cache, the teachers and the
hints use them): arrays, scipy sparse matrices, DataFrames, tensors and
dicts of them (books).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse
import torch
from sklearn.utils import _safe_indexing

__all__ = ["as_numpy", "as_rows", "n_rows", "rows_of", "take_rows"]


def as_numpy(value: Any) -> np.ndarray:
    """``value`` (a tensor on any device, an array or array-like) as a numpy array."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def as_rows(X: Any) -> Any:
    """``X`` as a teacher is given it: as the user gave it where it has rows.

    Arrays, DataFrames (with their dtypes and categoricals), tensors and
    torch Datasets are returned as they are, scipy sparse matrices as CSR
    (row-sliceable; no copy for CSR); anything else (lists) as a numpy array.
    """
    if scipy.sparse.issparse(X):
        return X.tocsr()
    if isinstance(X, (np.ndarray, torch.Tensor, torch.utils.data.Dataset)) or hasattr(X, "iloc"):
        return X
    return np.asarray(X)


def n_rows(features: Any) -> int:
    """The number of rows of features (an array, tensor, DataFrame, sparse matrix or sequence)."""
    return features.shape[0] if hasattr(features, "shape") else len(features)


def rows_of(X: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of an array, tensor, sparse matrix or DataFrame (positional)."""
    return X.iloc[start:stop] if hasattr(X, "iloc") else X[start:stop]


def take_rows(data: Any, rows: np.ndarray) -> Any:
    """Rows ``rows`` (positions) of an array, sparse matrix, DataFrame, tensor or dict of them."""
    if isinstance(data, Mapping) and not scipy.sparse.issparse(data):
        return {key: take_rows(value, rows) for key, value in data.items()}
    if isinstance(data, torch.Tensor):
        return data[torch.as_tensor(rows, device=data.device)]
    if scipy.sparse.issparse(data):
        return data.tocsr()[rows]
    return _safe_indexing(data, rows)
