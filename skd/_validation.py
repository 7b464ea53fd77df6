"""Input checks for ``DistillationClassifier``: features, books, labels and options.

Functions, not methods: each takes the estimator only where scikit-learn's
``validate_data`` needs it (to set and check ``n_features_in_``) and returns
what it checked. The classifier stores the results.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse
import torch
from sklearn.utils.validation import (
    validate_data,
)
from torch.utils.data import Dataset

from skd.book import BOOK_X, Book, features_of, is_book

__all__ = ["MIXED_TABLE_ROUTE", "check_augment", "check_module_dims", "data_dims", "validate_X",
           "with_data_dims"]

#: The documented route for a table with non-numeric columns (docs/pipelines.md).
MIXED_TABLE_ROUTE = (
    "The student network takes numbers only: encode the non-numeric columns for it, e.g. "
    "make_pipeline(WriteBook(teacher), OnFeatures(ColumnTransformer([('cat', OneHotEncoder(), "
    "categorical_columns)], remainder=StandardScaler())), DistillationClassifier(...)): the teacher "
    "(e.g. HistGradientBoostingClassifier(categorical_features='from_dtype')) writes its book from the "
    "table as it is, and the student learns from the encoded features (see the Pipelines docs)."
)

#: The largest finite float32.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _non_numeric_columns(X) -> list:
    """The names of a DataFrame's columns that do not hold numbers or booleans (strings, categoricals,
    dates): their values mean nothing to a network until encoded."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(X, "columns"):
        return []
    return [column for column, dtype in zip(X.columns, dtypes, strict=True)
            if getattr(dtype, "kind", "O") not in "biuf"]


def _check_float32_range(X) -> None:
    """Refuse finite values that float32 cannot hold (they would become infinity)."""
    values = X.to_numpy() if hasattr(X, "to_numpy") else X
    if scipy.sparse.issparse(values):
        values = values.tocoo().data  # every format (dok and lil have no .data of values)
    try:
        values = np.asarray(values)
    except (TypeError, ValueError):
        return
    if values.dtype.kind != "f" or values.dtype.itemsize <= 4:
        return
    finite = values[np.isfinite(values)]
    if finite.size and np.abs(finite).max() > _FLOAT32_MAX:
        raise ValueError(
            f"Input X holds finite values too large for float32 (largest magnitude "
            f"{np.abs(finite).max():.3g}, float32's limit is {_FLOAT32_MAX:.3g}), which the student "
            "computes in. Rescale the features first (e.g. sklearn.preprocessing.StandardScaler, or "
            "a log transform, in a Pipeline before the classifier)."
        )


def validate_features(estimator, X, reset: bool):
    """Check and convert one feature block (not a book) to float32."""
    if isinstance(X, Dataset):
        return X
    if isinstance(X, torch.Tensor):
        if X.ndim < 2:
            raise ValueError(
                f"Expected a 2D (or higher) tensor X, got shape {tuple(X.shape)}. "
                "Reshape a single feature with X.reshape(-1, 1), a single sample with "
                "X.reshape(1, -1)."
            )
        if X.shape[0] == 0:
            raise ValueError(
                f"X is an empty tensor of shape {tuple(X.shape)}; at least one row is required."
            )
        X = X.float() if X.dtype != torch.float32 else X
        if not torch.isfinite(X).all():
            raise ValueError("Input X contains NaN or infinity; clean or impute it first.")
        if reset:
            estimator.n_features_in_ = X.shape[1]
        elif hasattr(estimator, "n_features_in_") and X.shape[1] != estimator.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
                f"{estimator.n_features_in_} features as input."
            )
        return X
    non_numeric = _non_numeric_columns(X)
    if non_numeric:
        raise ValueError(f"X has columns that are not numbers: {non_numeric[:10]}. " + MIXED_TABLE_ROUTE)
    _check_float32_range(X)
    try:
        X = validate_data(estimator, X, reset=reset, dtype=np.float32, allow_nd=True,
                          accept_sparse="csr")
    except ValueError as error:
        if "could not convert" in str(error):
            raise ValueError(f"X holds values that are not numbers ({error}). " + MIXED_TABLE_ROUTE) from None
        if "NaN" not in str(error) and "infinity" not in str(error):
            raise
        # scikit-learn's message recommends estimators that accept NaN; a student network does not
        raise ValueError(
            "Input X contains NaN or infinity. A student network cannot take missing values: "
            "impute them first (e.g. sklearn.impute.SimpleImputer in a Pipeline before the "
            "classifier). A teacher that handles NaN itself can still write the book from the "
            "raw X: put WriteBook(teacher) first and OnFeatures(SimpleImputer()) after it."
        ) from None
    if scipy.sparse.issparse(X):  # CSR: rows are sliced per batch; never densified whole
        return X.tocsr()
    if not X.flags.writeable:  # e.g. pandas copy-on-write views; torch needs writable
        X = X.copy()
    return X


