"""skd.students: the MLP that standardizes its inputs, the callback that measures them, SmallCNN."""

import pickle

import numpy as np
import pytest
import scipy.sparse
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.preprocessing import StandardScaler

from skd import MLP, DistillationClassifier
from skd.students import MeasureInputs, SmallCNN, input_statistics


@pytest.fixture(scope="module")
def cancer():
    """breast_cancer split once: 30 features on scales from 1e-3 to 1e3."""
    X, y = load_breast_cancer(return_X_y=True)
    return train_test_split(X.astype(np.float32), y, test_size=0.3, stratify=y, random_state=0)


def student(standardize=True, **kwargs):
    params = dict(loss="ce", module__standardize=standardize, callbacks=[MeasureInputs()],
                  verbose=0, random_state=0, device="cpu", max_epochs=20)
    return DistillationClassifier(MLP, **{**params, **kwargs})


# ------------------------------------------------------------------ the statistics
finite = st.floats(-1e4, 1e4, width=32, allow_subnormal=False)


@given(arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 6)), elements=finite))
def test_input_statistics_are_standard_scalers_mean_and_scale(X):
    mean, scale = input_statistics(X)
    reference = StandardScaler().fit(X.astype(np.float64))
    indicator = np.isin(X, (0.0, 1.0)).all(axis=0)  # passed unchanged (see the test below)
    assert np.all(mean[indicator] == 0) and np.all(scale[indicator] == 1)
    np.testing.assert_allclose(mean[~indicator], reference.mean_[~indicator], rtol=1e-5, atol=1e-3)
    varying = ~indicator & (reference.scale_ > 1e-3 * np.maximum(np.abs(reference.mean_), 1.0))
    np.testing.assert_allclose(scale[varying], reference.scale_[varying], rtol=1e-4)
    assert np.all(scale > 0)


def test_a_constant_feature_gets_scale_one_and_is_only_centred():
    X = np.array([[5.0, 1.0], [5.0, 3.0], [5.0, 5.0]], dtype=np.float32)
    mean, scale = input_statistics(X)
    assert mean.tolist() == [5.0, 3.0] and scale[0] == 1.0


