"""The loss callbacks of issue 21: registry, terms, the released formulas through the callbacks, fits."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression

from skd import MLP, DistillationClassifier
from skd.losses import NKD, WTTM, SelectiveKD, SelfKnowledgeLS, TopKKD, available_losses, make_loss
from skd.losses import functional as Fn
from tests.test_methods_functional import released_nkd, released_wttm

NEW_LOSSES = [WTTM(), NKD(), TopKKD(k=3), SelectiveKD(), SelfKnowledgeLS()]


def batch(seed=0, n=16, n_classes=10):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(n, n_classes, generator=generator, dtype=torch.float64)
    teacher = 3 * torch.randn(n, n_classes, generator=generator, dtype=torch.float64)
    return student, teacher, torch.randint(0, n_classes, (n,), generator=generator)


@pytest.fixture(scope="module")
def trained_teacher(digits):
    X, y = digits
    return FrozenEstimator(LogisticRegression(max_iter=300).fit(X[:400], y[:400]))


def test_new_losses_are_registered_by_name():
    assert {"wttm", "nkd", "kd_topk", "selective_kd", "skls"} <= set(available_losses())
    assert type(make_loss("wttm", {"gamma": 0.1})) is WTTM


@pytest.mark.parametrize("loss", NEW_LOSSES, ids=lambda loss: type(loss).__name__)
def test_terms_match_declared_names_and_are_finite_with_unlabelled_rows(loss):
    loss = clone(loss).initialize()
    student, teacher, y = batch()
    y[:3] = -1
    terms = loss(student, teacher, y)
    assert tuple(terms) == type(loss).terms
    assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())


def test_wttm_callback_equals_released_code_plus_ce():
    student, teacher, y = batch(1)
    loss = WTTM(gamma=0.1, ce_weight=1.0, kd_weight=45.0).initialize()
    terms = loss(student, teacher, y)
    assert torch.allclose(terms["wttm"], 45.0 * released_wttm(student, teacher, 0.1), rtol=1e-10)
    assert torch.allclose(terms["ce"], torch.nn.functional.cross_entropy(student, y), rtol=1e-10)
    ttm = WTTM(gamma=0.1, kd_weight=1.0, weighted=False).initialize()(student, teacher, y)
    assert torch.allclose(ttm["wttm"], released_wttm(student, teacher, 0.1, weighted=False), rtol=1e-10)


def test_nkd_callback_equals_released_code():
    student, teacher, y = batch(2)
    terms = NKD(temperature=3.0, gamma=3.5).initialize()(student, teacher, y)
    expected = released_nkd(student, teacher, y, 3.0, 3.5)
    assert torch.allclose(terms["nkd_target"] + terms["nkd_non_target"], expected, rtol=1e-10)


def test_topk_callback_reads_a_book_and_full_logits_alike():
    student, teacher, y = batch(3)
    loss = TopKKD(k=4, temperature=2.0).initialize()
    from_logits = loss(student, teacher, y)
    from_book = loss(student, Fn.compress_teacher(teacher, 4, temperature=2.0), y)
    assert torch.allclose(from_logits["kd_topk"], from_book["kd_topk"], rtol=1e-12)
    from_t1_book = loss(student, Fn.compress_teacher(teacher, 4), y)  # re-softened, uniform tail
    assert torch.isfinite(from_t1_book["kd_topk"]) and not torch.allclose(from_t1_book["kd_topk"],
                                                                          from_book["kd_topk"])
    assert TopKKD.capabilities.compressed_book and not WTTM.capabilities.compressed_book


@pytest.mark.parametrize(("loss", "match"), [
    (WTTM(gamma=0.0), "gamma"), (WTTM(gamma=2.0), "gamma"), (TopKKD(k=0), "loss__k"),
    (NKD(temperature=0.0), "temperature"),
])
def test_bad_parameters_fail_at_initialize(loss, match):
    with pytest.raises(ValueError, match=match):
        clone(loss).initialize()


def test_selective_kd_correction_rises_over_epochs(digits, trained_teacher):
    X, y = digits
    clf = DistillationClassifier(MLP, teacher=trained_teacher, loss="selective_kd", loss__correction_epochs=4,
                                 max_epochs=3, verbose=0, device="cpu", optimizer=torch.optim.Adam, lr=1e-2)
    clf.fit(X[:200], y[:200])
    assert clf.loss_.epoch_values(3).correction == pytest.approx(0.75)
    coefficients = clf.loss_.term_coefficients(clf.loss_.epoch_values(1))
    weight = 0.9 * 4.0**2
    assert coefficients["kd"] == pytest.approx(weight)
    assert coefficients["kd_corrected"] == pytest.approx(weight / 4)
    assert coefficients["kd_wrong"] == pytest.approx(weight * 3 / 4)
    for term in SelectiveKD.terms:
        assert np.isfinite(clf.history[:, term]).all()


def test_selective_kd_terms_have_the_gradient_of_kl_to_the_corrected_teacher():
    student, teacher, y = batch(4)
    student.requires_grad_(True)
    y[:2] = -1
    loss = SelectiveKD(correction_epochs=10).initialize()
    state = loss.epoch_state(3)  # rho = 0.3
    total = sum(value for name, value in loss(student, teacher, y, state).items() if name != "ce")
    corrected = Fn.corrected_teacher_log_probs(teacher, y, 4.0, 0.3)
    log_student = Fn.soften(student, 4.0)
    direct = 0.9 * 16.0 * (corrected.exp() * (corrected - log_student)).sum(1).mean()
    ours_grad, = torch.autograd.grad(total, student)
    direct_grad, = torch.autograd.grad(direct, student)
    assert torch.allclose(ours_grad, direct_grad.to(ours_grad.dtype), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["wttm", "nkd", "kd_topk"])
def test_new_teacher_losses_fit_digits(digits, trained_teacher, name):
    X, y = digits
    torch.manual_seed(0)
    clf = DistillationClassifier(MLP, teacher=trained_teacher, loss=name, max_epochs=3, verbose=0,
                                 device="cpu", optimizer=torch.optim.Adam, lr=1e-2)
    clf.fit(X[:400], y[:400])
    for term in type(clf.loss_).terms:
        assert np.isfinite(clf.history[:, term]).all()
    assert clf.score(X[:400], y[:400]) > 0.8


def test_self_knowledge_smoothing_fits_a_first_student(digits):
    X, y = digits
    clf = DistillationClassifier(MLP, loss="skls", max_epochs=2, verbose=0, device="cpu",
                                 optimizer=torch.optim.Adam, lr=1e-2)
    clf.fit(X[:300], y[:300])
    assert clf.teacher_ is not None and clf.teacher_.module is not clf.module_
    assert clf.score(X[:300], y[:300]) > 0.5


@pytest.mark.parametrize(("base", "mode"), [("kd", "global"), ("dist", "global"), ("kd", "instance")])
def test_ctkd_learns_its_temperature_while_fitting(digits, trained_teacher, base, mode):
    X, y = digits
    torch.manual_seed(0)
    clf = DistillationClassifier(MLP, teacher=trained_teacher, loss="ctkd", loss__base=base, loss__scope=mode,
                                 loss__lambda_epochs=2, max_epochs=3, verbose=0, device="cpu",
                                 optimizer=torch.optim.Adam, lr=1e-2)
    clf.fit(X[:400], y[:400])
    temperatures = clf.loss_.temperature_history_ + [float(clf.loss_.last_temperature_.mean())]
    assert len(temperatures) == 3 and all(1.0 < t <= 21.0 for t in temperatures)
    assert any(abs(t - (1 + 20 / (1 + np.exp(-1)))) > 1e-3 for t in temperatures)  # it left its start
    assert clf.loss_.lambda_ == pytest.approx(1.0)
    for term in clf.loss_.terms:
        assert np.isfinite(clf.history[:, term]).all()
    assert clf.score(X[:400], y[:400]) > 0.8


def test_ctkd_refuses_an_instance_temperature_for_other_bases_than_kd():
    with pytest.raises(ValueError, match="instance"):
        make_loss("ctkd", {"base": "dist", "scope": "instance"})


def test_ctkd_refuses_a_temperature_range_past_the_bound_and_clamps_the_learnt_one():
    with pytest.raises(ValueError, match=r"loss__t_range=1000000.0 .* above 1000"):
        make_loss("ctkd", {"t_range": 1e6})
    with pytest.raises(ValueError, match=r"loss__t_range=999 with loss__t_start=2"):
        make_loss("ctkd", {"t_range": 999, "t_start": 2})
    loss = make_loss("ctkd", {"t_range": 999.0, "t_start": 1.0})  # at the bound: accepted
    loss.initialize()
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(64, 10, generator=generator) * 5
    teacher = torch.randn(64, 10, generator=generator) * 5
    y = torch.randint(0, 10, (64,), generator=generator)
    loss._module(student).theta.data.fill_(50.0)  # sigmoid = 1: T at t_start + t_range
    terms = loss(student, teacher, y)
    assert float(loss.last_temperature_) <= 1000.0 and float(terms["kd"]) >= 0.0
