"""The engine's shape: a fit that reads top to bottom, the trainer as a routed component,
skorch's extension points, per-epoch state as a value, and the first hour's defaults."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from skd import MLP, DistillationClassifier, TemperatureSchedule, Trainer
from skd.callbacks import find_schedules, with_loss
from skd.losses import make_loss
from skd.state import EpochState, EpochValues
from skd.teachers import UnderTrainedWarning


@pytest.fixture(scope="module")
def digits_split():
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    return train_test_split(X, y, random_state=0, stratify=y, test_size=0.25)


def test_default_fit_on_digits_scores_at_least_095(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=1000), verbose=0,
                                 device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnderTrainedWarning)  # a trained student: no warning
        clf.fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.95
    assert clf.optimizer is torch.optim.Adam and clf.lr == 1e-3


def test_an_undertrained_student_gets_a_warning_naming_the_settings(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=1000), verbose=0, device="cpu",
                                 random_state=0, optimizer=torch.optim.SGD, lr=1e-3, max_epochs=1)
    with pytest.warns(UnderTrainedWarning, match="max_epochs=1.*lr=0.001"):
        clf.fit(X_train, y_train)


class _Penalised(DistillationClassifier):
    """A subclass using skorch's documented extension point: an L2 penalty in get_loss."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if training:
            loss = loss + 10.0 * sum((p ** 2).sum() for p in self.module_.parameters())
        return loss


def test_a_subclass_overriding_get_loss_changes_training(digits_split):
    X_train, _, y_train, _ = digits_split
    kwargs = dict(teacher=LogisticRegression(max_iter=300), verbose=0, device="cpu", random_state=0,
                  max_epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderTrainedWarning)  # the penalty holds the student back
        plain = DistillationClassifier(MLP, **kwargs).fit(X_train, y_train)
        penalised = _Penalised(MLP, **kwargs).fit(X_train, y_train)
    norm = lambda net: sum(float((p.detach() ** 2).sum()) for p in net.module_.parameters())  # noqa: E731
    assert norm(penalised) < 0.5 * norm(plain)
    # train_loss is what get_loss returned (penalty included); the terms are the loss's own
    assert penalised.history[-1, "train_loss"] > penalised.history[-1, "kd"] + penalised.history[-1, "ce"]


class _CountingSteps(DistillationClassifier):
    def train_step_single(self, batch, **fit_params):
        self.single_steps_ = getattr(self, "single_steps_", 0) + 1
        return super().train_step_single(batch, **fit_params)


def test_the_eager_step_goes_through_train_step_single(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = _CountingSteps(MLP, teacher=LogisticRegression(max_iter=300), verbose=0, device="cpu",
                         max_epochs=2, batch_size=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderTrainedWarning)
        clf.fit(X_train, y_train)
    assert clf.single_steps_ == 2 * int(np.ceil(len(X_train) / 100))


@pytest.mark.parametrize("key, value, match", [
    ("trainer__step_mode", "fast", r"trainer__step_mode of Trainer must be one of 'auto', 'eager', 'graph'"),
    ("trainer__check_every", 0, r"trainer__check_every of Trainer must be"),
    ("trainer__precision", "16", r"trainer__precision"),
    ("book", True, r"book of DistillationClassifier must be one of 'auto', 'memory', 'online'"),
    ("loss__temperature", float("nan"), r"loss__temperature of KD must be a finite number"),
    ("loss__temperature", True, r"loss__temperature"),
    ("loss__temperature", 1e30, r"loss__temperature"),
    ("loss__ce_weight", float("nan"), r"loss__ce_weight"),
    ("loss__kd_weight", -1.0, r"loss__kd_weight"),
])
def test_bad_settings_are_refused_at_fit_naming_the_parameter(digits_split, key, value, match):
    X_train, _, y_train, _ = digits_split
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(), verbose=0, device="cpu", **{key: value})
    with pytest.raises(ValueError, match=match):
        clf.fit(X_train, y_train)
    assert not clf.initialized_


def test_warmup_inf_is_refused():
    with pytest.raises(ValueError, match="loss__warmup of DKD"):
        make_loss("dkd", {"warmup": float("inf")})


