"""The loss callbacks: values, invariances, routing, schedules and custom losses."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from skd import MLP, DistillationClassifier
from skd.losses import (
    CAKD,
    CE,
    DIST,
    DKD,
    KD,
    R2KD,
    DistillationLoss,
    SoftLossSchedule,
    TemperatureSchedule,
    TfKD,
    available_losses,
    make_loss,
)

ALL_LOSSES = [CE(), KD(), DKD(), CAKD(), R2KD(), DIST(), TfKD()]


def total(loss, student, teacher, y):
    return sum(loss(student, teacher, y).values())


def test_registry_has_every_method():
    assert available_losses() == ["cakd", "ce", "dist", "dkd", "kd", "r2kd", "tfkd"]


def test_unknown_loss_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown loss 'kdd'.*cakd, ce, dist, dkd, kd, r2kd, tfkd"):
        make_loss("kdd", {})


def test_unknown_loss_parameter_is_named():
    with pytest.raises(ValueError, match="loss__beta is not a parameter of KD.*temperature"):
        make_loss("kd", {"beta": 2})


def test_make_loss_does_not_change_the_users_instance():
    mine = KD(temperature=3.0)
    built = make_loss(mine, {"temperature": 5.0})
    assert mine.temperature == 3.0 and built.temperature == 5.0 and built is not mine


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda loss: type(loss).__name__)
def test_terms_match_declared_names_and_are_finite(loss):
    loss = clone(loss).initialize()
    torch.manual_seed(0)
    student, teacher = torch.randn(16, 10), torch.randn(16, 10)
    y = torch.randint(0, 10, (16,))
    terms = loss(student, teacher, y)
    assert tuple(terms) == loss.term_names()
    assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda loss: type(loss).__name__)
def test_loss_survives_clone_and_set_params(loss):
    params = loss.get_params()
    copy = clone(loss)
    assert copy.get_params() == params
    if "temperature" in params:
        copy.set_params(temperature=2.5)
        assert copy.get_params()["temperature"] == 2.5 and loss.temperature == params["temperature"]


@given(st.integers(0, 2**31 - 1), st.integers(3, 30), st.floats(-20, 20))
def test_every_loss_invariant_to_row_constant_and_class_permutation(seed, n_classes, shift):
    rng = np.random.default_rng(seed)
    batch = 8
    # untied rows (distinct values) so that top-k and ranks are unambiguous
    student = torch.tensor(np.stack([rng.permutation(n_classes) for _ in range(batch)]) * 0.37
                           + rng.uniform(-0.1, 0.1, (batch, n_classes)))
    teacher = torch.tensor(np.stack([rng.permutation(n_classes) for _ in range(batch)]) * 0.53
                           + rng.uniform(-0.1, 0.1, (batch, n_classes)))
    y = torch.tensor(rng.integers(0, n_classes, batch))
    perm = torch.tensor(rng.permutation(n_classes))
    inverse = torch.argsort(perm)
    offsets = torch.tensor(rng.normal(size=(batch, 1))) * shift
    for loss in ALL_LOSSES:
        loss = clone(loss).initialize()
        base = total(loss, student, teacher, y)
        shifted = total(loss, student + offsets, teacher - offsets, y)
        permuted = total(loss, student[:, perm], teacher[:, perm], inverse[y])
        assert math.isclose(base.item(), shifted.item(), rel_tol=1e-6, abs_tol=1e-9), type(loss)
        assert math.isclose(base.item(), permuted.item(), rel_tol=1e-6, abs_tol=1e-9), type(loss)


def test_cakd_k0_equals_dkd_through_the_callbacks():
    torch.manual_seed(1)
    student, teacher = torch.randn(32, 10), torch.randn(32, 10)
    y = torch.randint(0, 10, (32,))
    cakd = CAKD(strong_k=0, w_bcd=1.5, w_scd=0.0, w_wcd=6.0).initialize()
    dkd = DKD(alpha=1.5, beta=6.0).initialize()
    assert torch.allclose(total(cakd, student, teacher, y), total(dkd, student, teacher, y), atol=1e-5)


def _three_class():
    p = np.array([[0.7, 0.2, 0.1]])
    q = np.array([[0.5, 0.3, 0.2]])
    return torch.tensor(np.log(q)), torch.tensor(np.log(p)), torch.tensor([0]), p, q


def test_kd_three_class_by_hand():
    student, teacher, y, p, q = _three_class()
    terms = KD(temperature=1.0, ce_weight=0.1, kd_weight=0.9).initialize()(student, teacher, y)
    assert math.isclose(terms["ce"].item(), 0.1 * -np.log(0.5), rel_tol=1e-9)
    assert math.isclose(terms["kd"].item(), 0.9 * np.sum(p * np.log(p / q)), rel_tol=1e-9)


def test_dkd_three_class_by_hand():
    student, teacher, y, p, q = _three_class()
    terms = DKD(alpha=2.0, beta=3.0, temperature=1.0, warmup=0).initialize()(student, teacher, y)
    tckd = 0.7 * np.log(0.7 / 0.5) + 0.3 * np.log(0.3 / 0.5)
    nckd = (2 / 3) * np.log((2 / 3) / 0.6) + (1 / 3) * np.log((1 / 3) / 0.4)
    assert math.isclose(terms["tckd"].item(), 2 * tckd, rel_tol=1e-9)
    assert math.isclose(terms["nckd"].item(), 3 * nckd, rel_tol=1e-9)


def test_cakd_three_class_by_hand_label_free():
    student, teacher, y, p, q = _three_class()
    # label-free, k=0: S = the teacher's top-1 class = {0}
    loss = CAKD(strong_k=0, use_labels=False, temperature=1.0, warmup=0, w_bcd=1, w_scd=1, w_wcd=1)
    terms = loss.initialize()(student, teacher, y)
    bcd = 0.7 * np.log(0.7 / 0.5) + 0.3 * np.log(0.3 / 0.5)
    assert math.isclose(terms["bcd"].item(), bcd, rel_tol=1e-9)
    assert abs(terms["scd"].item()) < 1e-12  # one class in S: nothing to split


def test_dist_three_class_by_hand():
    student, teacher, y, p, q = _three_class()
    terms = DIST(temperature=1.0).initialize()(student, teacher, y)
    pc, qc = p[0] - 1 / 3, q[0] - 1 / 3
    inter = 1 - np.dot(pc, qc) / np.sqrt(np.dot(pc, pc) * np.dot(qc, qc))
    assert math.isclose(terms["inter"].item(), inter, rel_tol=1e-9)
    assert terms["intra"].item() == 0.0  # one sample: no relation across the batch


def test_r2kd_three_class_by_hand():
    student, teacher, y, p, q = _three_class()
    two = (torch.cat([student, student.flip(1)]), torch.cat([teacher, teacher.flip(1)]), torch.tensor([0, 2]))
    terms = R2KD(temperature=1.0, value="cosine", rank_sharpness=1e4).initialize()(*two)
    P = np.vstack([p, p[:, ::-1]])
    Q = np.vstack([q, q[:, ::-1]])

    def abs_cos(a, b):
        return 1 - abs(np.dot(a, b)) / np.sqrt(np.dot(a, a) * np.dot(b, b))

    rows = np.mean([abs_cos(Q[i], P[i]) for i in range(2)])
    cols = np.mean([abs_cos(Q[:, j], P[:, j]) for j in range(3)])
    assert math.isclose(terms["value"].item(), 2 * (rows + cols), rel_tol=1e-6)
    assert abs(terms["rank"].item()) < 1e-6  # same order of classes in every row


def test_tfkd_reg_three_class_by_hand():
    student, teacher, y, p, q = _three_class()
    terms = TfKD(a=0.9, temperature=1.0, ce_weight=0.0, kd_weight=1.0).initialize()(student, None, y)
    hand = np.array([0.9, 0.05, 0.05])
    assert math.isclose(terms["kd"].item(), np.sum(hand * np.log(hand / q[0])), rel_tol=1e-9)


def test_cakd_default_strong_k_fits_any_number_of_classes():
    loss = CAKD().initialize()
    for n_classes in (2, 3, 10):
        terms = loss(torch.randn(4, n_classes), torch.randn(4, n_classes), torch.zeros(4, dtype=torch.long))
        assert all(torch.isfinite(v) for v in terms.values())


def test_cakd_strong_k_too_large_is_named():
    loss = CAKD(strong_k=10).initialize()
    with pytest.raises(ValueError, match="loss__strong_k=10 is too large for 10 classes"):
        loss(torch.randn(4, 10), torch.randn(4, 10), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize(
    "loss, match",
    [
        (KD(temperature=0), "loss__temperature must be a finite number > 0"),
        (KD(temperature=-2), "loss__temperature"),
        (DKD(beta=-1), "loss__beta must be >= 0"),
        (CAKD(strong_rule="top"), "loss__strong_rule"),
        (CAKD(strong_k=-1), "loss__strong_k must be None or an int >= 0"),
        (R2KD(value="spearman"), "loss__value"),
        (TfKD(mode="both"), "loss__mode"),
        (TfKD(a=1.5), "loss__a"),
    ],
)
def test_bad_loss_parameters_fail_at_initialize(loss, match):
    with pytest.raises(ValueError, match=match):
        loss.initialize()


def test_dkd_warmup_is_linear_in_epochs(digits):
    X, y = digits
    clf = DistillationClassifier(MLP, teacher=lambda X: torch.zeros(len(X), 10), loss="dkd",
                                 loss__warmup=4, max_epochs=3, verbose=0, device="cpu")
    clf.fit(X[:200], y[:200])
    assert clf.loss_.warmup_scale_ == pytest.approx(3 / 4)


class MarginLoss(DistillationLoss):
    """A user's loss: CE plus a squared-logit match to the teacher."""

    terms = ("ce", "mse")

    def __init__(self, weight=1.0):
        self.weight = weight

    def compute_terms(self, student_logits, teacher_logits, y):
        return {
            "ce": self.cross_entropy(student_logits, y),
            "mse": self.weight * (student_logits - teacher_logits).pow(2).mean(),
        }


