"""Which teacher a fit uses, what it sees, and whether it writes a book.

The classifier's ``teacher`` parameter (with ``teacher__*`` settings), the
loss's needs (none, a teacher, or self-teaching) and the data decide; the
result is a set-up :class:`skd.teachers.Teacher` or None. The teacher sees X
as the user gave it (:func:`teacher_rows`: a DataFrame with its dtypes and
categoricals); only the student's features are converted to float32.
:func:`book_for` then has the book written once (:func:`skd.book.write_book`)
or leaves the teacher online.

This module sits in ``teachers`` rather than ``book`` because it plans the
hints (:mod:`skd.hints` reads books, so the book package stays below it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.base import clone
from skorch.helper import SliceDict
from torch.utils.data import Dataset

from skd._device import resolve_device
from skd.book import Book, is_book, write_book
from skd.book.cache import book_key
from skd.book.rows import as_rows, take_rows
from skd.hints import HintPlan, plan_hints
from skd.labels import Labels, labelled_rows, other_label
from skd.teachers.adapters import SklearnTeacher, TorchTeacher
from skd.teachers.base import Teacher
from skd.teachers.checks import check_teacher_not_at_chance, in_sample_score, probe_teacher
from skd.teachers.composite import as_teacher
from skd.teachers.out_of_fold import OutOfFoldTeacher, check_teacher_cv, uses_out_of_fold

__all__ = ["StepBook", "book_for", "chosen_teacher", "self_teacher", "setup_teacher", "step_book",
           "teacher_rows", "writes_book"]


def _with_params(teacher: Any, params: dict) -> Any:
    if not params:
        return teacher
    if not hasattr(teacher, "set_params"):
        raise ValueError(
            f"teacher__ parameters {sorted(params)} can only be set on a "
            f"scikit-learn or skorch teacher, not on {type(teacher).__name__}."
        )
    return clone(teacher).set_params(**params)


def chosen_teacher(teacher: Any, params: dict, loss_spec: Any) -> Any:
    """The classifier's ``teacher`` with its ``teacher__*`` settings; an error when there is none."""
    if teacher is None:
        raise ValueError(
            f"loss={loss_spec!r} needs a teacher: pass teacher=..., or pass X as a "
            "book {'X': X, 'teacher_logits': logits}; the losses 'ce' and "
            "'tfkd' (mode='reg') need none."
        )
    return _with_params(teacher, params)


def teacher_rows(X: Any, features: Any) -> Any:
    """The rows a fit's teacher sees: ``X`` as the user gave it, or the checked ``features``
    when X is a book or a torch Dataset (:func:`skd.book.rows.as_rows`)."""
    if is_book(X) or isinstance(X, (Dataset, dict)) or isinstance(features, Dataset):
        return features
    return as_rows(X)


def setup_teacher(teacher: Any, X, labels: Labels, device, bucket: bool = False) -> Teacher:
    """The set-up adapter of ``teacher`` for a fit; an unfitted one is fitted on the labelled rows.

    Parameters
    ----------
    teacher : object
        Any accepted kind of teacher (see :func:`skd.teachers.as_teacher`).
    X : array-like, DataFrame, sparse matrix, Tensor or Dataset
        The training rows as the teacher sees them (:func:`teacher_rows`).
    labels : Labels
        The fit's labels (the student's ``classes_``; unlabelled rows are left out of a fit).
    device : str or torch.device
    bucket : bool, default=False
        ``teacher_other="bucket"``: the student's "other" class gets the
        log-sum-exp of the teacher's classes outside ``classes``.
    """
    classes = labels.encoder.classes_
    X_fit, y_fit = X, labels.raw
    if labels.encoded is not None and not isinstance(X, Dataset) and not labelled_rows(labels.encoded).all():
        rows = np.flatnonzero(labelled_rows(labels.encoded))
        X_fit, y_fit = take_rows(X, rows), labels.raw[rows]
    other = other_label(classes) if bucket else None
    return as_teacher(teacher).setup(X_fit, y_fit, classes, device, other=other)


def self_teacher(net, X, y_raw) -> TorchTeacher:
    """Tf-KD self: a first fit of ``net``'s student with CE alone, as a torch teacher."""
    params = {key: value for key, value in net.get_params(deep=False).items()
              if not key.startswith("loss__")}
    params.update(loss="ce", teacher=None)
    return TorchTeacher(type(net)(**params).fit(X, y_raw).module_)


def writes_book(book: str, augment, augment_mode: str, X) -> bool:
    """Whether the teacher's logits are written once before the first epoch (``book``).

    With augmentation the augmented batches are labelled online; in ``"add"``
    mode the clean batches still read their logits from the book.
    """
    if book == "online" or (augment is not None and augment_mode == "replace"):
        return False
    if isinstance(X, Dataset):
        if book == "memory":
            raise ValueError(
                "book='memory' needs in-memory X (array, tensor or DataFrame); a "
                "torch Dataset is read online. Use book='auto' or 'online'."
            )
        return False
    return True


def _book_form(loss, n_classes: int) -> tuple[int, float]:
    """``(k, temperature)`` of the compressed book a loss reads: its ``k`` classes (at most C) at its
    ``temperature``, where its buckets are exact (see :func:`skd.book.compress_book`)."""
    return min(int(loss.k), n_classes), float(loss.temperature)


