"""Cons-KD: knowledge distillation plus a consistency term between two dropout passes of the student."""

from __future__ import annotations

import torch

from skd._constraints import Options
from skd.losses.base import LossCapabilities, register_loss
from skd.losses.functional import CONSISTENCY_KINDS, consistency_divergence
from skd.losses.kd import KD
from skd.state import EpochState

__all__ = ["ConsKD"]


@register_loss("conskd")
class ConsKD(KD):
    """KD plus the consistency of two dropout-perturbed forward passes of the student (Cons-KD).

    ``ce_weight * CE + kd_weight * T**2 * KL(p^T || p^S) + cons_weight * D(z_a, z_b)``,
    where ``z_a`` and ``z_b`` are the student's logits from two forward passes
    of the same batch in training mode (different dropout masks), the CE and
    KD terms are the means of those of ``z_a`` and of ``z_b`` (as R-Drop
    averages its task loss over the two passes), and ``D`` is
    :func:`skd.losses.functional.consistency_divergence` at T = 1: the
    symmetric KL of R-Drop (Liang et al., NeurIPS 2021), ``(KL(p_a || p_b) +
    KL(p_b || p_a)) / 2``, or the squared distance of the two probability
    vectors. Both passes get gradients, as in R-Drop. The Cons-KD paper
    (speech, LibriSpeech WER 5.10 -> 4.13) could not be read here; docs/methods.md
    says what skd implements and why.

    The trainer runs the student twice per training batch for this loss
    (``capabilities.student_passes``), in the eager and in the captured step. A
    student without dropout gets the same logits twice: the fit warns, and the
    term is 0. Validation batches run once (no dropout at evaluation): their
    ``valid_cons`` is 0.

    Parameters
    ----------
    temperature : float, default=4.0
        KD's softening temperature T (> 0).
    ce_weight : float, default=0.1
        Weight of the cross-entropy on the labels (of the first pass).
    kd_weight : float, default=0.9
        Weight of KD's soft term (of the first pass).
    cons_weight : float, default=1.0
        Weight of the consistency term (R-Drop's alpha; not multiplied by T**2).
    cons_kind : {"sym_kl", "mse"}, default="sym_kl"
        The consistency divergence.
    standardize : bool, default=False
        Logit standardization of the KD term's logits (Sun et al., CVPR 2024).
    """

    terms = ("ce", "kd", "cons")
    #: Forward passes of the student per training batch that this loss compares.
    capabilities = LossCapabilities(student_passes=2)
    _parameter_constraints = {"cons_kind": [Options(CONSISTENCY_KINDS)]}

    def __init__(self, temperature: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9,
                 cons_weight: float = 1.0, cons_kind: str = "sym_kl", standardize: bool = False):
        super().__init__(temperature=temperature, ce_weight=ce_weight, kd_weight=kd_weight,
                         standardize=standardize)
        self.cons_weight = cons_weight
        self.cons_kind = cons_kind

    def term_weights(self, temperature):
        return {**super().term_weights(temperature), "cons": self.cons_weight}

    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                 y: torch.Tensor, state: EpochState | None = None,
                 second: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """KD's terms of both passes (their means), and ``"cons"`` between them (0 without ``second``).

        ``second`` is the student's logits from the second pass of the same
        batch; the trainer passes it in training.
        """
        if state is None:
            state = self._call_state(student_logits)
        terms = super().__call__(student_logits, teacher_logits, y, state)
        if second is None:
            cons = student_logits.new_zeros(())
        else:
            other = super().__call__(second, teacher_logits, y, state)
            terms = {name: 0.5 * (value + other[name]) for name, value in terms.items()}
            cons = consistency_divergence(student_logits, second, 1.0, self.cons_kind).mean()
        terms["cons"] = cons * state.coefficient("cons")
        return terms
