"""Out-of-fold books (``teacher_cv``) for teachers that skd fits: skd.teachers.out_of_fold."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict

import skd.teachers.fitting as fitting
from skd import DistillationClassifier
from skd.students import MLP
from skd.teachers.base import PROBA_FLOOR

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:240] / 16).astype(np.float32), y[:240]


@pytest.fixture
def books(monkeypatch):
    """The Books the fits of a test write, in order."""
    written = []

    def recording(*args, **kwargs):
        book = write_book(*args, **kwargs)
        written.append(book)
        return book

    write_book = fitting.write_book
    monkeypatch.setattr(fitting, "write_book", recording)
    return written


def _forest():
    return RandomForestClassifier(n_estimators=10, random_state=0)


def _fit(X, y, teacher, **params):
    params.setdefault("max_epochs", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DistillationClassifier(MLP, teacher=teacher, random_state=0, **params).fit(X, y)


def _log(proba) -> np.ndarray:
    return np.log(np.clip(proba.astype(np.float32), PROBA_FLOOR, None))


def _logits(book) -> np.ndarray:
    return np.asarray(book.logits)


@pytest.mark.parametrize("cv", [3, StratifiedKFold(3, shuffle=True, random_state=0)])
def test_book_holds_cross_val_predict_of_predict_proba(digits, books, cv):
    X, y = digits
    clf = _fit(X, y, _forest(), teacher_cv=cv)
    expected = cross_val_predict(_forest(), X, y, cv=cv, method="predict_proba")
    np.testing.assert_allclose(_logits(books[0]), _log(expected), rtol=1e-6, atol=1e-6)
    # the all-rows teacher serves teacher_score_ (a forest is near perfect on its own rows)
    in_sample = clf.teacher_.estimator_.score(X, y)
    assert clf.teacher_score_ == pytest.approx(in_sample)
    assert (_logits(books[0]).argmax(1) == y).mean() < in_sample


def test_book_holds_cross_val_predict_of_decision_function(digits, books):
    X, y = digits
    teacher = LogisticRegression(C=0.5, max_iter=300)
    _fit(X, y, teacher, teacher_cv=4)
    expected = cross_val_predict(teacher, X, y, cv=4, method="decision_function")
    np.testing.assert_allclose(_logits(books[0]), expected.astype(np.float32), rtol=1e-5, atol=1e-5)


def test_none_keeps_the_in_sample_book(digits, books):
    X, y = digits
    clf = _fit(X, y, _forest(), teacher_cv=None)
    np.testing.assert_allclose(_logits(books[0]), clf.teacher_.book_logits(X))
    assert clf.teacher_score_ == pytest.approx((_logits(books[0]).argmax(1) == y).mean())


def test_prefit_and_torch_teachers_are_untouched(digits, books):
    X, y = digits
    prefit = FrozenEstimator(_forest().fit(X, y))
    clf = _fit(X, y, prefit, teacher_cv=3)
    np.testing.assert_allclose(_logits(books[0]), clf.teacher_.book_logits(X))
    torch.manual_seed(0)
    module = torch.nn.Linear(64, 10)
    clf = _fit(X, y, module, teacher_cv=3, loss="kd")
    np.testing.assert_allclose(_logits(books[1]), clf.teacher_.book_logits(X), rtol=1e-6)


def test_unlabelled_rows_get_the_all_rows_teacher(digits, books):
    X, y = digits
    y_partial = y.copy()
    y_partial[::4] = -1
    clf = _fit(X, y_partial, _forest(), teacher_cv=3, unlabelled=-1)
    labelled = y_partial != -1
    expected = cross_val_predict(_forest(), X[labelled], y[labelled], cv=3, method="predict_proba")
    logits = _logits(books[0])
    np.testing.assert_allclose(logits[labelled], _log(expected),
                               atol=1e-6)
    np.testing.assert_allclose(logits[~labelled], clf.teacher_.book_logits(X[~labelled]), atol=1e-6)


def test_out_of_fold_and_in_sample_books_never_share_a_cache_key(digits, books, tmp_path):
    X, y = digits
    _fit(X, y, _forest(), teacher_cv=None, book_dir=tmp_path)
    _fit(X, y, _forest(), teacher_cv=3, book_dir=tmp_path)
    _fit(X, y, _forest(), teacher_cv=3, book_dir=tmp_path)  # read back
    assert len(list(tmp_path.glob("*.npy"))) == 2
    assert not np.allclose(_logits(books[0]), _logits(books[1]))
    np.testing.assert_array_equal(_logits(books[1]), _logits(books[2]))


@pytest.mark.parametrize("bad", [1, 0, True, 2.5, "five", [1, 2]])
def test_bad_teacher_cv_is_refused_naming_it_and_keeps_the_fit(digits, bad):
    X, y = digits
    clf = _fit(X, y, _forest())
    before = clf.teacher_score_
    clf.teacher_cv = bad
    with pytest.raises((ValueError, TypeError), match="teacher_cv"):  # text for a number: TypeError
        clf.fit(X, y)
    assert clf.teacher_score_ == before
    assert clf.predict(X).shape == y.shape


def test_check_teacher_cv_names_the_parameter():
    from skd.teachers.out_of_fold import check_teacher_cv

    with pytest.raises(ValueError, match="teacher_cv=1 "):
        check_teacher_cv(1, np.array([0, 1, 0, 1]))
    assert isinstance(check_teacher_cv(2, np.array([0, 1, 0, 1])), StratifiedKFold)


def test_clone_keeps_teacher_cv(digits, books):
    X, y = digits
    clf = DistillationClassifier(MLP, teacher=_forest(), teacher_cv=3, max_epochs=1, random_state=0)
    copy = clone(clf)
    assert copy.get_params()["teacher_cv"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copy.fit(X, y)
    expected = cross_val_predict(_forest(), X, y, cv=3, method="predict_proba")
    np.testing.assert_allclose(_logits(books[0]), _log(expected),
                               atol=1e-6)


def test_grid_search_over_teacher_cv(digits):
    X, y = digits
    clf = DistillationClassifier(MLP, teacher=_forest(), teacher_cv=3, max_epochs=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search = GridSearchCV(clf, {"teacher_cv": [None, 3]}, cv=2, error_score="raise").fit(X, y)
    assert [params["teacher_cv"] for params in search.cv_results_["params"]] == [None, 3]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
