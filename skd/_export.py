"""Lean copies of a fitted classifier for prediction only."""

from __future__ import annotations

import copy
from collections.abc import Callable

__all__ = ["lean_copy"]


def lean_copy(net, predict_nonlinearity: Callable):
    """A copy of ``net`` without teacher, augmentation, callbacks, optimizer or criterion.

    Its pickle holds the student, ``classes_`` and ``history``. skorch's
    ``trim_for_prediction`` drops the criterion that the output
    nonlinearity is inferred from, so it is given here.
    """
    lean = copy.copy(net)
    for key in list(vars(lean)):
        if key.startswith("teacher") and key != "teacher_cache":
            setattr(lean, key, None)
    lean.augment = None
    lean.callbacks_ = []
    lean.callbacks = None
    lean.predict_nonlinearity = predict_nonlinearity
    lean.trim_for_prediction()
    return lean