def test_unknown_trainer_option_is_a_clear_error(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(), verbose=0, device="cpu",
                                 trainer__speed="max")
    with pytest.raises(TypeError, match="speed"):
        clf.fit(X_train, y_train)


def test_a_failed_fit_leaves_a_fitted_estimator_as_it_was(digits_split):
    X_train, X_test, y_train, _ = digits_split
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=300), verbose=0, device="cpu",
                                 random_state=0, max_epochs=2, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderTrainedWarning)
        clf.fit(X_train, y_train)
    before = clf.predict_proba(X_test)
    bad = X_train.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(bad, y_train)
    np.testing.assert_array_equal(clf.predict_proba(X_test), before)
    assert len(clf.history) == 2


def test_a_failed_fit_leaves_an_unfitted_estimator_unfitted(digits_split):
    X_train, X_test, y_train, _ = digits_split
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(), verbose=0, device="cpu",
                                 loss__temperature=-1.0)
    with pytest.raises(ValueError):
        clf.fit(X_train, y_train)
    with pytest.raises(NotFittedError):
        clf.predict(X_test)


def test_minus_one_is_a_class_unless_named_the_unlabelled_marker(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    three = lambda y: np.where(y < 3, -1, np.where(y < 6, 0, 1))  # noqa: E731 - sentiment-style labels
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=500), verbose=0, device="cpu",
                                 random_state=0, max_epochs=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderTrainedWarning)
        clf.fit(X_train, three(y_train))
    assert clf.classes_.tolist() == [-1, 0, 1]
    assert set(np.unique(clf.predict(X_test))) <= {-1, 0, 1}
    manual = float((clf.predict(X_test) == three(y_test)).mean())
    assert clf.score(X_test, three(y_test)) == pytest.approx(manual)


def test_changing_the_loss_drops_the_old_losss_settings(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=300), verbose=0, device="cpu",
                                 max_epochs=1)
    clf.set_params(loss__kd_weight=0.5, loss__temperature=2.0)
    clf.set_params(loss="dist")
    assert clf.get_params()["loss__temperature"] == 2.0  # DIST has a temperature too
    assert "loss__kd_weight" not in clf.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderTrainedWarning)
        clf.fit(X_train, y_train)
    assert clf.loss_.temperature == 2.0


def test_epoch_values_follow_warmup_and_schedules():
    dkd = make_loss("dkd", {"warmup": 4})
    assert dkd.epoch_values(1).soft_scale == pytest.approx(0.25)
    assert dkd.epoch_values(8).soft_scale == 1.0
    schedules = find_schedules([("t", TemperatureSchedule(start=8.0, end=4.0, epochs=5))], max_epochs=5)
    assert dkd.epoch_values(1, schedules).temperature == 8.0
    assert dkd.epoch_values(5, schedules).temperature == 4.0


def test_the_epoch_state_is_updated_in_place_and_the_loss_reads_it():
    loss = make_loss("kd", {})
    values = EpochValues(temperature=4.0)
    state = EpochState("cpu", values, loss.term_coefficients(values))
    tensor, coefficient = state.temperature, state.coefficient("kd")
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    at_four = loss(student, teacher, y, state)["kd"]
    values = EpochValues(temperature=2.0)
    state.load(values, loss.term_coefficients(values))
    assert state.temperature is tensor and float(tensor) == 2.0
    assert state.coefficient("kd") is coefficient and float(coefficient) == pytest.approx(0.9 * 4)
    at_two = loss(student, teacher, y, state)["kd"]
    expected = make_loss("kd", {"temperature": 2.0})(student, teacher, y)["kd"]
    assert not torch.allclose(at_four, at_two)
    torch.testing.assert_close(at_two, expected)


def test_the_base_owns_ce_as_f_cross_entropy_over_labelled_rows():
    loss = make_loss("kd", {"ce_weight": 0.5})
    student, teacher = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, -1, 3, -1, 2])
    rows = y >= 0
    expected = 0.5 * torch.nn.functional.cross_entropy(student[rows], y[rows])
    torch.testing.assert_close(loss(student, teacher, y)["ce"], expected)
    assert "ce" not in loss.compute_terms(student, teacher, y, 4.0)
    none_labelled = torch.full((6,), -1)
    student.requires_grad_(True)
    ce = loss(student, teacher, none_labelled)["ce"]
    ce.backward()
    assert float(ce) == 0.0 and torch.all(student.grad == 0)


