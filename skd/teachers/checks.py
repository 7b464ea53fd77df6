"""The checks around a fit's teacher: its score on the rows it labels, a probe of an online
teacher, and whether the student ended far below it.

At chance
---------
A teacher is **at chance** on the rows it labels when its accuracy there is
not above the share of the most frequent class by more than a margin:
``score <= chance + max(0.02, 2 * sqrt(chance * (1 - chance) / n))`` over the
``n`` labelled rows (:func:`at_chance`): within two standard errors of what
always answering the majority class scores, and at least two points. A teacher
labels the rows it is distilled on, usually its own training rows or rows
like them; a classifier trained on these labels that does no better than
always guessing the majority class was almost surely given other features
than it was trained on (a prefit teacher after a scaler in a Pipeline). For
such a teacher (a scikit-learn or skorch classifier, prefit or fitted in
the fit: :attr:`~skd.teachers.Teacher.trained_classifier`) that is a :class:`TeacherAtChanceError`,
raised before the estimator changes. A teacher above chance but below
half-way from chance to 1 gets one :class:`~skd.teachers.TeacherScoreWarning`,
and so does a bare module or callable at chance (an untrained stand-in is
a legitimate way to test a pipeline).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
from skorch.utils import to_numpy
from torch.utils.data import Dataset

from skd.book import Book, features_of, is_book
from skd.book.rows import take_rows
from skd.labels import labelled_rows
from skd.teachers.base import Teacher, TeacherScoreWarning

__all__ = ["PROBE_ROWS", "UNDERTRAINED_ROWS", "TeacherAtChanceError", "TeacherScore", "UnderTrainedWarning",
           "at_chance", "chance_level", "check_teacher_not_at_chance", "in_sample_score", "probe_teacher",
           "score_book",
           "teacher_score", "warn_if_undertrained"]

#: The route every message about a teacher and the features points to (docs/pipelines.md).
PIPELINE_ROUTE = (
    "Put WriteBook(teacher) first in the pipeline, on the features the teacher was trained on, and "
    "wrap the later feature steps in skd.OnFeatures, e.g. make_pipeline(WriteBook(teacher), "
    "OnFeatures(StandardScaler()), DistillationClassifier(...)) (see the Pipelines docs)."
)


class TeacherAtChanceError(ValueError):
    """The teacher scores no better than chance on the rows it labels (:func:`at_chance`).

    Attributes
    ----------
    score, chance : float
        Its accuracy on the labelled rows, and the most frequent class's share.
    """

    def __init__(self, message: str, score: float, chance: float):
        super().__init__(message)
        self.score, self.chance = score, chance


class UnderTrainedWarning(UserWarning):
    """The student ended training far below its teacher on the rows it was trained on."""


class TeacherScore(NamedTuple):
    """A teacher's accuracy on the labelled rows of its book, the chance level, and their count."""

    score: float
    chance: float
    n: int


def chance_level(y_encoded) -> float:
    """The accuracy of always predicting the most frequent class."""
    y_encoded = np.asarray(y_encoded)
    return float(np.bincount(y_encoded).max() / len(y_encoded)) if len(y_encoded) else 0.0


def at_chance(score: float, chance: float, n: int) -> bool:
    """Whether ``score`` on ``n`` rows is no better than ``chance`` (the majority share).

    ``score <= chance + max(0.02, 2 * sqrt(chance * (1 - chance) / n))``: within
    two standard errors of the majority-class accuracy, and at least two points.
    """
    margin = max(0.02, 2 * math.sqrt(chance * (1 - chance) / max(n, 1)))
    return score <= chance + margin


def teacher_score(book, y_encoded) -> TeacherScore | None:
    """The teacher's accuracy on the labelled rows of ``book`` (a :class:`~skd.book.Book` or its
    dict); None when it is no book or no row is labelled."""
    if not isinstance(book, Book):
        if not is_book(book):
            return None
        book = Book.of(book)
    labelled = labelled_rows(y_encoded)  # unlabelled rows have nothing to score
    if not labelled.any():
        return None
    y = np.asarray(y_encoded)[labelled]
    return TeacherScore(float(np.mean(book.predictions()[labelled] == y)), chance_level(y), len(y))


def _knows_its_labels(teacher) -> bool:
    """A classifier trained on labels (:attr:`~skd.teachers.Teacher.trained_classifier`), or a
    composite of such classifiers only."""
    members = getattr(teacher, "members_", None)
    if members:
        return all(_knows_its_labels(member) for member in members)
    return bool(getattr(teacher, "trained_classifier", False))


def in_sample_score(teacher: Teacher, rows, y_encoded) -> TeacherScore | None:
    """The set-up teacher's accuracy on the labelled ``rows`` (as the user gave them): one pass.

    For an out-of-fold book (:mod:`skd.teachers.out_of_fold`), whose own
    score is the folds', not the all-rows teacher's.
    """
    if y_encoded is None or not labelled_rows(y_encoded).any():
        return None
    inside = np.flatnonzero(labelled_rows(y_encoded))
    y = np.asarray(y_encoded)[inside]
    predicted = teacher.book_logits(take_rows(rows, inside)).argmax(axis=1)
    return TeacherScore(float(np.mean(predicted == y)), chance_level(y), len(y))


