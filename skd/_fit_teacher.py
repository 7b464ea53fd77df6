"""Which teacher a fit uses, and whether it writes a book.

The classifier's ``teacher`` parameter (with ``teacher__*`` settings), the
loss's needs (none, a teacher, or self-teaching) and the data decide; the
result is a set-up :class:`skd.teachers.Teacher` or None.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import clone
from torch.utils.data import Dataset

from skd._partial_labels import other_label
from skd.book import BOOK_LOGITS, book_score, is_book
from skd.losses.base import DistillationLoss
from skd.teachers import Teacher, TeacherScoreWarning, TorchTeacher, as_teacher

__all__ = ["chance_level", "score_book", "self_teacher", "teacher_for_fit", "writes_book"]


def _with_params(teacher: Any, params: dict) -> Any:
    if not params:
        return teacher
    if not hasattr(teacher, "set_params"):
        raise ValueError(
            f"teacher__ parameters {sorted(params)} can only be set on a "
            f"scikit-learn or skorch teacher, not on {type(teacher).__name__}."
        )
    return clone(teacher).set_params(**params)


def teacher_for_fit(teacher: Any, params: dict, loss: DistillationLoss, loss_spec: Any, X, y,
                    classes, device, self_teacher: Callable[[], Teacher], original=None,
                    bucket: bool = False) -> Teacher | None:
    """The set-up teacher of a fit, or None when the loss needs none or ``X`` is a book.

    Parameters
    ----------
    teacher : object
        The classifier's ``teacher`` parameter.
    params : dict
        Its ``teacher__*`` settings.
    loss : DistillationLoss
        The initialised loss (``requires_teacher``, ``self_teaching``).
    loss_spec : str or DistillationLoss
        The ``loss`` parameter, for messages.
    X, y, classes, device
        The training data (to fit an unfitted teacher), the student's
        ``classes_`` and device.
    self_teacher : callable
        Makes the Tf-KD self teacher (a first fit of the student with CE).
    original : array-like, DataFrame or None
        ``X`` as the user gave it, for scikit-learn teachers.
    bucket : bool, default=False
        ``teacher_other="bucket"``: the student's "other" class gets the
        log-sum-exp of the teacher's classes outside ``classes``.
    """
    if not loss.requires_teacher or is_book(X):
        return None
    if loss.self_teaching:
        chosen = self_teacher()
    elif teacher is None:
        raise ValueError(
            f"loss={loss_spec!r} needs a teacher: pass teacher=..., or pass X as a "
            "book {'X': X, 'teacher_logits': logits}; the losses 'ce' and "
            "'tfkd' (mode='reg') need none."
        )
    else:
        chosen = _with_params(teacher, params)
    other = other_label(classes) if bucket else None
    return as_teacher(chosen).setup(X, y, classes, device, original=original, other=other)


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
    labelled = np.asarray(y_encoded) >= 0  # unlabelled rows (encoded -1) have nothing to score
    if not labelled.any():
        return None
    score = book_score(np.asarray(book[BOOK_LOGITS])[labelled], np.asarray(y_encoded)[labelled])
    chance = chance_level(np.asarray(y_encoded)[labelled])
    if verbose:
        print(f"teacher accuracy on the training rows: {score:.3f} ({teacher_name}; chance {chance:.3f})")
    if score < (chance + 1.0) / 2:
        warnings.warn(
            f"The teacher ({teacher_name}) scores {score:.3f} on the training rows it labels "
            f"(teacher_score_), near chance ({chance:.3f}); the student would learn from "
            "poor logits. Was it trained on other features than it is given here, e.g. a "
            "prefit teacher after a scaler in a Pipeline? Put PrunedTeacher(teacher, "
            "amount=0) first in the pipeline and wrap later feature steps in "
            "skd.OnFeatures (see the Pipelines docs).",
            TeacherScoreWarning,
            stacklevel=3,
        )
    return score


def writes_book(teacher_cache, augment, augment_mode: str, X) -> bool:
    """Whether the teacher's logits are written once before the first epoch.

    With augmentation the augmented batches are labelled online; in ``"add"``
    mode the clean batches still read their logits from the book.
    """
    if teacher_cache is False or (augment is not None and augment_mode == "replace"):
        return False
    if isinstance(X, Dataset):
        if teacher_cache is True:
            raise ValueError(
                "teacher_cache=True needs in-memory X (array, tensor or DataFrame); a "
                "torch Dataset is read online. Use teacher_cache='auto' or False."
            )
        return False
    return True
