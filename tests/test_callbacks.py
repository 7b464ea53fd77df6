"""StudentPruning: the student pruned while it distils."""

import pickle

import numpy as np
import pytest

from skd.callbacks import StudentPruning


@pytest.fixture
def student(make_student):
    return make_student.bind(teacher=None)


def test_unstructured_student_pruning_reaches_the_target(digits, teacher, student):
    X, y = digits
    clf = student(teacher=teacher, loss="kd", max_epochs=6,
                  callbacks=[StudentPruning(amount=0.5, structured=False)]).fit(X, y)
    hidden = clf.module_.layers[1]
    assert not hasattr(hidden, "weight_orig")
    assert (hidden.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert clf.history[:, "sparsity"][-1] == pytest.approx(0.5)
    assert clf.score(X, y) > 0.85
    pickle.loads(pickle.dumps(clf))


def test_structured_student_pruning_shrinks_the_module(digits, teacher, student):
    pytest.importorskip("torch_pruning")
    X, y = digits
    clf = student(teacher=teacher, loss="kd", max_epochs=6, module__hidden_units=(128,),
                  callbacks=[StudentPruning(amount=0.5, structured=True)]).fit(X, y)
    hidden = clf.module_.layers[1]
    assert hidden.out_features == 64
    assert clf.module_.layers[-1].out_features == 10
    assert clf.score(X, y) > 0.85
    restored = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(restored.predict(X[:20]), clf.predict(X[:20]))


def test_student_pruning_bad_amount(digits, teacher, student):
    X, y = digits
    with pytest.raises(ValueError, match=r"StudentPruning amount must be in \[0, 1\)"):
        student(teacher=teacher, callbacks=[StudentPruning(amount=1.2)]).fit(X[:50], y[:50])
