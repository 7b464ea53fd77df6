"""The book: a teacher's logits written once per training sample.

A book is a mapping ``{"X": features, "teacher_logits": logits}``. It is
skorch's own dict-X convention, so skorch's splitting and batching carry it
untouched, and :class:`skorch.helper.SliceDict` makes it sliceable for
scikit-learn. This module owns the keys, the recognisers and the checks; the
classifier writes books, :class:`skd.teachers.PrunedTeacher` writes them as
a pipeline step, and the training step reads them. A compressed book (the
teacher's top-k classes and a tail, for many classes) is
:mod:`skd.book.compressed`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse
import torch

from skd.book._arrays import as_numpy, n_rows
from skd.book.compressed import (
    BOOK_TAIL,
    COMPRESSED_KEYS,
    check_compressed_book,
    check_loss_takes,
    compress_chunks,
    is_compressed_book,
    topk_predictions,
)

__all__ = ["BOOK_X", "BOOK_LOGITS", "BOOK_FEATURES", "is_book", "features_of", "make_book", "with_features",
           "check_book", "check_book_logits", "book_predictions", "book_score", "compress_book",
           "compress_chunks", "feature_key", "teacher_features_of"]

#: Key of a book's features.
BOOK_X = "X"
#: Key of a book's teacher logits, shape (n_samples, n_classes).
BOOK_LOGITS = "teacher_logits"
#: Prefix of the keys of a teacher's hooked layer outputs, ``"teacher_features:<layer>"`` (hints).
BOOK_FEATURES = "teacher_features:"


def is_book(X: Any) -> bool:
    """Whether ``X`` is a book: a mapping with ``"X"`` and ``"teacher_logits"``, or a compressed book."""
    full = isinstance(X, Mapping) and not scipy.sparse.issparse(X) and BOOK_LOGITS in X
    return full or is_compressed_book(X)


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


def with_features(book: Mapping, features: Any) -> dict:
    """``book``'s teacher keys (logits or compressed form, hint features) with ``features`` as ``"X"``.

    Keys that are not a book's are dropped.
    """
    teacher_keys = (BOOK_LOGITS, *COMPRESSED_KEYS)
    kept = {key: value for key, value in book.items()
            if key in teacher_keys or (isinstance(key, str) and key.startswith(BOOK_FEATURES))}
    return {BOOK_X: features, **kept}


#: Rows compressed at a time by :func:`compress_book` (bounds its working memory).
_COMPRESS_ROWS = 8192


def compress_book(book: Mapping, k: int, temperature: float = 1.0) -> dict:
    """A compressed book from a full one: the top-``k`` classes and the tail, at ``temperature``.

    Write it at the temperature the loss will use: its buckets are exact
    there (see :func:`skd.losses.functional.topk_kd_divergence`). The other
    keys of ``book`` (``"X"``, hint features) are kept; ``"teacher_logits"``
    is dropped. The form is :mod:`skd.book.compressed`'s.

    Parameters
    ----------
    book : mapping
        ``{"X": X, "teacher_logits": logits of shape (n_samples, n_classes)}``.
    k : int
        Classes kept per row, ``1 <= k <= n_classes``.
    temperature : float, default=1.0

    Returns
    -------
    dict
        The compressed book (numpy arrays).
    """
    logits = torch.as_tensor(as_numpy(book[BOOK_LOGITS]))
    compressed = {key: value for key, value in book.items() if key != BOOK_LOGITS}
    compressed.update(compress_chunks(logits.split(_COMPRESS_ROWS), k, temperature))
    return compressed


def check_book(book: Mapping, n_classes: int, loss: Any = None) -> dict:
    """Check a user's book, full or compressed, against the data, the classes and ``loss``.

    Returns it with float32 values (and compact indices); a compressed book
    for a loss that needs full logits is refused
    (:func:`~skd.book.compressed.check_loss_takes`).
    """
    if not is_compressed_book(book):
        return check_book_logits(book, n_classes)
    if BOOK_LOGITS in book:
        raise ValueError(f"X has both {BOOK_LOGITS!r} (a full book) and the keys of a compressed book; "
                         "pass one form: drop the compressed keys, or 'teacher_logits'.")
    check_loss_takes(book, loss)
    checked = check_compressed_book(book, n_rows(book[BOOK_X]), n_classes)
    _check_feature_rows(book, len(checked[BOOK_TAIL]))
    return checked


def _check_feature_rows(book: Mapping, n_rows: int) -> None:
    for layer, outputs in teacher_features_of(book).items():
        if len(outputs) != n_rows:
            raise ValueError(
                f"X[{feature_key(layer)!r}] has {len(outputs)} rows, expected {n_rows} (one per "
                "row of X['X']). Was the book written for other data?"
            )


def check_book_logits(book: Mapping, n_classes: int) -> dict:
    """Check a user's book against the data and the classes; return it with float32 logits.

    Raises
    ------
    ValueError
        If the logits are not one finite row per sample and one column per class.
    """
    logits = as_numpy(book[BOOK_LOGITS])
    expected = (n_rows(book[BOOK_X]), n_classes)
    if logits.shape != expected:
        raise ValueError(
            f"X['teacher_logits'] has shape {logits.shape}, expected {expected} "
            "(one row per row of X['X'], one column per class in classes_ order). "
            "Was the book written for other data?"
        )
    if not np.issubdtype(logits.dtype, np.number) or not np.isfinite(logits).all():
        raise ValueError("X['teacher_logits'] must be finite numbers (no NaN or inf).")
    _check_feature_rows(book, expected[0])
    return make_book(book[BOOK_X], logits.astype(np.float32, copy=False), teacher_features_of(book))


def book_predictions(book: Mapping) -> np.ndarray:
    """The teacher's predicted class (index into ``classes_``) per row of a book, full or compressed."""
    if is_compressed_book(book):
        return topk_predictions(book)
    return as_numpy(book[BOOK_LOGITS]).argmax(axis=1)


def book_score(logits: Any, y_encoded: Any) -> float:
    """Accuracy of a book's logits: the share of rows whose largest logit is the label's column.

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
    y_encoded : array-like of shape (n_samples,)
        Labels as indices into ``classes_``.
    """
    return float(np.mean(as_numpy(logits).argmax(axis=1) == np.asarray(y_encoded)))
