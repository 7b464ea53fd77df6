"""DistillationClassifier as a scikit-learn citizen, and its input errors."""

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skd._device import resolve_device


@pytest.fixture
def student(make_student):
    return make_student.bind(fresh_teacher=lambda: LogisticRegression(max_iter=300))


def test_fit_predict_score_and_history_terms(digits, student):
    X, y = digits
    clf = student(max_epochs=5).fit(X, y)
    assert clf.score(X, y) > 0.9
    proba = clf.predict_proba(X[:5])
    assert proba.shape == (5, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert clf.history[:, "kd"] and clf.history[:, "ce"]
    assert len(clf.history[-1, "batches"][0]) and "kd" in clf.history[-1, "batches"][0]
    assert clf.n_features_in_ == 64


def test_terms_show_in_the_printed_log(digits, capsys, student):
    X, y = digits
    student(loss="cakd", verbose=1, max_epochs=1).fit(X, y)
    # the table's header (a line on the teacher's score comes first)
    header = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["epoch"])
    for term in ("ce", "bcd", "scd", "wcd", "train_loss"):
        assert term in header.split()


def test_string_labels_round_trip(digits, student):
    X, y = digits
    names = np.array(["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"])[y]
    clf = student().fit(X, names)
    assert list(clf.classes_) == sorted(set(names))
    assert set(clf.predict(X[:50])) <= set(names)
    assert clf.score(X, names) > 0.85


def test_pandas_input(digits, student):
    X, y = digits
    frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
    clf = student().fit(frame, pd.Series(y))
    assert list(clf.feature_names_in_) == list(frame.columns)
    assert clf.predict(frame.iloc[:10]).shape == (10,)


def test_tensor_input(digits, student):
    X, y = digits
    clf = student().fit(torch.as_tensor(X, dtype=torch.float64), y)
    assert clf.predict(torch.as_tensor(X[:10])).shape == (10,)


def test_float64_and_int_input_is_converted_without_warnings(digits, student):
    X, y = digits
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        student().fit(X.astype(np.float64), y)
        student().fit((X * 16).astype(np.int64), y)


def test_clone_get_and_set_params_route_loss_parameters(student):
    clf = student(loss="kd", loss__temperature=2.0)
    assert clf.get_params()["loss__temperature"] == 2.0
    copy = clone(clf)
    assert copy.get_params()["loss__temperature"] == 2.0
    copy.set_params(loss__temperature=3.0)
    assert copy.loss__temperature == 3.0 and clf.loss__temperature == 2.0


def test_set_params_reaches_the_loss_at_fit(digits, student):
    X, y = digits
    clf = student(loss="kd").set_params(loss__temperature=3.0)
    clf.fit(X[:200], y[:200])
    assert clf.loss_.temperature == 3.0 and clf.trainer_.state.values.temperature == 3.0
    clf.set_params(loss="dkd", loss__temperature=2.0, loss__beta=2.0).fit(X[:200], y[:200])
    assert type(clf.loss_).__name__ == "DKD" and clf.loss_.beta == 2.0
    clf.set_params(book="online", max_epochs=1).fit(X[:200], y[:200])
    assert clf.teacher_.n_forward_samples_ == 200


def test_grid_search_over_loss_and_temperature(digits, student):
    X, y = digits
    # the grid of the issue: CE accepts (and ignores) a temperature
    search = GridSearchCV(student(), {"loss": ["ce", "kd"], "loss__temperature": [2, 4]}, cv=2, n_jobs=2,
                          error_score="raise")
    search.fit(X[:400], y[:400])
    assert len(search.cv_results_["params"]) == 4
    assert search.best_score_ > 0.7
    with pytest.raises(ValueError, match="loss__beta is not a parameter of CE"):
        student(loss="ce", loss__beta=2).fit(X[:100], y[:100])
    with pytest.raises(ValueError, match=r"loss__temperature of CE must be None or a finite number "
                                         r"in \(0, inf\); got -1"):
        student(loss="ce", loss__temperature=-1).fit(X[:100], y[:100])


def test_pipeline_and_cross_val_score(digits, student):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), student())
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.85


@pytest.mark.parametrize("dumper", ["pickle", "joblib"])
def test_pickle_round_trip_of_fitted_estimator(digits, dumper, tmp_path, student, make_teacher):
    X, y = digits
    clf = student(teacher=make_teacher(seed=0)).fit(X, y)
    if dumper == "pickle":
        restored = pickle.loads(pickle.dumps(clf))
    else:
        joblib.dump(clf, tmp_path / "clf.joblib")
        restored = joblib.load(tmp_path / "clf.joblib")
    assert restored.device == "cpu"
    assert np.array_equal(restored.predict_proba(X), clf.predict_proba(X))
    unfitted = pickle.loads(pickle.dumps(student()))
    assert unfitted.get_params()["max_epochs"] == 3


def test_pickle_with_auto_device_keeps_auto(digits, student):
    X, y = digits
    clf = student(device="auto").fit(X[:200], y[:200])
    assert clf.device == "auto"
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.device == "auto"
    assert np.array_equal(restored.predict(X[:20]), clf.predict(X[:20]))


def test_auto_device_resolves_to_cpu_here():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine")
    assert resolve_device("auto") == "cpu"


