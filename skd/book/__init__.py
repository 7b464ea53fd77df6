"""The book: a teacher's logits written once per training sample.

A book is a mapping ``{"X": features, "teacher_logits": logits}``. It is
skorch's own dict-X convention, so skorch's splitting and batching carry it
untouched, and :class:`skorch.helper.SliceDict` makes it sliceable for
scikit-learn. This module owns the keys, the recognisers and the checks; the
classifier writes books, :class:`skd.teachers.PrunedTeacher` writes them as
a pipeline step, and the training step reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse
import torch

__all__ = ["BOOK_X", "BOOK_LOGITS", "BOOK_FEATURES", "is_book", "features_of", "make_book",
           "check_book_logits", "book_score", "feature_key", "teacher_features_of"]

#: Key of a book's features.
BOOK_X = "X"
#: Key of a book's teacher logits, shape (n_samples, n_classes).
BOOK_LOGITS = "teacher_logits"
#: Prefix of the keys of a teacher's hooked layer outputs, ``"teacher_features:<layer>"`` (hints).
BOOK_FEATURES = "teacher_features:"


def is_book(X: Any) -> bool:
    """Whether ``X`` is a book: a mapping with ``"X"`` and ``"teacher_logits"``."""
    return isinstance(X, Mapping) and not scipy.sparse.issparse(X) and BOOK_LOGITS in X


def features_of(X: Any) -> Any:
    """The features of ``X``: ``X["X"]`` for a book (or a dict with ``"X"``), else ``X``."""
    if isinstance(X, Mapping) and not scipy.sparse.issparse(X) and BOOK_X in X:
        return X[BOOK_X]
    return X


def feature_key(layer: str) -> str:
    """The book key of the teacher's outputs at the layer named ``layer``."""
    return BOOK_FEATURES + layer


def teacher_features_of(book: Mapping) -> dict:
    """``{layer: outputs}`` of the teacher's layers written in ``book`` (empty if none)."""
    return {key[len(BOOK_FEATURES):]: value for key, value in book.items()
            if isinstance(key, str) and key.startswith(BOOK_FEATURES)}


def make_book(features: Any, logits: Any, teacher_features: Mapping | None = None) -> dict:
    """A book from features, aligned teacher logits and, for hints, ``{layer: outputs}``."""
    book = {BOOK_X: features, BOOK_LOGITS: logits}
    book.update({feature_key(layer): value for layer, value in (teacher_features or {}).items()})
    return book


def check_book_logits(book: Mapping, n_classes: int) -> dict:
    """Check a user's book against the data and the classes; return it with float32 logits.

    Raises
    ------
    ValueError
        If the logits are not one finite row per sample and one column per class.
    """
    logits = book[BOOK_LOGITS]
    logits = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    features = book[BOOK_X]
    expected = (features.shape[0] if hasattr(features, "shape") else len(features), n_classes)
    if logits.shape != expected:
        raise ValueError(
            f"X['teacher_logits'] has shape {logits.shape}, expected {expected} "
            "(one row per row of X['X'], one column per class in classes_ order). "
            "Was the book written for other data?"
        )
    if not np.issubdtype(logits.dtype, np.number) or not np.isfinite(logits).all():
        raise ValueError("X['teacher_logits'] must be finite numbers (no NaN or inf).")
    written = teacher_features_of(book)
    for layer, outputs in written.items():
        if len(outputs) != expected[0]:
            raise ValueError(
                f"X[{feature_key(layer)!r}] has {len(outputs)} rows, expected {expected[0]} (one per "
                "row of X['X']). Was the book written for other data?"
            )
    return make_book(book[BOOK_X], logits.astype(np.float32, copy=False), written)


def book_score(logits: Any, y_encoded: Any) -> float:
    """Accuracy of a book's logits: the share of rows whose largest logit is the label's column.

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
    y_encoded : array-like of shape (n_samples,)
        Labels as indices into ``classes_``.
    """
    logits = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    return float(np.mean(logits.argmax(axis=1) == np.asarray(y_encoded)))