def test_custom_loss_fits_records_terms_and_tunes(digits):
    X, y = digits
    teacher = torch.nn.Linear(64, 10)
    clf = DistillationClassifier(MLP, teacher=teacher, loss=MarginLoss(), max_epochs=2, verbose=0,
                                 device="cpu", optimizer=torch.optim.Adam, lr=1e-2)
    search = GridSearchCV(clf, {"loss__weight": [0.1, 1.0]}, cv=2)
    search.fit(X[:300], y[:300])
    assert search.best_params_["loss__weight"] in (0.1, 1.0)
    fitted = search.best_estimator_
    assert len(fitted.history[:, "mse"]) == 2 and all(np.isfinite(fitted.history[:, "mse"]))


def test_soft_loss_schedule_moves_weights(digits):
    X, y = digits
    clf = DistillationClassifier(
        MLP, teacher=torch.nn.Linear(64, 10), loss="kd", max_epochs=5, verbose=0, device="cpu",
        callbacks=[("gslr", SoftLossSchedule(start=1.0, end=0.0, kind="linear"))],
    )
    clf.fit(X[:200], y[:200])
    assert clf.history[:, "soft_scale"] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert clf.history[-1, "kd"] == 0.0
    cosine = SoftLossSchedule(start=1.0, end=0.0, kind="cosine")
    clf.set_params(callbacks=[("gslr", cosine)]).fit(X[:200], y[:200])
    assert clf.history[:, "soft_scale"] == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466, 0.0])


