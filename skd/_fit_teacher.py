"""Which teacher a fit uses, and whether it writes a book.

The classifier's ``teacher`` parameter (with ``teacher__*`` settings), the
loss's needs (none, a teacher, or self-teaching) and the data decide; the
result is a set-up :class:`skd.teachers.Teacher` or None. Also the checks
around it: the teacher's score on the book, a probe of an online teacher on
unlabelled rows, and whether the student ended far below its teacher.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils import _safe_indexing
from skorch.utils import to_numpy
from torch.utils.data import Dataset

from skd.book import (
    BOOK_LOGITS,
    BOOK_X,
    book_predictions,
    compress_book,
    compress_chunks,
    features_of,
    is_book,
    is_compressed_book,
)
from skd.book.cache import book_key
from skd.hints import HintPlan, hinted_book, plan_hints
from skd.labels import Labels, labelled_rows, other_label
from skd.teachers import Teacher, TeacherScoreWarning, TorchTeacher, as_teacher

__all__ = ["UnderTrainedWarning", "book_for", "chance_level", "chosen_teacher", "probe_teacher", "score_book",
           "self_teacher", "setup_teacher", "warn_if_undertrained", "writes_book"]


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


def setup_teacher(teacher: Any, X, y, classes, device, original=None, bucket: bool = False) -> Teacher:
    """The set-up adapter of ``teacher`` for a fit on ``(X, y)``.

    Parameters
    ----------
    teacher : object
        Any accepted kind of teacher (see :func:`skd.teachers.as_teacher`).
    X, y, classes, device
        The labelled training rows (to fit an unfitted teacher), the
        student's ``classes_`` and device.
    original : array-like, DataFrame or None
        ``X`` as the user gave it, for scikit-learn teachers.
    bucket : bool, default=False
        ``teacher_other="bucket"``: the student's "other" class gets the
        log-sum-exp of the teacher's classes outside ``classes``.
    """
    other = other_label(classes) if bucket else None
    return as_teacher(teacher).setup(X, y, classes, device, original=original, other=other)


def chance_level(y_encoded) -> float:
    """The accuracy of always predicting the most frequent class."""
    y_encoded = np.asarray(y_encoded)
    return float(np.bincount(y_encoded).max() / len(y_encoded)) if len(y_encoded) else 0.0


def self_teacher(net, X, y_raw) -> TorchTeacher:
    """Tf-KD self: a first fit of ``net``'s student with CE alone, as a torch teacher."""
    params = {key: value for key, value in net.get_params(deep=False).items()
              if not key.startswith("loss__")}
    params.update(loss="ce", teacher=None)
    return TorchTeacher(type(net)(**params).fit(X, y_raw).module_)


def score_book(book, y_encoded, teacher: Teacher | None, verbose: int) -> float | None:
    """The teacher's accuracy on the training rows of a book; warn when it is near chance.

    None when ``book`` is not a book (the teacher runs online). With
    ``verbose`` it is printed, with the teacher and whether the fit fitted it.

    The rule: warn when the accuracy is below half-way between chance (the
    share of the most frequent class) and 1, e.g. below 0.55 for ten balanced
    classes, 0.75 for two. A teacher labels the rows it is distilled on, which
    are usually its own training rows or rows like them, so it should do much
    better; near chance it was most likely given other features than it was
    trained on (a prefit teacher after a scaler in a Pipeline).
    """
    if not is_book(book):
        return None
    teacher_name = teacher.describe() if teacher is not None else "the book's teacher"
    if getattr(teacher, "fitted_in_setup_", False):
        teacher_name += ", fitted in this fit"
    labelled = labelled_rows(y_encoded)  # unlabelled rows have nothing to score
    if not labelled.any():
        return None
    score = float(np.mean(book_predictions(book)[labelled] == np.asarray(y_encoded)[labelled]))
    chance = chance_level(np.asarray(y_encoded)[labelled])
    if verbose:
        print(f"teacher accuracy on the training rows: {score:.3f} ({teacher_name}; chance {chance:.3f})")
    if score < (chance + 1.0) / 2:
        warnings.warn(
            f"The teacher ({teacher_name}) scores {score:.3f} on the training rows it labels "
            f"(teacher_score_), near chance ({chance:.3f}); the student would learn from "
            "poor logits. Was it trained on other features than it is given here, e.g. a "
            "prefit teacher after a scaler in a Pipeline? Put WriteBook(teacher) "
            "first in the pipeline and wrap later feature steps in "
            "skd.OnFeatures (see the Pipelines docs).",
            TeacherScoreWarning,
            stacklevel=3,
        )
    return score


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


def book_for(net, X, labels: Labels, teacher: Teacher | None, cache, loss, original
             ) -> tuple[Any, HintPlan | None]:
    """The fit's book and hint plan: ``X`` with the teacher's logits (and, for ``hints``, its
    hooked layers' outputs) written once, or ``X`` itself for an online teacher.

    For a loss that reads a compressed book (``accepts_compressed_book``) a
    full book, written here or given, is compressed to the loss's top-``k``
    classes and tail at its temperature (:func:`compressed`); written here
    without ``book_dir`` or hint layers, it is compressed batch by batch as
    the teacher runs.

    Parameters
    ----------
    net : DistillationClassifier
        Its ``book``, ``augment``, ``augment_mode``, ``unlabelled``, ``hints`` and ``hint_book``.
    X : checked features or book
    labels : Labels
    teacher : Teacher or None
        The set-up teacher (None when X is a book or the loss needs none).
    cache : Path or None
        ``book_dir``.
    loss : DistillationLoss
        The fit's loss (a hint's term may not take its terms' names).
    original : object
        X as the user gave it.
    """
    writes = teacher is not None and writes_book(net.book, net.augment, net.augment_mode, X)
    hints = plan_hints(net.hints, loss.terms, teacher, X, writes, net.hint_book, net.augment,
                       net.augment_mode)
    if not writes:
        if teacher is not None:
            probe_teacher(teacher, X, labels.encoded, net.unlabelled)
        return compressed(X, loss), hints
    if loss.accepts_compressed_book and cache is None and (hints is None or not hints.book_layers):
        # compressed batch by batch as the teacher writes: the full logits never exist whole
        chunks = teacher.logit_chunks(X, original=original)
        return {BOOK_X: X, **compress_chunks(chunks, *_book_form(loss, len(labels.encoder.classes_)))}, hints
    key = book_key(X, labels.raw, teacher, original=original) if cache is not None else None
    return compressed(hinted_book(X, teacher, cache, key, original, hints), loss), hints


