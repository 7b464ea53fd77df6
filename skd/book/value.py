"""The book as a value: a teacher's knowledge of the training rows, written once.

A :class:`Book` holds the features, the teacher's logits **or** their
compressed form (top-k classes and a tail, :mod:`skd.book.compressed`), and,
for hints, the teacher's outputs at hooked layers. It is frozen: a change
(new features, compression) makes a new book. It becomes skorch's dict X
(:meth:`Book.as_dict`, ``{"X": features, "teacher_logits": logits, ...}``)
only at skorch's edge, where skorch's splitting and batching carry it
untouched; :meth:`Book.of` reads such a dict (a user's book, a batch) back.

The keys and the recognisers of the dict form live here too: training
batches are skorch's dicts, read with :func:`is_book`, :func:`features_of`
and :data:`BOOK_LOGITS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse
import torch

from skd.book.compressed import (
    BOOK_TOPK_INDEX,
    COMPRESSED_KEYS,
    compress_chunks,
    is_compressed_book,
)
from skd.book.rows import as_numpy, n_rows

__all__ = ["BOOK_FEATURES", "BOOK_LOGITS", "BOOK_X", "Book", "feature_key", "features_of", "is_book",
           "teacher_features_of"]

#: Key of a book's features.
BOOK_X = "X"
#: Key of a book's teacher logits, shape (n_samples, n_classes).
BOOK_LOGITS = "teacher_logits"
#: Prefix of the keys of a teacher's hooked layer outputs, ``"teacher_features:<layer>"`` (hints).
BOOK_FEATURES = "teacher_features:"

#: Rows compressed at a time by :meth:`Book.compressed` (bounds its working memory).
_COMPRESS_ROWS = 8192


def is_book(X: Any) -> bool:
    """Whether ``X`` is a book: a mapping with ``"teacher_logits"``, or a compressed book."""
    full = isinstance(X, Mapping) and not scipy.sparse.issparse(X) and BOOK_LOGITS in X
    return full or is_compressed_book(X)


def features_of(X: Any) -> Any:
    """The features of ``X``: ``X["X"]`` for a book (or a dict with ``"X"``), else ``X``."""
    if isinstance(X, Book):
        return X.features
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


@dataclass(frozen=True)
class Book:
    """A teacher's knowledge of the training rows, written once: the value skd passes around.

    Parameters
    ----------
    features : array-like, DataFrame, Tensor or sparse matrix
        The rows, as the student (or the next pipeline step) takes them.
    logits : ndarray of shape (n_samples, n_classes) or None
        The teacher's logits, aligned to ``classes_``; None for a compressed book.
    topk : dict or None
        The compressed form instead (:data:`~skd.book.compressed.COMPRESSED_KEYS`
        to arrays): per row the teacher's top-k log-probabilities, their
        classes, the tail's log-mass and the temperature.
    teacher_features : dict of str to ndarray
        For hints: the teacher's outputs at each hooked layer, one row per sample.

    Views (several augmented copies per row) will be a further field.
    """

    features: Any
    logits: np.ndarray | None = None
    topk: Mapping[str, np.ndarray] | None = None
    teacher_features: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        if (self.logits is None) == (self.topk is None):
            raise ValueError("A Book holds the teacher's logits or their compressed form (topk): one.")

    @classmethod
    def of(cls, X: Mapping) -> Book:
        """The book held by skorch's dict form ``X`` (full or compressed); an error if it holds both."""
        if BOOK_LOGITS in X and is_compressed_book(X):
            raise ValueError(f"X has both {BOOK_LOGITS!r} (a full book) and the keys of a compressed book; "
                             "pass one form: drop the compressed keys, or 'teacher_logits'.")
        topk = {key: X[key] for key in COMPRESSED_KEYS if key in X} if is_compressed_book(X) else None
        logits = None if topk is not None else X[BOOK_LOGITS]
        return cls(features_of(X), logits, topk, teacher_features_of(X))

    @property
    def is_compressed(self) -> bool:
        """Whether the book holds the compressed form."""
        return self.topk is not None

    @property
    def n_rows(self) -> int:
        """The number of rows."""
        return n_rows(self.features)

    def as_dict(self) -> dict:
        """skorch's dict X: ``{"X": features, "teacher_logits": logits}`` (or the compressed keys),
        with ``"teacher_features:<layer>"`` for each hooked layer."""
        teacher = {BOOK_LOGITS: self.logits} if self.topk is None else dict(self.topk)
        layers = {feature_key(layer): value for layer, value in self.teacher_features.items()}
        return {BOOK_X: self.features, **teacher, **layers}

    def with_features(self, features: Any) -> Book:
        """This book with other features (the same rows, transformed): the teacher's part is kept."""
        return replace(self, features=features)

    def compressed(self, k: int, temperature: float = 1.0) -> Book:
        """This book with its logits compressed to the top-``k`` classes and a tail at ``temperature``
        (:func:`~skd.book.compressed.compress_chunks`); a compressed book is returned as it is."""
        if self.topk is not None:
            return self
        logits = torch.as_tensor(as_numpy(self.logits))
        return replace(self, logits=None, topk=compress_chunks(logits.split(_COMPRESS_ROWS), k, temperature))

    def predictions(self) -> np.ndarray:
        """The teacher's predicted class (index into ``classes_``) per row."""
        if self.topk is not None:
            return as_numpy(self.topk[BOOK_TOPK_INDEX])[:, 0].astype(np.int64)
        return as_numpy(self.logits).argmax(axis=1)

    def score(self, y_encoded: Any) -> float:
        """The teacher's accuracy on the rows: the share whose top class is the label.

        ``y_encoded`` are indices into ``classes_``; every row is counted.
        """
        return float(np.mean(self.predictions() == np.asarray(y_encoded)))
