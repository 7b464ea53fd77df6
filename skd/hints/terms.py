"""The hint terms of a fit's steps: the student's hooked outputs against the teacher's.

:class:`HintTerms` is handed to the step in :class:`~skd.training.step.StepParts`
(``hints``); :func:`skd.training.step.terms_for`, the one path for loss terms,
asks it for the teacher's outputs of a batch and then for the terms. The
student's outputs come from forward hooks opened for the fit (the step's own
forward fills them); the teacher's from the book, or from one teacher
forward per batch when they are online (which then also gives the logits).
"""

from __future__ import annotations

import torch
from skorch.utils import to_tensor

from skd.book import features_of, is_book, teacher_features_of
from skd.hints.functional import attention_transfer_loss, fitnet_loss
from skd.hints.plan import HintPlan
from skd.hints.taps import FeatureTap, teacher_module

__all__ = ["HintTerms"]


class HintTerms:
    """A fit's hint terms: hooks on the student, its projectors, the teacher's outputs.

    Parameters
    ----------
    plan : HintPlan
    student : torch.nn.Module
        The student; a forward hook is put on each hinted layer until :meth:`close`.
    projectors : torch.nn.ModuleDict
        The fit's projectors (the classifier's ``projectors_``), keyed by term name.
    teacher : skd.teachers.Teacher or None
        The set-up teacher, for features taken online; None when X is a book.
    device : torch.device
    """

    def __init__(self, plan: HintPlan, student: torch.nn.Module, projectors: torch.nn.ModuleDict,
                 teacher, device):
        missing = [name for hint, name in zip(plan.hints, plan.names, strict=True)
                   if hint.kind == "fitnet" and name not in projectors]
        if missing:
            raise ValueError(
                f"The student has no projector for the hints {missing}: the hints changed since it "
                "was initialised (partial_fit or warm_start=True). Fit again from scratch."
            )
        self.plan = plan
        self.projectors = projectors
        self.teacher = teacher
        self.device = device
        self.student_tap = FeatureTap(student, [hint.student_layer for hint in plan.hints],
                                      parameter="hints[...].student_layer")

    @property
    def names(self) -> tuple[str, ...]:
        """The terms' names, in the hints' order."""
        return self.plan.names

    def teacher_outputs(self, X) -> tuple[torch.Tensor | None, dict]:
        """``(logits, {layer: outputs})`` of the teacher for the batch ``X``.

        From the book when it holds the layers (logits None: the book has
        them); else one forward of the teacher with hooks, whose logits are
        returned unless ``X`` is a book.
        """
        layers = self.plan.teacher_layers
        if is_book(X):
            written = teacher_features_of(X)
            if all(layer in written for layer in layers):
                return None, {layer: to_tensor(written[layer], device=self.device).float()
                              for layer in layers}
        if self.teacher is None:
            raise RuntimeError("The hints need the teacher's outputs, but no teacher was set up.")
        inputs = to_tensor(features_of(X), device=self.device)
        with FeatureTap(teacher_module(self.teacher), layers, gather=True) as tap:
            logits = self.teacher.predict_logits(inputs)
            outputs = {layer: tap.output(layer).detach().float() for layer in layers}
        return (None if is_book(X) else logits), outputs

    def terms(self, teacher_outputs: dict, state=None) -> dict[str, torch.Tensor]:
        """``{name: weight * soft scale * value}`` for the student's latest forward.

        The schedules' soft-term scale (warm-up, ``SoftLossSchedule``) of
        ``state`` applies to hint terms as to the loss's soft terms.
        """
        scale = 1.0 if state is None else state.soft_scale
        terms = {}
        for hint, name in zip(self.plan.hints, self.plan.names, strict=True):
            student = self.student_tap.output(hint.student_layer).float()
            teacher = teacher_outputs[hint.teacher_layer]
            if hint.kind == "fitnet":
                value = fitnet_loss(self.projectors[name](student), teacher)
            else:
                value = attention_transfer_loss(student, teacher)
            terms[name] = value * (float(hint.weight) * scale)
        return terms

    def close(self) -> None:
        """Remove the student's hooks."""
        self.student_tap.close()


def fit_hint_terms(plan: HintPlan | None, student: torch.nn.Module, projectors, teacher,
                   device) -> tuple[HintTerms | None, torch.nn.Module | None]:
    """A fit's :class:`HintTerms` and the modules its optimizer trains; ``(None, None)`` without hints.

    The second is ``ModuleList([student, projectors])`` (the guard snapshots
    both), or None when there is no projector (attention transfer only).
    """
    if plan is None:
        return None, None
    hints = HintTerms(plan, student, projectors, teacher, device)
    trained = torch.nn.ModuleList([student, projectors]) if len(projectors) else None
    return hints, trained
