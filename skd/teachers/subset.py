"""A teacher's logits for a student that learns a subset of its classes.

A class-specialised student knows some of the teacher's classes. Its
teacher distribution is the teacher's, restricted to those classes and
renormalised (``teacher_other="drop"``): selecting their logits does exactly
that, since a softmax over a subset of logits is the conditional
distribution given the subset. With ``teacher_other="bucket"`` the rest of
the teacher's classes are folded into one "other" logit, the log-sum-exp of
theirs, so the student's "other" probability is the teacher's mass outside
the subset and no probability is lost.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

__all__ = ["OtherColumns", "other_columns", "subset_logits"]


class OtherColumns(NamedTuple):
    """Where the "other" logit goes among the student's classes, and what it folds."""

    position: int
    folded: torch.Tensor


def other_columns(teacher_classes, student_classes, other, describe: str) -> OtherColumns | None:
    """The teacher columns folded into the student's "other" class, or None without one.

    Raises
    ------
    ValueError
        If the teacher does not name its classes, or every teacher class is
        already a student class (nothing would be "other").
    """
    if other is None:
        return None
    if teacher_classes is None:
        raise ValueError(
            f"teacher_other='bucket' needs a teacher that names its classes, but the teacher "
            f"({describe}) does not. Pass TorchTeacher(module, classes=...), or a fitted "
            "scikit-learn or skorch classifier."
        )
    student = [label for label in np.asarray(student_classes).tolist() if label != other]
    folded = [i for i, label in enumerate(np.asarray(teacher_classes).tolist()) if label not in student]
    if not folded:
        raise ValueError(
            f"teacher_other='bucket': the student's classes {student} are all the teacher's "
            "classes, so no class is left for 'other'. Use teacher_other='drop', or pass "
            "classes= with a strict subset of the teacher's classes."
        )
    position = np.asarray(student_classes).tolist().index(other)
    return OtherColumns(position, torch.as_tensor(folded, dtype=torch.long))


def subset_logits(logits: torch.Tensor, columns: torch.Tensor | None,
                  other: OtherColumns | None = None) -> torch.Tensor:
    """The teacher's logits in the student's class order.

    ``columns`` picks the student's classes among the teacher's columns (None:
    they are the same, in order); restricting the logits renormalises the
    softmax over the subset. With ``other``, the log-sum-exp of the folded
    columns, ``log sum_{j not in subset} exp(z_j)``, is inserted at
    ``other.position``: ``softmax`` then gives "other" the teacher's whole
    mass outside the subset (the same at any temperature only for T = 1;
    at T != 1 the student's classes are softened with the folded logit as
    one class).
    """
    picked = logits if columns is None else logits[:, columns.to(logits.device)]
    if other is None:
        return picked
    folded = torch.logsumexp(logits[:, other.folded.to(logits.device)], dim=1, keepdim=True)
    return torch.cat([picked[:, : other.position], folded, picked[:, other.position:]], dim=1)
