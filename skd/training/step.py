"""One training (or validation) step: the student's forward, every loss term, the update.

There is one path for loss terms, :func:`batch_terms`, for the clean batch
and the augmented one alike; the eager step and the captured step
(:mod:`skd.training.graph`) both call it, so both share the guard and the
term recording of :mod:`skd.training.guard` and :mod:`skd.training.ledger`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from skorch.utils import to_tensor

from skd.book import BOOK_LOGITS, features_of, is_book
from skd.book.compressed import is_compressed_book, topk_book_of
from skd.losses import DistillationLoss
from skd.losses.compiled import loss_terms
from skd.losses.functional import TopKBook
from skd.state import EpochState

__all__ = ["NoDropoutWarning", "StepParts", "batch_terms", "check_two_passes", "stack_terms",
           "student_passes", "sum_terms", "teacher_logits_for", "term_values", "terms_for"]


@dataclass
class StepParts:
    """What a step needs, handed over by the classifier at the start of a fit.

    Attributes
    ----------
    forward : callable
        The student's forward, ``features -> logits`` (skorch's ``infer``,
        which applies the trainer's precision).
    loss : DistillationLoss
    teacher : skd.teachers.Teacher or None
        Labels batches that are not in a book (online teacher, augmentation).
    augment : callable or None
    augment_mode : {"add", "replace"}
    n_classes : int
    device : torch.device
    labelled_only : bool, default=False
        Whether every training row has a label (CE then needs no masking).
    hints : skd.hints.HintTerms or None, default=None
        The fit's hint terms (feature distillation), added to the loss's.
    trained : torch.nn.Module or None, default=None
        Every module the optimizer trains, when more than the student (the
        hints' projectors): the guard snapshots and restores all of it.
    compiled : bool, default=False
        Run the loss's compiled call in training steps
        (:func:`skd.losses.compiled.loss_terms`; the trainer's ``compile_loss``).
    """

    forward: Callable[..., torch.Tensor]
    loss: DistillationLoss
    teacher: Any
    augment: Callable | None
    augment_mode: str
    n_classes: int
    device: torch.device
    labelled_only: bool = False
    hints: Any = None
    trained: torch.nn.Module | None = None
    compiled: bool = False


def teacher_logits_for(parts: StepParts, X) -> torch.Tensor | TopKBook:
    """The batch's teacher logits: from the book if ``X`` is one, else from the teacher.

    A compressed book gives a :class:`~skd.losses.functional.TopKBook` (only
    a loss that accepts one gets there: the classifier refuses the others).
    """
    if is_compressed_book(X):
        return topk_book_of(X, parts.n_classes, parts.device)
    if is_book(X):
        return to_tensor(X[BOOK_LOGITS], device=parts.device).float()
    if parts.teacher is None:
        raise RuntimeError("The loss needs teacher logits, but no teacher was set up.")
    return parts.teacher.predict_logits(to_tensor(features_of(X), device=parts.device))


def student_passes(parts: StepParts) -> int:
    """Forward passes of the student per training batch that the loss compares (2 for Cons-KD)."""
    return getattr(parts.loss, "student_passes", 1)


class NoDropoutWarning(UserWarning):
    """A loss compares two dropout passes of the student, which has no dropout."""


def check_two_passes(parts: StepParts, module: torch.nn.Module) -> None:
    """For a loss comparing two passes of the student: refuse what it cannot run with; warn if no dropout."""
    if student_passes(parts) != 2:
        return
    name = type(parts.loss).__name__
    if parts.hints is not None:
        raise ValueError(f"The loss {name} compares two forward passes of the student, and hints tap "
                         "one: use hints with another loss, or drop hints.")
    if parts.augment is not None:
        raise ValueError(f"The loss {name} compares two passes of the clean batch, and augment replaces "
                         "or adds a batch: use one or the other (augment=None, or loss='kd').")
    dropout = torch.nn.modules.dropout._DropoutNd
    if not any(isinstance(m, dropout) and m.p > 0 for m in module.modules()):
        warnings.warn(
            f"The loss {name} compares two dropout-perturbed passes of the student, but the student "
            f"module ({type(module).__name__}) has no dropout: both passes are the same and the "
            "consistency term is 0. Give it dropout (e.g. module__dropout=0.2 for skd's MLP) or use "
            "loss='kd'.", NoDropoutWarning, stacklevel=2)


def terms_for(parts: StepParts, y_pred, y, X, state: EpochState | None = None,
              suffix: str = "", second=None) -> dict[str, torch.Tensor]:
    """The loss's named terms for the student's logits ``y_pred`` on ``X``, at ``state``.

    The one path for loss terms: the eager step (through the classifier's
    ``get_loss``), the augmented step and the captured step all call it.
    The terms are computed in float32 whatever the forward's precision.
    With ``parts.hints`` the hint terms follow the loss's (the student's
    hooked outputs of this forward against the teacher's).
    With a ``suffix`` (the augmented batch of ``"add"`` mode) the CE term is
    dropped and the other names get the suffix. ``second``: the student's
    logits from a second pass of the batch, for a loss that compares two
    (:func:`student_passes`).
    """
    if y_pred.ndim != 2 or y_pred.shape[1] != parts.n_classes:
        raise ValueError(
            f"The student module returns outputs of shape {tuple(y_pred.shape)}, but y has "
            f"{parts.n_classes} classes: it must return logits of shape (batch, {parts.n_classes})."
        )
    teacher_logits, teacher_outputs = None, None
    if parts.hints is not None and not suffix:  # online features: one teacher forward gives both
        teacher_logits, teacher_outputs = parts.hints.teacher_outputs(X)
    if parts.loss.requires_teacher and teacher_logits is None:
        teacher_logits = teacher_logits_for(parts, X)
    extra = {} if second is None else {"second": second.float()}
    terms = loss_terms(parts.loss, y_pred.float(), teacher_logits, y, state, parts.compiled, **extra)
    if teacher_outputs is not None:
        terms.update(parts.hints.terms(teacher_outputs, state))
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


def batch_terms(parts: StepParts, Xi, yi, state: EpochState | None = None,
                **fit_params) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The named loss terms of one batch and the student's logits on it.

    Without augmentation: the loss on ``Xi`` (a book supplies the teacher's
    logits). With ``augment`` in ``"replace"`` mode: the loss on the augmented
    batch, labelled online by the teacher. In ``"add"`` mode: the loss on the
    clean batch, plus its distillation terms on the augmented batch, named
    ``<term>_aug``. A loss that compares two passes of the student (Cons-KD)
    gets a second forward of the clean batch (without augmentation only).
    """
    y = to_tensor(yi, device=parts.device).long()
    features = to_tensor(features_of(Xi), device=parts.device)
    if parts.augment is None:
        y_pred = parts.forward(features, **fit_params)
        second = parts.forward(features, **fit_params) if student_passes(parts) == 2 else None
        return terms_for(parts, y_pred, y, Xi, state, second=second), y_pred
    augmented = _augmented(parts, features, y)
    if parts.augment_mode == "replace":
        y_pred = parts.forward(augmented, **fit_params)
        return terms_for(parts, y_pred, y, augmented, state), y_pred
    y_pred = parts.forward(features, **fit_params)
    aug_pred = parts.forward(augmented, **fit_params)
    terms = terms_for(parts, y_pred, y, Xi, state)
    terms.update(terms_for(parts, aug_pred, y, augmented, state, suffix="_aug"))
    return terms, y_pred


def sum_terms(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The differentiable sum of the terms (what is optimised)."""
    total = None
    for value in terms.values():
        total = value if total is None else total + value
    return total


def term_values(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The detached float32 term values, stacked (what the ledger and the guard read)."""
    return torch.stack([value.detach().float() for value in terms.values()])


def stack_terms(terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, total)``: :func:`term_values` and :func:`sum_terms`."""
    return term_values(terms), sum_terms(terms)
