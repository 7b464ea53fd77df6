"""Issue 19, items 6-8: correlation distances in low precision and CAKD's tied teachers."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import skd.losses.functional as Fn
from skd.losses.functional.correlation import correlation_distance, relation_distances


def _reference_released(a, b, dim):
    """The DIST / R2KD released code's Pearson distance (autograd), along ``dim``."""
    a_c, b_c = a - a.mean(dim, keepdim=True), b - b.mean(dim, keepdim=True)
    return 1 - (a_c * b_c).sum(dim) / (a_c.norm(dim=dim) * b_c.norm(dim=dim) + 1e-8)


def _reference_exact(a, b, dim):
    """The exact Pearson distance (autograd), no cut-off."""
    a_c, b_c = a - a.mean(dim, keepdim=True), b - b.mean(dim, keepdim=True)
    return 1 - (a_c * b_c).sum(dim) / (a_c.norm(dim=dim) * b_c.norm(dim=dim))


# ------------------------------------------------- item 6: the released convention
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_released_convention_gradient_is_finite_for_a_constant_student_row(dtype):
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(8, 10, generator=gen).to(dtype)
    student = torch.randn(8, 10, generator=gen).to(dtype)
    student[3] = 0.5  # a constant row: its centred softened row is zero
    student.requires_grad_(True)
    for terms in (Fn.dist_terms(student, teacher, 4.0, "released"),
                  Fn.r2kd_value_terms(student, teacher, 4.0, "cosine", "released")):
        student.grad = None
        sum(terms).backward()
        assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_released_convention_batch_of_one_passes_no_column_gradient(dtype):
    student = torch.randn(1, 10, dtype=dtype, requires_grad=True)
    teacher = torch.randn(1, 10, dtype=dtype)
    rows, columns = relation_distances(student, teacher, 2.0, "pearson", "released")
    columns.backward(retain_graph=True)
    assert torch.count_nonzero(student.grad) == 0  # as autograd of the released code gives
    assert float(columns) == pytest.approx(1.0)
    student.grad = None
    rows.backward()
    assert torch.isfinite(student.grad).all()


def test_released_convention_gradient_equals_autograd_of_the_reference_with_a_constant_row():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(6, 7, generator=gen, dtype=torch.float64)
    a[2] = 0.25
    b = torch.rand(6, 7, generator=gen, dtype=torch.float64)
    mine, ref = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
    correlation_distance(mine, b, dim=1, eps=1e-8).sum().backward()
    _reference_released(ref, b, 1).sum().backward()
    assert torch.allclose(mine.grad, ref.grad, rtol=1e-9, atol=1e-6)


def test_released_fit_whose_last_batch_holds_one_row_stays_finite(digits):
    from skd import MLP, DistillationClassifier

    X, y = digits
    torch.manual_seed(0)
    teacher = torch.nn.Linear(64, 10)
    clf = DistillationClassifier(MLP, teacher=teacher, loss="dist", loss__convention="released",
                                 max_epochs=4, batch_size=32, lr=0.05, device="cpu", verbose=0,
                                 random_state=0)
    clf.fit(X[:33], y[:33])  # 33 rows, batches of 32: the last one holds one row
    assert len(clf.history) == 4
    assert all(np.isfinite(p.detach().numpy()).all() for p in clf.module_.parameters())


# ------------------------------------------------- item 7: the paper convention
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1.0, 1e12])
def test_paper_pearson_is_invariant_to_the_scale_of_its_inputs(dtype, scale):
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(4, 9, generator=gen, dtype=torch.float64)
    b = torch.rand(4, 9, generator=gen, dtype=torch.float64)
    base = correlation_distance(a.to(dtype), b.to(dtype), dim=1)
    scaled = correlation_distance((a * scale).to(dtype), (b * scale).to(dtype), dim=1)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(base, scaled, atol=tol)
    assert (base != 1).all()  # defined, not the distance 1 of an undefined correlation


def test_paper_pearson_gradient_of_a_confident_teacher_at_t1_is_exact():
    # 100 classes; the batch-wise columns hold tiny probabilities of a confident teacher
    gen = torch.Generator().manual_seed(3)
    teacher = torch.randn(16, 100, generator=gen, dtype=torch.float64) * 12
    student = (torch.randn(16, 100, generator=gen, dtype=torch.float64) * 12).requires_grad_(True)
    reference = student.detach().clone().requires_grad_(True)
    _, columns = relation_distances(student, teacher, 1.0, "pearson", "paper")
    columns.backward()
    ps, pt = reference.softmax(1), teacher.softmax(1)
    _reference_exact(ps, pt, 0).mean().backward()
    assert torch.allclose(student.grad, reference.grad, rtol=1e-6, atol=1e-300)


