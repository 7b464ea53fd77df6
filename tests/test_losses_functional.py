"""Property tests of the loss maths (skd.losses.functional)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from skd.losses import functional as Fn
from tests import reference
from tests.strategies import logits_pairs, temperatures, untied_rows


def full_kl(student, teacher, temperature):
    return Fn.kd_divergence(student, teacher, temperature)


def close(a, b, rel=1e-6):
    scale = 1.0 + torch.maximum(a.abs(), b.abs())
    return bool(((a - b).abs() <= rel * scale).all())


@given(logits_pairs(), temperatures)
def test_dkd_decomposition_sums_to_kl(pair, temperature):
    student, teacher, target = pair
    kl = full_kl(student, teacher, temperature)
    terms = Fn.dkd_terms(student, teacher, target, temperature)
    assert close(kl, terms.tckd + (1 - terms.teacher_target_prob) * terms.nckd)


@given(logits_pairs(), temperatures, st.data())
def test_cakd_decomposition_sums_to_kl_for_every_k(pair, temperature, data):
    student, teacher, target = pair
    n_classes = student.shape[1]
    strong_k = data.draw(st.integers(0, n_classes - 1))
    use_labels = data.draw(st.booleans())
    mask = Fn.strong_class_mask(teacher, target if use_labels else None, strong_k=strong_k)
    if use_labels:
        assert mask.gather(1, target[:, None]).all()
        assert (mask.sum(1) >= strong_k + 1).all()  # classes tied with the k-th join S too
    terms = Fn.cakd_terms(student, teacher, mask, temperature)
    kl = full_kl(student, teacher, temperature)
    assert close(kl, terms.bcd + terms.mass_strong * terms.scd + terms.mass_weak * terms.wcd)
    assert close(terms.mass_strong + terms.mass_weak, torch.ones_like(kl))


@given(logits_pairs(), temperatures, st.floats(0.0, 1.0), st.booleans())
def test_cakd_mass_rule_sums_to_kl(pair, temperature, strong_mass, use_labels):
    student, teacher, target = pair
    mask = Fn.strong_class_mask(
        teacher, target if use_labels else None, rule="mass", strong_mass=strong_mass,
        temperature=temperature,
    )
    terms = Fn.cakd_terms(student, teacher, mask, temperature)
    kl = full_kl(student, teacher, temperature)
    assert close(kl, terms.bcd + terms.mass_strong * terms.scd + terms.mass_weak * terms.wcd)


@given(logits_pairs(), temperatures)
def test_divergences_non_negative(pair, temperature):
    student, teacher, target = pair
    tol = -1e-9
    assert (full_kl(student, teacher, temperature) >= tol).all()
    d = Fn.dkd_terms(student, teacher, target, temperature)
    assert (d.tckd >= tol).all() and (d.nckd >= tol).all()
    mask = Fn.strong_class_mask(teacher, target, strong_k=min(2, student.shape[1] - 1))
    c = Fn.cakd_terms(student, teacher, mask, temperature)
    for term in (c.bcd, c.scd, c.wcd):
        assert (term >= tol).all()
    inter, intra = Fn.dist_terms(student, teacher, temperature)
    assert inter >= tol and intra >= tol


@given(logits_pairs(), temperatures, st.floats(-50, 50))
def test_divergences_zero_when_student_equals_teacher_up_to_row_constant(pair, temperature, shift):
    _, teacher, target = pair
    shifts = torch.linspace(-1, 1, teacher.shape[0], dtype=teacher.dtype)[:, None] * shift
    student = teacher + shifts
    atol = 1e-6 * (1 + teacher.abs().max() / temperature)
    assert full_kl(student, teacher, temperature).abs().max() <= atol
    d = Fn.dkd_terms(student, teacher, target, temperature)
    assert d.tckd.abs().max() <= atol and d.nckd.abs().max() <= atol
    mask = Fn.strong_class_mask(teacher, target, strong_k=1)
    c = Fn.cakd_terms(student, teacher, mask, temperature)
    assert max(c.bcd.abs().max(), c.scd.abs().max(), c.wcd.abs().max()) <= atol


@given(logits_pairs(max_classes=50), temperatures, st.floats(-100, 100))
def test_terms_invariant_to_row_constant(pair, temperature, shift):
    student, teacher, target = pair
    offsets = torch.arange(student.shape[0], dtype=student.dtype)[:, None] * shift / 7
    base = Fn.dkd_terms(student, teacher, target, temperature)
    moved = Fn.dkd_terms(student + offsets, teacher - offsets, target, temperature)
    assert close(base.tckd, moved.tckd, 1e-5) and close(base.nckd, moved.nckd, 1e-5)
    inter, intra = Fn.dist_terms(student, teacher, temperature)
    inter2, intra2 = Fn.dist_terms(student + offsets, teacher - offsets, temperature)
    assert close(inter, inter2, 1e-5) and close(intra, intra2, 1e-5)


@given(logits_pairs(max_classes=40, extremes=False, ties=False), temperatures, st.data())
def test_cakd_with_k0_equals_dkd(pair, temperature, data):
    student, teacher, target = pair
    alpha = data.draw(st.floats(0, 10))
    beta = data.draw(st.floats(0, 10))
    mask = Fn.strong_class_mask(teacher, target, strong_k=0)
    c = Fn.cakd_terms(student, teacher, mask, temperature)
    d = Fn.dkd_terms(student, teacher, target, temperature)
    cakd = alpha * c.bcd + 0.0 * c.scd + beta * c.wcd
    dkd = alpha * d.tckd + beta * d.nckd
    assert close(cakd, dkd)


@given(untied_rows(min_len=3, max_len=30), st.data())
def test_pearson_distance_range_and_affine_invariance(rows, data):
    other = rows.flip(0) + torch.linspace(0, 1, rows.shape[1], dtype=rows.dtype)
    d = Fn.pearson_distance(rows, other)
    assert (d >= -1e-9).all() and (d <= 2 + 1e-9).all()
    a = data.draw(st.floats(1e-2, 1e2))
    b = data.draw(st.floats(-1e3, 1e3))
    assert torch.allclose(Fn.pearson_distance(a * rows + b, other), d, atol=1e-7)
    assert torch.allclose(Fn.pearson_distance(rows, a * other - b), d, atol=1e-7)


@given(untied_rows(max_len=40))
def test_hard_spearman_invariant_to_increasing_maps(rows):
    other = torch.roll(rows, 1, dims=1)
    d = Fn.spearman_distance(rows, other)
    for increasing in (lambda x: x**3 + x, lambda x: torch.exp(x / 50.0), torch.atan):
        assert torch.allclose(Fn.spearman_distance(increasing(rows), other), d, atol=1e-9)


@given(untied_rows(max_len=30))
def test_soft_rank_tends_to_hard_rank(rows):
    hard = Fn.hard_rank(rows)
    errors = [
        (Fn.soft_rank(rows, sharpness) - hard).abs().max().item() for sharpness in (1.0, 10.0, 1000.0)
    ]
    assert errors[-1] < 1e-3
    assert errors[0] >= errors[1] >= errors[2]
    soft_d = Fn.spearman_distance(rows, rows.flip(1), sharpness=1000.0)
    assert torch.allclose(soft_d, Fn.spearman_distance(rows, rows.flip(1)), atol=1e-3)


# two values always correlate at ±1, so need at least three
@given(untied_rows(min_len=3, max_len=30))
def test_soft_spearman_gradient_flows(rows):
    student = rows.clone().requires_grad_(True)
    teacher = rows.flip(1)
    Fn.spearman_distance(student, teacher, sharpness=1.0).sum().backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0


def test_hard_rank_averages_ties():
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0]])
    assert torch.equal(Fn.hard_rank(x), torch.tensor([[3.5, 1.0, 3.5, 2.0]]))
    assert torch.allclose(Fn.soft_rank(x, 1e4), torch.tensor([[3.5, 1.0, 3.5, 2.0]]))


def test_soft_rank_gradient_matches_autograd():
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: Fn.soft_rank(v, 2.0), (x,))


def _reference_soft_rank(x, sharpness):
    """The O(C^2) pairwise definition, plain autograd: 1/2 + sum_j clamp(1/2 + s (x_i - x_j) / 4, 0, 1)."""
    ramp = (0.5 + sharpness * (x.unsqueeze(-1) - x.unsqueeze(-2)) / 4).clamp(0.0, 1.0)
    return 0.5 + ramp.sum(-1)


@given(untied_rows(max_len=40), st.sampled_from([0.3, 1.0, 5.0, 40.0]))
def test_soft_rank_matches_pairwise_definition(rows, sharpness):
    x1 = rows.clone().requires_grad_(True)
    x2 = rows.clone().requires_grad_(True)
    got, expected = Fn.soft_rank(x1, sharpness), _reference_soft_rank(x2, sharpness)
    assert torch.allclose(got, expected, atol=1e-9)
    weights = torch.linspace(-1, 2, rows.shape[1], dtype=rows.dtype)
    (got * weights).sum().backward()
    (expected * weights).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-9)


def test_soft_rank_float32_extreme_stays_in_bounds():
    x = torch.tensor([[1e4, 1e4 + 1e-3, -1e4, 0.0, 5e3]], dtype=torch.float32, requires_grad=True)
    ranks = Fn.soft_rank(x, 1e4)
    assert torch.allclose(ranks, Fn.hard_rank(x.detach()), atol=0.51)
    assert (ranks >= 1).all() and (ranks <= x.shape[1]).all()
    ranks.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_kd_gradient_scale_is_bounded_across_temperatures():
    torch.manual_seed(0)
    student = torch.randn(64, 10, dtype=torch.float64)
    teacher = torch.randn(64, 10, dtype=torch.float64)
    norms = []
    for temperature in (1.0, 2.0, 4.0, 8.0):
        z = student.clone().requires_grad_(True)
        (temperature**2 * Fn.kd_divergence(z, teacher, temperature).mean()).backward()
        norms.append(z.grad.norm().item())
    assert max(norms) / min(norms) < 4.0
    # without T**2 the ratio would grow like T**2 (here about 64)
    raw = []
    for temperature in (1.0, 8.0):
        z = student.clone().requires_grad_(True)
        Fn.kd_divergence(z, teacher, temperature).mean().backward()
        raw.append(z.grad.norm().item())
    assert raw[0] / raw[1] > 20


@given(logits_pairs(max_classes=60), st.sampled_from([0.1, 1.0, 4.0]))
def test_gradients_finite_for_extreme_logits(pair, temperature):
    student, teacher, target = pair
    z = student.clone().requires_grad_(True)
    k = min(2, student.shape[1] - 1)
    mask = Fn.strong_class_mask(teacher, target, strong_k=k)
    c = Fn.cakd_terms(z, teacher, mask, temperature)
    d = Fn.dkd_terms(z, teacher, target, temperature)
    inter, intra = Fn.dist_terms(z, teacher, temperature)
    rows, cols = Fn.r2kd_value_terms(z, teacher, temperature)
    rank = Fn.spearman_distance(z / temperature, teacher / temperature, sharpness=5.0)
    total = (
        Fn.kd_divergence(z, teacher, temperature).sum() + c.bcd.sum() + c.scd.sum() + c.wcd.sum()
        + d.tckd.sum() + d.nckd.sum() + inter + intra + rows + cols + rank.sum()
    )
    total.backward()
    assert torch.isfinite(total)
    assert torch.isfinite(z.grad).all()


def test_half_precision_masking_is_finite():
    student = (torch.randn(8, 20) * 30).half().requires_grad_(True)
    teacher = (torch.randn(8, 20) * 30).half()
    target = torch.randint(0, 20, (8,))
    d = Fn.dkd_terms(student, teacher, target, 4.0)
    (d.tckd.sum() + d.nckd.sum()).float().backward()
    assert torch.isfinite(student.grad.float()).all()


def test_three_class_example_by_hand():
    # teacher p = [0.7, 0.2, 0.1], student q = [0.5, 0.3, 0.2], T = 1, target 0
    p = np.array([0.7, 0.2, 0.1])
    q = np.array([0.5, 0.3, 0.2])
    teacher = torch.tensor(np.log(p)[None])
    student = torch.tensor(np.log(q)[None])
    target = torch.tensor([0])
    kl = float(np.sum(p * np.log(p / q)))
    assert math.isclose(Fn.kd_divergence(student, teacher, 1.0).item(), kl, rel_tol=1e-12)
    # DKD: b = [p_t, 1 - p_t]; p̂ over classes {1, 2}
    tckd = 0.7 * np.log(0.7 / 0.5) + 0.3 * np.log(0.3 / 0.5)
    nckd = (2 / 3) * np.log((2 / 3) / 0.6) + (1 / 3) * np.log((1 / 3) / 0.4)
    d = Fn.dkd_terms(student, teacher, target, 1.0)
    assert math.isclose(d.tckd.item(), tckd, rel_tol=1e-12)
    assert math.isclose(d.nckd.item(), nckd, rel_tol=1e-12)
    # CAKD with k = 1: S = {0, 1} (teacher's top non-target is class 1), W = {2}
    mask = Fn.strong_class_mask(teacher, target, strong_k=1)
    assert mask.tolist() == [[True, True, False]]
    c = Fn.cakd_terms(student, teacher, mask, 1.0)
    bcd = 0.9 * np.log(0.9 / 0.8) + 0.1 * np.log(0.1 / 0.2)
    scd = (0.7 / 0.9) * np.log((0.7 / 0.9) / (0.5 / 0.8)) + (0.2 / 0.9) * np.log((0.2 / 0.9) / (0.3 / 0.8))
    assert math.isclose(c.bcd.item(), bcd, rel_tol=1e-12)
    assert math.isclose(c.scd.item(), scd, rel_tol=1e-12)
    assert abs(c.wcd.item()) < 1e-12  # one class in W
    # Pearson distance of p and q: both centred at 1/3
    pc, qc = p - 1 / 3, q - 1 / 3
    rho = np.dot(pc, qc) / np.sqrt(np.dot(pc, pc) * np.dot(qc, qc))
    assert math.isclose(Fn.pearson_distance(torch.tensor(p), torch.tensor(q)).item(), 1 - rho, rel_tol=1e-12)
    # Tf-KD_reg teacher, a = 0.9, 3 classes
    reg = Fn.tfkd_reg_distribution(target, 3, a=0.9)
    assert torch.allclose(reg, torch.tensor([[0.9, 0.05, 0.05]]))


def test_soft_rank_keeps_linear_memory_for_its_backward_at_b256_c1000():
    """The soft rank's backward keeps O(B C) values (sorting): 25 bytes per entry here. The pairwise
    sigmoid form keeps (B, C, C) comparisons, 2 GB in float64 at B=256, C=1000."""
    x = torch.randn(256, 1000, dtype=torch.float64, requires_grad=True)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        ranks = Fn.soft_rank(x, 5.0)
    ranks.sum().backward()
    assert saved and sum(saved) <= 32 * x.numel()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_check_temperature_rejects(bad):
    with pytest.raises(ValueError, match="temperature"):
        Fn.check_temperature(bad)


@given(logits_pairs(max_classes=30, extremes=False), temperatures, st.data())
def test_split_kl_closed_form_gradient_matches_autograd(pair, temperature, data):
    student, teacher, target = pair
    n_classes = student.shape[1]
    assume(n_classes >= 3)
    k = data.draw(st.integers(0, n_classes - 2))
    mask = Fn.strong_class_mask(teacher, target, strong_k=k)
    assume((~mask).any(1).all())  # both groups non-empty (ties with the k-th may fill S)
    weights = torch.tensor([data.draw(st.floats(0.1, 5.0)) for _ in range(3)], dtype=torch.float64)
    z1 = student.clone().requires_grad_(True)
    z2 = student.clone().requires_grad_(True)
    terms = Fn.split_kl(z1, teacher, mask, temperature)
    ref = reference.split_kl(z2, teacher, mask, temperature)[:3]
    for got, expected in zip(terms[:3], ref, strict=False):
        assert torch.allclose(got, expected, atol=1e-9, rtol=1e-7)
    (weights[0] * terms.binary + weights[1] * terms.kl_in + weights[2] * terms.kl_out).sum().backward()
    (weights[0] * ref[0] + weights[1] * ref[1] + weights[2] * ref[2]).sum().backward()
    assert torch.allclose(z1.grad, z2.grad, atol=1e-9, rtol=1e-6)


def test_split_kl_and_pearson_pass_gradcheck():
    torch.manual_seed(0)
    student = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 6, dtype=torch.float64)
    mask = Fn.strong_class_mask(teacher, torch.tensor([0, 1, 2, 3]), strong_k=2)
    for index in range(3):
        assert torch.autograd.gradcheck(lambda z, index=index: Fn.split_kl(z, teacher, mask, 2.0)[index], (student,))
    b = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    for dim in (0, 1):
        assert torch.autograd.gradcheck(lambda x, y, dim=dim: Fn.pearson_distance(x, y, dim=dim), (student, b))


def test_split_kl_gradient_equals_full_kl_gradient():
    # teacher masses are constants, so d/dz [binary + P_in kl_in + P_out kl_out] = d/dz KL
    torch.manual_seed(3)
    student = torch.randn(16, 20, dtype=torch.float64)
    teacher = torch.randn(16, 20, dtype=torch.float64) * 3
    mask = Fn.strong_class_mask(teacher, torch.randint(0, 20, (16,)), strong_k=4)
    z1 = student.clone().requires_grad_(True)
    t = Fn.split_kl(z1, teacher, mask, 2.0)
    (t.binary + t.mass_in * t.kl_in + t.mass_out * t.kl_out).sum().backward()
    z2 = student.clone().requires_grad_(True)
    Fn.kd_divergence(z2, teacher, 2.0).sum().backward()
    assert torch.allclose(z1.grad, z2.grad, atol=1e-10)


@pytest.mark.parametrize("temperature", [0.1, 1e-3])
def test_split_kl_in_group_log_probs_exact_at_extreme_logits(temperature):
    # the non-target group {1, 2} underflows in the full softmax; in-group it is [1/2, 1/2] vs [1, 0]
    student = torch.tensor([[1e4, -1e4, -1e4]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1e4, -1e4]])
    terms = Fn.dkd_terms(student, teacher, torch.tensor([0]), temperature)
    assert terms.nckd.dtype == torch.float32
    assert math.isclose(terms.nckd.item(), math.log(2.0), rel_tol=1e-6)
    terms.nckd.sum().backward()
    grad = student.grad * temperature  # gradient with respect to z / T
    assert torch.allclose(grad, torch.tensor([[0.0, -0.5, 0.5]]), atol=1e-6)
    assert abs(grad.sum().item()) < 1e-6


def test_split_kl_empty_group_float32_extremes_finite():
    student = torch.tensor([[1e4, -1e4, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [1.0, 2.0, 3.0]])
    everything = torch.ones(2, 3, dtype=torch.bool)
    terms = Fn.split_kl(student, teacher, everything, 0.01)
    assert torch.equal(terms.binary, torch.zeros(2)) and torch.equal(terms.kl_out, torch.zeros(2))
    assert torch.allclose(terms.kl_in, Fn.kd_divergence(student, teacher, 0.01))
    (terms.binary + terms.kl_in + terms.kl_out).sum().backward()
    assert torch.isfinite(student.grad).all()


@given(logits_pairs(max_classes=30), temperatures)
def test_dist_and_r2kd_pearson_share_one_relation_distance(pair, temperature):
    student, teacher, _ = pair
    for convention in Fn.CONVENTIONS:
        dist = Fn.dist_terms(student, teacher, temperature, convention)
        r2kd = Fn.r2kd_value_terms(student, teacher, temperature, "pearson", convention)
        assert torch.equal(dist[0], r2kd[0]) and torch.equal(dist[1], r2kd[1])


def test_relation_distances_reject_bad_names():
    z = torch.randn(4, 5)
    with pytest.raises(ValueError, match="convention must be 'paper' or 'released', got 'code'"):
        Fn.relation_distances(z, z, 1.0, "pearson", "code")
    with pytest.raises(ValueError, match="distance must be 'pearson' or 'cosine'"):
        Fn.relation_distances(z, z, 1.0, "spearman")


def _syncing_loss(student, teacher):
    """A deliberately bad loss: a Python branch on a tensor's value reads it back to the host."""
    if (student > teacher).any():
        return (student - teacher).square().mean()
    return student.sum() * 0


