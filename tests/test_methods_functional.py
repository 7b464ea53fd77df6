"""The maths of issue 21's methods against independent transcriptions of their released code.

Each ``released_*`` function below copies the logic of the authors' code (named in its
docstring) with no skd import, so a test compares two independent computations, in float64,
on random and extreme (±1e4) logits: values and gradients.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from skd.losses import functional as Fn
from tests.strategies import logits_pairs, temperatures

# -- transcriptions of released code ------------------------------------------------------


def released_normalize(logit):
    """sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py, ``normalize``."""
    mean = logit.mean(dim=-1, keepdims=True)
    stdv = logit.std(dim=-1, keepdims=True)
    return (logit - mean) / (1e-7 + stdv)


def released_kd_loss(logits_student_in, logits_teacher_in, temperature, logit_stand):
    """Same file, ``kd_loss``."""
    logits_student = released_normalize(logits_student_in) if logit_stand else logits_student_in
    logits_teacher = released_normalize(logits_teacher_in) if logit_stand else logits_teacher_in
    log_pred_student = F.log_softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    loss_kd = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean()
    return loss_kd * temperature**2


def released_wttm(y_s, y_t, l, weighted=True):  # noqa: E741 (the released name)
    """zkxufo/TTM, distiller_zoo/wttm.py (``weighted``) and ttm.py, ``forward``."""
    p_s = F.log_softmax(y_s, dim=1)
    p_t = torch.pow(torch.softmax(y_t, dim=1), l)
    norm = torch.sum(p_t, dim=1)
    p_t = p_t / norm.unsqueeze(1)
    kl = torch.sum(F.kl_div(p_s, p_t, reduction="none"), dim=1)
    return torch.mean(norm * kl) if weighted else torch.mean(kl)


def released_nkd(logit_s, logit_t, gt_label, temp, gamma):
    """yzd-v/cls_KD, mmcls/models/dis_losses/nkd.py, ``NKDLoss.forward``."""
    label = gt_label.view(len(gt_label), 1)
    n, _ = logit_s.shape
    s_i = F.log_softmax(logit_s, dim=1)
    t_i = F.softmax(logit_t, dim=1)
    s_t = torch.gather(s_i, 1, label)
    t_t = torch.gather(t_i, 1, label).detach()
    loss_t = -(t_t * s_t).mean()
    mask = torch.ones_like(logit_s).scatter_(1, label, 0).bool()
    logit_s = logit_s[mask].reshape(n, -1)
    logit_t = logit_t[mask].reshape(n, -1)
    S_i = F.log_softmax(logit_s / temp, dim=1)
    T_i = F.softmax(logit_t / temp, dim=1)
    loss_non = (T_i * S_i).sum(dim=1).mean()
    loss_non = -gamma * (temp**2) * loss_non
    return loss_t + loss_non


class ReleasedGRL(torch.autograd.Function):
    """zhengli97/CTKD, models/temp_global.py, ``GradientReversalFunction``."""

    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx, grads):
        lambda_ = grads.new_tensor(ctx.lambda_)
        return lambda_ * grads, None


def released_cosine_decay(i, max_value=0.0, min_value=-1.0, num_loops=10):
    """zhengli97/CTKD, train_student.py, ``CosineDecay.get_value``."""
    i = min(max(i, 0), num_loops)
    value = (math.cos(i * math.pi / num_loops) + 1.0) * 0.5
    return value * (max_value - min_value) + min_value


def released_instance_kd(y_s, y_t, T):
    """zhengli97/CTKD README, instance-wise temperature: the loop over ``KL_Loss``."""

    def kl_loss(output_batch, teacher_outputs, t):
        output_batch = F.log_softmax(output_batch.unsqueeze(0) / t, dim=1)
        teacher_outputs = F.softmax(teacher_outputs.unsqueeze(0) / t, dim=1) + 10 ** (-7)
        return t * t * torch.sum(torch.mul(teacher_outputs, torch.log(teacher_outputs) - output_batch))

    loss = 0
    for i in range(T.shape[0]):
        loss += kl_loss(y_s[i], y_t[i], T[i])
    return loss / T.shape[0]


def released_rdrop_kl(p, q):
    """R-Drop (dropreg/R-Drop README), ``compute_kl_loss`` with no padding mask, per row."""
    p_loss = F.kl_div(F.log_softmax(p, dim=-1), F.softmax(q, dim=-1), reduction="none")
    q_loss = F.kl_div(F.log_softmax(q, dim=-1), F.softmax(p, dim=-1), reduction="none")
    return (p_loss.sum(-1) + q_loss.sum(-1)) / 2


# -- helpers ------------------------------------------------------------------------------------


def close(a, b, rel=1e-8):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    scale = 1.0 + torch.maximum(a.abs(), b.abs())
    return bool(((a - b).abs() <= rel * scale).all())


def grads(loss, *inputs):
    return torch.autograd.grad(loss, inputs, allow_unused=True, retain_graph=True)


def random_logits(batch=8, n_classes=13, scale=3.0, seed=0, extreme=False):
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, scale, size=(batch, n_classes))
    if extreme:
        mask = rng.random(size=values.shape) < 0.3
        values = np.where(mask, rng.choice([-1e4, 1e4], size=values.shape), values)
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


CASES = [dict(seed=0), dict(seed=1, scale=0.1), dict(seed=2, scale=30.0), dict(seed=3, extreme=True)]


# -- logit standardization -----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_standardize_equals_released_normalize_values_and_gradients(case):
    logits = random_logits(**case)
    ours, theirs = Fn.standardize_logits(logits), released_normalize(logits)
    assert close(ours, theirs, rel=1e-10)
    weights = torch.randn(logits.shape, dtype=torch.float64)
    assert close(grads((ours * weights).sum(), logits)[0], grads((theirs * weights).sum(), logits)[0], 1e-8)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_on_standardized_logits_equals_released_kd_loss(case, temperature):
    student = random_logits(**case)
    teacher = random_logits(**{**case, "seed": case["seed"] + 10}).detach()
    ours = temperature**2 * Fn.kd_divergence(
        Fn.standardize_logits(student), Fn.standardize_logits(teacher), temperature
    ).mean()
    theirs = released_kd_loss(student, teacher, temperature, logit_stand=True)
    assert close(ours, theirs, 1e-10)
    assert close(grads(ours, student)[0], grads(theirs, student)[0], 1e-8)


@settings(max_examples=40)
@given(logits_pairs(extremes=False, ties=False, min_classes=3, max_classes=50),
       st.floats(0.2, 20.0), st.floats(-50.0, 50.0))
def test_standardize_is_invariant_to_positive_affine_maps_of_a_row(pair, scale, shift):
    logits = pair[0]
    spread = logits.std(dim=1)
    if bool((torch.minimum(spread, scale * spread) < 0.05).any()):
        return  # the 1e-7 added to std is then more than 1e-5 of it: exact invariance needs eps = 0
    assert close(Fn.standardize_logits(scale * logits + shift), Fn.standardize_logits(logits), rel=1e-5)


def test_standardize_gives_mean_zero_unit_std_and_finite_gradient_on_a_constant_row():
    logits = torch.tensor([[3.0, 3.0, 3.0], [1.0, 2.0, 6.0]], dtype=torch.float64, requires_grad=True)
    out = Fn.standardize_logits(logits)
    assert close(out[1].mean(), 0.0) and close(out[1].std(), 1.0, rel=1e-6)
    assert torch.equal(out[0], torch.zeros(3, dtype=torch.float64))
    weights = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
    (gradient,) = grads((out * weights).sum(), logits)
    assert torch.isfinite(gradient).all()
    assert close(gradient, grads((released_normalize(logits) * weights).sum(), logits)[0], 1e-12)


# -- TTM and WTTM ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("gamma", [0.1, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("weighted", [True, False])
def test_ttm_and_wttm_equal_released_code(case, gamma, weighted):
    student = random_logits(**case)
    teacher = random_logits(**{**case, "seed": case["seed"] + 10})
    divergence = Fn.wttm_divergence if weighted else Fn.ttm_divergence
    ours = divergence(student, teacher, gamma).mean()
    theirs = released_wttm(student, teacher, gamma, weighted)
    assert close(ours, theirs, 1e-9)
    assert close(grads(ours, student)[0], grads(theirs, student)[0], 1e-8)
    if not case.get("extreme"):  # released pow(0, l) has an infinite slope; teacher grads only on finite ones
        assert close(grads(ours, teacher)[0], grads(theirs, teacher)[0], 1e-7)


@given(logits_pairs(), st.sampled_from([0.1, 0.25, 0.5, 1.0]))
def test_wttm_weight_is_between_one_and_c_to_the_one_minus_gamma(pair, gamma):
    _, teacher, _ = pair
    log_q, weight = Fn.power_transformed_teacher(teacher, gamma)
    n_classes = teacher.shape[1]
    assert bool((weight >= 1 - 1e-9).all()) and bool((weight <= n_classes ** (1 - gamma) * (1 + 1e-9)).all())
    assert close(log_q.exp().sum(1), torch.ones(teacher.shape[0], dtype=torch.float64))
    assert close(log_q, torch.log_softmax(gamma * teacher, dim=1), 1e-9)  # p^g / sum p^g = softmax(g z)


def test_ttm_gamma_one_is_kl_at_temperature_one():
    student, teacher = random_logits(seed=4), random_logits(seed=5)
    assert close(Fn.ttm_divergence(student, teacher, 1.0), Fn.kd_divergence(student, teacher, 1.0), 1e-10)


# -- NKD ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("temperature", "gamma"), [(1.0, 1.5), (3.0, 3.5), (0.5, 1.0)])
def test_nkd_equals_released_code(case, temperature, gamma):
    student = random_logits(**case)
    teacher = random_logits(**{**case, "seed": case["seed"] + 10}).detach()
    target = torch.tensor(np.random.default_rng(case["seed"]).integers(0, student.shape[1], student.shape[0]))
    terms = Fn.nkd_terms(student, teacher, target, temperature)
    ours = terms.target.mean() + gamma * temperature**2 * terms.non_target.mean()
    theirs = released_nkd(student, teacher, target, temperature, gamma)
    assert close(ours, theirs, 1e-10)
    assert close(grads(ours, student)[0], grads(theirs, student)[0], 1e-8)


@given(logits_pairs(), temperatures)
def test_nkd_non_target_term_minus_teacher_entropy_is_the_dkd_nckd(pair, temperature):
    student, teacher, target = pair
    terms = Fn.nkd_terms(student, teacher, target, temperature)
    rest = ~Fn.target_mask(target, teacher.shape[1])
    log_rest = torch.log_softmax(torch.where(rest, teacher / temperature, float("-inf")), dim=1)
    entropy = -torch.where(rest & (log_rest.exp() > 0), log_rest.exp() * log_rest, 0.0).sum(1)
    nckd = Fn.dkd_terms(student, teacher, target, temperature).nckd
    assert close(terms.non_target - entropy, nckd, rel=1e-6)
    assert torch.isfinite(terms.target).all() and torch.isfinite(terms.non_target).all()


# -- CTKD --------------------------------------------------------------------------------------------------


def test_curriculum_lambda_is_the_negative_of_the_released_cosine_decay():
    for epoch in range(0, 16):
        assert close(-Fn.curriculum_lambda(epoch, 1.0, 0.0, 10), released_cosine_decay(epoch), 1e-12)
    assert Fn.curriculum_lambda(0) == 0.0 and Fn.curriculum_lambda(10) == 1.0 == Fn.curriculum_lambda(50)
    values = [Fn.curriculum_lambda(e) for e in range(11)]
    assert values == sorted(values)


@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0])
def test_gradient_reversal_equals_the_released_layer_with_the_negated_lambda(strength):
    values = random_logits(seed=6)
    weights = torch.randn(values.shape, dtype=torch.float64)
    ours = Fn.gradient_reversal(values, strength)
    theirs = ReleasedGRL.apply(values, -strength)
    assert torch.equal(ours, values) and torch.equal(theirs, values)
    assert close(grads((ours * weights).sum(), values)[0], grads((theirs * weights).sum(), values)[0], 0)
    assert close(grads((ours * weights).sum(), values)[0], -strength * weights, 0)


def test_global_temperature_equals_the_released_module_and_mapping():
    module = Fn.GlobalTemperature().double()
    theta = nn.Parameter(torch.ones(1, dtype=torch.float64))  # released Global_T.global_T
    student, teacher = random_logits(seed=7), random_logits(seed=8).detach()
    strength = Fn.curriculum_lambda(3)
    ours_t = module(strength)
    theirs_t = 1.0 + 20.0 * torch.sigmoid(ReleasedGRL.apply(theta, released_cosine_decay(3)))
    assert close(ours_t, theirs_t, 1e-12) and close(ours_t, 1 + 20 / (1 + math.exp(-1)), 1e-12)
    ours = ours_t**2 * Fn.kd_divergence(student, teacher, ours_t).mean()
    log_s = F.log_softmax(student / theirs_t, dim=1)
    theirs = nn.KLDivLoss(reduction="batchmean")(log_s, F.softmax(teacher / theirs_t, dim=1)) * theirs_t**2
    assert close(ours, theirs, 1e-10)
    assert close(grads(ours, module.theta)[0], grads(theirs, theta)[0], 1e-9)
    assert close(grads(ours, student)[0], grads(theirs, student)[0], 1e-9)


def test_reversed_temperature_gradient_points_to_a_larger_loss():
    module = Fn.GlobalTemperature().double()
    student, teacher = random_logits(seed=9).detach(), random_logits(seed=10).detach()

    def loss_at():
        temperature = module(1.0)
        return temperature**2 * Fn.kd_divergence(student, teacher, temperature).mean()

    before = loss_at()
    (gradient,) = grads(before, module.theta)
    with torch.no_grad():
        module.theta -= 0.05 * gradient  # one SGD step on the reversed gradient
    assert loss_at() > before


@pytest.mark.parametrize("case", CASES[:3])
def test_instance_temperature_kd_equals_the_released_loop(case):
    student = random_logits(**case)
    teacher = random_logits(**{**case, "seed": case["seed"] + 10}).detach()
    temperature = torch.linspace(1.5, 12.0, student.shape[0], dtype=torch.float64, requires_grad=True)
    ours = Fn.kd_divergence_per_sample_temperature(student, teacher, temperature, eps=1e-7).mean()
    theirs = released_instance_kd(student, teacher, temperature)
    assert close(ours, theirs, 1e-10)
    ours_g, theirs_g = grads(ours, student, temperature), grads(theirs, student, temperature)
    assert close(ours_g[0], theirs_g[0], 1e-9) and close(ours_g[1], theirs_g[1], 1e-9)
    four = torch.full((8,), 4.0, dtype=torch.float64)
    exact = Fn.kd_divergence_per_sample_temperature(student, teacher, four)
    assert close(exact, 16.0 * Fn.kd_divergence(student, teacher, 4.0), 1e-10)


def test_instance_temperature_module_range_shape_and_reversed_gradient():
    torch.manual_seed(0)
    module = Fn.InstanceTemperature(n_classes=13, hidden=16).double()
    student, teacher = random_logits(seed=11), random_logits(seed=12)
    temperature = module(student, teacher, 0.5)
    assert temperature.shape == (8,) and bool(((temperature > 1) & (temperature < 21)).all())
    loss = Fn.kd_divergence_per_sample_temperature(student, teacher, temperature).mean()
    reversed_grads = grads(loss, *module.parameters())
    features = torch.cat([teacher, student], dim=1).detach()
    plain_t = 1.0 + 20.0 * torch.sigmoid(module.mlp(features).squeeze(1))
    plain = Fn.kd_divergence_per_sample_temperature(student, teacher, plain_t).mean()
    for reversed_grad, plain_grad in zip(reversed_grads, grads(plain, *module.parameters()), strict=True):
        assert close(reversed_grad, -0.5 * plain_grad, 1e-10)
    assert grads(temperature.sum(), student)[0] is None  # logits enter detached


# -- the compressed book -------------------------------------------------------------------------------


def released_style_bucket_kl(student, teacher, k):
    """An independent numpy computation of the (k + 1)-bucket KL at T = 1 (TRL-style top-k + tail)."""
    s = torch.softmax(student, 1).detach().numpy()
    t = torch.softmax(teacher, 1).detach().numpy()
    out = []
    for srow, trow in zip(s, t, strict=True):
        top = np.argsort(-trow, kind="stable")[:k]
        bt = np.append(trow[top], 1.0 - trow[top].sum())
        bs = np.append(srow[top], 1.0 - srow[top].sum())
        out.append(sum(p * math.log(p / q) for p, q in zip(bt, bs, strict=True) if p > 0))
    return torch.tensor(out)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_divergence_equals_an_independent_bucket_kl(k):
    student, teacher = random_logits(seed=13, scale=1.0), random_logits(seed=14, scale=1.0)
    book = Fn.compress_teacher(teacher, k)
    assert close(Fn.topk_kd_divergence(student, book), released_style_bucket_kl(student, teacher, k), 1e-9)


@given(logits_pairs(), temperatures)
def test_topk_with_all_classes_is_the_full_kd_at_any_temperature(pair, temperature):
    student, teacher, _ = pair
    book = Fn.compress_teacher(teacher, teacher.shape[1])
    assert torch.isinf(book.log_tail).all()
    full = Fn.kd_divergence(student, teacher, temperature)
    assert close(Fn.topk_kd_divergence(student, book, temperature), full, 1e-7)


@given(logits_pairs(min_classes=3), st.data())
def test_topk_bucket_kl_is_at_most_the_full_kl_and_exact_with_one_class_left(pair, data):
    student, teacher, _ = pair
    n_classes = teacher.shape[1]
    k = data.draw(st.integers(1, n_classes - 1))
    book = Fn.compress_teacher(teacher, k)
    mass = torch.logsumexp(torch.cat([book.log_probs, book.log_tail[:, None]], 1), 1)
    assert close(mass, torch.zeros_like(mass), 1e-9)
    full = Fn.kd_divergence(student, teacher, 1.0)
    bucket = Fn.topk_kd_divergence(student, book)
    assert bool((bucket <= full * (1 + 1e-7) + 1e-9).all()) and bool((bucket >= -1e-9).all())
    assert close(Fn.topk_kd_divergence(student, Fn.compress_teacher(teacher, n_classes - 1)), full, 1e-6)


@given(logits_pairs(extremes=False, min_classes=3), temperatures, st.data())
def test_a_book_written_at_the_losss_temperature_gives_exact_buckets(pair, temperature, data):
    student, teacher, _ = pair
    k = data.draw(st.integers(1, teacher.shape[1] - 1))
    at_t = Fn.compress_teacher(teacher, k, temperature)
    rescaled = Fn.topk_kd_divergence(student / temperature, Fn.compress_teacher(teacher / temperature, k))
    assert close(Fn.topk_kd_divergence(student, at_t, temperature), rescaled, 1e-8)
    last = Fn.compress_teacher(teacher, teacher.shape[1] - 1, temperature)
    assert close(Fn.topk_kd_divergence(student, last, temperature),
                 Fn.kd_divergence(student, teacher, temperature), 1e-6)


def test_topk_gradients_are_finite_for_extreme_logits_and_tiny_temperatures():
    student, teacher = random_logits(seed=15, extreme=True), random_logits(seed=16, extreme=True)
    for temperature in (0.1, 1.0, 4.0):
        loss = Fn.topk_kd_divergence(student, Fn.compress_teacher(teacher, 4), temperature).sum()
        assert torch.isfinite(loss) and torch.isfinite(grads(loss, student)[0]).all()


def test_compress_refuses_a_bad_k():
    with pytest.raises(ValueError, match="k must be in"):
        Fn.compress_teacher(torch.zeros(2, 5), 6)


# -- the related-work methods ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_symmetric_consistency_equals_the_rdrop_kl(case):
    first, second = random_logits(**case), random_logits(**{**case, "seed": case["seed"] + 10})
    ours = Fn.consistency_divergence(first, second)
    theirs = released_rdrop_kl(first, second)
    assert close(ours, theirs, 1e-10)
    ours_g, theirs_g = grads(ours.sum(), first, second), grads(theirs.sum(), first, second)
    assert torch.isfinite(ours_g[0]).all() and torch.isfinite(ours_g[1]).all()
    if not case.get("extreme"):  # the released form differentiates softmax(q) * log softmax(q): NaN at p = 0
        assert close(ours_g[0], theirs_g[0], 1e-8) and close(ours_g[1], theirs_g[1], 1e-8)


@given(logits_pairs(), temperatures, st.sampled_from(Fn.CONSISTENCY_KINDS))
def test_consistency_is_symmetric_nonnegative_and_zero_for_equal_passes(pair, temperature, kind):
    first, second, _ = pair
    forward = Fn.consistency_divergence(first, second, temperature, kind)
    assert close(forward, Fn.consistency_divergence(second, first, temperature, kind), 1e-9)
    assert bool((forward >= -1e-12).all())
    same = Fn.consistency_divergence(first, first.clone(), temperature, kind)
    assert close(same, torch.zeros_like(forward), 0)


@given(logits_pairs(extremes=False), temperatures, temperatures)
def test_extractive_teacher_separates_confidence_from_relations(pair, temperature, confidence_temperature):
    _, teacher, _ = pair
    log_q = Fn.extractive_teacher_log_probs(teacher, temperature, confidence_temperature)
    assert close(log_q.exp().sum(1), torch.ones(teacher.shape[0], dtype=torch.float64), 1e-9)
    top = teacher.argmax(1, keepdim=True)
    confident = torch.softmax(teacher / confidence_temperature, 1).gather(1, top)
    assert close(log_q.exp().gather(1, top), confident, 1e-9)
    same = Fn.extractive_teacher_log_probs(teacher, temperature, temperature)
    assert close(same.exp(), torch.softmax(teacher / temperature, 1), 1e-9)


def test_adaptive_alpha_and_self_knowledge_smoothed_ce():
    sure = torch.tensor([[20.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    unsure = torch.zeros(1, 4, dtype=torch.float64)
    assert Fn.adaptive_smoothing_alpha(sure).item() < 1e-6
    assert close(Fn.adaptive_smoothing_alpha(unsure), 1.0)
    assert close(Fn.adaptive_smoothing_alpha(unsure, 0.3), 0.3)
    student, prior = random_logits(seed=17), random_logits(seed=18)
    target = torch.arange(8) % 13
    alpha = Fn.adaptive_smoothing_alpha(student, 0.5)
    assert grads(alpha.sum() + student.sum() * 0, student)[0].abs().sum() == 0  # alpha passes no gradient
    ours = Fn.self_knowledge_smoothed_ce(student, prior, target, alpha, temperature=2.0)
    smoothed = (1 - alpha[:, None]) * F.one_hot(target, 13) + alpha[:, None] * torch.softmax(prior / 2.0, 1)
    assert close(ours, -(smoothed * torch.log_softmax(student, 1)).sum(1), 1e-10)


def test_corrected_teacher_fixes_only_wrong_rows_progressively():
    teacher = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 4.0]], dtype=torch.float64)
    target = torch.tensor([0, 0, -1])  # right, wrong, unlabelled
    plain = torch.log_softmax(teacher / 2.0, 1)
    assert close(Fn.corrected_teacher_log_probs(teacher, target, 2.0, 0.0), plain, 1e-12)
    full = Fn.corrected_teacher_log_probs(teacher, target, 2.0, 1.0)
    assert close(full[[0, 2]], plain[[0, 2]], 1e-12)
    assert full[1].argmax() == 0 and close(full[1].exp().sum(), 1.0, 1e-12)
    assert close(full[1, 2], plain[1, 2], 1e-12)  # the third class keeps its dark knowledge
    half = Fn.corrected_teacher_log_probs(teacher, target, 2.0, 0.5).exp()
    assert close(half[1, 0], half[1, 1], 1e-12)


def test_teacher_quality_weights_and_mixture():
    target = torch.tensor([0, 1, 2, 1, -1])
    good = 5.0 * F.one_hot(target.clamp_min(0), 3).double()
    bad = 5.0 * F.one_hot((target.clamp_min(0) + 1) % 3, 3).double()
    stack = torch.stack([good, bad])
    accuracy = Fn.teacher_quality(stack, target, "accuracy")
    assert close(accuracy, torch.tensor([1.0, 0.0]), 0)
    ce = Fn.teacher_quality(stack, target, "ce")
    expected = torch.log_softmax(stack, 2)[:, :4].gather(2, target[:4].expand(2, 4).unsqueeze(2)).mean((1, 2))
    assert close(ce, expected, 1e-12)
    weights = Fn.teacher_quality_weights(ce, temperature=1.0)
    assert close(weights.sum(), 1.0, 1e-12) and weights[0] > weights[1]
    one_hot = Fn.weighted_teacher_log_probs(stack, torch.tensor([1.0, 0.0], dtype=torch.float64), 2.0)
    assert close(one_hot, torch.log_softmax(good / 2.0, 1), 1e-12)
    equal = Fn.weighted_teacher_log_probs(stack, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert close(equal.exp(), 0.5 * (torch.softmax(good, 1) + torch.softmax(bad, 1)), 1e-12)


# -- capturable: no host read ------------------------------------------------------------------------


def test_new_functions_have_no_host_sync():
    meta = {"device": "meta"}
    student = torch.empty(6, 12, **meta, requires_grad=True)
    teacher = torch.empty(6, 12, **meta)
    target = torch.empty(6, dtype=torch.long, **meta)
    strength = torch.empty((), **meta)
    total = Fn.kd_divergence(Fn.standardize_logits(student), Fn.standardize_logits(teacher), 2.0).sum()
    total = total + Fn.wttm_divergence(student, teacher, 0.2).sum()
    total = total + Fn.ttm_divergence(student, teacher, 0.2).sum()
    nkd = Fn.nkd_terms(student, teacher, target, 2.0)
    total = total + nkd.target.sum() + nkd.non_target.sum()
    temperature = 1.0 + torch.sigmoid(Fn.gradient_reversal(student.sum(1), strength))
    total = total + Fn.kd_divergence_per_sample_temperature(student, teacher, temperature).sum()
    total = total + Fn.topk_kd_divergence(student, Fn.compress_teacher(teacher, 4), 2.0).sum()
    total = total + Fn.consistency_divergence(student, teacher).sum()
    total = total + (Fn.extractive_teacher_log_probs(teacher, 4.0).exp() * student).sum()
    alpha = Fn.adaptive_smoothing_alpha(student)
    total = total + Fn.self_knowledge_smoothed_ce(student, teacher, target, alpha).sum()
    total = total + (Fn.corrected_teacher_log_probs(teacher, target, 2.0, strength) * student).sum()
    stack = torch.stack([teacher, teacher])
    weights = Fn.teacher_quality_weights(Fn.teacher_quality(stack, target))
    total = total + (Fn.weighted_teacher_log_probs(stack, weights) * student).sum()
    total.backward()
    assert student.grad.device.type == "meta" and student.grad.shape == student.shape


@settings(max_examples=30)
@given(logits_pairs(extremes=False, ties=False), temperatures, st.floats(-30.0, 30.0),
       st.integers(0, 2**31 - 1))
def test_new_divergences_ignore_row_shifts_and_one_class_permutation(pair, temperature, shift, seed):
    """No ties: which of two tied classes is in a top-k book depends on their order."""
    student, teacher, target = pair
    permutation = torch.as_tensor(np.random.default_rng(seed).permutation(student.shape[1]))
    inverse = torch.argsort(permutation)
    k = max(1, student.shape[1] // 3)

    def all_terms(s, t, y):
        nkd = Fn.nkd_terms(s, t, y, temperature)
        return torch.stack([
            Fn.wttm_divergence(s, t, 1 / temperature), nkd.target, nkd.non_target,
            Fn.topk_kd_divergence(s, Fn.compress_teacher(t, k), temperature),
            Fn.kd_divergence(Fn.standardize_logits(s), Fn.standardize_logits(t), temperature),
        ])

    reference = all_terms(student, teacher, target)
    assert close(all_terms(student + shift, teacher - shift, target), reference, 1e-6)
    permuted = all_terms(student[:, permutation], teacher[:, permutation], inverse[target])
    assert close(permuted, reference, 1e-6)
