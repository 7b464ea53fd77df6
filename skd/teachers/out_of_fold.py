"""Out-of-fold books: a teacher that skd fits labels its training rows from models that never saw them.

A forest or a boosted model fitted in ``fit`` and asked about its own
training rows hands the student near one-hot, overfitted targets. As
scikit-learn's ``StackingClassifier`` does for its final estimator, the book
on the labelled training rows then holds out-of-fold predictions
(``cross_val_predict`` with ``teacher_cv``, stratified for an int), while the
teacher fitted on all labelled rows labels the unlabelled rows, online and
augmented batches, and serves ``teacher_score_``. Only an unfitted
scikit-learn teacher (fitted in this fit) is concerned: a prefit
(``FrozenEstimator``), skorch, torch or composite teacher keeps its in-sample book.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import check_cv

from skd.book.rows import as_rows, n_rows, take_rows
from skd.labels import Labels, labelled_rows
from skd.teachers.adapters import SklearnTeacher
from skd.teachers.base import BOOK_BATCH_SIZE, Teacher

__all__ = ["OutOfFoldTeacher", "check_teacher_cv", "uses_out_of_fold"]


def check_teacher_cv(teacher_cv: Any, y) -> Any:
    """``teacher_cv`` as a splitter (``sklearn.model_selection.check_cv``, stratified for an int).

    Raises
    ------
    ValueError
        If ``teacher_cv`` is not an int >= 2 or a splitter (``split`` and ``get_n_splits``).
    """
    valid = (isinstance(teacher_cv, Integral) and not isinstance(teacher_cv, bool) and teacher_cv >= 2) or (
        hasattr(teacher_cv, "split") and hasattr(teacher_cv, "get_n_splits"))
    if not valid:
        raise ValueError(
            f"teacher_cv={teacher_cv!r} is not a cross-validation: give an int >= 2 (stratified folds, "
            "as StackingClassifier), a splitter such as StratifiedKFold(5, shuffle=True, random_state=0), "
            "or None for the in-sample book (the teacher labels the rows it was fitted on)."
        )
    return check_cv(teacher_cv, y, classifier=True)


def uses_out_of_fold(teacher: Teacher | None, teacher_cv: Any) -> bool:
    """Whether the book of this fit is out-of-fold: ``teacher_cv`` is set and the teacher is a
    scikit-learn classifier that this fit fitted."""
    return (teacher_cv is not None and isinstance(teacher, SklearnTeacher)
            and bool(getattr(teacher, "fitted_in_setup_", False)))


class OutOfFoldTeacher:
    """What writes an out-of-fold book: the training rows' logits from cross-validated copies.

    It answers :func:`skd.book.write_book`'s questions (``logit_chunks``,
    ``outputs``, ``hooked_module``, ``describe``) for the training rows it
    was made with, and nothing else: the labelled rows get
    :meth:`SklearnTeacher.out_of_fold_logits`, the unlabelled ones the
    all-rows teacher's logits. They are computed when first asked (a cached
    book never runs the folds). Its cache token holds the all-rows teacher's
    and the splitter's, so an out-of-fold and an in-sample book never share a key.

    Parameters
    ----------
    teacher : SklearnTeacher
        Set up: fitted on the labelled rows of ``rows``.
    rows : array-like, DataFrame or sparse matrix
        The training rows as the teacher sees them.
    labels : Labels
        The fit's labels (unlabelled rows are left out of the folds).
    cv : splitter
        From :func:`check_teacher_cv`.
    """

    def __init__(self, teacher: SklearnTeacher, rows, labels: Labels, cv):
        self.teacher, self.rows, self.labels, self.cv = teacher, as_rows(rows), labels, cv
        self._logits: torch.Tensor | None = None

    def describe(self) -> str:
        return f"{self.teacher.describe()}, out-of-fold ({self.cv!r})"

    def hooked_module(self):
        return None

    def cache_token(self) -> tuple:
        return ("out-of-fold", repr(self.cv), self.cv, self.teacher.cache_token())

    def book_logits(self, X, batch_size: int = BOOK_BATCH_SIZE) -> np.ndarray:
        """The all-rows teacher's logits on any rows (the cache key's probe)."""
        return self.teacher.book_logits(X, batch_size)

    def logits(self) -> torch.Tensor:
        """The book's logits on the training rows, on the CPU; computed once."""
        if self._logits is None:
            labelled = (np.ones(n_rows(self.rows), dtype=bool) if self.labels.encoded is None
                        else labelled_rows(self.labels.encoded))
            if labelled.all():
                self._logits = self.teacher.out_of_fold_logits(self.rows, self.labels.raw, self.cv).cpu()
            else:
                logits = torch.as_tensor(self.teacher.book_logits(self.rows))
                inside = np.flatnonzero(labelled)
                logits[torch.as_tensor(inside)] = self.teacher.out_of_fold_logits(
                    take_rows(self.rows, inside), self.labels.raw[inside], self.cv).cpu()
                self._logits = logits
        return self._logits

    def _check_rows(self, X) -> None:
        if n_rows(X) != n_rows(self.rows):
            raise ValueError(
                f"An out-of-fold book is written for the {n_rows(self.rows)} training rows it was made "
                f"with, not for {n_rows(X)} other rows; use the all-rows teacher for other rows."
            )

    def logit_chunks(self, X, batch_size: int = BOOK_BATCH_SIZE):
        self._check_rows(X)
        logits = self.logits()
        for start in range(0, len(logits), batch_size):
            yield logits[start:start + batch_size]

    def outputs(self, X, layers, batch_size: int = BOOK_BATCH_SIZE) -> tuple[np.ndarray, dict]:
        self._check_rows(X)
        return self.logits().numpy(), {}
