"""A book cache on disk: the teacher runs once per training set, not once per candidate.

In a grid search every candidate of a fold trains on the same rows with the
same teacher, so they can share one book. ``DistillationClassifier(...,
book_cache=<dir>)`` keeps each book's logits in ``<dir>`` under a hash of
the training features, the labels and the set-up teacher (by content). A file lock per key makes
concurrent workers (joblib
processes, Dask workers on one machine or on a shared file system) wait for
the one that writes it instead of running the teacher again. This is the role
``Pipeline(memory=...)`` plays for transformers.
"""

from __future__ import annotations

import os
import types
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse
import torch
from filelock import FileLock
from skorch import NeuralNet

__all__ = ["book_key", "cached_book_logits", "check_book_cache", "teacher_fingerprint"]


def check_book_cache(book_cache) -> Path | None:
    """The cache directory (created), or None; a clear error for anything else."""
    if book_cache is None:
        return None
    if not isinstance(book_cache, (str, os.PathLike)):
        raise TypeError(
            f"book_cache must be None or a directory path (str or os.PathLike), got "
            f"{type(book_cache).__name__}; give a folder every worker can read and write."
        )
    path = Path(book_cache)
    path.mkdir(parents=True, exist_ok=True)
    return path


def teacher_fingerprint(teacher):
    """A picklable stand-in for ``teacher`` that hashes by content.

    Torch modules become their class name and weights as numpy arrays
    (``torch.save`` writes random ids into tensors, so their pickles never
    hash alike); functions become their code, constants and closure; lists,
    tuples, dicts and objects' attributes are walked; anything else (a
    scikit-learn estimator, ...) is kept as it is for joblib to hash.
    """
    if isinstance(teacher, torch.nn.Module):
        state = {key: value.detach().cpu().numpy() for key, value in teacher.state_dict().items()}
        return ("module", type(teacher).__module__, type(teacher).__qualname__, state)
    if isinstance(teacher, NeuralNet):  # its pickle holds torch.save's random ids
        if getattr(teacher, "initialized_", False):
            return ("skorch", type(teacher).__qualname__, teacher_fingerprint(teacher.module_),
                    getattr(teacher, "classes_", None))
        return ("skorch", type(teacher).__qualname__, teacher_fingerprint(teacher.get_params(deep=False)))
    if isinstance(teacher, torch.Tensor):
        return ("tensor", teacher.detach().cpu().numpy())
    if isinstance(teacher, types.FunctionType):
        code = teacher.__code__
        closure = [teacher_fingerprint(cell.cell_contents) for cell in teacher.__closure__ or ()]
        return ("function", teacher.__module__, teacher.__qualname__, code.co_code,
                teacher_fingerprint(list(code.co_consts)), closure)
    if isinstance(teacher, (list, tuple)):
        return type(teacher).__name__, [teacher_fingerprint(item) for item in teacher]
    if isinstance(teacher, dict):
        return "dict", {key: teacher_fingerprint(value) for key, value in teacher.items()}
    if type(teacher).__module__.startswith("skd.teachers"):  # adapters: their parts
        return type(teacher).__qualname__, teacher_fingerprint(vars(teacher))
    return teacher


def book_key(X, y, teacher) -> str:
    """The cache key of the book of ``(X, y)`` written by ``teacher``.

    ``teacher`` is the set-up adapter of the fit (:class:`skd.teachers.Teacher`):
    it holds the fitted teacher with its ``teacher__*`` settings and the
    student's ``classes_``, so a self-taught or freshly fitted teacher is
    keyed by what it became.
    """
    features = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X
    if scipy.sparse.issparse(features):
        features = features.tocsr()
        features = (features.shape, features.data, features.indices, features.indptr)
    return joblib.hash((features, np.asarray(y), teacher_fingerprint(teacher)))


def cached_book_logits(cache: Path | None, key: str, write) -> np.ndarray:
    """The logits stored under ``key`` in ``cache``, or ``write()`` stored there first.

    Parameters
    ----------
    cache : Path or None
        None: just ``write()``.
    key : str
        From :func:`book_key`.
    write : callable
        Runs the teacher over the data; returns the logits (ndarray).
    """
    if cache is None:
        return write()
    path = cache / f"{key}.npy"
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return np.load(path)
        logits = write()
        partial = path.with_name(f"{key}.{os.getpid()}.partial.npy")
        np.save(partial, logits)
        os.replace(partial, path)  # atomic: a reader never sees half a book
    return logits