def validate_X(estimator, X, reset: bool):
    """Check features, or a book's features; a book keeps its logits (checked later)."""
    if isinstance(X, Mapping) and not scipy.sparse.issparse(X):
        if BOOK_X not in X:
            raise ValueError(
                f"X is a dict with keys {sorted(X)}; skd takes a dict X only as a book "
                "{'X': features, 'teacher_logits': logits of shape (n_samples, n_classes)}, or a "
                "compressed book (see skd.book.compress_book)."
            )
        features = validate_features(estimator, X[BOOK_X], reset)
        return Book.of(X).with_features(features).as_dict() if is_book(X) else features
    return validate_features(estimator, X, reset)


def data_dims(X, n_classes: int) -> dict[str, int]:
    """``n_features`` (product of the non-batch dimensions) and ``n_classes`` for the student."""
    features = features_of(X)
    if isinstance(features, Dataset):
        first = features[0]
        first = first[0] if isinstance(first, (tuple, list)) else first
        shape: tuple[Any, ...] = (None, *np.shape(first))
    else:
        shape = tuple(features.shape)
    return {"n_features": int(np.prod(shape[1:])), "n_classes": n_classes}


def with_data_dims(module, kwargs: dict, dims: dict | None) -> dict:
    """``module__*`` kwargs, completed with ``n_features``/``n_classes`` where the class takes them.

    Values given as ``module__n_features``/``module__n_classes`` win; an
    instance (not a class) is left alone.
    """
    kwargs = dict(kwargs)
    if not dims or isinstance(module, torch.nn.Module) or not callable(module):
        return kwargs
    try:
        accepted = inspect.signature(module).parameters
    except (TypeError, ValueError):
        return kwargs
    for key, value in dims.items():
        if key in accepted and key not in kwargs:
            kwargs[key] = value
    return kwargs


def check_augment(augment, augment_mode: str, book: str, X) -> None:
    """Refuse combinations of ``augment`` with the book that cannot work."""
    if augment is not None and is_book(X):
        raise ValueError(
            "augment needs a teacher to label augmented batches, but X is a book; pass "
            "the features and teacher=... instead."
        )
    if augment is not None and book == "memory" and augment_mode == "replace":
        raise ValueError(
            "book='memory' cannot be combined with augment_mode='replace': the teacher "
            "must see each augmented batch and no clean one. Use book='auto'."
        )


def check_module_dims(module, kwargs: dict) -> None:
    """Raise a clear error when ``n_features``/``n_classes`` are needed but unknown (before fit)."""
    if isinstance(module, torch.nn.Module) or not callable(module):
        return
    try:
        accepted = inspect.signature(module).parameters
    except (TypeError, ValueError):
        return
    missing = [name for name in ("n_features", "n_classes") if name in accepted and name not in kwargs
               and accepted[name].default is inspect.Parameter.empty]
    if missing:
        given = " and ".join(f"module__{name}=..." for name in missing)
        raise ValueError(
            f"{getattr(module, '__name__', module)} needs {', '.join(missing)}, which fit takes from "
            f"the data. To initialise without fitting, pass {given}, or load a saved student "
            "with DistillationClassifier.load_student(path, module=...)."
        )