def test_cuda_requested_without_cuda_fails_clearly(digits, student):
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine")
    X, y = digits
    with pytest.raises(RuntimeError, match="device='cuda' was requested, but CUDA is not available"):
        student(device="cuda").fit(X[:50], y[:50])


def test_random_state_makes_fits_repeatable_without_touching_global_rng(digits, student):
    X, y = digits
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = student(random_state=7).fit(X[:300], y[:300])
    assert torch.equal(torch.rand(1), expected_next)
    b = student(random_state=7).fit(X[:300], y[:300])
    assert np.array_equal(a.predict_proba(X[:50]), b.predict_proba(X[:50]))


# --------------------------------------------------------------- bad input
def test_unknown_loss_name_is_listed(digits, student):
    X, y = digits
    with pytest.raises(ValueError, match="Unknown loss 'dkdd'. Valid names are: cakd, ce, conskd, ctkd, "):
        student(loss="dkdd").fit(X[:50], y[:50])


@pytest.mark.parametrize("temperature", [0, -1.0])
def test_non_positive_temperature(digits, temperature, student):
    X, y = digits
    with pytest.raises(ValueError,
                       match=r"loss__temperature of KD must be a finite number in \(0, 1000\]; got"):
        student(loss__temperature=temperature).fit(X[:50], y[:50])


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinity")])
def test_nan_or_inf_in_X(digits, value, word, student):
    X, y = digits
    X = X.copy()
    X[3, 5] = value
    with pytest.raises(ValueError, match="Input X contains NaN or infinity.*impute"):
        student().fit(X, y)
    with pytest.raises(ValueError, match="NaN or infinity"):
        student().fit(torch.as_tensor(X), y)


def test_book_with_wrong_shape_or_missing_rows(digits, student):
    X, y = digits
    with pytest.raises(ValueError, match=r"teacher_logits'\] has shape \(1797, 9\), expected \(1797, 10\)"):
        student(teacher=None).fit({"X": X, "teacher_logits": np.zeros((len(X), 9))}, y)
    with pytest.raises(ValueError, match=r"has shape \(1000, 10\), expected \(1797, 10\)"):
        student(teacher=None).fit({"X": X, "teacher_logits": np.zeros((1000, 10))}, y)
    with pytest.raises(ValueError, match="must be finite"):
        student(teacher=None).fit({"X": X, "teacher_logits": np.full((len(X), 10), np.nan)}, y)


def test_dict_without_X_key(digits, student):
    X, y = digits
    with pytest.raises(ValueError, match="dict X only as a book"):
        student().fit({"features": X}, y)


def test_y_with_one_class(digits, student):
    X, _ = digits
    with pytest.raises(ValueError, match="y contains only one class"):
        student().fit(X[:20], np.zeros(20))


def test_loss_needing_a_teacher_without_one(digits, student):
    X, y = digits
    with pytest.raises(ValueError, match="loss='kd' needs a teacher"):
        student(teacher=None).fit(X[:50], y[:50])


def test_book_value(digits, student):
    X, y = digits
    with pytest.raises(ValueError, match="book of DistillationClassifier must be one of 'auto', "
                                         "'memory', 'online'; got 'yes'"):
        student(book="yes").fit(X[:50], y[:50])



def test_student_with_wrong_output_size(digits, student):
    X, y = digits
    with pytest.raises(ValueError, match=r"student module returns outputs of shape \(64, 3\)"):
        student(module__n_classes=3).fit(X, y)


def test_predict_before_fit(student):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        student().predict(np.zeros((2, 64), dtype=np.float32))


def test_wrong_feature_count_at_predict(digits, student):
    X, y = digits
    clf = student().fit(X[:200], y[:200])
    with pytest.raises(ValueError, match="X has 10 features, but DistillationClassifier is expecting 64"):
        clf.predict(X[:5, :10])


def test_classes_parameter_declares_labels_missing_from_y(digits, student):
    X, y = digits
    clf = student(teacher=None, loss="ce", classes=list(range(11))).fit(X, y)
    assert list(clf.classes_) == list(range(11))
    assert clf.predict_proba(X[:3]).shape == (3, 11)
    with pytest.raises(ValueError, match=r"y contains labels \[12\] not seen"):
        clf.partial_fit(X[:2], [0, 12])


def test_fit_builds_one_loss_and_one_trainer(digits, student, monkeypatch):
    from sklearn.exceptions import NotFittedError

    import skd.classifier
    from skd import Trainer
    from skd.losses import DistillationLoss

    X, y = digits
    clf = student(loss="kd", trainer__step_mode="eager")
    with pytest.raises(NotFittedError):
        clf.get_loss(torch.zeros(2, 10), torch.zeros(2, dtype=torch.long))
    built = []
    real = skd.classifier.make_loss
    monkeypatch.setattr(skd.classifier, "make_loss", lambda *a, **k: built.append(1) or real(*a, **k))
    clf.fit(X[:200], y[:200])
    assert len(built) == 1  # once per fit, whatever the number of epochs
    assert isinstance(clf.trainer_, Trainer) and clf.trainer_.step_mode == "eager"
    assert isinstance(clf.loss_, DistillationLoss)
    # the loss of the fit is one of its callbacks, the only loss among them
    assert [cb for _, cb in clf.callbacks_ if isinstance(cb, DistillationLoss)] == [clf.loss_]
