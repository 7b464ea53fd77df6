"""The fast path: device slicing of in-memory data, a drop-in for the DataLoader."""

import numpy as np
import pytest
import torch
from skorch.dataset import ValidSplit
from torch.utils.data import TensorDataset

from skd.training.batching import DeviceBatches


@pytest.fixture
def student(make_student, make_teacher):
    return make_student.bind(fresh_teacher=lambda: make_teacher(seed=42), batch_size=50)


def test_fast_path_gives_identical_weights_without_shuffle(digits, student):
    X, y = digits
    fast = student(iterator_train__shuffle=False, trainer__batching="auto").fit(X, y)
    slow = student(iterator_train__shuffle=False, trainer__batching="loader").fit(X, y)
    for a, b in zip(fast.module_.parameters(), slow.module_.parameters(), strict=False):
        assert torch.equal(a, b)
    assert np.array_equal(fast.predict_proba(X), slow.predict_proba(X))


def test_fast_path_is_used_for_arrays_and_books(digits, student):
    X, y = digits
    clf = student()
    clf.fit(X, y)
    assert isinstance(clf.get_iterator(clf.get_dataset(X, y), training=True), DeviceBatches)
    clf.set_params(trainer__batching="loader")
    assert not isinstance(clf.get_iterator(clf.get_dataset(X, y), training=True), DeviceBatches)


def test_fast_path_matches_loader_accuracy_with_shuffle(digits, student):
    X, y = digits
    scores = {}
    for batching in ("auto", "loader"):
        accs = [student(trainer__batching=batching, random_state=seed, loss="ce", max_epochs=8)
                .fit(X[:1200], y[:1200]).score(X[1200:], y[1200:]) for seed in range(3)]
        scores[batching] = np.mean(accs)
    assert abs(scores["auto"] - scores["loader"]) < 0.02
    assert min(scores.values()) > 0.9


def test_torch_dataset_goes_through_the_loader_with_an_online_teacher(digits, student):
    X, y = digits
    teacher = torch.nn.Linear(64, 10)
    dataset = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
    with pytest.raises(ValueError, match="requires y or classes= when X is a torch Dataset"):
        student(teacher=teacher).fit(dataset, None)
    by_classes = student(teacher=teacher, classes=list(range(10))).fit(dataset, None)
    assert list(by_classes.classes_) == list(range(10))
    clf = student(teacher=teacher).fit(dataset, y)
    assert clf.teacher_.n_forward_samples_ == len(X) * 3  # online: a Dataset has no book
    assert clf.predict(X[:5]).shape == (5,)


def test_validation_split_records_valid_terms(digits, student):
    X, y = digits
    clf = student(train_split=ValidSplit(5, stratified=True)).fit(X, y)
    assert len(clf.history[:, "valid_kd"]) == 3
    assert all(0 <= acc <= 1 for acc in clf.history[:, "valid_acc"])
    assert clf.history[-1, "valid_acc"] > 0.5


def test_device_batches_cover_every_sample_once():
    X = {"X": torch.arange(10.0)[:, None], "teacher_logits": torch.arange(10.0)[:, None] * 2}
    y = torch.arange(10)
    batches = list(DeviceBatches(X, y, batch_size=4, shuffle=True))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    for xb, yb in batches:  # rows stay aligned across the book's entries
        assert torch.equal(xb["teacher_logits"][:, 0], 2 * yb.float())
    assert len(DeviceBatches(X, y, 4, drop_last=True)) == 2
    assert [len(b[1]) for b in DeviceBatches(X, y, 4, drop_last=True)] == [4, 4]


@pytest.mark.parametrize("shuffle, drop_last, n", [(True, False, 10), (False, False, 10), (True, True, 10),
                                                    (False, False, 12)])
def test_epoch_batches_are_the_batches_of_indices_in_their_order(shuffle, drop_last, n):
    X, y = torch.arange(n * 2.0).view(n, 2), torch.arange(n)

    def batches():
        return DeviceBatches(X, y, 4, shuffle=shuffle, drop_last=drop_last,
                             generator=lambda: torch.Generator().manual_seed(3))

    expected = [torch.arange(n)[index] for index in batches().indices()]
    full, rest = batches().epoch_batches()
    got = [*full] + ([] if rest is None else [rest])
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_bad_batching_value(digits, student):
    X, y = digits
    with pytest.raises(ValueError,
                       match="trainer__batching of Trainer must be one of 'auto', 'loader'; got 'fast'"):
        student(trainer__batching="fast").fit(X[:50], y[:50])
