"""Sparse X: scipy CSR/CSC trains and predicts, densified one batch at a time."""

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.linear_model import LogisticRegression

from skd.teachers import SklearnTeacher
from skd.training.batching import DeviceBatches, make_iterator


def sparse_digits(digits, fmt="csr"):
    X, y = digits
    X = X.copy()
    X[X < 0.3] = 0.0  # about 60% zeros, as sparse data has
    return X, scipy.sparse.csr_matrix(X).asformat(fmt), y


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_fit_equals_dense_fit(digits, make_student, make_teacher, fmt):
    X, X_sparse, y = sparse_digits(digits, fmt)
    dense = make_student(teacher=make_teacher()).fit(X, y)
    sparse = make_student(teacher=make_teacher()).fit(X_sparse, y)
    assert np.allclose(sparse.predict_proba(X_sparse), dense.predict_proba(X), atol=1e-6)
    assert np.array_equal(sparse.predict(X), dense.predict(X))
    assert sparse.history[-1, "train_loss"] == pytest.approx(dense.history[-1, "train_loss"], rel=1e-5)


class RecordingSklearnTeacher(SklearnTeacher):
    """Records whether each batch handed to the scikit-learn estimator is sparse."""

    def raw_logits(self, rows):
        self.sparse_batches = [*getattr(self, "sparse_batches", []), scipy.sparse.issparse(rows)]
        return super().raw_logits(rows)


def test_sklearn_teachers_get_sparse_rows_and_torch_teachers_dense_tensors(digits, make_student,
                                                                          make_teacher):
    _, X_sparse, y = sparse_digits(digits)
    clf = make_student(teacher=RecordingSklearnTeacher(LogisticRegression(max_iter=200)),
                       max_epochs=1).fit(X_sparse, y)
    assert clf.teacher_.sparse_batches == [True, True]  # 1797 rows in books of 1024
    assert clf.score(X_sparse, y) > 0.5

    torch_teacher = make_teacher()
    seen = []
    torch_teacher.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    make_student(teacher=torch_teacher, max_epochs=1).fit(X_sparse, y)
    assert seen and all(isinstance(X, torch.Tensor) and not X.is_sparse and X.dtype == torch.float32
                        for X in seen)


def test_device_batches_densify_one_batch_at_a_time(digits, make_student):
    X, X_sparse, y = sparse_digits(digits)
    clf = make_student(max_epochs=1).fit(X_sparse, y)
    dataset = clf.get_dataset(X_sparse, y)
    batches = make_iterator(dataset, torch.utils.data.DataLoader, {}, 64, "cpu", training=True,
                            fast=False, generator=lambda: torch.Generator().manual_seed(0))
    assert isinstance(batches, DeviceBatches) and batches.sparse and batches.X.is_sparse
    rows = 0
    for Xb, _yb in batches:
        assert not Xb.is_sparse and Xb.shape[0] <= 64
        rows += Xb.shape[0]
    assert rows == X.shape[0]
    ordered = DeviceBatches(batches.X, batches.y, 100)
    assert torch.equal(torch.cat([Xb for Xb, _ in ordered]), torch.from_numpy(X))


def test_sparse_with_a_custom_iterator_is_refused_clearly(digits, make_student):
    _, X_sparse, y = sparse_digits(digits)
    with pytest.raises(ValueError, match="Sparse X is batched only by skd's device batches"):
        make_student(max_epochs=1, iterator_train__num_workers=0).fit(X_sparse, y)


def test_sparse_with_nan_is_refused(digits, make_student):
    _, X_sparse, y = sparse_digits(digits)
    X_sparse.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make_student(max_epochs=1).fit(X_sparse, y)
