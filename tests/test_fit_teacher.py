"""Which teacher a fit uses, and what it sees: prefit teachers, clone, the X it is given (issue #14)."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from skorch import NeuralNetClassifier

from skd import MLP, DistillationClassifier, OnFeatures, PrunedTeacher
from skd.teachers import TeacherAtChanceError, TeacherScoreWarning, UnderTrainedWarning
from skd.teachers.checks import at_chance


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


# ------------------------------------------------------------- 5. a teacher at chance (issue 33 item 3)
@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = load_breast_cancer(return_X_y=True)
    return X, y, HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)


def test_a_prefit_classifier_after_a_scaler_is_at_chance_and_refused(cancer):
    # the case: the forest of thresholds sees scaled features and answers the majority class
    X, y, forest = cancer
    pipe = make_pipeline(StandardScaler(), DistillationClassifier(MLP, teacher=FrozenEstimator(forest),
                                                                  verbose=0, device="cpu"))
    match = r"no better than chance.*scaler.*WriteBook\(teacher\) first"
    with pytest.raises(TeacherAtChanceError, match=match) as caught:
        pipe.fit(X, y)
    assert caught.value.score == pytest.approx(caught.value.chance)  # exactly the majority share here


def test_the_refused_fit_leaves_a_fitted_estimator_as_it_was(cancer):
    X, y, forest = cancer
    clf = DistillationClassifier(MLP, teacher=FrozenEstimator(forest), max_epochs=2, verbose=0, device="cpu",
                                 random_state=0).fit(X, y)
    weights = {key: value.clone() for key, value in clf.module_.state_dict().items()}
    score, teacher, epochs = clf.teacher_score_, clf.teacher_, len(clf.history)
    with pytest.raises(TeacherAtChanceError):
        clf.fit(StandardScaler().fit_transform(X), y)
    assert clf.teacher_score_ == score and clf.teacher_ is teacher and len(clf.history) == epochs
    assert all(torch.equal(value, weights[key]) for key, value in clf.module_.state_dict().items())


def test_a_weak_teacher_above_chance_gets_one_warning(digits, make_student):
    X, y = digits
    stump = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)  # 0.32 for a chance of 0.10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_student(teacher=FrozenEstimator(stump), max_epochs=1).fit(X, y)
    assert [type(w.message) for w in caught].count(TeacherScoreWarning) == 1


def test_an_untrained_module_at_chance_is_warned_about_not_refused(digits, make_student, make_teacher):
    # a bare module may be a stand-in: only classifiers trained on labels are refused at chance
    X, y = digits
    with pytest.warns(TeacherScoreWarning):
        make_student(teacher=make_teacher(), max_epochs=1).fit(X, y)


def test_a_search_reports_the_teacher_at_chance_once(cancer):
    from sklearn.exceptions import FitFailedWarning
    from sklearn.model_selection import GridSearchCV

    X, y, forest = cancer
    pipe = make_pipeline(StandardScaler(), DistillationClassifier(MLP, teacher=FrozenEstimator(forest),
                                                                  max_epochs=1, verbose=0, device="cpu"))
    # the search: the teacher's candidates fail (not silently lose), the teacher-free one wins
    search = GridSearchCV(pipe, {"distillationclassifier__loss": ["kd", "ce"]}, cv=2, error_score=np.nan)
    with pytest.warns(FitFailedWarning) as caught:
        search.fit(X, y)
    text = "".join(str(w.message) for w in caught if issubclass(w.category, FitFailedWarning))
    assert "2 fits failed with the following error" in text
    assert text.count("scores no better than chance") == 1
    assert search.best_params_ == {"distillationclassifier__loss": "ce"}


@pytest.mark.parametrize(("score", "chance", "n", "expected"), [
    (0.627, 0.627, 569, True),     # the majority class every time
    (0.64, 0.627, 569, True),      # within two standard errors (0.041)
    (0.70, 0.627, 569, False),
    (0.11, 0.10, 1797, True),      # at least two points
    (0.13, 0.10, 1797, False),
    (0.32, 0.10, 1797, False),     # weak, not at chance: a warning
])
def test_at_chance_is_the_majority_share_plus_a_margin(score, chance, n, expected):
    assert at_chance(score, chance, n) is expected


@settings(max_examples=50)
@given(st.floats(0.0, 1.0), st.integers(1, 100_000))
def test_the_majority_share_itself_is_always_at_chance(chance, n):
    assert at_chance(chance, chance, n)
    assert not at_chance(chance + 0.021 + 2 * np.sqrt(chance * (1 - chance) / n), chance, n)


@settings(max_examples=50)
@given(st.floats(0.0, 0.9), st.integers(50, 100_000))
def test_a_perfect_teacher_on_fifty_rows_or_more_is_never_at_chance(chance, n):
    assert not at_chance(1.0, chance, n)


def test_the_under_trained_warning_says_to_raise_max_epochs_above_its_value(digits):
    X, y = digits
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=500), verbose=0, device="cpu",
                                 random_state=0, optimizer=torch.optim.SGD, lr=1e-5)
    with pytest.warns(UnderTrainedWarning, match="raise max_epochs above its current max_epochs=40"):
        clf.fit(X, y)
