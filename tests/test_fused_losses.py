"""The fused closed forms against the plain-autograd references (tests/reference.py); CTKD around DKD/CAKD."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from skd import MLP, DistillationClassifier
from skd.losses import CAKD, DKD, make_loss
from skd.losses import functional as Fn
from skd.losses.functional.basics import _INDICES
from tests import reference
from tests.strategies import logits_pairs

#: Temperatures from tiny to the largest a loss accepts.
wide_temperatures = st.sampled_from([1e-3, 0.1, 0.5, 1.0, 4.0, 8.0, 100.0, 1e3])


def close(a, b, rel=1e-6):
    scale = 1.0 + torch.maximum(a.abs(), b.abs())
    return bool(((a - b).abs() <= rel * scale).all())


def masks_for(pair, data):
    """A CAKD strong mask (any k, labels or not), or a DKD target mask."""
    student, teacher, target = pair
    if data.draw(st.booleans()):
        return Fn.target_mask(target, student.shape[1])
    strong_k = data.draw(st.integers(0, student.shape[1] - 1))
    return Fn.strong_class_mask(teacher, target if data.draw(st.booleans()) else None, strong_k=strong_k)


@given(logits_pairs(), wide_temperatures, st.data())
def test_split_kl_means_equal_the_reference_in_value_and_gradient(pair, temperature, data):
    student, teacher, _ = pair
    mask = masks_for(pair, data)
    weights = [data.draw(st.floats(0.0, 5.0)) for _ in range(3)]
    z1 = student.clone().requires_grad_(True)
    z2 = student.clone().requires_grad_(True)
    fused = Fn.split_kl_means(z1, teacher, mask, temperature)
    expected = reference.split_kl_means(z2, teacher, mask, temperature)
    for got, want in zip(fused, expected, strict=True):
        assert close(got, want)
    sum(w * term for w, term in zip(weights, fused, strict=True)).backward()
    sum(w * term for w, term in zip(weights, expected, strict=True)).backward()
    assert torch.isfinite(z1.grad).all()
    assert torch.allclose(z1.grad, z2.grad, rtol=1e-6, atol=1e-9 / temperature)


@given(logits_pairs(), wide_temperatures, st.data())
def test_split_kl_per_sample_equals_the_reference_in_value_masses_and_gradient(pair, temperature, data):
    student, teacher, _ = pair
    mask = masks_for(pair, data)
    rows = len(student)
    weights = [torch.tensor([data.draw(st.floats(0.0, 5.0)) for _ in range(rows)], dtype=student.dtype)
               for _ in range(3)]
    z1 = student.clone().requires_grad_(True)
    z2 = student.clone().requires_grad_(True)
    fused = Fn.split_kl(z1, teacher, mask, temperature)
    expected = reference.split_kl(z2, teacher, mask, temperature)
    for got, want in zip(fused, expected, strict=True):
        assert close(got, want)
    assert not (fused.mass_in.requires_grad or fused.mass_out.requires_grad)
    sum((w * term).sum() for w, term in zip(weights, fused[:3], strict=True)).backward()
    sum((w * term).sum() for w, term in zip(weights, expected[:3], strict=True)).backward()
    assert torch.isfinite(z1.grad).all()
    assert torch.allclose(z1.grad, z2.grad, rtol=1e-6, atol=1e-9 / temperature)


@given(logits_pairs(max_classes=30, extremes=False), st.sampled_from([0.3, 1.0, 4.0, 20.0]), st.data())
def test_the_temperature_gradient_equals_autograd_of_the_reference(pair, temperature, data):
    student, teacher, _ = pair
    mask = masks_for(pair, data)  # empty groups included: the reference selects their -inf away
    per_sample = data.draw(st.booleans())
    weights = [data.draw(st.floats(0.1, 5.0)) for _ in range(3)]
    grads = []
    pairs = (Fn.split_kl, reference.split_kl) if per_sample else (Fn.split_kl_means, reference.split_kl_means)
    for split in pairs:
        t = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
        z = student.clone().requires_grad_(True)
        terms = split(z, teacher, mask, t)
        sum((w * term).sum() for w, term in zip(weights, terms[:3], strict=True)).backward()
        grads.append((z.grad, t.grad))
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-6, atol=1e-10)
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("empty", ["none", "out", "in"])
def test_split_kl_means_pass_gradcheck_for_student_and_temperature(empty):
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(4, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    teacher = torch.randn(4, 6, dtype=torch.float64, generator=generator) * 2
    mask = Fn.strong_class_mask(teacher, torch.tensor([0, 1, 2, 3]), strong_k=2)
    if empty == "out":
        mask[1] = True
    elif empty == "in":
        mask[2] = False
    temperature = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    for index in range(3):
        assert torch.autograd.gradcheck(
            lambda z, t, index=index: Fn.split_kl_means(z, teacher, mask, t)[index], (student, temperature))
    # a term whose gradient is not asked for (DKD leaves kl_in out) is a None upstream gradient
    assert torch.autograd.gradcheck(
        lambda z, t: sum(Fn.split_kl_means(z, teacher, mask, t)[::2]), (student, temperature))
    for index in range(3):  # per sample: the same Function, a weight per row
        assert torch.autograd.gradcheck(
            lambda z, t, index=index: Fn.split_kl(z, teacher, mask, t)[index], (student, temperature))


def test_split_kl_means_have_no_host_sync_with_a_learnable_temperature():
    student = torch.empty(6, 12, device="meta", requires_grad=True)
    teacher = torch.empty(6, 12, device="meta")
    mask = torch.empty(6, 12, dtype=torch.bool, device="meta")
    temperature = torch.empty((), device="meta", requires_grad=True)
    sum(Fn.split_kl_means(student, teacher, mask, temperature)).backward()
    assert student.grad.shape == student.shape and temperature.grad.shape == ()
    sum(term.sum() for term in Fn.split_kl(student, teacher, mask, temperature)[:3]).backward()


@given(logits_pairs(max_classes=40), wide_temperatures, st.booleans())
def test_dkd_and_cakd_terms_are_the_means_of_the_per_sample_functions(pair, temperature, unlabelled):
    student, teacher, target = pair
    if unlabelled:
        target = torch.where(torch.arange(len(target)) % 2 == 0, Fn.UNLABELLED, target)
    dkd = DKD().compute_terms(student, teacher, target, temperature)
    resolved = Fn.target_or_teacher_top(target, teacher)
    reference = Fn.dkd_terms(student, teacher, resolved, temperature)
    assert close(dkd["tckd"], reference.tckd.mean()) and close(dkd["nckd"], reference.nckd.mean())
    strong_k = min(2, student.shape[1] - 1)
    cakd = CAKD(strong_k=strong_k).compute_terms(student, teacher, target, temperature)
    mask = Fn.strong_class_mask(teacher, resolved, strong_k=strong_k)
    reference = Fn.cakd_terms(student, teacher, mask, temperature)
    for name in ("bcd", "scd", "wcd"):
        assert close(cakd[name], getattr(reference, name).mean())
    if not unlabelled:  # every row labelled: the shortcut gives the same terms
        for loss in (DKD(), CAKD(strong_k=strong_k)):
            plain = loss.compute_terms(student, teacher, target, temperature)
            short = loss.compute_terms(student, teacher, target, temperature, labelled_only=True)
            assert all(torch.equal(plain[name], short[name]) for name in plain)


def test_the_strong_mask_takes_classes_tied_with_a_kth_at_minus_infinity():
    teacher = torch.tensor([[0.0, float("-inf"), float("-inf"), 1.0]])
    mask = Fn.strong_class_mask(teacher, torch.tensor([0]), strong_k=2)
    assert mask.tolist() == [[True, True, True, True]]  # the 2nd non-target is -inf: both -inf tie


def test_class_indices_are_made_once_per_device_but_not_in_inference_mode():
    first = Fn.class_indices(13, "cpu")
    assert Fn.class_indices(13, "cpu") is first and torch.equal(first, torch.arange(13))
    with torch.inference_mode():
        made = Fn.class_indices(1237, "cpu")
    assert torch.equal(made, torch.arange(1237)) and (1237, torch.device("cpu")) not in _INDICES


@pytest.mark.parametrize("base", ["dkd", "cakd"])
def test_ctkd_around_dkd_and_cakd_equals_the_wrapped_loss_and_trains_its_temperature(base):
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(16, 10, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(16, 10, generator=generator, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (16,), generator=generator)
    ctkd = make_loss("ctkd", {"base": base})
    ctkd.lambda_ = 1.0
    terms = ctkd.compute_terms(student, teacher, y, None)
    learnt = float(ctkd.last_temperature_)
    wrapped = make_loss(base, {})

    def weighted(temperature):
        values = wrapped.compute_terms(student.detach(), teacher, y, temperature)
        weights = wrapped.term_weights(temperature)
        return {name: value * weights[name] for name, value in values.items()}

    expected = weighted(learnt)
    assert set(terms) == set(expected)
    for name, value in terms.items():
        assert torch.allclose(value, expected[name], rtol=1e-12)
    sum(terms.values()).backward()
    # the reversal: theta's gradient is -lambda dL/dT dT/dtheta; dL/dT by central differences
    step = 1e-5
    slope = (sum(weighted(learnt + step).values()) - sum(weighted(learnt - step).values())) / (2 * step)
    module = ctkd.temperature_module_
    sigmoid = torch.sigmoid(module.theta.detach())
    expected_grad = -slope * module.t_range * sigmoid * (1 - sigmoid)
    assert abs(float(expected_grad)) > 1e-6
    assert torch.allclose(module.theta.grad, expected_grad, rtol=1e-6)


@pytest.mark.parametrize("base", ["dkd", "cakd"])
def test_ctkd_around_dkd_and_cakd_moves_its_temperature_while_fitting(digits, base):
    X, y = digits
    teacher = DistillationClassifier(MLP, loss="ce", max_epochs=5, verbose=0, device="cpu",
                                     optimizer=torch.optim.Adam, lr=1e-2, random_state=0)
    teacher.fit(X[:400], y[:400])
    clf = DistillationClassifier(MLP, teacher=teacher, loss="ctkd", loss__base=base, loss__lambda_epochs=2,
                                 max_epochs=3, verbose=0, device="cpu", optimizer=torch.optim.Adam,
                                 lr=1e-2, random_state=0)
    clf.fit(X[:400], y[:400])
    temperatures = clf.loss_.temperature_history_ + [float(clf.loss_.last_temperature_.mean())]
    assert all(1.0 < t <= 21.0 for t in temperatures)
    assert any(abs(t - (1 + 20 / (1 + np.exp(-1)))) > 1e-3 for t in temperatures)  # it left its start
    for term in clf.loss_.terms:
        assert np.isfinite(clf.history[:, term]).all()
    assert clf.score(X[:400], y[:400]) > 0.5  # chance is 0.1


# -- DIST / R2KD: the Pearson relations ---------------------------------------------------------------


@given(logits_pairs(), wide_temperatures, st.data())
def test_pearson_relations_equal_the_reference_in_value_and_gradient(pair, temperature, data):
    student, teacher, _ = pair
    weights = [data.draw(st.floats(0.0, 5.0)) for _ in range(2)]
    z1 = student.clone().requires_grad_(True)
    z2 = student.clone().requires_grad_(True)
    fused = Fn.pearson_relations(z1, teacher, temperature)
    generic = reference.pearson_relations(z2, teacher, temperature)
    for got, expected in zip(fused, generic, strict=True):
        assert close(got, expected)
    sum(w * term for w, term in zip(weights, fused, strict=True)).backward()
    sum(w * term for w, term in zip(weights, generic, strict=True)).backward()
    assert torch.isfinite(z1.grad).all()
    # rho is scale-invariant: its gradient pieces stay O(1) at large T (and grow as 1/T at small T)
    assert torch.allclose(z1.grad, z2.grad, rtol=1e-6, atol=1e-9 * max(1.0, 1.0 / temperature))


@given(logits_pairs(max_classes=30, extremes=False), st.sampled_from([0.3, 1.0, 4.0, 20.0]), st.data())
def test_pearson_relations_temperature_gradient_equals_the_reference(pair, temperature, data):
    student, teacher, _ = pair
    weights = [data.draw(st.floats(0.1, 5.0)) for _ in range(2)]
    grads = []
    for relations in (Fn.pearson_relations, reference.pearson_relations):
        t = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
        z = student.clone().requires_grad_(True)
        sum(w * term for w, term in zip(weights, relations(z, teacher, t), strict=True)).backward()
        grads.append((z.grad, t.grad))
    # a column spread over 1e-8 of its size has gradients ~1e8 that cancel in the softmax backward:
    # both forms round there at ~1e-16 * 1e8
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-6, atol=1e-8)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("batch", [1, 5])
def test_pearson_relations_pass_gradcheck_for_student_and_temperature(batch):
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(batch, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    teacher = torch.randn(batch, 6, dtype=torch.float64, generator=generator) * 2
    teacher[:, 0] = teacher[0, 0]  # the teacher's first column constant on the first row's value
    temperature = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    for index in range(2):
        assert torch.autograd.gradcheck(
            lambda z, t, index=index: Fn.pearson_relations(z, teacher, t)[index], (student, temperature))


def test_pearson_relations_in_half_precision_are_finite_and_close_to_float32():
    generator = torch.Generator().manual_seed(3)
    student = (torch.randn(16, 20, generator=generator) * 5).half().requires_grad_(True)
    teacher = (torch.randn(16, 20, generator=generator) * 5).half()
    rows, columns = Fn.pearson_relations(student, teacher, 2.0)
    assert rows.dtype == torch.float16
    (rows + columns).float().backward()
    assert torch.isfinite(student.grad.float()).all()
    exact = Fn.pearson_relations(student.detach().float(), teacher.float(), 2.0)
    assert abs(float(rows) - float(exact[0])) < 1e-2 and abs(float(columns) - float(exact[1])) < 1e-2


def test_pearson_relations_have_no_host_sync_with_a_learnable_temperature():
    student = torch.empty(6, 12, device="meta", requires_grad=True)
    teacher = torch.empty(6, 12, device="meta")
    temperature = torch.empty((), device="meta", requires_grad=True)
    sum(Fn.pearson_relations(student, teacher, temperature)).backward()
    assert student.grad.shape == student.shape and temperature.grad.shape == ()


# -- KD and Tf-KD: the batch-mean KL -----------------------------------------------------------------


@given(logits_pairs(), wide_temperatures, st.floats(0.0, 5.0), st.booleans())
def test_kd_divergence_equals_the_reference_in_value_and_gradient(pair, temperature, weight, per_sample):
    student, teacher, _ = pair
    z1 = student.clone().requires_grad_(True)
    z2 = student.clone().requires_grad_(True)
    if per_sample:
        fused = Fn.kd_divergence(z1, teacher, temperature)
        expected = reference.kd_divergence(z2, teacher, temperature)
        weights = weight * torch.linspace(0.0, 1.0, len(student), dtype=student.dtype)
    else:
        fused = Fn.kd_divergence_mean(z1, teacher, temperature)
        expected = reference.kd_divergence(z2, teacher, temperature).mean()
        weights = weight
    assert close(fused, expected)
    (weights * fused).sum().backward()
    (weights * expected).sum().backward()
    assert torch.isfinite(z1.grad).all()
    assert torch.allclose(z1.grad, z2.grad, rtol=1e-6, atol=1e-9 / temperature)


@given(logits_pairs(max_classes=30, extremes=False), st.sampled_from([0.3, 1.0, 4.0, 20.0]))
def test_kd_divergence_temperature_gradient_equals_autograd(pair, temperature):
    student, teacher, _ = pair
    weights = torch.linspace(0.5, 2.0, len(student), dtype=student.dtype)
    grads = []
    for divergence in (Fn.kd_divergence_mean, lambda s, t, T: reference.kd_divergence(s, t, T).mean(),
                       lambda s, t, T: (weights * Fn.kd_divergence(s, t, T)).sum(),
                       lambda s, t, T: (weights * reference.kd_divergence(s, t, T)).sum()):
        t = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
        z = student.clone().requires_grad_(True)
        (t**2 * divergence(z, teacher, t)).backward()
        grads.append((z.grad, t.grad))
    for fused, expected in (grads[:2], grads[2:]):
        assert torch.allclose(fused[0], expected[0], rtol=1e-6, atol=1e-10)
        assert torch.allclose(fused[1], expected[1], rtol=1e-6, atol=1e-10)


def test_kd_divergence_passes_gradcheck_for_student_and_temperature():
    generator = torch.Generator().manual_seed(4)
    student = torch.randn(5, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    teacher = torch.randn(5, 7, dtype=torch.float64, generator=generator) * 3
    temperature = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, t: Fn.kd_divergence_mean(z, teacher, t), (student, temperature))
    assert torch.autograd.gradcheck(lambda z, t: Fn.kd_divergence(z, teacher, t), (student, temperature))
    one = torch.full((1,), 1.5, dtype=torch.float64, requires_grad=True)  # CTKD's global temperature
    assert torch.autograd.gradcheck(lambda z, t: Fn.kd_divergence(z, teacher, t), (student, one))


@given(logits_pairs(max_classes=50), wide_temperatures, st.floats(0.05, 0.999))
def test_tfkd_labelled_shortcut_equals_the_paper_formula(pair, temperature, a):
    student, _, target = pair
    loss = make_loss("tfkd", {"a": a})
    z1 = student.clone().requires_grad_(True)
    z2 = student.clone().requires_grad_(True)
    short = loss.compute_terms(z1, None, target, temperature, labelled_only=True)["kd"]
    plain = loss.compute_terms(z2, None, target, temperature)["kd"]
    assert close(short, plain)
    short.backward()
    plain.backward()
    assert torch.allclose(z1.grad, z2.grad, rtol=1e-6, atol=1e-9 / temperature)
    hand_made = Fn.tfkd_reg_distribution(target, student.shape[1], a, torch.float64)
    assert torch.allclose(Fn.tfkd_reg_log_distribution(target, student.shape[1], a, torch.float64),
                          hand_made.log(), rtol=1e-12)


# -- R2KD: the Pearson step of Spearman's distance ---------------------------------------------------


@given(logits_pairs(), st.data())
def test_row_pearson_distance_equals_the_generic_pearson_distance(pair, data):
    student, teacher, _ = pair
    if data.draw(st.booleans()):  # ranks, as Spearman's distance feeds it (ties and constant rows)
        student, teacher = Fn.soft_rank(student, 5.0), Fn.hard_rank(teacher)
    weights = torch.tensor([data.draw(st.floats(0.0, 3.0)) for _ in range(len(student))], dtype=student.dtype)
    z1 = student.clone().requires_grad_(True)
    z2 = student.clone().requires_grad_(True)
    fused = Fn.row_pearson_distance(z1, teacher)
    generic = Fn.pearson_distance(z2, teacher, dim=-1)
    assert close(fused, generic)
    (weights * fused).sum().backward()
    (weights * generic).sum().backward()
    assert torch.isfinite(z1.grad).all()
    scale = 1.0 + student.abs().amax(-1, keepdim=True)  # gradients scale as 1 / |a_c|
    assert torch.allclose(z1.grad * scale, z2.grad * scale, rtol=1e-6, atol=1e-9)


def test_row_pearson_distance_passes_gradcheck_and_keeps_nan():
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(4, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    b = torch.randn(4, 6, dtype=torch.float64, generator=generator)
    b[1] = 2.0  # a constant row: distance 1, no gradient
    assert torch.autograd.gradcheck(lambda x: Fn.row_pearson_distance(x, b), (a,))
    assert float(Fn.row_pearson_distance(a, b)[1]) == 1.0
    nan = torch.full((2, 3), float("nan"), dtype=torch.float64)
    # a NaN reaches the distance unless the other side is constant (then undefined), as in the generic one
    assert torch.equal(Fn.row_pearson_distance(nan, b[:2, :3]).isnan(), torch.tensor([True, False]))
    assert torch.equal(Fn.pearson_distance(nan, b[:2, :3]).isnan(), torch.tensor([True, False]))