def test_schedules_are_tunable_in_grid_search(digits):
    X, y = digits
    clf = DistillationClassifier(
        MLP, teacher=torch.nn.Linear(64, 10), loss="kd", max_epochs=2, verbose=0, device="cpu",
        callbacks=[("gslr", SoftLossSchedule()), ("temp", TemperatureSchedule(start=8, end=2))],
    )
    grid = {"callbacks__gslr__end": [0.0, 0.5], "callbacks__temp__start": [4.0, 8.0]}
    search = GridSearchCV(clf, grid, cv=2).fit(X[:200], y[:200])
    assert set(search.best_params_) == set(grid)
    fitted = search.best_estimator_
    assert fitted.history[0, "temperature"] == fitted.callbacks[1][1].start
    assert fitted.history[-1, "temperature"] == 2.0


def test_bad_schedule_parameters_fail_at_fit(digits):
    X, y = digits
    clf = DistillationClassifier(MLP, teacher=torch.nn.Linear(64, 10), max_epochs=1, verbose=0,
                                 device="cpu", callbacks=[TemperatureSchedule(start=0.0)])
    with pytest.raises(ValueError, match="TemperatureSchedule start must be a finite number > 0"):
        clf.fit(X[:50], y[:50])


def test_tfkd_self_fits_a_first_student(digits):
    X, y = digits
    clf = DistillationClassifier(MLP, loss="tfkd", loss__mode="self", max_epochs=2, verbose=0,
                                 device="cpu", optimizer=torch.optim.Adam, lr=1e-2)
    clf.fit(X[:300], y[:300])
    assert clf.teacher_ is not None and clf.teacher_.module is not clf.module_
    assert clf.teacher_.n_forward_samples_ == 300
    assert clf.score(X[:300], y[:300]) > 0.5


GRIDS = {
    "ce": {"loss__ce_weight": [0.5, 1.0]},
    "kd": {"loss__temperature": [2.0, 4.0]},
    "dkd": {"loss__beta": [2.0, 8.0]},
    "cakd": {"loss__strong_k": [1, 2]},
    "r2kd": {"loss__rank_sharpness": [1.0, 5.0]},
    "dist": {"loss__gamma": [1.0, 2.0]},
    "tfkd": {"loss__a": [0.9, 0.99]},
}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_every_loss_tunes_in_grid_search(digits, name):
    X, y = digits
    clf = DistillationClassifier(MLP, teacher=torch.nn.Linear(64, 10), loss=name, max_epochs=1, verbose=0,
                                 device="cpu", optimizer=torch.optim.Adam, lr=1e-2)
    search = GridSearchCV(clf, GRIDS[name], cv=2).fit(X[:300], y[:300])
    (param, values), = GRIDS[name].items()
    assert search.best_params_[param] in values
    assert getattr(search.best_estimator_.loss_, param.split("__")[1]) == search.best_params_[param]
