"""The book: a teacher's knowledge of the training rows, written once per sample.

- :mod:`skd.book.value`: :class:`Book`, the typed value (features, logits or
  their compressed form, the hints' teacher features), and skorch's dict form
  at skorch's edge (``{"X": features, "teacher_logits": logits}``, with its
  keys and recognisers);
- :mod:`skd.book.writing`: :func:`write_book`, the one writer (a fit, ``WriteBook``,
  ``PrunedTeacher`` and the hints' features all go through it);
- :mod:`skd.book.compressed`: the compressed form (top-k classes and a tail);
- :mod:`skd.book.checks`: a user's book checked against the data and the loss;
- :mod:`skd.book.cache`: books on disk (``book_dir``);
- :mod:`skd.book.rows`: counting, taking and slicing rows of any supported X.

The book imports neither teachers nor hints: it is written from a set-up
teacher it is handed (duck-typed), so both can use it.
"""

from __future__ import annotations

from collections.abc import Mapping

from skd.book.checks import check_book
from skd.book.compressed import compress_chunks, is_compressed_book
from skd.book.value import (
    BOOK_FEATURES,
    BOOK_LOGITS,
    BOOK_X,
    Book,
    feature_key,
    features_of,
    is_book,
    teacher_features_of,
)
from skd.book.writing import write_book

__all__ = ["BOOK_X", "BOOK_LOGITS", "BOOK_FEATURES", "Book", "is_book", "is_compressed_book", "features_of",
           "check_book", "compress_book", "compress_chunks", "feature_key",
           "teacher_features_of", "write_book"]


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
        In ``(0, 1000]``, the losses' bounds (:data:`skd.losses.base.MAX_TEMPERATURE`).

    Returns
    -------
    dict
        The compressed book (numpy arrays).
    """
    return Book.of(book).compressed(k, temperature).as_dict()
