"""Checks of a book a user passes as X (full or compressed) against the data, the classes and the loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from skd.book.compressed import (
    BOOK_TAIL,
    check_compressed_book,
    check_loss_k,
    check_loss_takes,
    is_compressed_book,
)
from skd.book.rows import as_numpy, n_rows
from skd.book.value import BOOK_LOGITS, BOOK_X, Book, feature_key, teacher_features_of

__all__ = ["check_book", "check_book_logits"]


def check_book(book: Mapping, n_classes: int, loss: Any = None) -> dict:
    """Check a user's book, full or compressed, against the data, the classes and ``loss``.

    Returns it with float32 values (and compact indices); a compressed book
    for a loss that needs full logits is refused
    (:func:`~skd.book.compressed.check_loss_takes`), and so is one whose
    ``k`` is not the loss's (:func:`~skd.book.compressed.check_loss_k`).
    """
    if not is_compressed_book(book):
        return check_book_logits(book, n_classes)
    Book.of(book)  # one form, not both
    check_loss_takes(book, loss)
    checked = check_compressed_book(book, n_rows(book[BOOK_X]), n_classes)
    check_loss_k(checked, loss, n_classes)
    _check_feature_rows(book, len(checked[BOOK_TAIL]))
    return checked


def _check_feature_rows(book: Mapping, rows: int) -> None:
    for layer, outputs in teacher_features_of(book).items():
        if len(outputs) != rows:
            raise ValueError(
                f"X[{feature_key(layer)!r}] has {len(outputs)} rows, expected {rows} (one per "
                "row of X['X']). Was the book written for other data?"
            )


def check_book_logits(book: Mapping, n_classes: int) -> dict:
    """Check a user's book against the data and the classes; return it with float32 logits.

    Raises
    ------
    ValueError
        If the logits are not one finite row of numbers per sample and one column per class.
    """
    logits = as_numpy(book[BOOK_LOGITS])
    expected = (n_rows(book[BOOK_X]), n_classes)
    if logits.shape != expected:
        raise ValueError(
            f"X['teacher_logits'] has shape {logits.shape}, expected {expected} "
            "(one row per row of X['X'], one column per class in classes_ order). "
            "Was the book written for other data?"
        )
    if logits.dtype == np.bool_:
        raise ValueError(
            "X['teacher_logits'] is boolean (a one-hot of the teacher's classes?); a book holds the "
            "teacher's logits as float numbers, e.g. teacher.decision_function(X) or "
            "np.log(teacher.predict_proba(X)). A one-hot has no soft knowledge to distil: for hard "
            "labels alone use loss='ce' with y."
        )
    if not np.issubdtype(logits.dtype, np.number) or not np.isfinite(logits).all():
        raise ValueError("X['teacher_logits'] must be finite numbers (no NaN or inf).")
    _check_feature_rows(book, expected[0])
    return Book(book[BOOK_X], logits.astype(np.float32, copy=False),
                teacher_features=teacher_features_of(book)).as_dict()
