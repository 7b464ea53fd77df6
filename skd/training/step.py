"""One step's loss: the student's forward, every loss term, their sum.

:func:`batch_loss` is the one function that computes a batch's terms and
their sum from the step's parts, the batch and the epoch state, and returns
them (a :class:`BatchLoss`). The eager training step, validation (the same
call under ``no_grad``, without the backward) and the captured step
(:meth:`skd.training.graph.CapturedStep.body`) all run it; the classifier's
``get_loss`` (skorch's extension point) sums :func:`terms_for`, the part of
it that starts from the student's logits. Nothing is stashed between calls:
the caller gets the terms back.
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

__all__ = ["BatchLoss", "NoDropoutWarning", "StepParts", "batch_loss", "batch_terms", "check_two_passes",
           "net_step_blocker", "stack_terms", "student_passes", "sum_terms", "teacher_logits_for",
           "term_values", "terms_for"]


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
    set_training : callable or None, default=None
        ``training -> None``: puts the net's modules in training or
        evaluation mode (the net's own ``_set_training``); None leaves them.
    net_steps : tuple of str, default=()
        The net's step methods that a subclass overrides (e.g.
        ``("MyNet.get_loss",)``): the eager step then goes through skorch's
        ``train_step_single`` and ``validation_step``, and the captured step
        is refused (:func:`skd.training.fallback.graph_blockers`).
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
    set_training: Callable[[bool], None] | None = None
    net_steps: tuple[str, ...] = ()


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
    return parts.loss.capabilities.student_passes


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
    if parts.loss.capabilities.teacher and teacher_logits is None:
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


@dataclass
class BatchLoss:
    """What :func:`batch_loss` returns for one batch.

    Attributes
    ----------
    terms : dict of str to 0-d Tensor
        Each named term (differentiable), ``"ce"`` first where the loss has it.
    values : Tensor of shape (n_terms,)
        The terms' detached float32 values, stacked (what the ledger and the guard read).
    total : 0-d Tensor
        The differentiable sum of the terms (what is optimised).
    y_pred : Tensor of shape (batch, n_classes)
        The student's logits on the (clean) batch.
    """

    terms: dict[str, torch.Tensor]
    values: torch.Tensor
    total: torch.Tensor
    y_pred: torch.Tensor


def batch_loss(parts: StepParts, Xi, yi, state: EpochState, **fit_params) -> BatchLoss:
    """The batch's terms and their sum at ``state``: the one body of every step.

    Runs :func:`batch_terms` and sums them. The caller runs the backward (a
    training step) or calls it under ``torch.no_grad()`` (validation); the
    trainer puts the net in training or evaluation mode once per epoch.
    """
    terms, y_pred = batch_terms(parts, Xi, yi, state, **fit_params)
    values, total = stack_terms(terms)
    return BatchLoss(terms, values, total, y_pred)


def net_step_blocker(parts: StepParts) -> str | None:
    """Why the net's overridden step methods cannot run (None: they can, or none is overridden).

    skorch's ``train_step_single`` runs one forward of the batch; a batch
    augmentation or a loss comparing two passes of the student needs two,
    which :func:`batch_loss` runs itself.
    """
    if not parts.net_steps or (parts.augment is None and student_passes(parts) == 1):
        return None
    cause = "augment" if parts.augment is not None else f"the loss {type(parts.loss).__name__}"
    return (f"{', '.join(parts.net_steps)} is overridden, but {cause} needs two forward passes per "
            "step, which skorch's train_step_single cannot give: drop the override (add a term to the "
            "loss instead, see 'Write your own loss') or the two-pass option.")
