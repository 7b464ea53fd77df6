"""Which teacher a fit uses, and whether it writes a book.

The classifier's ``teacher`` parameter (with ``teacher__*`` settings), the
loss's needs (none, a teacher, or self-teaching) and the data decide; the
result is a set-up :class:`skd.teachers.Teacher` or None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.base import clone
from torch.utils.data import Dataset

from skd._partial_labels import other_label
from skd.book import is_book
from skd.losses.base import DistillationLoss
from skd.teachers import Teacher, as_teacher

__all__ = ["teacher_for_fit", "writes_book"]


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
                    classes, device, self_teacher: Callable[[], Teacher],
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
    return as_teacher(chosen).setup(X, y, classes, device, other=other)


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
