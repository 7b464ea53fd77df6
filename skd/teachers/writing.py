"""Writing a teacher's book outside a fit: the one function the book-writing pipeline step uses.

:class:`skd.pipeline.WriteBook` (any teacher) and the shortcut
``PrunedTeacher.fit_transform`` both call :func:`book_of`, so a book
written in a pipeline is made in one place.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from skorch.helper import SliceDict

from skd._device import resolve_device
from skd.book import book_score, make_book
from skd.hints.plan import teacher_pass
from skd.teachers.composite import as_teacher

__all__ = ["WrittenBook", "book_of"]


class WrittenBook(NamedTuple):
    """A book, the labels of its columns, and the teacher's accuracy on its rows."""

    book: SliceDict
    classes: np.ndarray
    score: float


def book_of(teacher: Any, X, y, device: str = "auto", hint_layers=None) -> WrittenBook:
    """Run ``teacher`` once over ``X`` and return the book ``{"X": X, "teacher_logits": logits}``.

    Parameters
    ----------
    teacher : object
        Any accepted kind of teacher (:func:`skd.teachers.as_teacher`); an
        unfitted scikit-learn teacher is fitted on ``(X, y)``.
    X : array-like of shape (n_samples, ...)
    y : array-like of shape (n_samples,)
        Aligns the teacher's columns to the sorted labels.
    device : str, default="auto"
    hint_layers : sequence of str or None, default=None
        Teacher layers (``named_modules()`` paths) whose outputs the same pass
        writes in the book, as ``"teacher_features:<layer>"``, for a
        classifier's ``hints``; they cost ``n x feature size x 4`` bytes.
    """
    if y is None:
        raise ValueError("Writing a book needs y, to align the teacher's columns to the sorted labels.")
    X_np = X.to_numpy() if hasattr(X, "to_numpy") else np.asarray(X)
    X_np = np.ascontiguousarray(X_np, dtype=np.float32)
    y = np.asarray(y)
    classes = np.unique(y)
    adapter = as_teacher(teacher).setup(X_np, y, classes, resolve_device(device), original=X)
    layers = tuple(dict.fromkeys(hint_layers or ()))
    if layers and adapter.hooked_module() is None:
        raise ValueError(
            f"hint_layers={list(layers)} needs a teacher with torch modules to hook, but the teacher "
            f"({adapter.describe()}) has none. Use a torch.nn.Module or a fitted skorch net, or "
            "hint_layers=None."
        )
    logits, features = teacher_pass(adapter, X_np, layers, original=X)
    score = book_score(logits, np.searchsorted(classes, y))
    return WrittenBook(SliceDict(**make_book(X_np, logits, features)), classes, score)