def book_for(net, X, labels: Labels, teacher: Teacher | None, cache, loss, original
             ) -> tuple[Any, HintPlan | None]:
    """The fit's book and hint plan: ``X`` with the teacher's logits (and, for ``hints``, its
    hooked layers' outputs) written once, or ``X`` itself for an online teacher.

    For a loss that reads a compressed book (``capabilities.compressed_book``) the
    book is written compressed to the loss's top-``k`` classes and tail at its
    temperature. A teacher that knows its classes and scores no better than
    chance on the rows it labels is refused here, before the estimator changes
    (:func:`skd.teachers.checks.check_teacher_not_at_chance`).

    Parameters
    ----------
    net : DistillationClassifier
        Its ``book``, ``augment``, ``augment_mode``, ``unlabelled``, ``hints`` and ``hint_book``.
    X : checked features or book
        What the student trains on.
    labels : Labels
    teacher : Teacher or None
        The set-up teacher (None when X is a book or the loss needs none).
    cache : Path or None
        ``book_dir``.
    loss : DistillationLoss
        The fit's loss (a hint's term may not take its terms' names).
    original : object
        X as the user gave it: what the teacher sees.

    Returns
    -------
    book : dict or X
        skorch's dict form of the :class:`~skd.book.Book` (skorch's edge), or
        ``X`` itself for an online teacher or a book given as X.
    hints : HintPlan or None
    """
    writes = teacher is not None and writes_book(net.book, net.augment, net.augment_mode, X)
    hints = plan_hints(net.hints, loss.terms, teacher, X, writes, net.hint_book, net.augment,
                       net.augment_mode)
    rows = teacher_rows(original, X)
    if not writes:
        if teacher is not None:
            probe_teacher(teacher, rows, labels.encoded, net.unlabelled)
        if loss.capabilities.compressed_book and is_book(X):  # a full book given as X, for a top-k loss
            return Book.of(X).compressed(*_book_form(loss, len(labels.encoder.classes_))).as_dict(), hints
        return X, hints
    topk = _book_form(loss, len(labels.encoder.classes_)) if loss.capabilities.compressed_book else None
    writer, in_sample = _book_writer(teacher, rows, labels, getattr(net, "teacher_cv", None))
    key = book_key(rows, labels.raw, writer) if cache is not None else None
    book = write_book(writer, rows, features=X, layers=hints.book_layers if hints is not None else (),
                      topk=topk, cache=cache, key=key)
    check_teacher_not_at_chance(book, labels.encoded, teacher, measured=in_sample)
    return book.as_dict(), hints


def _book_writer(teacher: Teacher, rows, labels: Labels, teacher_cv) -> tuple[Any, Any]:
    """Who writes the book on the training rows, and the all-rows teacher's score there.

    ``teacher`` itself (in-sample; the score is the book's), or, for an
    unfitted scikit-learn teacher with ``teacher_cv`` set, an
    :class:`~skd.teachers.out_of_fold.OutOfFoldTeacher`; the all-rows
    teacher's accuracy on the labelled rows is then kept on the adapter
    (``in_sample_score_``) for ``teacher_score_`` and the at-chance check.
    """
    if isinstance(teacher, SklearnTeacher):
        teacher.in_sample_score_ = None  # an adapter the user handed over may be reused
    if not uses_out_of_fold(teacher, teacher_cv):
        return teacher, None
    labelled = (np.ones(len(labels.raw), dtype=bool) if labels.encoded is None
                else labelled_rows(labels.encoded))
    cv = check_teacher_cv(teacher_cv, labels.raw[labelled])
    teacher.in_sample_score_ = in_sample_score(teacher, rows, labels.encoded)
    return OutOfFoldTeacher(teacher, rows, labels, cv), teacher.in_sample_score_


class StepBook(NamedTuple):
    """A pipeline step's book (skorch's sliceable dict), its columns' labels and the teacher's score."""

    book: SliceDict
    classes: np.ndarray
    score: float


def step_book(teacher: Any, X, y, device: str = "auto", hint_layers=None,
              topk: tuple[int, float] | None = None) -> StepBook:
    """The book a pipeline step writes (:class:`skd.pipeline.WriteBook`, ``PrunedTeacher.fit_transform``).

    The teacher (any accepted kind; an unfitted scikit-learn one is fitted on
    ``(X, y)``) sees ``X`` exactly as given, a DataFrame with its dtypes and
    categoricals, and the book keeps it as its features for the next step
    (e.g. :class:`skd.OnFeatures` with a ``ColumnTransformer``).

    Parameters
    ----------
    teacher : object
    X : array-like, DataFrame or sparse matrix of shape (n_samples, ...)
    y : array-like of shape (n_samples,)
        Aligns the teacher's columns to the sorted labels.
    device : str, default="auto"
    hint_layers : sequence of str or None, default=None
        Teacher layers whose outputs the same pass writes, for a classifier's ``hints``.
    topk : (k, temperature) or None, default=None
        Write the compressed form.

    Raises
    ------
    TeacherAtChanceError
        If the teacher, a classifier, scores no better than chance on ``(X, y)``.
    """
    if y is None:
        raise ValueError("Writing a book needs y, to align the teacher's columns to the sorted labels.")
    X, y = as_rows(X), np.asarray(y)
    classes = np.unique(y)
    adapter = as_teacher(teacher).setup(X, y, classes, resolve_device(device))
    book = write_book(adapter, X, layers=tuple(hint_layers or ()), topk=topk)
    encoded = np.searchsorted(classes, y)
    check_teacher_not_at_chance(book, encoded, adapter)
    return StepBook(SliceDict(**book.as_dict()), classes, book.score(encoded))
