"""The loss callbacks: values, invariances, routing, schedules and custom losses."""

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from skd import MLP, DistillationClassifier, SoftLossSchedule, TemperatureSchedule
from skd.callbacks import find_schedules
from skd.losses import (
    CAKD,
    CE,
    DIST,
    DKD,
    KD,
    R2KD,
    DistillationLoss,
    LossCapabilities,
    TfKD,
    available_losses,
    get_loss_class,
    make_loss,
)
from skd.state import EpochState, EpochValues

ALL_LOSSES = [CE(), KD(), DKD(), CAKD(), R2KD(), DIST(), TfKD()]


def total(loss, student, teacher, y):
    return sum(loss(student, teacher, y).values())


def test_registry_has_every_method():
    assert {"cakd", "ce", "dist", "dkd", "kd", "r2kd", "tfkd"} <= set(available_losses())


def test_unknown_loss_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown loss 'kdd'. Valid names are: cakd, ce, .*dist, dkd, kd, "):
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
    assert tuple(terms) == type(loss).terms == loss.terms
    assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
    # the base class owns CE: compute_terms returns the loss's own (soft) terms only
    soft = loss.compute_terms(student, teacher, y, loss.epoch_values(1).temperature)
    assert tuple(soft) == tuple(name for name in loss.terms if name != "ce")


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
    student, teacher, y, _p, _q = _three_class()
    terms = DKD(alpha=2.0, beta=3.0, temperature=1.0, warmup=0).initialize()(student, teacher, y)
    tckd = 0.7 * np.log(0.7 / 0.5) + 0.3 * np.log(0.3 / 0.5)
    nckd = (2 / 3) * np.log((2 / 3) / 0.6) + (1 / 3) * np.log((1 / 3) / 0.4)
    assert math.isclose(terms["tckd"].item(), 2 * tckd, rel_tol=1e-9)
    assert math.isclose(terms["nckd"].item(), 3 * nckd, rel_tol=1e-9)


def test_cakd_three_class_by_hand_label_free():
    student, teacher, y, _p, _q = _three_class()
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
    student, teacher, _y, p, q = _three_class()
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
    student, _teacher, y, _p, q = _three_class()
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
        (KD(temperature=0), r"loss__temperature of KD must be a finite number in \(0, 1000\]; got 0\."),
        (KD(temperature=-2), "loss__temperature"),
        (DKD(beta=-1), r"loss__beta of DKD must be a finite number in \[0, inf\); got -1"),
        (CAKD(strong_rule="top"), "loss__strong_rule"),
        (CAKD(strong_k=-1), r"loss__strong_k of CAKD must be None or an int in \[0, inf\]; got -1"),
        (R2KD(value="spearman"), "loss__value"),
        (TfKD(mode="both"), "loss__mode"),
        (TfKD(a=1.5), "loss__a"),
        (TfKD(convention="code"), "loss__convention of TfKD must be one of 'paper', 'released'; got 'code'"),
        (DIST(convention=None), "loss__convention of DIST must be one of 'paper', 'released'; got None"),
        (R2KD(convention="Paper"), "loss__convention"),
        (R2KD(rank_sharpness=0), r"loss__rank_sharpness of R2KD must be a finite number in \(0, inf\); got 0"),
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
    # the last epoch's values, as the trainer used them
    assert clf.trainer_.state.values.warmup == pytest.approx(3 / 4)
    assert clf.trainer_.state.values.soft_scale == pytest.approx(3 / 4)


class MarginLoss(DistillationLoss):
    """A user's loss: CE plus a squared-logit match to the teacher."""

    terms = ("ce", "mse")

    def __init__(self, weight=1.0):
        self.weight = weight

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        return {"mse": self.weight * (student_logits - teacher_logits).pow(2).mean()}


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


