"""Reference forms of skd's fused formulas, by plain autograd: what the closed-form Functions are checked
against (tests/test_fused_losses.py, tests/test_losses_functional.py).

Each function here is the formula written the straight way, differentiated by autograd (no hand-written
backward), exact at any logit scale where the fused form is. They ship with the tests, not with skd: a
formula exists once in ``skd/``.
"""

from __future__ import annotations

import torch

from skd.losses.functional.correlation import _generic_relation_distances


def grouped_log_softmax(scaled: torch.Tensor, in_group: torch.Tensor):
    """In-group log-probabilities, in-group probabilities and group log-masses, (..., B, C) -> (..., B, 2).

    Each class is shifted by the maximum of its own group, so the in-group
    log-softmax ``(z_i - max_g) - log sum_{j in g} exp(z_j - max_g)`` is exact
    even where the whole group underflows in the full softmax. An empty group
    has log-mass ``-inf``.
    """
    neg_inf = float("-inf")
    max_in = scaled.masked_fill(~in_group, neg_inf).amax(-1, keepdim=True)
    max_out = scaled.masked_fill(in_group, neg_inf).amax(-1, keepdim=True)
    shifted = scaled - torch.where(in_group, max_in, max_out)
    exps = shifted.exp()
    sum_in = torch.where(in_group, exps, 0.0).sum(-1, keepdim=True)
    sum_out = torch.where(in_group, 0.0, exps).sum(-1, keepdim=True)
    # a non-empty group holds its own maximum, exp(0) = 1, so its sum is >= 1
    log_sum_in = sum_in.clamp_min(1.0).log()
    log_sum_out = sum_out.clamp_min(1.0).log()
    within = shifted - torch.where(in_group, log_sum_in, log_sum_out)
    hat = exps / torch.where(in_group, sum_in, sum_out).clamp_min(1.0)
    group_lse = torch.cat([max_in + log_sum_in, max_out + log_sum_out], dim=-1)
    log_mass = group_lse - torch.logsumexp(group_lse, dim=-1, keepdim=True)
    return within, hat, log_mass


def split_kl(student_logits, teacher_logits, in_group, temperature):
    """``(binary, kl_in, kl_out, mass_in, mass_out)`` per sample: the chain rule of the KL divergence
    (Zhao et al., 2022, DKD, Eq. (5)), the reference of ``skd.losses.functional.split_kl``."""
    has = torch.stack([in_group.any(1), (~in_group).any(1)], dim=1)
    within_s, _, log_mass_s = grouped_log_softmax(student_logits / temperature, in_group)
    within_t, hat_t, log_mass_t = grouped_log_softmax(teacher_logits.detach() / temperature, in_group)
    elementwise = hat_t * (within_t - within_s)
    kl_in = torch.where(in_group, elementwise, 0.0).sum(1)
    kl_out = torch.where(in_group, 0.0, elementwise).sum(1)
    mass_t = log_mass_t.exp()
    # an empty group: 0 * (-inf - -inf) is selected away (its mass is 0)
    gap = torch.where(has, log_mass_t - torch.where(has, log_mass_s, 0.0), 0.0)
    binary = torch.where(has, mass_t * gap, 0.0).sum(1)
    return binary, kl_in, kl_out, mass_t[:, 0].detach(), mass_t[:, 1].detach()


def split_kl_means(student_logits, teacher_logits, in_group, temperature):
    """The batch means of :func:`split_kl`'s three terms."""
    return tuple(term.mean() for term in split_kl(student_logits, teacher_logits, in_group, temperature)[:3])


def pearson_relations(student_logits, teacher_logits, temperature):
    """``(rows, columns)``: DIST's Pearson relations (Huang et al., 2022, Sec. 3.3) in skd's exact
    convention, by the generic correlation Function along each dimension (skd's path for the other
    distances and conventions): the reference of ``skd.losses.functional.pearson_relations``."""
    teacher_logits = teacher_logits.detach()
    return _generic_relation_distances(student_logits, teacher_logits, temperature, "pearson", "paper")



def kd_divergence(student_logits, teacher_logits, temperature):
    """Per-sample ``KL(softmax(z^T / T) || softmax(z^S / T))`` (Hinton et al., 2015, Sec. 2): the reference
    of ``skd.losses.functional.kd_divergence`` and ``kd_divergence_mean``."""
    log_s = torch.log_softmax(student_logits / temperature, dim=1)
    log_t = torch.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return torch.nn.functional.kl_div(log_s, log_t, log_target=True, reduction="none").sum(1)