def test_paper_pearson_float32_uniform_student_row_passes_no_huge_gradient():
    gen = torch.Generator().manual_seed(4)
    teacher = torch.randn(4, 10, generator=gen)
    student = torch.zeros(4, 10, requires_grad=True)  # uniform rows: undefined correlation
    inter, _ = Fn.dist_terms(student, teacher, 1.0, "paper")
    inter.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().max() < 1.0


def test_paper_convention_has_one_rule_for_undefined_columns_at_every_batch_size():
    teacher = torch.randn(3, 5, dtype=torch.float64)
    one = relation_distances(teacher[:1] * 0.5, teacher[:1], 2.0, "pearson", "paper")[1]
    # two identical student rows: every centred student column is zero, so undefined
    same_rows = torch.randn(1, 5, dtype=torch.float64).expand(2, 5)
    two = relation_distances(same_rows, teacher[:2], 2.0, "pearson", "paper")[1]
    assert float(one) == float(two) == 0.0  # undefined columns are left out; none left: 0


def test_paper_convention_leaves_undefined_columns_out_of_the_mean():
    gen = torch.Generator().manual_seed(5)
    student = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    teacher = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    # a teacher column constant over the batch: softmax of logits with one column at
    # -inf gives exactly 0 in that column
    teacher[:, 0] = float("-inf")
    _, columns = relation_distances(student, teacher, 1.0, "pearson", "paper")
    ps, pt = student.softmax(1), teacher.softmax(1)
    expected = _reference_exact(ps[:, 1:], pt[:, 1:], 0).mean()
    assert torch.allclose(columns, expected, rtol=1e-12)


def test_paper_convention_still_gives_nan_for_nan_input():
    student = torch.randn(3, 4, dtype=torch.float64)
    student[1, 2] = float("nan")
    rows, columns = Fn.dist_terms(student, torch.randn(3, 4, dtype=torch.float64), 2.0, "paper")
    assert torch.isnan(rows) and torch.isnan(columns)


# ------------------------------------------------- item 8: CAKD's strong group
@st.composite
def tied_teachers(draw):
    """Teachers as scikit-learn gives them: log(max(p, 1e-7)), many classes tied at the floor."""
    n_classes = draw(st.integers(3, 12))
    batch = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    probs = rng.dirichlet(np.full(n_classes, 0.3), size=batch)
    probs = np.where(rng.random(probs.shape) < 0.5, 0.0, probs)
    if draw(st.booleans()):
        probs = np.round(probs, 1)  # ties above the floor too
    teacher = np.log(np.maximum(probs, 1e-7))
    student = rng.normal(size=(batch, n_classes))
    target = rng.integers(0, n_classes, size=batch)
    perm = rng.permutation(n_classes)
    return (torch.tensor(student), torch.tensor(teacher), torch.tensor(target), torch.tensor(perm),
            draw(st.integers(0, n_classes - 1)), draw(st.booleans()))


@given(tied_teachers())
def test_strong_group_commutes_with_a_permutation_of_the_classes(case):
    student, teacher, target, perm, strong_k, use_labels = case
    inverse = torch.argsort(perm)
    labels = target if use_labels else None
    permuted_labels = inverse[target] if use_labels else None
    mask = Fn.strong_class_mask(teacher, labels, strong_k=strong_k)
    permuted = Fn.strong_class_mask(teacher[:, perm], permuted_labels, strong_k=strong_k)
    assert torch.equal(permuted, mask[:, perm])
    terms = Fn.cakd_terms(student, teacher, mask, 2.0)
    moved = Fn.cakd_terms(student[:, perm], teacher[:, perm], permuted, 2.0)
    for name in ("bcd", "scd", "wcd"):
        assert torch.allclose(getattr(terms, name), getattr(moved, name), rtol=1e-9, atol=1e-12)


def test_strong_group_takes_every_class_tied_with_the_kth():
    floor = float(np.log(1e-7))
    teacher = torch.tensor([[0.0, floor, -1.0, floor, floor]])
    mask = Fn.strong_class_mask(teacher, torch.tensor([0]), strong_k=2)
    assert mask.tolist() == [[True, True, True, True, True]]  # -1.0, then three tied at the floor
    mask = Fn.strong_class_mask(teacher, torch.tensor([0]), strong_k=1)
    assert mask.tolist() == [[True, False, True, False, False]]


def test_strong_mass_rule_treats_tied_classes_alike():
    teacher = torch.log(torch.tensor([[0.4, 0.2, 0.2, 0.2]], dtype=torch.float64))
    for perm in ([0, 1, 2, 3], [0, 3, 1, 2], [2, 0, 3, 1]):
        mask = Fn.strong_class_mask(teacher[:, perm], None, rule="mass", strong_mass=0.5)
        assert mask.all()  # 0.4 is below 0.5, so the three tied 0.2 classes all join
