"""Every kind of teacher, its alignment to classes_, and its safety."""


import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression

from skd import EnsembleTeacher
from skd.teachers import CallableTeacher, SklearnTeacher, TorchTeacher, as_teacher


@pytest.fixture
def student(make_student):
    return make_student.bind(teacher=None)


def test_book_runs_teacher_once_per_sample(digits, student, make_teacher):
    X, y = digits
    teacher = make_teacher(seed=0)
    clf = student(teacher=teacher, max_epochs=4).fit(X, y)
    assert teacher.samples == len(X)  # one pass, however many epochs
    assert clf.teacher_.n_forward_samples_ == len(X)
    clf.predict(X)
    clf.predict_proba(X)
    clf.score(X, y)
    assert teacher.samples == len(X)  # never at predict time


def test_online_teacher_runs_every_epoch(digits, student, make_teacher):
    X, y = digits
    teacher = make_teacher(seed=0)
    student(teacher=teacher, book="online", max_epochs=4).fit(X, y)
    assert teacher.samples == len(X) * 4
    assert teacher.calls == 4 * int(np.ceil(len(X) / 64))


def test_torch_teacher_is_never_trained(digits, student, make_teacher):
    X, y = digits
    teacher = make_teacher(seed=0)
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    for book in ("memory", "online"):
        clf = student(teacher=teacher, book=book, loss="dkd").fit(X, y)
        assert not teacher.training
        for key, value in teacher.state_dict().items():
            assert torch.equal(value, before[key])  # bit-identical
        assert all(p.grad is None for p in teacher.parameters())
        optimised = {id(p) for group in clf.optimizer_.param_groups for p in group["params"]}
        assert optimised.isdisjoint({id(p) for p in teacher.parameters()})


def test_precomputed_book_needs_no_teacher(digits, student):
    X, y = digits
    logits = LogisticRegression(max_iter=500).fit(X, y).decision_function(X)
    clf = student().fit({"X": X, "teacher_logits": logits}, y)
    assert clf.teacher_ is None
    assert clf.score(X, y) > 0.8
    assert clf.predict({"X": X, "teacher_logits": logits}).shape == y.shape


def test_book_equals_online_teacher_without_shuffle(digits, student, make_teacher):
    X, y = digits
    teacher = make_teacher(seed=0)
    kwargs = {"teacher": teacher, "iterator_train__shuffle": False, "max_epochs": 2}
    a = student(book="memory", **kwargs).fit(X, y)
    b = student(book="online", **kwargs).fit(X, y)
    for pa, pb in zip(a.module_.parameters(), b.module_.parameters(), strict=False):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_write_book_returns_aligned_logits(digits, student, make_teacher):
    X, y = digits
    teacher = make_teacher(seed=0)
    clf = student(teacher=teacher).fit(X, y)
    book = clf.write_book(X[:10])
    assert book["teacher_logits"].shape == (10, 10)
    expected = teacher(torch.as_tensor(X[:10])).detach().numpy()
    assert np.allclose(book["teacher_logits"], expected, atol=1e-6)


def test_prefit_sklearn_teacher_through_frozen_estimator(digits, student):
    X, y = digits
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    frozen = FrozenEstimator(forest)
    clf = student(teacher=frozen).fit(X, y)
    assert clf.teacher_.estimator_ is frozen
    assert clf.score(X, y) > 0.8


def test_unfitted_sklearn_teacher_is_fitted_on_the_training_data(digits, student):
    X, y = digits
    teacher = LogisticRegression(max_iter=300)
    clf = student(teacher=teacher).fit(X[:600], y[:600])
    assert not hasattr(teacher, "classes_")  # the user's object is untouched
    fitted = clf.teacher_.estimator_
    assert fitted is not teacher and fitted.n_features_in_ == 64


def test_teacher_params_are_routed_to_a_sklearn_teacher(digits, student):
    X, y = digits
    clf = student(teacher=LogisticRegression(max_iter=300), teacher__C=0.01)
    clf.fit(X[:400], y[:400])
    assert clf.teacher_.estimator_.C == 0.01


