"""Unlabelled rows (y == -1): the losses, the classifier, scoring and bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, PredefinedSplit
from sklearn.utils.validation import check_is_fitted

from skd.losses import available_losses, make_loss
from skd.losses import functional as Fn
from skd.metrics import labelled_accuracy, labelled_accuracy_score
from skd.teachers import TorchTeacher

TEACHER_LOSSES = [name for name in available_losses() if name not in ("ce", "tfkd")]


def _batch(n=12, n_classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(n, n_classes, generator=generator, requires_grad=True)
    teacher = 3 * torch.randn(n, n_classes, generator=generator)
    y = torch.randint(0, n_classes, (n,), generator=generator)
    return student, teacher, y


def _half_unlabelled(y):
    y = y.clone()
    y[::2] = -1
    return y


# ------------------------------------------------------------------ losses
def test_labelled_cross_entropy_is_the_mean_over_labelled_rows():
    student, _, y = _batch()
    partial = _half_unlabelled(y)
    labelled = partial >= 0
    expected = F.cross_entropy(student[labelled], y[labelled])
    torch.testing.assert_close(Fn.labelled_cross_entropy(student, partial), expected)
    torch.testing.assert_close(Fn.labelled_cross_entropy(student, y), F.cross_entropy(student, y))


def test_ce_gives_unlabelled_rows_no_gradient():
    student, _, y = _batch()
    partial = _half_unlabelled(y)
    Fn.labelled_cross_entropy(student, partial).backward()
    assert torch.all(student.grad[partial < 0] == 0)
    assert torch.any(student.grad[partial >= 0] != 0)


@pytest.mark.parametrize("name", TEACHER_LOSSES)
def test_a_batch_without_labels_has_zero_ce_and_finite_terms(name):
    student, teacher, y = _batch()
    terms = make_loss(name, {})(student, teacher, torch.full_like(y, -1))
    assert terms["ce"] == 0
    assert all(torch.isfinite(value) for value in terms.values())
    sum(terms.values()).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


@pytest.mark.parametrize("name", TEACHER_LOSSES)
def test_unlabelled_rows_change_the_soft_terms_only(name):
    student, teacher, y = _batch()
    partial = _half_unlabelled(y)
    terms = make_loss(name, {})(student, teacher, partial)
    labelled = partial >= 0
    ce_on_labelled = make_loss(name, {})(student[labelled], teacher[labelled], y[labelled])["ce"]
    torch.testing.assert_close(terms["ce"], ce_on_labelled)


@pytest.mark.parametrize("name", ["dkd", "cakd"])
def test_split_losses_use_the_teachers_top_class_for_an_unlabelled_row(name):
    student, teacher, y = _batch()
    partial = _half_unlabelled(y)
    pseudo = torch.where(partial >= 0, partial, teacher.argmax(1))
    unlabelled_terms = make_loss(name, {})(student, teacher, partial)
    pseudo_terms = make_loss(name, {})(student, teacher, pseudo)
    for term in unlabelled_terms:
        if term != "ce":
            torch.testing.assert_close(unlabelled_terms[term], pseudo_terms[term])


def test_tfkd_reg_skips_unlabelled_rows():
    student, _, y = _batch()
    partial = _half_unlabelled(y)
    labelled = partial >= 0
    for convention in ("paper", "released"):
        loss = make_loss("tfkd", {"convention": convention})
        torch.testing.assert_close(loss(student, None, partial)["kd"],
                                   loss(student[labelled], None, y[labelled])["kd"])


def test_marker_rows_none_marks_no_row():
    from skd.labels import marker_rows

    y = np.array([-1, 0, 1, -1])
    assert marker_rows(y, None).tolist() == [False] * 4
    assert marker_rows(y, -1).tolist() == [True, False, False, True]
    labels = np.array(["?", "a", -1], dtype=object)
    assert marker_rows(labels, "?").tolist() == [True, False, False]


# -------------------------------------------------------------- classifier
@pytest.fixture
def make_student(make_student):
    """Students that read -1 as the unlabelled marker (the default, None, makes every label a class)."""
    return make_student.bind(unlabelled=-1)


@pytest.fixture
def digits(digits):
    """The first 500 digits: enough to fit, small enough for a shared CPU."""
    X, y = digits
    return X[:500], y[:500]


def _partial(y, every=3):
    y = np.array(y, copy=True)
    y[::every] = -1
    return y


def test_fit_with_unlabelled_rows(digits, make_student, make_teacher):
    X, y = digits
    teacher = make_teacher()
    clf = make_student(teacher=teacher, max_epochs=2).fit(X, _partial(y))
    assert clf.classes_.tolist() == list(range(10))
    assert teacher.samples == len(X)  # the book covers every row, once
    assert np.isfinite(clf.history[:, "train_loss"]).all()


def test_a_batch_of_unlabelled_rows_only(digits, make_student):
    X, y = digits
    y = y.copy()
    y[:64] = -1  # the whole first batch
    clf = make_student(loss="dkd", iterator_train__shuffle=False, max_epochs=1).fit(X, y)
    first = clf.history[-1, "batches"][0]
    assert first["ce"] == 0 and np.isfinite(first["tckd"]) and np.isfinite(first["nckd"])


def test_string_labels_with_a_string_marker(digits, make_student):
    X, y = digits
    labels = np.array([f"digit {i}" for i in y], dtype=object)
    labels[::3] = "?"
    clf = make_student(unlabelled="?", max_epochs=1).fit(X, labels)
    assert "?" not in clf.classes_.tolist() and len(clf.classes_) == 10
    assert set(clf.predict(X[:20])) <= set(clf.classes_)


def test_only_unlabelled_rows_with_a_teacher_that_knows_its_classes(digits, make_student, make_teacher):
    X, y = digits
    unlabelled = np.full(len(y), -1)
    torch_teacher = TorchTeacher(make_teacher(), classes=np.arange(10))
    assert make_student(teacher=torch_teacher, max_epochs=1).fit(X, unlabelled).classes_.tolist() == list(
        range(10))
    sklearn_teacher = FrozenEstimator(LogisticRegression(max_iter=200).fit(X, y))
    clf = make_student(teacher=sklearn_teacher, max_epochs=1).fit(X, unlabelled)
    assert clf.classes_.tolist() == list(range(10))


def test_only_unlabelled_rows_without_known_classes_is_an_error(digits, make_student):
    X, y = digits
    clf = make_student()
    with pytest.raises(ValueError, match="classes must come from the teacher"):
        clf.fit(X, np.full(len(y), -1))
    with pytest.raises(NotFittedError):
        clf.predict(X)


def test_an_unfitted_teacher_is_fitted_on_the_labelled_rows(digits, make_student):
    X, y = digits
    clf = make_student(teacher=LogisticRegression(max_iter=200), max_epochs=1).fit(X, _partial(y))
    assert clf.teacher_.estimator_.classes_.tolist() == list(range(10))


@pytest.mark.parametrize("loss", ["ce", "tfkd"])
def test_teacher_free_losses_refuse_unlabelled_rows(digits, make_student, loss):
    X, y = digits
    clf = make_student(loss=loss, teacher=None)
    with pytest.raises(ValueError, match=f"loss='{loss}' learns from labels only"):
        clf.fit(X, _partial(y))
    with pytest.raises(NotFittedError):
        check_is_fitted(clf, "classes_inferred_")


def test_score_skips_unlabelled_rows(digits, make_student):
    X, y = digits
    clf = make_student(max_epochs=2).fit(X, _partial(y))
    partial = _partial(y)
    labelled = partial >= 0
    expected = np.mean(clf.predict(X[labelled]) == y[labelled])
    assert clf.score(X, partial) == pytest.approx(expected)
    assert labelled_accuracy(clf, X, partial) == pytest.approx(expected)
    assert np.isnan(labelled_accuracy_score(np.full(3, -1), np.zeros(3)))


def test_grid_search_scores_only_the_labelled_rows_of_each_fold(digits, make_student):
    X, y = digits
    y = _partial(y)
    folds = list(KFold(2).split(X))
    search = GridSearchCV(make_student(max_epochs=1), {"lr": [1e-2]}, cv=folds).fit(X, y)
    for i, (train, test) in enumerate(folds):
        refit = make_student(max_epochs=1).fit(X[train], y[train])
        labelled = test[y[test] >= 0]
        expected = np.mean(refit.predict(X[labelled]) == y[labelled])
        assert search.cv_results_[f"split{i}_test_score"][0] == pytest.approx(expected)
    # the other recipe: every unlabelled row stays in training (test_fold = -1)
    test_fold = np.where(y >= 0, np.arange(len(y)) % 2, -1)
    recipe = GridSearchCV(make_student(max_epochs=1), {"lr": [1e-2]}, cv=PredefinedSplit(test_fold),
                          scoring=labelled_accuracy).fit(X, y)
    assert np.isfinite(recipe.best_score_)


# --------------------------------------------------------------- bad input
def _assert_unfitted(clf):
    with pytest.raises(NotFittedError):
        clf.predict(np.zeros((1, 64), dtype=np.float32))


def test_marker_in_a_float_y_is_an_error(digits, make_student):
    X, y = digits
    clf = make_student()
    with pytest.raises(ValueError, match="float array holding the unlabelled marker -1"):
        clf.fit(X, _partial(y).astype(float))
    _assert_unfitted(clf)


def test_nan_labels_are_an_error(digits, make_student):
    X, y = digits
    labels = y.astype(float)
    labels[5] = np.nan
    clf = make_student()
    with pytest.raises(ValueError, match="y contains NaN at rows \\[5\\].*unlabelled="):
        clf.fit(X, labels)
    _assert_unfitted(clf)


def test_a_marker_that_is_a_class_is_an_error(digits, make_student, make_teacher):
    X, y = digits
    clf = make_student(classes=[-1, *range(10)])
    with pytest.raises(ValueError, match="marker -1 is also a class of classes="):
        clf.fit(X, y)
    _assert_unfitted(clf)
    teacher = TorchTeacher(make_teacher(n_classes=11), classes=np.arange(-1, 10))
    clf = make_student(teacher=teacher)
    with pytest.raises(ValueError, match="marker -1 is also a class of the teacher"):
        clf.fit(X, _partial(y))
    _assert_unfitted(clf)


def _fails_on_large_inputs(X):
    if (X[:, 0] > 10).any():
        raise RuntimeError("out of range")
    return X[:, :10]


def test_an_online_teacher_that_fails_on_unlabelled_rows(digits, make_student):
    X, y = digits
    X = X.copy()
    y = _partial(y)
    X[y < 0, 0] = 100.0  # the unlabelled rows come from elsewhere
    clf = make_student(teacher=_fails_on_large_inputs, book="online")
    with pytest.raises(ValueError, match="failed on the unlabelled rows of y .*out of range"):
        clf.fit(X, y)
    _assert_unfitted(clf)


def test_bad_labels_leave_a_fitted_estimator_as_it_was(digits, make_student):
    X, y = digits
    clf = make_student(max_epochs=1).fit(X, _partial(y))
    before = clf.predict_proba(X)
    classes, history = clf.classes_.tolist(), len(clf.history)
    nan_labels = y.astype(float)
    nan_labels[5] = np.nan
    for bad in (_partial(y).astype(float), nan_labels, np.full(len(y), -1)):
        with pytest.raises(ValueError):
            clf.fit(X, bad)
        assert clf.classes_.tolist() == classes and len(clf.history) == history
        np.testing.assert_array_equal(clf.predict_proba(X), before)


def test_binary_labels_minus_one_and_one_name_the_marker(digits, make_student, make_teacher):
    X, y = digits
    signs = np.where(y < 5, -1, 1)
    student = make_student.bind(lambda: make_teacher(n_classes=2))
    with pytest.raises(ValueError, match="pass unlabelled=None"):
        student().fit(X, signs)
    assert student(unlabelled=None, max_epochs=1).fit(X, signs).classes_.tolist() == [-1, 1]


def test_add_transfer_appends_unlabelled_rows_where_the_dataset_has_them(monkeypatch):
    from skd import data

    split = data.Split(np.zeros((4, 3)), np.zeros((2, 3)), np.arange(4), np.arange(2), "mnist5k")
    monkeypatch.setitem(data.TRANSFER_POOLS, "mnist5k", lambda: np.ones((10, 3)))
    grown = data.add_transfer(split, 6)
    assert grown.X_train.shape == (10, 3) and (grown.y_train[4:] == -1).all()
    with pytest.raises(ValueError, match="has no unlabelled transfer rows"):
        data.add_transfer(split._replace(name="digits"), 6)
    with pytest.raises(ValueError, match="between 0 and 10"):
        data.add_transfer(split, 11)