def test_terms_and_self_teaching_interface():
    assert not hasattr(DistillationLoss, "term_names") and not hasattr(DistillationLoss, "make_teacher")
    assert not hasattr(KD, "registry_name")
    assert TfKD.terms == ("ce", "kd") and DKD.terms == ("ce", "tckd", "nckd")
    assert [loss.capabilities.self_teaching for loss in ALL_LOSSES] == [False] * len(ALL_LOSSES)
    assert TfKD(mode="self").capabilities.self_teaching and TfKD(mode="self").capabilities.teacher
    assert not TfKD(mode="reg").capabilities.self_teaching and not TfKD(mode="reg").capabilities.teacher


def test_losses_do_not_import_teachers():
    import ast
    from pathlib import Path

    import skd.losses

    for path in Path(skd.losses.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(name.startswith("skd.teachers") for name in names), path


# -- schedules: the loss reads them; they write nothing of the loss's ----------

def _net(epoch, *callbacks, max_epochs=5):
    """A stand-in for a net in its ``epoch``-th epoch (1-based), as the loss and schedules see it."""
    return SimpleNamespace(history=_History(epoch), callbacks_=list(callbacks), max_epochs=max_epochs)


class _History(list):
    def __init__(self, epochs):
        super().__init__({} for _ in range(epochs))

    def record(self, key, value):
        self[-1][key] = value


@pytest.mark.parametrize("order", ["schedules_first", "loss_first"])
def test_loss_reads_schedules_through_epoch_values(order):
    soft = SoftLossSchedule(start=1.0, end=0.0).initialize()
    temp = TemperatureSchedule(start=8.0, end=4.0).initialize()
    loss = KD(temperature=3.0).initialize()
    callbacks = [("gslr", soft), ("temp", temp), ("loss", loss)]
    if order == "loss_first":
        callbacks = callbacks[::-1]
    schedules = find_schedules(callbacks, max_epochs=5)
    assert schedules.soft is soft and schedules.temperature is temp and schedules.max_epochs == 5
    seen = []
    for epoch in range(1, 6):
        values = loss.epoch_values(epoch, schedules)
        net = _net(epoch, *[(name, cb) for name, cb in callbacks if cb is not loss])
        for _, callback in net.callbacks_:
            callback.on_epoch_begin(net)
        seen += [values.soft_scale, values.ce_scale, values.temperature]
        assert net.history[-1] == {"soft_scale": values.soft_scale, "temperature": values.temperature}
    assert seen == pytest.approx([1.0, 1.0, 8.0, 0.75, 1.25, 7.0, 0.5, 1.5, 6.0, 0.25, 1.75, 5.0, 0.0, 2.0, 4.0])
    # the schedules wrote nothing on the loss: without them the loss falls back to its own values
    assert vars(loss) == {"temperature": 3.0, "ce_weight": 0.1, "kd_weight": 0.9, "standardize": False,
                          "extract": None}
    assert loss.epoch_values(2, find_schedules([("loss", loss)], 5)) == EpochValues(3.0, 1.0, 1.0, 1.0)
    assert loss.epoch_values(2) == EpochValues(3.0, 1.0, 1.0, 1.0)


def test_loss_applies_the_epoch_state_it_is_given():
    soft = SoftLossSchedule(start=1.0, end=0.0).initialize()
    temp = TemperatureSchedule(start=8.0, end=4.0).initialize()
    schedules = find_schedules([("gslr", soft), ("temp", temp)], max_epochs=5)
    loss = KD(temperature=3.0).initialize()
    torch.manual_seed(0)
    student, teacher, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    plain = loss(student, teacher, y)  # no state: the parameters' values
    at_t8 = KD(temperature=8.0).initialize()(student, teacher, y)
    first = loss(student, teacher, y, loss.epoch_state(1, schedules))
    assert torch.allclose(first["ce"], plain["ce"]) and torch.allclose(first["kd"], at_t8["kd"])
    middle = loss(student, teacher, y, loss.epoch_state(3, schedules))
    at_t6 = KD(temperature=6.0).initialize()(student, teacher, y)
    assert torch.allclose(middle["ce"], 1.5 * plain["ce"]) and torch.allclose(middle["kd"], 0.5 * at_t6["kd"])
    last = loss(student, teacher, y, loss.epoch_state(5, schedules))
    assert torch.allclose(last["ce"], 2.0 * plain["ce"]) and last["kd"].item() == 0.0
    # the state holds the values it was made from
    values = loss.epoch_values(3, schedules)
    assert loss.epoch_state(3, schedules).values == values
    assert isinstance(loss.epoch_state(3, schedules), EpochState)


def test_schedule_writes_only_history():
    soft = SoftLossSchedule().initialize()
    net = _net(1, ("gslr", soft))
    net.loss_ = SimpleNamespace()
    soft.on_epoch_begin(net)
    assert vars(net.loss_) == {} and net.history[-1] == {"soft_scale": 1.0}


def test_two_schedules_of_one_kind_are_an_error(digits):
    callbacks = [("a", TemperatureSchedule().initialize()), ("b", TemperatureSchedule().initialize())]
    with pytest.raises(ValueError, match="Found 2 TemperatureSchedule callbacks \\('a', 'b'\\).*Remove all but one"):
        find_schedules(callbacks, max_epochs=5)
    X, y = digits
    clf = DistillationClassifier(MLP, teacher=torch.nn.Linear(64, 10), max_epochs=1, verbose=0,
                                 device="cpu", callbacks=[("a", TemperatureSchedule()),
                                                          ("b", TemperatureSchedule())])
    with pytest.raises(ValueError, match="Found 2 TemperatureSchedule callbacks"):
        clf.fit(X[:50], y[:50])


def test_warmup_and_temperature_fall_back_without_schedules():
    loss = DKD(warmup=4, temperature=2.0).initialize()
    for epoch, expected in [(1, 0.25), (2, 0.5), (4, 1.0), (9, 1.0)]:
        values = loss.epoch_values(epoch, find_schedules([("loss", loss)], max_epochs=10))
        assert values.warmup == expected and values.soft_scale == expected and values.temperature == 2.0
        assert values == loss.epoch_values(epoch)


# -- conventions against independent transcriptions of the reference code ------

def _ref_cosine(a, b, absolute=False):
    num = (a * b).sum(1)
    return (num.abs() if absolute else num) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)


