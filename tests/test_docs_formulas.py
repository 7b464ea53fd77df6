"""The formulas and figures of docs/losses.md, checked against the code."""

import itertools
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import skd.losses.functional as Fn
from skd.losses import DIST, KD, R2KD
from skd.losses.functional.correlation import UNDEFINED_RTOL, relation_distances
from skd.losses.functional.rank import soft_rank

DOC = (Path(__file__).resolve().parents[1] / "docs" / "losses.md").read_text()


def _pair(batch=6, n_classes=7, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, n_classes, generator=gen, dtype=torch.float64) * scale
    teacher = torch.randn(batch, n_classes, generator=gen, dtype=torch.float64) * scale
    return student, teacher, torch.arange(batch) % n_classes


def _kl(student, teacher, temperature):
    return F.kl_div(F.log_softmax(student / temperature, 1), F.log_softmax(teacher / temperature, 1),
                    log_target=True, reduction="none").sum(1)


def test_kd_is_ce_weight_ce_plus_kd_weight_t2_kl():
    assert "`ce_weight · CE + kd_weight · T² · KL(p^T ‖ p^S)`" in DOC
    student, teacher, y = _pair()
    terms = KD(temperature=3.0, ce_weight=0.1, kd_weight=0.9).initialize()(student, teacher, y)
    assert torch.allclose(terms["kd"], 0.9 * 9.0 * _kl(student, teacher, 3.0).mean())
    assert torch.allclose(terms["ce"], 0.1 * F.cross_entropy(student, y))


def test_dkd_split_kl_equals_tckd_plus_weighted_nckd():
    assert "`KL = TCKD + (1 − p_t^T) · NCKD`" in DOC
    student, teacher, y = _pair()
    d = Fn.dkd_terms(student, teacher, y, 2.0)
    assert torch.allclose(_kl(student, teacher, 2.0), d.tckd + (1 - d.teacher_target_prob) * d.nckd)


def test_cakd_chain_rule_of_the_docs():
    assert "`KL(p^T ‖ p^S) = BCD + P_S^T · SCD + P_W^T · WCD`" in DOC
    student, teacher, y = _pair()
    mask = Fn.strong_class_mask(teacher, y, strong_k=2)
    c = Fn.cakd_terms(student, teacher, mask, 2.0)
    assert torch.allclose(_kl(student, teacher, 2.0), c.bcd + c.mass_strong * c.scd + c.mass_weak * c.wcd)


def test_soft_rank_is_the_clipped_linear_sum_of_the_docs():
    assert "`r_i = ½ + Σ_j k(s (x_i − x_j))`" in DOC and "`k(u) = clamp(½ + u/4, 0, 1)`" in DOC
    x = torch.randn(3, 11, dtype=torch.float64)
    for sharpness in (0.5, 5.0, 50.0):
        pairwise = (0.5 + sharpness * (x[:, :, None] - x[:, None, :]) / 4).clamp(0, 1)
        assert torch.allclose(soft_rank(x, sharpness), 0.5 + pairwise.sum(-1))


def test_the_clipped_linear_comparison_is_within_012_of_the_sigmoid():
    assert "differs from by at most 0.12 per pair" in DOC
    u = torch.linspace(-20, 20, 200001, dtype=torch.float64)
    gap = ((0.5 + u / 4).clamp(0, 1) - torch.sigmoid(u)).abs().max()
    assert 0.11 < gap <= 0.12


def test_r2kd_value_term_is_value_weight_t2_rows_plus_columns():
    assert "`value_weight · T² · (d(rows) + d(columns))`" in DOC
    student, teacher, y = _pair()
    loss = R2KD(temperature=2.0, value_weight=1.5).initialize()
    rows, columns = relation_distances(student, teacher, 2.0, "pearson", "paper")
    assert torch.allclose(loss(student, teacher, y)["value"], 1.5 * 4.0 * (rows + columns))


def _eisen_cosine_distance(a, b):
    """Transcription of the released R2KD code: 1 - |<a, b>| / (|a| |b| + 1e-8), row-wise mean."""
    return 1 - ((a * b).sum(1).abs() / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)).mean()


