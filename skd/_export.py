"""Lean copies of a fitted classifier for prediction only."""

from __future__ import annotations

import copy
from collections.abc import Callable

__all__ = ["lean_copy", "refuse_if_exported"]


def lean_copy(net, predict_nonlinearity: Callable):
    """A copy of ``net`` without teacher, trainer, hints' projectors, augmentation, callbacks, optimizer
    or criterion.

    Its pickle holds the student, ``classes_`` and ``history``. skorch's
    ``trim_for_prediction`` drops the criterion that the output
    nonlinearity is inferred from, so it is given here.
    """
    lean = copy.copy(net)
    for key in list(vars(lean)):
        if key.startswith("teacher"):
            setattr(lean, key, None)
    vars(lean).pop("trainer_", None)  # the last fit's trainer holds the teacher and the loss
    vars(lean).pop("hint_plan_", None)  # hints train only: their projectors are dropped too
    if getattr(lean, "projectors_", None) is not None:
        lean.projectors_ = None
    lean.augment = None
    lean.callbacks_ = []
    lean.callbacks = None
    lean.predict_nonlinearity = predict_nonlinearity
    lean.trim_for_prediction()
    lean.exported_ = True
    return lean


def refuse_if_exported(net) -> None:
    """Raise if ``net`` is a lean copy: it has no optimizer or teacher to train with."""
    if getattr(net, "exported_", False):
        raise RuntimeError(
            f"This {type(net).__name__} was made by export_student(): a lean copy that only "
            "predicts (no teacher, optimizer or callbacks). Train the estimator it was "
            "exported from, or load its weights with load_student(..., teacher=...) to "
            "train again."
        )