def _ref_pearson(a, b):
    return _ref_cosine(a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1))


def _ref_exact_pearson(a, b):
    """The exact rho per row, NaN where it is undefined (a constant row)."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    defined = (na > 0) & (nb > 0)
    return torch.where(defined, (a * b).sum(1) / (na * nb).clamp_min(1e-300), torch.nan)


def _ref_mean_distance(rho):
    """The paper convention's mean: undefined correlations left out, 0 if none is defined."""
    defined = ~rho.isnan()
    return torch.where(defined, 1 - rho, 0.0).sum() / defined.sum().clamp_min(1)


def _ref_dist(zs, zt, tau, released):
    """hunto/image_classification_sota dist_kd.py (released) or the paper's exact rho (beta = gamma = 1)."""
    ys, yt = (zs / tau).softmax(1), (zt / tau).softmax(1)
    if released:
        return tau**2 * ((1 - _ref_pearson(ys, yt).mean()) + (1 - _ref_pearson(ys.T, yt.T).mean()))
    return tau**2 * (_ref_mean_distance(_ref_exact_pearson(ys, yt))
                     + _ref_mean_distance(_ref_exact_pearson(ys.T, yt.T)))


def _ref_r2kd_value(zs, zt, tau):
    """Seonghak35/R2KD value_loss with value_weight 1: eisen_cosine_distance on rows and columns."""
    ys, yt = (zs / tau).softmax(1), (zt / tau).softmax(1)
    return tau**2 * ((1 - _ref_cosine(ys, yt, True).mean()) + (1 - _ref_cosine(ys.T, yt.T, True).mean()))