def check_teacher_not_at_chance(book, y_encoded, teacher: Teacher | None,
                                measured: TeacherScore | None = None) -> None:
    """Refuse a book whose teacher, a classifier trained on labels, is at chance on the rows it labels.

    ``measured``: the teacher's score when it is not the book's (an
    out-of-fold book is checked on the all-rows teacher's score).

    Raises
    ------
    TeacherAtChanceError
        Naming the likely cause and the fix; the message is the same for every
        fold of a search, so scikit-learn's failed-fit summary reports it once.
    """
    if teacher is None or not _knows_its_labels(teacher) or getattr(teacher, "fitted_in_setup_", False):
        return  # fitted in this fit on these very rows: at chance means unlearnable labels (a warning)
    measured = teacher_score(book, y_encoded) if measured is None else measured
    if measured is None or not at_chance(*measured):
        return
    raise TeacherAtChanceError(
        f"The teacher ({teacher.describe()}) scores no better than chance on the training rows it labels "
        "(no better than always answering their most frequent class), so there is nothing to distil. "
        "Most likely it is given other features than it was trained on, e.g. a prefit teacher after a "
        "scaler or encoder in a Pipeline. " + PIPELINE_ROUTE,
        *measured[:2],
    )


def score_book(book, y_encoded, teacher: Teacher | None, verbose: int) -> float | None:
    """The teacher's accuracy on the training rows of a book; one warning when it is weak.

    None when ``book`` is not a book (the teacher runs online). For an
    out-of-fold book (``teacher_cv``) it is the all-rows teacher's accuracy on
    the same rows (``in_sample_score_``), not the folds'. With
    ``verbose`` it is printed, with the teacher and whether the fit fitted it.

    The rule: warn when the accuracy is below half-way between chance (the
    share of the most frequent class) and 1, e.g. below 0.55 for ten balanced
    classes, 0.75 for two. A classifier at chance has already been refused
    (:func:`check_teacher_not_at_chance`).
    """
    measured = teacher_score(book, y_encoded)
    if measured is None:
        return None
    # an out-of-fold book (skd.teachers.out_of_fold): the all-rows teacher's score on the same rows
    score, chance, _ = getattr(teacher, "in_sample_score_", None) or measured
    teacher_name = teacher.describe() if teacher is not None else "the teacher that wrote the book X"
    if getattr(teacher, "fitted_in_setup_", False):
        teacher_name += ", fitted in this fit"
    if verbose:
        print(f"teacher accuracy on the training rows: {score:.3f} ({teacher_name}; chance {chance:.3f})")
    if score < (chance + 1.0) / 2:
        warnings.warn(
            f"The teacher ({teacher_name}) scores {score:.3f} on the training rows it labels "
            f"(teacher_score_), near chance ({chance:.3f}); the student would learn from "
            "poor logits. Was it trained on other features than it is given here, e.g. a "
            "prefit teacher after a scaler in a Pipeline? " + PIPELINE_ROUTE,
            TeacherScoreWarning,
            stacklevel=3,
        )
    return score


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
    teacher_score_ = getattr(net, "teacher_score_", None)
    if teacher_score_ is None or not is_book(book):
        return None
    labelled = labelled_rows(y_encoded)
    features = features_of(book)
    rows = np.flatnonzero(labelled)
    if len(rows) > UNDERTRAINED_ROWS:
        rows = rows[np.linspace(0, len(rows) - 1, UNDERTRAINED_ROWS).astype(np.int64)]
    # the module's outputs on the checked rows (predict_proba would check them again, and warn
    # that an ndarray has no feature names after a fit on a DataFrame)
    checked = take_rows(features, rows) if len(rows) < len(labelled) else features
    logits = net.forward(checked, training=False)
    student = float((to_numpy(logits).argmax(axis=1) == np.asarray(y_encoded)[rows]).mean())
    chance = chance_level(np.asarray(y_encoded)[rows])
    if teacher_score_ < (chance + 1.0) / 2:
        return student  # a teacher near chance has had its own warning; the student is not the issue
    if student < (chance + teacher_score_) / 2:
        warnings.warn(
            f"The student scores {student:.3f} on its training rows, far below its teacher "
            f"({teacher_score_:.3f}; chance {chance:.3f}): it is under-trained. Train longer "
            f"(raise max_epochs above its current max_epochs={net.max_epochs}), raise the learning "
            f"rate (lr={net.lr}), use an adaptive optimizer (optimizer=torch.optim.Adam, the default), "
            "standardise raw features (e.g. StandardScaler in a Pipeline), or use a larger student.",
            UnderTrainedWarning, stacklevel=3,
        )
    return student


#: Unlabelled rows the teacher is asked about before an online fit.
PROBE_ROWS = 256


def probe_teacher(teacher, X, y_encoded, marker) -> None:
    """Ask an online teacher about the first unlabelled rows of ``X`` (as the teacher sees them)
    before training starts.

    With ``book="online"`` nothing else runs the teacher on the
    unlabelled rows before the epochs, and a teacher that cannot answer for
    them would fail mid-fit; this fails first, naming the cause.
    """
    if y_encoded is None or isinstance(X, Dataset) or labelled_rows(y_encoded).all():
        return
    rows = np.flatnonzero(~labelled_rows(y_encoded))[:PROBE_ROWS]
    try:
        teacher.book_logits(take_rows(X, rows))
    except Exception as error:
        raise ValueError(
            f"The teacher ({teacher.describe()}) failed on the unlabelled rows of y "
            f"({marker!r}, first at row {rows[0]}): {error} Unlabelled rows get the "
            "teacher's terms only, so the teacher must answer for them; check it on those "
            "rows, or drop them."
        ) from error