def test_cosine_with_the_released_convention_reproduces_the_released_code():
    assert '**`value="cosine", convention="released"`\n  reproduces the released code**' in DOC
    student, teacher, y = _pair(batch=5)
    mine = student.clone().requires_grad_(True)
    ref = student.clone().requires_grad_(True)
    value = R2KD(temperature=4.0, value="cosine", value_weight=1.0,
                 convention="released").initialize()(mine, teacher, y)["value"]
    ys, yt = (ref / 4.0).softmax(1), (teacher / 4.0).softmax(1)
    expected = 16.0 * (_eisen_cosine_distance(ys, yt) + _eisen_cosine_distance(ys.T, yt.T))
    assert torch.allclose(value, expected, rtol=1e-12)
    value.backward()
    expected.backward()
    assert torch.allclose(mine.grad, ref.grad, rtol=1e-9, atol=1e-12)


def test_released_denominator_of_the_docs():
    assert "`⟨a_c, b_c⟩ / (‖a_c‖ ‖b_c‖ + 1e-8)`" in DOC
    student, teacher, _ = _pair()
    ys, yt = student.softmax(1), teacher.softmax(1)
    a, b = ys - ys.mean(1, keepdim=True), yt - yt.mean(1, keepdim=True)
    rho = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)
    rows, _ = relation_distances(student, teacher, 1.0, "pearson", "released")
    assert torch.allclose(rows, (1 - rho).mean(), rtol=1e-12)


def test_undefined_rule_of_the_docs():
    assert "at most 32 units of rounding" in DOC and UNDEFINED_RTOL == 32
    student, teacher, y = _pair(batch=1)
    paper = DIST(temperature=2.0).initialize()(student, teacher, y)
    released = DIST(temperature=2.0, convention="released").initialize()(student, teacher, y)
    assert float(paper["intra"]) == 0.0  # a one-sample batch has no relation across the batch
    assert float(released["intra"]) == pytest.approx(4.0)  # gamma * T**2


def test_tfkd_hand_made_teacher_of_the_docs():
    assert "puts `a` on the true class and `(1 − a)/(C − 1)` elsewhere" in DOC
    dist = Fn.tfkd_reg_distribution(torch.tensor([2, 0]), 5, a=0.9, dtype=torch.float64)
    assert torch.allclose(dist, torch.tensor([[0.025, 0.025, 0.9, 0.025, 0.025],
                                              [0.9, 0.025, 0.025, 0.025, 0.025]], dtype=torch.float64))


def _measured_gaps():
    """The measurement behind the docs' table (seed 0, 100 classes, 20 draws per cell)."""
    torch.manual_seed(0)
    gaps = {}
    for batch, temperature, scale in itertools.product([1, 8, 64], [1.0, 4.0], [1.0, 5.0, 10.0]):
        worst = 0.0
        for _ in range(20):
            student = torch.randn(batch, 100, dtype=torch.float64) * scale
            teacher = torch.randn(batch, 100, dtype=torch.float64) * scale
            paper = sum(Fn.r2kd_value_terms(student, teacher, temperature, "cosine", "paper"))
            released = sum(Fn.r2kd_value_terms(student, teacher, temperature, "cosine", "released"))
            worst = max(worst, abs(float(paper - released)))
        gaps[batch, temperature, scale] = worst
    return gaps


def test_the_gap_table_of_the_docs_is_what_the_code_measures():
    number = r"([\d.e-]+)"
    table = re.findall(rf"^ *\| (\d+) \| (\d) \| {number} \| {number} \| {number} \|$", DOC, re.MULTILINE)
    assert len(table) == 5
    gaps = _measured_gaps()
    for batch, temperature, *cells in table:
        for scale, cell in zip((1.0, 5.0, 10.0), cells, strict=True):
            measured = gaps[int(batch), float(temperature), scale]
            assert measured == pytest.approx(float(cell), rel=0.06), (batch, temperature, scale)
    assert gaps[64, 4.0, 10.0] < 1e-4  # "agree to 1e-4 in ordinary training"