def _ref_tfkd_reg(zs, labels, tau, released, a=0.99):
    """yuanli2333 loss_kd_regularization's soft term (multiplier 1), or the paper's softened KL."""
    k = zs.shape[1]
    teacher = torch.ones_like(zs) * (1 - a) / (k - 1)
    for i in range(zs.shape[0]):
        teacher[i, labels[i]] = a
    if released:
        return torch.nn.KLDivLoss(reduction="sum")(F.log_softmax(zs, 1), F.softmax(teacher / tau, 1)) / zs.numel()
    q = F.softmax(teacher.log() / tau, 1)
    return tau**2 * (q * (q.log() - F.log_softmax(zs / tau, 1))).sum(1).mean()


def _logit_cases():
    gen = torch.Generator().manual_seed(7)
    cases = []
    for batch, n_classes, scale in [(16, 10, 3.0), (3, 7, 1.0), (1, 5, 2.0), (2, 4, 0.01)]:
        cases.append((torch.randn(batch, n_classes, generator=gen, dtype=torch.float64) * scale,
                      torch.randn(batch, n_classes, generator=gen, dtype=torch.float64) * scale))
    extreme_s = torch.tensor([[1e4, -1e4, 0.0, 5.0], [-1e4, 1e4, 1e4, 0.0], [0.0, 1.0, -1e4, 2.0]], dtype=torch.float64)
    cases.append((extreme_s, extreme_s.flip(1)))
    return cases


CONVENTION_CASES = [
    ("dist", lambda c: DIST(temperature=c["tau"], convention=c["conv"]), ("inter", "intra"),
     lambda zs, zt, y, c: _ref_dist(zs, zt, c["tau"], c["conv"] == "released")),
    ("r2kd", lambda c: R2KD(temperature=c["tau"], value="cosine", value_weight=1.0, convention="released"),
     ("value",), lambda zs, zt, y, c: _ref_r2kd_value(zs, zt, c["tau"])),
    ("r2kd-pearson", lambda c: R2KD(temperature=c["tau"], value_weight=1.0, convention=c["conv"]), ("value",),
     lambda zs, zt, y, c: _ref_dist(zs, zt, c["tau"], c["conv"] == "released")),
    ("tfkd", lambda c: TfKD(temperature=c["tau"], kd_weight=1.0, convention=c["conv"]), ("kd",),
     lambda zs, zt, y, c: _ref_tfkd_reg(zs, y, c["tau"], c["conv"] == "released")),
    ("tfkd-self", lambda c: TfKD(mode="self", temperature=c["tau"], kd_weight=1.0, convention="released"), ("kd",),
     lambda zs, zt, y, c: torch.nn.KLDivLoss(reduction="sum")(F.log_softmax(zs / c["tau"], 1),
                                                              F.softmax(zt / c["tau"], 1)) / zs.numel() * c["tau"] ** 2),
]


@pytest.mark.parametrize("name, make, keys, reference", CONVENTION_CASES, ids=[c[0] for c in CONVENTION_CASES])
@pytest.mark.parametrize("convention", ["paper", "released"])
@pytest.mark.parametrize("tau", [4.0, 1.0, 0.01])
def test_conventions_match_reference_values_and_gradients(name, make, keys, reference, convention, tau):
    config = {"tau": tau, "conv": convention}
    loss = make(config).initialize()
    for student, teacher in _logit_cases():
        y = torch.arange(len(student)) % student.shape[1]
        z1, z2 = student.clone().requires_grad_(True), student.clone().requires_grad_(True)
        terms = loss(z1, teacher, y)
        got = sum(terms[key] for key in keys)
        expected = reference(z2, teacher, y, config)
        assert torch.allclose(got, torch.as_tensor(expected, dtype=got.dtype), rtol=1e-9, atol=1e-9), (name, len(student))
        got.backward()
        if torch.is_tensor(expected) and expected.requires_grad:
            expected.backward()
            assert torch.allclose(z1.grad, z2.grad, rtol=1e-7, atol=1e-9), (name, len(student))
        else:
            assert torch.count_nonzero(z1.grad) == 0


