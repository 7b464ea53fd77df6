"""Input checks for ``DistillationClassifier``: features, books, labels and options.

Functions, not methods: each takes the estimator only where scikit-learn's
``validate_data`` needs it (to set and check ``n_features_in_``) and returns
what it checked. The classifier stores the results.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse
import torch
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _assert_all_finite,
    check_consistent_length,
    column_or_1d,
    validate_data,
)
from torch.utils.data import Dataset

from skd.book import BOOK_LOGITS, BOOK_X, features_of, is_book, make_book

__all__ = ["validate_X", "validate_labels", "check_options", "data_dims", "with_data_dims", "Labels",
           "check_module_dims", "check_loss_numbers"]


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
    X = validate_data(estimator, X, reset=reset, dtype=np.float32, allow_nd=True,
                      accept_sparse="csr")
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
                "{'X': features, 'teacher_logits': logits of shape (n_samples, n_classes)}."
            )
        features = validate_features(estimator, X[BOOK_X], reset)
        if BOOK_LOGITS not in X:
            return features
        return make_book(features, X[BOOK_LOGITS])
    return validate_features(estimator, X, reset)


class Labels(NamedTuple):
    """Checked labels: the user's values, their encoding, and the encoder."""

    raw: np.ndarray | None
    encoded: np.ndarray | None
    encoder: LabelEncoder


def validate_labels(y, X, known_classes, encoder: LabelEncoder | None, name: str) -> Labels:
    """Check ``y`` against ``X`` and encode it.

    Parameters
    ----------
    y : array-like or None
    X : validated features, book or Dataset
    known_classes : array-like or None
        ``classes=`` from the user, if any (used to fit a new encoder).
    encoder : LabelEncoder or None
        The fitted encoder of an earlier fit; None fits a new one.
    name : str
        The estimator's class name, for messages.
    """
    if y is None and isinstance(X, Dataset):
        if encoder is None:
            if known_classes is None:
                raise ValueError(
                    f"{name} requires y or classes= when X is a torch Dataset and y is None; "
                    "the Dataset must yield labels as indices 0..n_classes-1 into classes."
                )
            encoder = LabelEncoder().fit(np.asarray(known_classes))
        return Labels(None, None, encoder)
    if y is None:
        raise ValueError(f"{name} requires y to be passed, but the target y is None.")
    y = column_or_1d(y, warn=True)
    if y.dtype.kind in "fc":
        _assert_all_finite(y, input_name="y")
    check_classification_targets(y)
    if not isinstance(X, Dataset):
        check_consistent_length(features_of(X), y)
    if encoder is None:
        encoder = LabelEncoder().fit(y if known_classes is None else np.asarray(known_classes))
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"y contains only one class ({encoder.classes_[0]!r}); a classifier "
                "needs at least 2 classes."
            )
    try:
        return Labels(y, encoder.transform(y).astype(np.int64), encoder)
    except ValueError:
        unseen = sorted(set(np.unique(y).tolist()) - set(encoder.classes_.tolist()))
        raise ValueError(
            f"y contains labels {unseen} not seen in the first fit (classes_ = "
            f"{encoder.classes_.tolist()}); pass classes= to partial_fit on the first call."
        ) from None


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


_CHOICES = {
    "on_nonfinite": ("raise", "skip"),
    "teacher_cache": ("auto", True, False),
    "batching": ("auto", "loader"),
    "step_mode": ("auto", "eager", "graph"),
    "record_batches": ("auto", True, False),
    "precision": ("32", "bf16"),
    "teacher_other": ("drop", "bucket"),
}


def check_options(estimator, X) -> None:
    """Check the estimator's options before any work is done."""
    for name, choices in _CHOICES.items():
        value = getattr(estimator, name)
        if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
            *head, last = map(repr, choices)
            raise ValueError(f"{name} must be {', '.join(head)} or {last}, got {value!r}.")
    every = estimator.nonfinite_check_every
    if every != "auto" and (isinstance(every, bool) or not isinstance(every, (int, np.integer))
                            or every < 1):
        raise ValueError(
            f"nonfinite_check_every must be 'auto' or an int >= 1, got {every!r}."
        )
    augment, mode = estimator.augment, estimator.augment_mode
    if augment is None:
        return
    if not callable(augment):
        raise TypeError(f"augment must be a callable (X_batch, y_batch) -> X_batch, got {augment!r}.")
    if mode not in ("add", "replace"):
        raise ValueError(f"augment_mode must be 'add' or 'replace', got {mode!r}.")
    if estimator.teacher_cache is True and mode == "replace":
        raise ValueError(
            "teacher_cache=True cannot be combined with augment_mode='replace': the teacher "
            "must see each augmented batch and no clean one. Use teacher_cache='auto'."
        )
    if is_book(X):
        raise ValueError(
            "augment needs a teacher to label augmented batches, but X is a book; pass "
            "the features and teacher=... instead."
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


def check_loss_numbers(loss) -> None:
    """Refuse a text value for a loss parameter whose default is a number (``loss__temperature="4"``)."""
    try:
        defaults = inspect.signature(type(loss).__init__).parameters
    except (TypeError, ValueError):
        return
    for name, value in loss.get_params().items():
        default = defaults[name].default if name in defaults else None
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and isinstance(value, (str, bytes)):
            raise TypeError(
                f"loss__{name} must be a number, got the {type(value).__name__} {value!r}; "
                f"write loss__{name}={default!r}-like numbers without quotes."
            )