def test_meta_tensors_catch_host_syncs():
    student = torch.empty(4, 5, device="meta", requires_grad=True)
    teacher = torch.empty(4, 5, device="meta")
    with pytest.raises(RuntimeError, match="meta"):
        _syncing_loss(student, teacher)
    with pytest.raises((RuntimeError, NotImplementedError)):
        student[student > 0].sum()  # a data-dependent shape
    with pytest.raises(RuntimeError, match="meta"):
        student.sum().item()


@pytest.mark.parametrize("rule", ["topk", "mass"])
def test_functional_has_no_host_sync(rule):
    """Every function forward and backward on meta tensors: none reads data back."""
    meta = {"device": "meta"}
    student = torch.empty(6, 12, **meta, requires_grad=True)
    teacher = torch.empty(6, 12, **meta)
    target = torch.empty(6, dtype=torch.long, **meta)
    mask = Fn.strong_class_mask(teacher, target, strong_k=3, rule=rule)
    c = Fn.cakd_terms(student, teacher, mask, 2.0)
    d = Fn.dkd_terms(student, teacher, target, 2.0)
    total = c.bcd.sum() + c.scd.sum() + c.wcd.sum() + d.tckd.sum() + d.nckd.sum()
    for convention in Fn.CONVENTIONS:
        total = total + sum(Fn.dist_terms(student, teacher, 2.0, convention))
        total = total + sum(Fn.r2kd_value_terms(student, teacher, 2.0, "cosine", convention))
    total = total + Fn.spearman_distance(student, teacher, sharpness=5.0).sum()
    total = total + Fn.tfkd_reg_kl(student, target, 0.9, 2.0).sum() + Fn.tfkd_reg_released(student, target, 0.9, 2.0)
    total.backward()
    assert student.grad.device.type == "meta" and student.grad.shape == student.shape