def test_dist_conventions_differ_where_the_audit_found():
    # batch 1: the paper has no intra-class relation, the released code gives gamma * T**2
    student, teacher, y = torch.randn(1, 10), torch.randn(1, 10), torch.tensor([0])
    paper = DIST(temperature=2.0).initialize()(student, teacher, y)
    released = DIST(temperature=2.0, convention="released").initialize()(student, teacher, y)
    assert paper["intra"].item() == 0.0 and math.isclose(released["intra"].item(), 4.0, rel_tol=1e-6)


# -- capture safety: no host reads in any registered loss ----------------------

META_VARIANTS = [{}, {"convention": "released"}, {"mode": "self"}, {"strong_rule": "mass"}, {"use_labels": False},
                 {"value": "cosine"}]


@pytest.mark.parametrize("name", available_losses())
def test_every_loss_forward_backward_has_no_host_sync(name):
    """On meta tensors any host read of data raises (see test_meta_tensors_catch_host_syncs)."""
    cls = get_loss_class(name)
    for variant in META_VARIANTS:
        params = {k: v for k, v in variant.items() if k in cls().get_params()}
        if variant and not params:
            continue
        loss = cls(**params).initialize()
        student = torch.empty(8, 10, device="meta", requires_grad=True)
        teacher = torch.empty(8, 10, device="meta")
        y = torch.empty(8, dtype=torch.long, device="meta")
        total = sum(loss(student, teacher, y).values())
        total.backward()
        assert student.grad.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", available_losses())
def test_every_loss_runs_under_cuda_sync_debug_error(name):
    loss = get_loss_class(name)().initialize()
    student = torch.randn(8, 10, device="cuda", requires_grad=True)
    teacher, y = torch.randn(8, 10, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    sum(loss(student, teacher, y).values()).backward()  # the first call may place state (CTKD's module)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sum(loss(student, teacher, y).values()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("name, params, named", [
    ("kd", {"kd_weight": 0.0, "ce_weight": 0.0}, "loss__ce_weight=0.0, loss__kd_weight=0.0"),
    ("dkd", {"alpha": 0, "beta": 0, "ce_weight": 0}, "loss__alpha=0, loss__beta=0, loss__ce_weight=0"),
    ("dist", {"beta": 0, "gamma": 0, "ce_weight": 0}, "loss__beta=0"),
])
def test_a_loss_whose_every_term_weighs_zero_is_refused_naming_the_weights(digits, name, params, named):
    with pytest.raises(ValueError, match=f"Every term of .* weighs 0 \\({named}"):
        make_loss(name, params)
    X, y = digits
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=200), loss=name, device="cpu",
                                 **{f"loss__{key}": value for key, value in params.items()})
    with pytest.raises(ValueError, match="weighs 0"):
        clf.fit(X, y)
    assert not clf.initialized_
    make_loss(name, {**params, "ce_weight": 0.5})  # one positive weight is enough


def test_a_loss_declares_its_needs_in_one_capabilities_value():
    assert isinstance(DistillationLoss.capabilities, LossCapabilities)
    assert make_loss("ce", {}).capabilities == LossCapabilities(teacher=False, temperature=False)
    assert make_loss("conskd", {}).capabilities.student_passes == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_loss("kd", {}).capabilities.teacher = False
    with pytest.raises(TypeError, match=r"Mine declares requires_teacher, which skd no longer reads: declare "
                                        r"capabilities = LossCapabilities\(teacher=\.\.\.\)"):
        type("Mine", (DistillationLoss,), {"requires_teacher": False})
