"""PrunedTeacher as a teacher and a pipeline step; prune_copy."""

import pickle

import joblib
import pytest
import torch
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from skd.teachers import PrunedTeacher, prune_copy


@pytest.fixture
def student(make_student):
    return make_student.bind(teacher=None, loss="r2kd")


def test_prune_copy_prunes_each_layer_and_leaves_the_teacher(teacher):
    before = [p.clone() for p in teacher.parameters()]
    pruned = prune_copy(teacher, 0.3)
    for layer in (pruned.net[0], pruned.net[2]):
        zero_share = (layer.weight == 0).float().mean().item()
        assert zero_share == pytest.approx(0.3, abs=0.01)
        assert not hasattr(layer, "weight_orig")  # masks removed: a plain module
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=False))
    structured = prune_copy(teacher, 0.25, "ln_structured")
    rows_zero = (structured.net[0].weight.abs().sum(1) == 0).float().mean().item()
    assert rows_zero == pytest.approx(0.25, abs=0.02)
    glob = prune_copy(teacher, 0.5, "global_unstructured")
    total = sum((m.weight == 0).sum().item() for m in (glob.net[0], glob.net[2]))
    assert total == pytest.approx(0.5 * (64 * 64 + 64 * 10), abs=2)
    pickle.loads(pickle.dumps(pruned))


def test_blend_of_teacher_and_pruned_logits(digits, teacher, student):
    X, y = digits
    pt = PrunedTeacher(teacher, amount=0.2, blend=0.7)
    clf = student(teacher=pt).fit(X, y)
    xb = torch.as_tensor(X[:8])
    pruned = clf.teacher_.pruned_
    expected = 0.7 * teacher(xb) + 0.3 * pruned(xb)
    assert torch.allclose(clf.teacher_.predict_logits(xb), expected, atol=1e-5)
    plain = PrunedTeacher(teacher, amount=0.0).fit()
    assert plain.pruned_ is None
    assert PrunedTeacher(teacher, blend=1.0).fit().pruned_ is None


def test_fit_transform_writes_the_book_and_transform_passes_through(digits, teacher):
    X, y = digits
    pt = PrunedTeacher(teacher, amount=0.1)
    book = pt.fit_transform(X, y)
    assert set(book) == {"X", "teacher_logits"} and book["teacher_logits"].shape == (len(X), 10)
    assert book[:5]["X"].shape == (5, 64)  # a SliceDict: sklearn can slice it
    assert pt.transform(X) is X


def test_pipeline_with_grid_search_over_pruning(digits, teacher, student):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), PrunedTeacher(teacher), student())
    grid = {"prunedteacher__amount": [0.0, 0.1], "prunedteacher__blend": [0.7, 1.0]}
    search = GridSearchCV(pipe, grid, cv=2, n_jobs=2).fit(X, y)
    assert search.best_score_ > 0.8
    assert search.predict(X[:10]).shape == (10,)


def test_pipeline_memory_reuses_the_book_across_student_candidates(digits, teacher, tmp_path, student):
    X, y = digits
    pipe = Pipeline(
        [("scale", StandardScaler()), ("prune", PrunedTeacher(teacher, amount=0.1)), ("clf", student())],
        memory=joblib.Memory(tmp_path, verbose=0),
    )
    type(teacher).samples = 0
    search = GridSearchCV(pipe, {"clf__lr": [1e-2, 3e-3, 1e-3]}, cv=3, n_jobs=1).fit(X, y)
    # once per fold (3 folds) and once for the refit; not once per candidate (9)
    per_pass = 2 * len(X) * 2 // 3  # original + pruned teacher over a training fold
    assert type(teacher).samples <= 3 * per_pass + 2 * len(X) + 10
    assert type(teacher).samples > 0 and search.best_estimator_ is not None
    type(teacher).samples = 0
    search.predict(X)
    assert type(teacher).samples == 0  # never at predict time


def test_pruned_teacher_and_student_pickle(digits, teacher, tmp_path):
    X, _y = digits
    pt = PrunedTeacher(teacher, amount=0.1).fit()
    restored = pickle.loads(pickle.dumps(pt))
    xb = torch.as_tensor(X[:4])
    assert torch.equal(restored.pruned_(xb), pt.pruned_(xb))
    assert clone(pt).get_params()["amount"] == 0.1


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"amount": 1.0}, ValueError, r"amount must be in \[0, 1\)"),
        ({"amount": -0.1}, ValueError, r"amount must be in \[0, 1\)"),
        ({"blend": 1.5}, ValueError, r"blend must be in \[0, 1\]"),
        ({"method": "random"}, ValueError, "method must be one of"),
    ],
)
def test_pruned_teacher_bad_parameters(teacher, kwargs, error, match):
    with pytest.raises(error, match=match):
        PrunedTeacher(teacher, **kwargs).fit()


def test_non_torch_teacher_cannot_be_pruned(digits, student):
    X, y = digits
    forest = FrozenEstimator(RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y))
    with pytest.raises(TypeError, match="can prune only torch teachers.*not FrozenEstimator"):
        PrunedTeacher(forest, amount=0.1).fit()
    clf = student(teacher=PrunedTeacher(forest, amount=0.0), loss="kd").fit(X, y)
    assert clf.score(X, y) > 0.8


def test_teacher_without_prunable_layers():
    with pytest.raises(ValueError, match="no Conv or Linear layer"):
        PrunedTeacher(torch.nn.Softmax(dim=1), amount=0.1).fit()