def _book_form(loss, n_classes: int) -> tuple[int, float]:
    """``(k, temperature)`` of the compressed book a loss reads: its ``k`` classes (at most C) at its
    ``temperature``, where its buckets are exact (see :func:`skd.book.compress_book`)."""
    return min(int(loss.k), n_classes), float(loss.temperature)


def compressed(book, loss):
    """``book`` compressed for a loss that reads a compressed book (:func:`_book_form`); else ``book``."""
    if not loss.accepts_compressed_book or not is_book(book) or is_compressed_book(book):
        return book
    return compress_book(book, *_book_form(loss, np.shape(book[BOOK_LOGITS])[1]))


class UnderTrainedWarning(UserWarning):
    """The student ended training far below its teacher on the rows it was trained on."""


def _take_rows(data, rows: np.ndarray):
    """Rows ``rows`` (positions) of an array, sparse matrix, DataFrame, tensor or dict of them."""
    if isinstance(data, Mapping):
        return {key: _take_rows(value, rows) for key, value in data.items()}
    if isinstance(data, torch.Tensor):
        return data[torch.from_numpy(rows)]
    return _safe_indexing(data, rows)


#: Labelled rows the student's training accuracy is measured on after a fit (at most).
UNDERTRAINED_ROWS = 2048


def warn_if_undertrained(net, book, y_encoded) -> float | None:
    """Warn when the student's training accuracy is below half-way from chance to the teacher's.

    Measured on up to :data:`UNDERTRAINED_ROWS` labelled rows of the book,
    evenly spaced (one prediction pass of a fixed size, whatever the data's:
    enough to tell an accuracy near chance from one near the teacher's), only
    when the fit wrote one (``teacher_score_`` is known) and the teacher
    itself is well above chance (else :func:`score_book` has warned about
    the teacher). Returns the student's training accuracy, or None when it
    was not measured.
    """
    teacher_score = getattr(net, "teacher_score_", None)
    if teacher_score is None or not is_book(book):
        return None
    labelled = labelled_rows(y_encoded)
    features = book[BOOK_X]
    rows = np.flatnonzero(labelled)
    if len(rows) > UNDERTRAINED_ROWS:
        rows = rows[np.linspace(0, len(rows) - 1, UNDERTRAINED_ROWS).astype(np.int64)]
    # the module's outputs on the checked rows (predict_proba would check them again, and warn
    # that an ndarray has no feature names after a fit on a DataFrame)
    checked = _take_rows(features, rows) if len(rows) < len(labelled) else features
    logits = net.forward(checked, training=False)
    student = float((to_numpy(logits).argmax(axis=1) == np.asarray(y_encoded)[rows]).mean())
    chance = chance_level(np.asarray(y_encoded)[rows])
    if teacher_score < (chance + 1.0) / 2:
        return student  # a teacher near chance has had its own warning; the student is not the issue
    if student < (chance + teacher_score) / 2:
        warnings.warn(
            f"The student scores {student:.3f} on its training rows, far below its teacher "
            f"({teacher_score:.3f}; chance {chance:.3f}): it is under-trained. Train longer "
            f"(max_epochs={net.max_epochs}), raise the learning rate (lr={net.lr}), use an "
            "adaptive optimizer (optimizer=torch.optim.Adam, the default), standardise raw "
            "features (e.g. StandardScaler in a Pipeline), or use a larger student.",
            UnderTrainedWarning, stacklevel=3,
        )
    return student


#: Unlabelled rows the teacher is asked about before an online fit.
PROBE_ROWS = 256


def probe_teacher(teacher, X, y_encoded, marker) -> None:
    """Ask an online teacher about the first unlabelled rows before training starts.

    With ``book="online"`` nothing else runs the teacher on the
    unlabelled rows before the epochs, and a teacher that cannot answer for
    them would fail mid-fit; this fails first, naming the cause.
    """
    if y_encoded is None or isinstance(X, Dataset) or labelled_rows(y_encoded).all():
        return
    rows = np.flatnonzero(~labelled_rows(y_encoded))[:PROBE_ROWS]
    try:
        teacher.book_logits(features_of(X)[rows])
    except Exception as error:
        raise ValueError(
            f"The teacher ({teacher.describe()}) failed on the unlabelled rows of y "
            f"({marker!r}, first at row {rows[0]}): {error} Unlabelled rows get the "
            "teacher's terms only, so the teacher must answer for them; check it on those "
            "rows, or drop them."
        ) from error


def forget_failed_fit(estimator) -> None:
    """Leave an estimator whose ``fit`` raised unfitted, not half-fitted."""
    estimator.initialized_ = False
    for name in ("classes_inferred_", "label_encoder_", "teacher_", "data_dims_"):
        estimator.__dict__.pop(name, None)
