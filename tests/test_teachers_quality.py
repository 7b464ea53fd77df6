"""``EnsembleTeacher(weights="quality")``: CA-MKD's confidence-aware weights, measured once at setup."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from skd import EnsembleTeacher
from skd.losses import functional as Fn


@pytest.fixture
def student(make_student):
    return make_student.bind(teacher=None)


def released_camkd_attention(loss_t: torch.Tensor, teacher_num: int) -> torch.Tensor:
    """Rorozhl/CA-MKD, ``helper/loops.py`` (``ensemble_method == 'CAMKD'``), transcribed."""
    return (1.0 - torch.nn.functional.softmax(loss_t, dim=0)) / (teacher_num - 1)


@given(st.lists(st.floats(0.0, 50.0), min_size=2, max_size=6))
def test_confidence_aware_weights_equal_the_released_attention(losses):
    losses = torch.tensor(losses, dtype=torch.float64)
    weights = Fn.confidence_aware_weights(losses)
    torch.testing.assert_close(weights, released_camkd_attention(losses, len(losses)), rtol=0, atol=0)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (weights >= 0).all()
    order = torch.argsort(losses)  # a lower cross-entropy never weighs less
    assert (weights[order][:-1] >= weights[order][1:] - 1e-12).all()


def test_one_teacher_weighs_one_and_per_sample_losses_keep_their_shape():
    assert Fn.confidence_aware_weights(torch.tensor([3.0])).tolist() == [1.0]
    per_sample = torch.rand(3, 5)
    torch.testing.assert_close(Fn.confidence_aware_weights(per_sample).sum(0), torch.ones(5))


def _mean_ce(logits: np.ndarray, y: np.ndarray) -> float:
    return float(-log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(y)), y].mean())


def test_quality_weights_are_measured_on_the_training_rows(digits, student, make_teacher):
    X, y = digits
    good, noisy = make_teacher(seed=0), make_teacher(seed=1)
    with torch.no_grad():  # one teacher trained a little, one left at random
        optimizer = torch.optim.Adam(good.parameters(), 1e-2)
        for _ in range(30):
            with torch.enable_grad():
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(good(torch.as_tensor(X)), torch.as_tensor(y)).backward()
                optimizer.step()
    clf = student(teacher=EnsembleTeacher([good, noisy], weights="quality"), max_epochs=1).fit(X, y)
    with torch.no_grad():
        losses = [_mean_ce(model(torch.as_tensor(X)).numpy(), y) for model in (good, noisy)]
    np.testing.assert_allclose(clf.teacher_.teacher_losses_, losses, rtol=1e-5)
    expected = released_camkd_attention(torch.tensor(losses, dtype=torch.float64), 2).float()
    torch.testing.assert_close(clf.teacher_.weights_, expected)
    assert clf.teacher_.weights_[0] > clf.teacher_.weights_[1]
    xb = torch.as_tensor(X[:5])
    with torch.no_grad():
        mixed = expected[0] * good(xb) + expected[1] * noisy(xb)
    torch.testing.assert_close(clf.teacher_.predict_logits(xb), mixed)


def test_a_weak_sklearn_teacher_weighs_least(digits, student):
    X, y = digits
    teachers = [LogisticRegression(max_iter=300), DecisionTreeClassifier(max_depth=2, random_state=0)]
    clf = student(teacher=EnsembleTeacher(teachers, weights="quality"), max_epochs=1).fit(X[:600], y[:600])
    weights = clf.teacher_.weights_
    assert weights[0] > 0.5 > weights[1] and weights.sum().item() == pytest.approx(1.0)


def test_quality_skips_unlabelled_rows_and_adds_no_work_to_the_steps(digits, student, make_teacher):
    X, y = digits
    y = y.copy()
    y[::4] = -1  # unlabelled rows (the students' marker is -1)
    calls = []
    base = make_teacher(seed=0)

    def counted(batch):
        calls.append(batch.shape[0])
        return base(batch)

    ensemble = EnsembleTeacher([counted, make_teacher(seed=1)], weights="quality")
    clf = student(teacher=ensemble, unlabelled=-1, max_epochs=3).fit(X, y)
    labelled = int((y >= 0).sum())
    # one pass over the labelled rows for the weights, one over every row for the book, none per step
    assert sum(calls) == labelled + len(X)
    labels = torch.as_tensor(y[y >= 0])
    with torch.no_grad():
        first = _mean_ce(base(torch.as_tensor(X[y >= 0])).numpy(), labels.numpy())
    assert clf.teacher_.teacher_losses_[0] == pytest.approx(first, rel=1e-5)


@pytest.mark.parametrize("bad", ["best", "Quality"])
def test_an_unknown_weighting_scheme_is_refused_by_name(digits, student, make_teacher, bad):
    X, y = digits
    ensemble = EnsembleTeacher([make_teacher(seed=0), make_teacher(seed=1)], weights=bad)
    with pytest.raises(ValueError, match=f"teacher weights={bad!r} is not a known scheme"):
        student(teacher=ensemble).fit(X[:100], y[:100])


def test_quality_needs_rows_to_measure_on(digits, student, make_teacher):
    X, y = digits
    dataset = torch.utils.data.TensorDataset(torch.as_tensor(X[:100]), torch.as_tensor(y[:100]))
    ensemble = EnsembleTeacher([make_teacher(seed=0), make_teacher(seed=1)], weights="quality")
    with pytest.raises(ValueError, match="weights='quality' measures each teacher"):
        ensemble.setup(dataset, None, np.arange(10), "cpu")
