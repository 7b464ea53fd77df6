"""One training (or validation) step: the student's forward, every loss term, the update.

There is one path for loss terms, :func:`batch_terms`, for the clean batch
and the augmented one alike; the eager step and the captured step
(:mod:`skd.training.graph`) both call it, so both share the guard and the
term recording of :mod:`skd.training.guard` and :mod:`skd.training.ledger`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from skorch.utils import to_tensor

from skd.book import BOOK_LOGITS, features_of, is_book
from skd.losses import DistillationLoss

__all__ = ["StepParts", "batch_terms", "stack_terms", "teacher_logits_for", "terms_for"]


@dataclass
class StepParts:
    """What a step needs, handed over by the classifier at the start of a fit.

    Attributes
    ----------
    forward : callable
        The student's forward, ``features -> logits`` (skorch's ``infer``).
    loss : DistillationLoss
    teacher : skd.teachers.Teacher or None
        Labels batches that are not in a book (online teacher, augmentation).
    augment : callable or None
    augment_mode : {"add", "replace"}
    n_classes : int
    device : torch.device
    precision : {"32", "bf16"}
        ``"bf16"`` runs the student's forward under autocast; the loss terms
        are always computed in float32.
    """

    forward: Callable[..., torch.Tensor]
    loss: DistillationLoss
    teacher: Any
    augment: Callable | None
    augment_mode: str
    n_classes: int
    device: torch.device
    precision: str = "32"

    def autocast(self):
        """The autocast context of the student's forward."""
        if self.precision == "bf16":
            return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def teacher_logits_for(parts: StepParts, X) -> torch.Tensor:
    """The batch's teacher logits: from the book if ``X`` is one, else from the teacher."""
    if is_book(X):
        return to_tensor(X[BOOK_LOGITS], device=parts.device).float()
    if parts.teacher is None:
        raise RuntimeError("The loss needs teacher logits, but no teacher was set up.")
    return parts.teacher.predict_logits(to_tensor(features_of(X), device=parts.device))


def terms_for(parts: StepParts, y_pred, y, X, suffix: str = "") -> dict[str, torch.Tensor]:
    """The loss's named terms for the student's logits ``y_pred`` on ``X``.

    With a ``suffix`` (the augmented batch of ``"add"`` mode) the CE term is
    dropped and the other names get the suffix.
    """
    if y_pred.ndim != 2 or y_pred.shape[1] != parts.n_classes:
        raise ValueError(
            f"The student module returns outputs of shape {tuple(y_pred.shape)}, but y has "
            f"{parts.n_classes} classes: it must return logits of shape (batch, {parts.n_classes})."
        )
    teacher_logits = teacher_logits_for(parts, X) if parts.loss.requires_teacher else None
    terms = parts.loss(y_pred.float(), teacher_logits, y)
    if not suffix:
        return terms
    # the augmented batch repeats the distillation terms only; CE is the clean batch's
    return {name + suffix: value for name, value in terms.items() if name != "ce"}


def _augmented(parts: StepParts, x, y):
    augmented = parts.augment(x, y)
    if isinstance(augmented, (tuple, list)):
        augmented = augmented[0]
    if not isinstance(augmented, torch.Tensor) or augmented.shape != x.shape:
        raise ValueError(
            f"augment returned {type(augmented).__name__} of shape "
            f"{tuple(getattr(augmented, 'shape', ()))}; it must return a tensor shaped like "
            f"the batch, {tuple(x.shape)}."
        )
    return augmented


def batch_terms(parts: StepParts, Xi, yi, **fit_params) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The named loss terms of one batch and the student's logits on it.

    Without augmentation: the loss on ``Xi`` (a book supplies the teacher's
    logits). With ``augment`` in ``"replace"`` mode: the loss on the augmented
    batch, labelled online by the teacher. In ``"add"`` mode: the loss on the
    clean batch, plus its distillation terms on the augmented batch, named
    ``<term>_aug``.
    """
    y = to_tensor(yi, device=parts.device).long()
    features = to_tensor(features_of(Xi), device=parts.device)
    if parts.augment is None:
        with parts.autocast():
            y_pred = parts.forward(features, **fit_params)
        return terms_for(parts, y_pred, y, Xi), y_pred
    augmented = _augmented(parts, features, y)
    if parts.augment_mode == "replace":
        with parts.autocast():
            y_pred = parts.forward(augmented, **fit_params)
        return terms_for(parts, y_pred, y, augmented), y_pred
    with parts.autocast():
        y_pred = parts.forward(features, **fit_params)
        aug_pred = parts.forward(augmented, **fit_params)
    terms = terms_for(parts, y_pred, y, Xi)
    terms.update(terms_for(parts, aug_pred, y, augmented, suffix="_aug"))
    return terms, y_pred


def stack_terms(terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, total)``: the detached float32 term values and their differentiable sum."""
    values = torch.stack([value.detach().float() for value in terms.values()])
    total = None
    for value in terms.values():
        total = value if total is None else total + value
    return values, total