def test_relation_distances_propagate_nan_student_logits():
    """A NaN student must give a NaN term (for the non-finite guard), not a distance of 1."""
    student = torch.full((4, 5), float("nan"))
    teacher = torch.randn(4, 5)
    assert torch.isnan(torch.stack(Fn.dist_terms(student, teacher, 4.0))).all()
    assert torch.isnan(torch.stack(Fn.r2kd_value_terms(student, teacher, 4.0))).all()
    assert torch.isnan(Fn.spearman_distance(student, teacher, sharpness=1.0)).all()


def test_functional_is_the_bottom_layer_and_imports_at_the_top():
    """skd.losses.functional imports nothing of skd outside itself, no import is deferred into a
    function (a deferred import hides a cycle), and its modules import one another one way."""
    import ast
    from pathlib import Path

    folder = Path(Fn.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        top = set(tree.body)
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                assert node in top, f"{path.name}:{node.lineno} imports inside a function"
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("skd"):
                assert node.module.startswith("skd.losses.functional"), f"{path.name} imports {node.module}"
                if node.module == "skd.losses.functional":  # from the package: the names are modules
                    deps.update(alias.name for alias in node.names)
                else:
                    deps.add(node.module.rsplit(".", 1)[-1])
        graph[path.stem] = deps

    def reaches(start, goal, seen=()):
        return any(dep == goal or (dep not in seen and reaches(dep, goal, (*seen, dep)))
                   for dep in graph.get(start, ()))

    assert not [name for name in graph if reaches(name, name)]  # no circle
