"""Issue 30, item 2: a failed fit or partial_fit leaves a fitted estimator as it was."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback

from tests.poison import PoisonableMLP, PoisonAt


class FailingTeacher:
    """A callable teacher that fails (a network drive gone, a bug in the user's code)."""

    def __call__(self, X):
        raise RuntimeError("the teacher is down")


class Armed(Callback):
    """Acts in the fit's second epoch once armed (``callbacks__<name>__armed=True``): given at
    construction, since a warm start keeps its callbacks (set_params(callbacks=...) would not reach it)."""

    def __init__(self, armed=False):
        self.armed = armed

    def on_train_begin(self, net, **kwargs):
        self.start = len(net.history)

    def second_epoch(self, net):
        return self.armed and len(net.history) == self.start + 2


class FailAtEpoch(Armed):
    def on_epoch_end(self, net, **kwargs):
        if self.second_epoch(net):
            raise OSError("the callback failed")


class PoisonSecondEpoch(Armed):
    """Makes the student's output NaN at the third batch of the fit's second epoch."""

    def on_batch_begin(self, net, training=False, **kwargs):
        if training and self.second_epoch(net) and len(net.history[-1]["batches"]) == 3:
            net.module_.poison = True


class Interrupt(Armed):
    def on_epoch_end(self, net, **kwargs):
        if self.second_epoch(net):
            raise KeyboardInterrupt


def _armed():
    return [("fail", FailAtEpoch()), ("poison", PoisonSecondEpoch()), ("interrupt", Interrupt())]


def _features(clf, X, y):
    return X[:, :10], y  # was: n_features_in_ = 10 left behind, predict(X) then fails


def _labels(clf, X, y):
    return X, np.where(np.arange(len(y)) % 2 == 0, y.astype(object), "x")  # labels of mixed types


def _teacher(clf, X, y):
    clf.set_params(teacher=FailingTeacher())
    return X, y


def _nonfinite_loss(clf, X, y):
    clf.set_params(callbacks__poison__armed=True)
    return X, y


def _nonfinite_update(clf, X, y):
    clf.set_params(lr=float("inf"), trainer__on_nonfinite="skip")
    return X, y


def _callback(clf, X, y):
    clf.set_params(callbacks__fail__armed=True)
    return X, y


FAILURES = {"features": _features, "labels": _labels, "teacher": _teacher, "nonfinite_loss": _nonfinite_loss,
            "nonfinite_update": _nonfinite_update, "callback": _callback}


def _state(clf, X):
    return {
        "n_features_in_": clf.n_features_in_,
        "classes_": clf.classes_.copy(),
        "label_encoder_": (clf.label_encoder_, clf.label_encoder_.classes_.copy()),
        "data_dims_": dict(clf.data_dims_),
        "module": {k: v.clone() for k, v in clf.module_.state_dict().items()},
        "optimizer": [v.clone() for state in clf.optimizer_.state.values() for v in state.values()
                      if torch.is_tensor(v)],
        "history": [dict(row) for row in clf.history],
        "proba": clf.predict_proba(X),
        "loss_": clf.loss_,
    }


def _assert_same(before, after):
    assert after["n_features_in_"] == before["n_features_in_"]
    assert np.array_equal(after["classes_"], before["classes_"])
    assert after["label_encoder_"][0] is before["label_encoder_"][0]
    assert np.array_equal(after["label_encoder_"][1], before["label_encoder_"][1])
    assert after["data_dims_"] == before["data_dims_"]
    assert after["module"].keys() == before["module"].keys()
    assert all(torch.equal(after["module"][k], before["module"][k]) for k in before["module"])
    assert len(after["optimizer"]) == len(before["optimizer"])
    assert all(torch.equal(a, b) for a, b in zip(after["optimizer"], before["optimizer"], strict=True))
    assert after["history"] == before["history"]
    assert np.array_equal(after["proba"], before["proba"])
    assert after["loss_"] is before["loss_"]


@pytest.mark.parametrize("how", ["fit", "warm_start", "partial_fit"])
@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_fit_leaves_a_fitted_estimator_as_it_was(digits, make_student, failure, how):
    X, y = digits
    clf = make_student(module=PoisonableMLP, max_epochs=2, warm_start=how == "warm_start",
                       callbacks=_armed()).fit(X, y)
    before = _state(clf, X)
    X_bad, y_bad = FAILURES[failure](clf, X, y)
    with pytest.raises(Exception) as info:  # noqa: PT011 - each failure has its own error
        clf.partial_fit(X_bad, y_bad) if how == "partial_fit" else clf.fit(X_bad, y_bad)
    assert "is left as it was before this call" in "".join(getattr(info.value, "__notes__", []))
    _assert_same(before, _state(clf, X))
    assert clf.score(X, y) > 0.5  # it still predicts valid 64-feature data


def test_an_unfitted_estimator_stays_unfitted_when_no_epoch_finished(digits, make_student):
    X, y = digits
    clf = make_student(module=PoisonableMLP, callbacks=[PoisonAt(epoch=1, batch=3)])
    with pytest.raises(RuntimeError, match="Non-finite loss at epoch 1, batch 3") as info:
        clf.fit(X, y)
    assert "is left unfitted" in "".join(info.value.__notes__)
    with pytest.raises(NotFittedError):
        clf.predict(X[:2])
    assert not hasattr(clf, "n_features_in_") and not hasattr(clf, "classes_inferred_")


def test_an_unfitted_estimator_keeps_the_epochs_a_failed_fit_finished(digits, make_student):
    X, y = digits
    clf = make_student(module=PoisonableMLP, callbacks=[PoisonAt(epoch=2, batch=3)])
    with pytest.raises(RuntimeError, match="Non-finite loss at epoch 2, batch 3"):
        clf.fit(X, y)
    assert len(clf.history) == 1 and clf.n_features_in_ == 64  # the finished epoch is kept: nothing lost
    assert clf.predict(X[:2]).shape == (2,)


def test_a_keyboard_interrupt_is_no_failure_the_refit_keeps_its_weights(digits, make_student):
    X, y = digits
    clf = make_student(max_epochs=2, callbacks=_armed()).fit(X, y)
    first = {k: v.clone() for k, v in clf.module_.state_dict().items()}
    clf.set_params(callbacks__interrupt__armed=True, max_epochs=5, warm_start=True)
    clf.fit(X, y)  # as skorch: training stops, the fit returns
    assert len(clf.history) == 4
    assert any(not torch.equal(v, first[k]) for k, v in clf.module_.state_dict().items())
