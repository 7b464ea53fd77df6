"""Which teacher a fit uses, and what it sees: prefit teachers, clone, the X it is given (issue #14)."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from skorch import NeuralNetClassifier

from skd import MLP, OnFeatures, PrunedTeacher
from skd.teachers import TeacherScoreWarning


@pytest.fixture(scope="module")
def raw_digits(digits):
    """Digits as scikit-learn gives them (pixel values 0 to 16)."""
    X, y = digits
    return X * 16, y


@pytest.fixture(scope="module")
def hgb(raw_digits):
    """A tree model fitted on raw pixels (a single tree: as threshold-bound as HGB, and fast)."""
    X, y = raw_digits
    return DecisionTreeClassifier(random_state=0).fit(X, y)


def _net(fitted_on=None):
    net = NeuralNetClassifier(MLP, module__n_features=64, module__n_classes=10, max_epochs=2,
                              criterion=torch.nn.CrossEntropyLoss, train_split=None, verbose=0, lr=0.1)
    if fitted_on is not None:
        X, y = fitted_on
        net.fit(X, y.astype(np.int64))
    return net


# ------------------------------------------------------------- 1. which X a teacher sees
def test_prefit_teacher_on_transformed_X_warns_and_records_its_score(raw_digits, make_student, hgb):
    X, y = raw_digits
    pipe = make_pipeline(StandardScaler(), make_student(teacher=FrozenEstimator(hgb), max_epochs=1))
    with pytest.warns(TeacherScoreWarning, match="teacher_score_"):
        pipe.fit(X, y)
    assert pipe[-1].teacher_score_ < 0.6


def test_prefit_teacher_on_its_own_X_records_a_high_score_without_warning(raw_digits, make_student, hgb):
    X, y = raw_digits
    clf = make_student(teacher=FrozenEstimator(hgb), max_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TeacherScoreWarning)
        clf.fit(X, y)
    assert clf.teacher_score_ > 0.95


def test_pruned_teacher_first_writes_the_book_on_raw_X(raw_digits, make_student, hgb):
    X, y = raw_digits
    pipe = make_pipeline(PrunedTeacher(FrozenEstimator(hgb), amount=0), OnFeatures(StandardScaler()),
                         make_student(teacher=None, max_epochs=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TeacherScoreWarning)
        pipe.fit(X, y)
    assert pipe[0].teacher_score_ > 0.95 and pipe[-1].teacher_score_ > 0.95
    # the student saw scaled features, and predicts through the same steps
    scaler = pipe[1].transformer_
    np.testing.assert_allclose(scaler.mean_, X.mean(axis=0), atol=1e-5)
    assert pipe.score(X, y) > 0.5


def test_on_features_passes_plain_X_through_its_transformer(digits):
    X, _ = digits
    step = OnFeatures(StandardScaler()).fit(X)
    np.testing.assert_allclose(step.transform(X), StandardScaler().fit_transform(X), atol=1e-6)


# ------------------------------------------------------------- 2. fitted teachers through clone
def test_fitted_skorch_teacher_is_kept_through_clone(digits, make_student):
    X, y = digits
    net = _net(fitted_on=(X, y))
    clf = clone(make_student(teacher=net, max_epochs=1))
    assert clf.teacher is net
    clf.fit(X, y)
    assert clf.teacher_fitted_in_fit_ is False
    assert len(net.history) == 2  # not retrained


def test_unfitted_skorch_teacher_is_still_fitted_per_fit(digits, make_student):
    X, y = digits
    clf = clone(make_student(teacher=_net(), max_epochs=1)).fit(X, y)
    assert clf.teacher_fitted_in_fit_ is True
    assert not getattr(clf.teacher, "initialized_", False)  # the user's object is left unfitted


def test_pruned_fitted_skorch_teacher_survives_clone(digits, make_student):
    X, y = digits
    net = _net(fitted_on=(X, y))
    pipe = clone(make_pipeline(PrunedTeacher(net, amount=0.2), make_student(teacher=None, max_epochs=1)))
    pipe.fit(X, y)
    assert pipe[0].pruned_ is not None


def test_pruned_teacher_accepts_a_frozen_skorch_net(digits):
    X, y = digits
    net = _net(fitted_on=(X, y))
    book = PrunedTeacher(FrozenEstimator(net), amount=0.2).fit_transform(X, y)
    assert book["teacher_logits"].shape == (len(X), 10)


def test_pruned_teacher_names_what_it_cannot_prune():
    with pytest.raises(TypeError, match="LogisticRegression"):
        PrunedTeacher(FrozenEstimator(LogisticRegression()), amount=0.2).fit()


# ------------------------------------------------------------- 4. scikit-learn teachers get the user's X
@pytest.fixture(scope="module")
def frame(digits):
    X, y = digits
    return pd.DataFrame(X, columns=[f"px{i}" for i in range(X.shape[1])]), y


def test_sklearn_teacher_selecting_columns_by_name_gets_the_dataframe(frame, make_student):
    X, y = frame
    teacher = make_pipeline(ColumnTransformer([("some", "passthrough", ["px10", "px20", "px30", "px42"])]),
                            LogisticRegression(max_iter=200))
    clf = make_student(teacher=teacher, max_epochs=1).fit(X, y)
    assert clf.teacher_fitted_in_fit_ is True
    assert clf.teacher_score_ > 0.2


def test_frozen_forest_fitted_on_a_dataframe_does_not_warn_about_feature_names(frame, make_student):
    X, y = frame
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*feature names.*")
        make_student(teacher=FrozenEstimator(forest), max_epochs=1).fit(X, y)


def test_sklearn_teacher_gets_arrays_when_the_user_passed_a_tensor(digits, make_student):
    X, y = digits
    clf = make_student(teacher=LogisticRegression(max_iter=100), max_epochs=1).fit(torch.as_tensor(X), y)
    assert clf.teacher_fitted_in_fit_ is True and clf.teacher_score_ > 0.9
    assert isinstance(clf.write_book(torch.as_tensor(X[:5]))["teacher_logits"], np.ndarray)