def test_sparse_and_tensor_inputs_give_the_dense_statistics(cancer):
    X = cancer[0]
    dense = input_statistics(X)
    for other in (scipy.sparse.csr_matrix(X), torch.from_numpy(X)):
        for got, expected in zip(input_statistics(other), dense, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_image_inputs_are_flattened_into_pixel_features():
    X = np.random.default_rng(0).random((10, 1, 4, 4), dtype=np.float32)
    mean, scale = input_statistics(X)
    np.testing.assert_allclose(mean, X.reshape(10, -1).mean(axis=0), rtol=1e-5)
    assert scale.shape == (16,)


# ------------------------------------------------------------------ the student
def test_a_fit_measures_the_training_rows_into_buffers(cancer):
    X_train, _, y_train, _ = cancer
    clf = student().fit(X_train, y_train)
    reference = StandardScaler().fit(X_train.astype(np.float64))
    np.testing.assert_allclose(clf.module_.input_mean.numpy(), reference.mean_, rtol=1e-5)
    np.testing.assert_allclose(clf.module_.input_scale.numpy(), reference.scale_, rtol=1e-4)
    assert int(clf.module_.input_rows) == len(X_train) and clf.module_.inputs_measured


def test_standardizing_inside_trains_as_a_standard_scaler_in_front(cancer):
    X_train, _, y_train, _ = cancer
    inside = student().fit(X_train, y_train)
    scaled = StandardScaler().fit_transform(X_train.astype(np.float64)).astype(np.float32)
    outside = student(standardize=False).fit(scaled, y_train)
    np.testing.assert_allclose(inside.history[:, "train_loss"], outside.history[:, "train_loss"],
                               rtol=1e-3)


def test_unscaled_features_lose_nothing_with_standardize():
    X, y = load_breast_cancer(return_X_y=True)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    plain = cross_val_score(student(standardize=False, max_epochs=40), X, y, cv=folds).mean()
    standardized = cross_val_score(student(max_epochs=40), X, y, cv=folds).mean()
    # benchmarks/standardize.py printed 0.9227 without it and 0.9772 with it (as StandardScaler first)
    assert standardized >= 0.96 and standardized > plain + 0.03


def test_standardize_false_is_the_plain_network_with_no_buffers():
    module = MLP(5, 3, standardize=False)
    assert not module.standardize and not list(module.buffers()) and not module.inputs_measured
    module.measure_inputs(np.ones((4, 5), np.float32))  # does nothing
    assert set(module.state_dict()) == {"layers.1.weight", "layers.1.bias", "layers.3.weight",
                                        "layers.3.bias"}


def test_an_unmeasured_student_passes_its_inputs_unchanged():
    torch.manual_seed(0)
    standardizing = MLP(6, 2, standardize=True)
    plain = MLP(6, 2, standardize=False)
    plain.load_state_dict({k: v for k, v in standardizing.state_dict().items() if k.startswith("layers")})
    X = torch.randn(8, 6) * 100
    assert torch.equal(standardizing(X), plain(X))


def test_partial_fit_and_warm_start_keep_the_first_statistics(cancer):
    X_train, _, y_train, _ = cancer
    clf = student(max_epochs=2).partial_fit(X_train, y_train)
    mean = clf.module_.input_mean.clone()
    clf.partial_fit(X_train * 10, y_train)
    assert torch.equal(clf.module_.input_mean, mean)
    warm = student(max_epochs=2, warm_start=True).fit(X_train, y_train)
    warm.fit(X_train + 100, y_train)
    np.testing.assert_allclose(warm.module_.input_mean.numpy(), X_train.mean(axis=0), rtol=1e-4)


def test_a_fresh_fit_measures_its_own_rows_again(cancer):
    X_train, _, y_train, _ = cancer
    clf = student(max_epochs=1).fit(X_train, y_train)
    clf.fit(X_train + 100, y_train)
    np.testing.assert_allclose(clf.module_.input_mean.numpy(), X_train.mean(axis=0) + 100, rtol=1e-4)


def test_a_book_is_measured_on_its_features(cancer):
    X_train, _, y_train, _ = cancer
    book = {"X": X_train, "teacher_logits": 3 * np.eye(2, dtype=np.float32)[y_train]}
    clf = student(loss="kd", max_epochs=1).fit(book, y_train)
    np.testing.assert_allclose(clf.module_.input_mean.numpy(), X_train.mean(axis=0), rtol=1e-4)


def test_a_torch_dataset_is_not_read(cancer):
    X_train, _, y_train, _ = cancer
    data = torch.utils.data.TensorDataset(torch.from_numpy(X_train), torch.from_numpy(y_train))
    clf = student(max_epochs=1).fit(data, y_train)
    assert not clf.module_.inputs_measured


def test_the_statistics_travel_with_the_student(cancer, tmp_path):
    X_train, X_test, y_train, _ = cancer
    clf = student(max_epochs=3).fit(X_train, y_train)
    expected = clf.predict_proba(X_test)
    clf.save_student(tmp_path / "student.safetensors")
    loaded = DistillationClassifier.load_student(tmp_path / "student.safetensors", MLP, device="cpu")
    assert loaded.module_.inputs_measured
    for copy in (loaded, pickle.loads(pickle.dumps(clf)), clf.export_student()):
        np.testing.assert_allclose(copy.predict_proba(X_test), expected, rtol=1e-5, atol=1e-6)


def test_a_wrong_standardize_value_names_the_parameter(cancer):
    X_train, _, y_train, _ = cancer
    with pytest.raises(TypeError, match="module__standardize must be True or False, got 'yes'"):
        student(standardize="yes").fit(X_train, y_train)


def test_measuring_rows_of_another_width_says_which(cancer):
    with pytest.raises(ValueError, match="X has 4 features per row .* n_features=30"):
        MLP(30, 2, standardize=True).measure_inputs(np.ones((3, 4), np.float32))


def test_the_callback_leaves_other_students_alone(cancer):
    X_train, _, y_train, _ = cancer
    clf = DistillationClassifier(SmallCNN, loss="ce", module__channels=(2, 2), module__hidden=4,
                                 callbacks=[MeasureInputs()], max_epochs=1, verbose=0, device="cpu")
    clf.fit(np.zeros((20, 16), np.float32), np.arange(20) % 2)
    assert not list(clf.module_.buffers())


@pytest.mark.parametrize("sparse", [False, True])
def test_indicator_columns_pass_unchanged(sparse):
    # a one-hot encoded category: standardized, its rare level's column would reach 1/sqrt(p)
    rng = np.random.default_rng(0)
    level = rng.choice(10, size=500, p=[0.91] + [0.01] * 9)
    one_hot = np.eye(10)[level]
    numeric = rng.normal(3.0, 2.0, size=(500, 2))
    X = np.hstack([one_hot, numeric])
    mean, scale = input_statistics(scipy.sparse.csr_matrix(X) if sparse else X)
    np.testing.assert_array_equal(mean[:10], 0.0)
    np.testing.assert_array_equal(scale[:10], 1.0)
    np.testing.assert_allclose(mean[10:], X[:, 10:].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(scale[10:], X[:, 10:].std(axis=0), rtol=1e-5)