def test_fitted_skorch_teacher_uses_logits(digits, student):
    X, y = digits
    net = student(loss="ce", max_epochs=2).fit(X, y)
    clf = student(teacher=net).fit(X, y)
    logits = clf.teacher_.predict_logits(torch.as_tensor(X[:5]))
    expected = net.forward(X[:5])
    assert torch.allclose(logits, expected, atol=1e-6)


def test_callable_teacher_and_ensemble_with_weights(digits, student, make_teacher):
    X, y = digits
    a, b = make_teacher(seed=0), torch.nn.Linear(64, 10)
    ens = EnsembleTeacher([a, lambda X: b(X)], weights=[3, 1])
    clf = student(teacher=ens).fit(X, y)
    xb = torch.as_tensor(X[:7])
    expected = 0.75 * a(xb) + 0.25 * b(xb)
    assert torch.allclose(clf.teacher_.predict_logits(xb), expected, atol=1e-6)
    plain = student(teacher=[a, b]).fit(X, y)
    assert torch.allclose(plain.teacher_.predict_logits(xb), (a(xb) + b(xb)) / 2, atol=1e-6)


def test_teacher_columns_are_aligned_to_classes_(digits, student):
    X, y = digits
    labels = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    y_str = labels[y]
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y_str)
    clf = student(teacher=FrozenEstimator(forest)).fit(X, y_str)
    assert list(clf.classes_) == sorted(labels)
    aligned = clf.teacher_.predict_logits(torch.as_tensor(X[:20])).numpy()
    proba = forest.predict_proba(X[:20])  # forest columns are also sorted labels
    assert np.allclose(np.exp(aligned), np.maximum(proba, 1e-7), atol=1e-6)
    # a teacher whose columns are in another order, given as classes=
    perm = np.random.default_rng(0).permutation(10)
    module = torch.nn.Linear(64, 10)
    wrapped = TorchTeacher(module, classes=np.arange(10)[perm])
    clf2 = student(teacher=wrapped).fit(X, y)
    xb = torch.as_tensor(X[:5])
    raw = module(xb).detach()
    assert torch.allclose(clf2.teacher_.predict_logits(xb), raw[:, np.argsort(perm)], atol=1e-6)


def test_probability_teacher_is_converted_with_a_warning(digits, student):
    X, y = digits
    linear = torch.nn.Linear(64, 10)
    with pytest.warns(UserWarning, match="returned probabilities.*not logits"):
        clf = student(teacher=lambda X: torch.softmax(linear(X), 1)).fit(X, y)
    xb = torch.as_tensor(X[:4])
    assert torch.allclose(clf.teacher_.predict_logits(xb), torch.log_softmax(linear(xb), 1), atol=1e-5)


def test_as_teacher_dispatches_each_kind():
    assert isinstance(as_teacher(torch.nn.Linear(2, 2)), TorchTeacher)
    assert isinstance(as_teacher(LogisticRegression()), SklearnTeacher)
    assert isinstance(as_teacher(lambda X: X), CallableTeacher)
    assert isinstance(as_teacher([torch.nn.Linear(2, 2)]), EnsembleTeacher)


@pytest.mark.parametrize("bad", ["resnet18", 3, object()])
def test_unknown_teacher_kind_is_refused(digits, bad, student):
    X, y = digits
    with pytest.raises(TypeError, match="teacher must be a trained torch.nn.Module"):
        student(teacher=bad).fit(X[:50], y[:50])


def test_teacher_with_wrong_number_of_classes(digits, student):
    X, y = digits
    with pytest.raises(ValueError, match="returns 5 outputs per sample, but y has 10 classes"):
        student(teacher=torch.nn.Linear(64, 5)).fit(X, y)


def test_teacher_returning_wrong_batch_size(digits, student):
    X, y = digits
    with pytest.raises(ValueError, match=r"returned an output of shape \(1, 10\)"):
        student(teacher=lambda X: torch.zeros(1, 10)).fit(X, y)


def test_teacher_missing_a_class(digits, student):
    X, y = digits
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X[y < 9], y[y < 9])
    with pytest.raises(ValueError, match=r"does not know the classes \[9\]"):
        student(teacher=FrozenEstimator(forest)).fit(X, y)
