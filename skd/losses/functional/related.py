"""The seed list's remaining methods: Cons-KD's consistency term, extractive distillation's
teacher transform, self-knowledge adaptive label smoothing, selective KD's correction of a
wrong teacher, and quality-weighted multi-teacher targets.

For several of these the paper's exact formula could not be read (``docs/methods.md`` says
which); each docstring says whether it follows a read source or is skd's design.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from skd.losses.functional.basics import check_choice, target_mask

__all__ = [
    "CONSISTENCY_KINDS",
    "adaptive_smoothing_alpha",
    "confidence_aware_weights",
    "consistency_divergence",
    "corrected_teacher_log_probs",
    "extracted_teacher_logits",
    "extractive_teacher_log_probs",
    "self_knowledge_smoothed_ce",
    "teacher_quality",
    "teacher_quality_weights",
    "weighted_teacher_log_probs",
]

CONSISTENCY_KINDS = ("sym_kl", "mse")


def consistency_divergence(
    logits_a: torch.Tensor, logits_b: torch.Tensor, temperature: float = 1.0, kind: str = "sym_kl"
) -> torch.Tensor:
    """Per-sample consistency between two dropout-perturbed forward passes of the student.

    Cons-KD's extra term (the paper could not be read; see ``docs/methods.md``).
    ``kind="sym_kl"`` (default) is the symmetric KL of R-Drop (Liang et al.,
    NeurIPS 2021), ``(KL(p_a || p_b) + KL(p_b || p_a)) / 2`` with
    ``p = softmax(z / T)``, the usual consistency term between two dropout
    passes; ``kind="mse"`` is the squared distance of the two probability
    vectors summed over classes. Both passes get gradients (neither is
    detached), as in R-Drop.

    Returns
    -------
    Tensor of shape (batch,)
    """
    check_choice(kind, CONSISTENCY_KINDS, "kind")
    log_a = torch.log_softmax(logits_a / temperature, dim=1)
    log_b = torch.log_softmax(logits_b / temperature, dim=1)
    if kind == "mse":
        return (log_a.exp() - log_b.exp()).square().sum(1)
    forward = F.kl_div(log_b, log_a, log_target=True, reduction="none").sum(1)
    backward = F.kl_div(log_a, log_b, log_target=True, reduction="none").sum(1)
    return 0.5 * (forward + backward)


def extractive_teacher_log_probs(
    teacher_logits: torch.Tensor, temperature: float | torch.Tensor, confidence_temperature: float = 1.0
) -> torch.Tensor:
    """A teacher distribution whose relations and whose uniformity have separate temperatures.

    Extractive distillation (Kobayashi, "Extractive Knowledge Distillation",
    WACV 2022) transforms only the teacher's knowledge, so that the
    temperature no longer also sets how uniform the teacher's probabilities
    are. The paper's formula could not be read (``docs/losses.md`` says what
    was searched); this is skd's transform: the mass of the teacher's top
    class is taken at ``confidence_temperature`` (default 1: the teacher's
    own confidence), and the other classes share the rest in the proportions
    of ``softmax(z / temperature)`` renormalised over them::

        q_m = softmax(z / c)_m,   q_j = (1 - q_m) softmax_{j != m}(z / T)   (m = argmax z)

    ``temperature`` then only reveals the relations among the non-top classes
    (the dark knowledge), and ``confidence_temperature`` alone sets the
    uniformity between the top class and the rest. With both equal it is
    ``log softmax(z / T)``.

    Parameters
    ----------
    teacher_logits : Tensor of shape (batch, n_classes)
    temperature : float or 0-d Tensor
        ``T``, the loss's temperature.
    confidence_temperature : float, default=1.0
        ``c``.

    Returns
    -------
    Tensor of shape (batch, n_classes): log-probabilities.
    """
    top = teacher_logits.argmax(dim=1)
    is_top = target_mask(top, teacher_logits.shape[1])
    log_confident = torch.log_softmax(teacher_logits / confidence_temperature, dim=1)
    log_top_mass = log_confident.gather(1, top.unsqueeze(1))
    log_rest_mass = torch.logsumexp(torch.where(is_top, float("-inf"), log_confident), dim=1, keepdim=True)
    log_relations = torch.log_softmax(torch.where(is_top, float("-inf"), teacher_logits / temperature), dim=1)
    return torch.where(is_top, log_top_mass, log_rest_mass + log_relations)


def extracted_teacher_logits(
    teacher_logits: torch.Tensor, temperature: float | torch.Tensor, confidence_temperature: float
) -> torch.Tensor:
    """Teacher logits that any loss, softening them at ``temperature``, reads as the extractive teacher.

    ``T * log q``, with ``q`` from :func:`extractive_teacher_log_probs`, so that
    ``softmax(result / T) = q`` exactly: this is how ``loss__extract`` reaches
    every logit loss without changing it (the loss base class applies it to
    the teacher logits before the loss's own terms). A loss that softens the
    teacher at another temperature than ``T`` (NKD's target term is at 1)
    sees ``q`` re-softened accordingly. With ``confidence_temperature ==
    temperature`` the result differs from ``teacher_logits`` by a constant
    per row, which no softmax sees. The result has no gradient.

    Returns
    -------
    Tensor of shape (batch, n_classes)
    """
    teacher_logits = teacher_logits.detach()
    return temperature * extractive_teacher_log_probs(teacher_logits, temperature, confidence_temperature)


def adaptive_smoothing_alpha(student_logits: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Per-sample smoothing parameter from the model's own distribution (detached).

    Self-knowledge adaptive label smoothing (Lee, Cheung & Zhang, EMNLP 2022
    Findings, "Adaptive Label Smoothing with Self-Knowledge in Natural
    Language Generation"): the amount of smoothing varies per sample with
    the model's current prediction. skd takes it as the normalised entropy
    ``scale * H(p) / log C`` of ``p = softmax(z)``, clipped to [0, 1], with
    no gradient: a confident prediction is smoothed little and an unsure
    one much. The paper's exact expression could not be
    read (``docs/methods.md``).

    Returns
    -------
    Tensor of shape (batch,), in [0, 1].
    """
    log_probs = torch.log_softmax(student_logits.detach(), dim=1)
    entropy = -(torch.where(log_probs.exp() > 0, log_probs.exp() * log_probs, 0.0)).sum(1)
    return (scale * entropy / math.log(student_logits.shape[1])).clamp(0.0, 1.0)


def self_knowledge_smoothed_ce(
    student_logits: torch.Tensor,
    prior_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-sample cross-entropy with a label smoothed towards the model's self-knowledge.

    Lee et al. (2022): the target ``q = (1 - alpha_i) * onehot(y) + alpha_i *
    softmax(z^prior / T)``, where the prior is the model's own earlier
    prediction (its self-knowledge; in skd the first fit of the student, as
    Tf-KD self) and ``alpha_i`` comes from :func:`adaptive_smoothing_alpha`.
    Returns ``-sum_i q_i log softmax(z^S)_i``
    ``= (1 - alpha) CE(y, p^S) + alpha H(prior_T, p^S)``.

    Returns
    -------
    Tensor of shape (batch,)
    """
    log_student = torch.log_softmax(student_logits, dim=1)
    prior = torch.softmax(prior_logits.detach() / temperature, dim=1)
    hard = -log_student.gather(1, target.long().unsqueeze(1)).squeeze(1)
    soft = -(prior * log_student).sum(1)
    return (1.0 - alpha) * hard + alpha * soft


def corrected_teacher_log_probs(
    teacher_logits: torch.Tensor, target: torch.Tensor, temperature: float, correction: float | torch.Tensor
) -> torch.Tensor:
    """The teacher's softened distribution, corrected where its top class is wrong.

    Selective KD, the response-based part of CCSKD: teacher knowledge that
    is wrong is corrected, progressively over training. The paper's formula
    could not be read (``docs/methods.md``); skd's correction: on a row whose
    teacher top class ``m`` is not the label ``t``, the corrected
    distribution is ``(1 - rho) * p + rho * swap(p)``, where ``swap(p)``
    exchanges the probabilities of ``m`` and ``t`` (the label becomes the
    top class and every other class keeps its dark knowledge), and ``rho``
    (``correction``, in [0, 1]) is raised by the caller's schedule. Rows the
    teacher gets right, and unlabelled rows (``target == -1``), are left as
    they are.

    Returns
    -------
    Tensor of shape (batch, n_classes): log-probabilities.
    """
    probs = torch.softmax(teacher_logits / temperature, dim=1)
    top = teacher_logits.argmax(dim=1)
    label = target.long().clamp_min(0)
    wrong = ((target >= 0) & (top != label)).unsqueeze(1)
    p_top = probs.gather(1, top.unsqueeze(1))
    p_label = probs.gather(1, label.unsqueeze(1))
    swapped = probs.scatter(1, top.unsqueeze(1), p_label).scatter(1, label.unsqueeze(1), p_top)
    if not isinstance(correction, torch.Tensor):  # a fill, not a copy from host memory (a sync on CUDA)
        correction = torch.full((), float(correction), dtype=probs.dtype, device=probs.device)
    mixed = (1.0 - correction) * probs + correction * swapped
    return torch.where(wrong, mixed, probs).clamp_min(torch.finfo(probs.dtype).tiny).log()


def teacher_quality(teacher_logits: torch.Tensor, target: torch.Tensor, measure: str = "ce") -> torch.Tensor:
    """Each teacher's measured quality on the labelled rows.

    Parameters
    ----------
    teacher_logits : Tensor of shape (n_teachers, batch, n_classes)
    target : LongTensor of shape (batch,); -1 rows are ignored.
    measure : {"ce", "accuracy"}
        ``"ce"``: minus the mean cross-entropy (higher is better);
        ``"accuracy"``: the fraction of labelled rows whose top class is the label.

    Returns
    -------
    Tensor of shape (n_teachers,)
    """
    check_choice(measure, ("ce", "accuracy"), "measure")
    labelled = (target >= 0).to(teacher_logits.dtype)
    count = labelled.sum().clamp_min(1.0)
    label = target.long().clamp_min(0)
    if measure == "accuracy":
        hits = (teacher_logits.argmax(dim=2) == label).to(teacher_logits.dtype)
        return (hits * labelled).sum(1) / count
    log_probs = torch.log_softmax(teacher_logits, dim=2)
    picked = log_probs.gather(2, label.expand(teacher_logits.shape[0], -1).unsqueeze(2)).squeeze(2)
    return (torch.where(labelled > 0, picked, 0.0)).sum(1) / count


def teacher_quality_weights(quality: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Ensemble weights ``softmax(quality / temperature)`` over teachers.

    Quality-weighted multi-teacher distillation: each teacher weighted by
    its measured quality instead of equally (in the spirit of the
    confidence-aware multi-teacher weighting of Zhang et al., ICASSP 2022,
    CA-MKD, which weights by the teachers' cross-entropy on the labels; its
    exact form was not read). A large ``temperature`` tends to equal weights,
    a small one to the single best teacher.

    Returns
    -------
    Tensor of shape (n_teachers,), summing to 1.
    """
    return torch.softmax(quality / temperature, dim=0)


def confidence_aware_weights(teacher_losses: torch.Tensor) -> torch.Tensor:
    """Teacher weights from their cross-entropies on the labels: CA-MKD's weighting.

    Zhang, Chen & Wang (2022), "Confidence-Aware Multi-Teacher Knowledge
    Distillation", ICASSP: ``w_k = (1 - softmax_k(L)) / (K - 1)``, where
    ``L_k`` is teacher k's cross-entropy with the ground truth, so that a
    teacher whose predictions are closer to the labels weighs more. This is
    the released form (Rorozhl/CA-MKD, ``helper/loops.py``, ``attention =
    (1.0 - F.softmax(loss_t, dim=0)) / (opt.teacher_num - 1)``), where
    ``loss_t`` holds each teacher's per-sample CE; skd's ensemble applies it
    to each teacher's mean CE over the training rows, once.

    Parameters
    ----------
    teacher_losses : Tensor of shape (n_teachers, ...)
        Cross-entropies, the teachers along the first axis.

    Returns
    -------
    Tensor of the same shape, summing to 1 over the first axis (all ones for a single teacher).
    """
    n_teachers = teacher_losses.shape[0]
    if n_teachers == 1:
        return torch.ones_like(teacher_losses)
    return (1.0 - torch.softmax(teacher_losses, dim=0)) / (n_teachers - 1)


def weighted_teacher_log_probs(
    teacher_logits: torch.Tensor, weights: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The weighted mixture of the teachers' softened distributions, as log-probabilities.

    ``log sum_m w_m softmax(z_m / T)``: a mixture of probabilities (the
    soft targets), computed with ``logsumexp``.

    Parameters
    ----------
    teacher_logits : Tensor of shape (n_teachers, batch, n_classes)
    weights : Tensor of shape (n_teachers,)

    Returns
    -------
    Tensor of shape (batch, n_classes)
    """
    log_probs = torch.log_softmax(teacher_logits / temperature, dim=2)
    log_weights = torch.log(weights).reshape(-1, 1, 1)
    return torch.logsumexp(log_probs + log_weights, dim=0)