def test_trainer_is_a_routed_component():
    clf = DistillationClassifier(MLP, trainer__step_mode="eager", trainer__precision="32")
    assert clf.get_params()["trainer"] is Trainer
    assert clf.get_params()["trainer__step_mode"] == "eager"
    clf.set_params(trainer__on_nonfinite="skip")
    assert clf.get_params_for("trainer") == {"step_mode": "eager", "precision": "32", "on_nonfinite": "skip"}


def test_an_online_teacher_failing_mid_fit_leaves_only_finished_epochs(digits_split):
    X_train, _, y_train, _ = digits_split
    calls = {"n": 0}

    def teacher(x):
        calls["n"] += 1
        if calls["n"] > 14:  # fails in the second epoch (11 batches per epoch)
            raise RuntimeError("the teacher's server went away")
        return torch.zeros(len(x), 10)

    clf = DistillationClassifier(MLP, teacher=teacher, book="online", verbose=0, device="cpu", max_epochs=3)
    with pytest.raises(RuntimeError, match="went away"):
        clf.fit(X_train, y_train)
    assert len(clf.history) == 1 and "train_loss" in clf.history[-1]


def test_hidden_units_as_an_int_is_a_clear_error(digits_split):
    X_train, _, y_train, _ = digits_split
    with pytest.raises(TypeError, match=r"module__hidden_units=\(8,\)"):
        DistillationClassifier(MLP, loss="ce", module__hidden_units=8, device="cpu").fit(X_train, y_train)


def test_nan_in_x_says_to_impute_not_to_change_estimator(digits_split):
    X_train, _, y_train, _ = digits_split
    bad = X_train.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="SimpleImputer") as error:
        DistillationClassifier(MLP, loss="ce", device="cpu").fit(bad, y_train)
    assert "HistGradientBoosting" not in str(error.value)


def test_a_classes_list_missing_labels_of_y_names_classes_in_fit(digits_split):
    X_train, _, y_train, _ = digits_split
    with pytest.raises(ValueError, match=r"not in classes="):
        DistillationClassifier(MLP, loss="ce", device="cpu", classes=[0, 1, 2]).fit(X_train, y_train)


def test_empty_tensor_x_is_a_clear_error():
    with pytest.raises(ValueError, match="empty tensor"):
        DistillationClassifier(MLP, loss="ce", device="cpu").fit(torch.zeros(0, 4), np.zeros(0))


# ------------------------------------------------------------ the loss as a callback
def test_the_loss_of_a_fit_is_one_of_its_callbacks_and_loads_its_epoch_values(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=300), loss="dkd", loss__warmup=4,
                                 max_epochs=2, device="cpu", random_state=0, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderTrainedWarning)
        clf.fit(X_train, y_train)
        assert dict(clf.callbacks_)["loss"] is clf.loss_
        # its on_epoch_begin loaded epoch 2's warm-up (2 / 4) into the state that the steps read
        assert float(clf.loss_.state_.warmup) == 0.5 and float(clf.loss_.state_.soft_scale) == 0.5
        clf.set_params(loss="kd").fit(X_train, y_train)  # a new fit, a new loss: the old one makes way
    names = [name for name, _ in clf.callbacks_]
    assert names.count("loss") == 1 and dict(clf.callbacks_)["loss"] is clf.loss_


def test_a_loss_acting_on_every_batch_is_named_by_the_captured_step(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=300), loss="ctkd", max_epochs=1,
                                 device="cpu", trainer__step_mode="graph")
    with pytest.raises(ValueError, match=r"the callback 'loss' acts on every batch \(on_batch_end\)"):
        clf.fit(X_train, y_train)


def test_a_callback_named_loss_is_refused():
    with pytest.raises(ValueError, match="A callback is named 'loss'"):
        with_loss([("loss", TemperatureSchedule())], make_loss("kd", {}))
