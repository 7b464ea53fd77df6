"""A book cache on disk: the teacher runs once per training set, not once per candidate.

In a grid search every candidate of a fold trains on the same rows with the
same teacher, so they can share one book. ``DistillationClassifier(...,
book_dir=<dir>)`` keeps each book's logits in ``<dir>`` under a key (see
:func:`book_key`). A file lock per key makes concurrent workers (joblib
processes, Dask workers on one machine or on a shared file system) wait for
the one that writes it instead of running the teacher again. This is the role
``Pipeline(memory=...)`` plays for transformers.

What the key covers
-------------------
The training rows as the teacher sees them (the user's X), the labels, the
set-up teacher by what it declares (:meth:`skd.teachers.Teacher.cache_token`:
its weights, code, constants, closures, ``teacher__*`` settings,
``classes_``, hashed by content) and the
teacher's outputs on a small fixed probe of the training rows
(:data:`PROBE_ROWS` rows spread evenly over ``X``). The probe catches what the
content misses: a module-level global that a ``lambda X: net(X)`` teacher
reads, plain attributes, non-persistent buffers. A change that moves no
output on the probe rows is not seen; delete the cache (or use another
directory) after editing a teacher in such a way. The key ends with the
book's shape, ``<hash>-<rows>x<classes>``.

Every book read back is checked as a user's book is (shape, row count,
finite numbers); a file that fails, or cannot be read (truncated, not an
``.npy`` array, a symbolic link), is named in a :class:`BookCacheWarning`
and rebuilt from the teacher. Files are written to a temporary file created
exclusively in the cache directory and renamed into place, so a reader
never sees half a book, a planted symbolic link is never followed, and a
failed write (a full disk) leaves nothing behind: the fit goes on with the
book in memory.

Security: whoever can write to the cache directory controls the teacher's
targets, hence what the student learns. Give each user (or each trust
domain) its own directory.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import types
import warnings
from contextlib import suppress
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse
import torch
from filelock import FileLock
from skorch import NeuralNet

from skd.book.rows import as_rows, n_rows, take_rows

__all__ = ["PROBE_ROWS", "BookCacheWarning", "book_key", "cached_book_logits", "check_book_cache",
           "probe_logits", "teacher_fingerprint"]

#: Rows of the training set (spread evenly) whose teacher outputs are part of the key.
PROBE_ROWS = 16

_SHAPE_SUFFIX = re.compile(r"-(\d+)x(\d+)$")


class BookCacheWarning(UserWarning):
    """A cached book could not be used (named in the message); it is rebuilt or not cached."""


def check_book_cache(book_dir) -> Path | None:
    """The cache directory (created), or None; a clear error for anything else.

    Raises
    ------
    TypeError
        If ``book_dir`` is not None, a str or an ``os.PathLike``.
    ValueError
        If ``book_dir`` names a file, or a folder that cannot be created.
    """
    if book_dir is None:
        return None
    if not isinstance(book_dir, (str, os.PathLike)):
        raise TypeError(
            f"book_dir must be None or a directory path (str or os.PathLike), got "
            f"{type(book_dir).__name__}; give a folder every worker can read and write."
        )
    path = Path(book_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"book_dir={os.fspath(book_dir)!r} is a file, not a directory. Give the path of a "
            "folder (it is created if missing) where the teacher's books can be kept."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"book_dir={os.fspath(book_dir)!r} cannot be created as a directory ({error}). "
            "Give a folder path that every worker can create or write, or book_dir=None."
        ) from error
    return path


def teacher_fingerprint(teacher):
    """A picklable stand-in for ``teacher`` that hashes by content.

    A set-up skd teacher is what it declares (``cache_token()``). Torch
    modules become their class name and weights as numpy arrays
    (``torch.save`` writes random ids into tensors, so their pickles never
    hash alike); functions become their code, constants and closure; lists,
    tuples, dicts and objects' attributes are walked; anything else (a
    scikit-learn estimator, ...) is kept as it is for joblib to hash.
    """
    token = getattr(teacher, "cache_token", None)
    if callable(token) and not isinstance(teacher, type):  # a set-up skd teacher: what it declares
        return "teacher", teacher_fingerprint(token())
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
    return teacher


def probe_logits(teacher, X) -> np.ndarray | None:
    """The teacher's logits on :data:`PROBE_ROWS` rows of ``X`` spread evenly; part of the key.

    ``teacher`` is a set-up :class:`skd.teachers.Teacher` adapter and ``X``
    the rows as the user gave them. None for an object that cannot write a book.
    """
    X = as_rows(X)
    count = n_rows(X)
    if not hasattr(teacher, "book_logits") or count == 0:
        return None
    rows = np.unique(np.linspace(0, count - 1, min(count, PROBE_ROWS)).round().astype(np.int64))
    return np.asarray(teacher.book_logits(take_rows(X, rows)))


def book_key(X, y, teacher) -> str:
    """The cache key of the book of ``(X, y)`` written by ``teacher``: ``<hash>-<rows>x<classes>``.

    ``teacher`` is the set-up adapter of the fit (:class:`skd.teachers.Teacher`):
    it holds the fitted teacher with its ``teacher__*`` settings and the
    student's ``classes_``, so a self-taught or freshly fitted teacher is
    keyed by what it became. The key also holds the teacher's outputs on a
    fixed probe of rows (:func:`probe_logits`; this runs the teacher on
    :data:`PROBE_ROWS` rows), so it changes whenever those outputs do, and
    it ends with the book's shape, which :func:`cached_book_logits` checks a
    cached book against. ``X`` is the rows as the teacher sees them (the user's X).
    """
    X = as_rows(X)
    content = teacher_fingerprint(teacher)
    probe = probe_logits(teacher, X)
    features = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X
    if scipy.sparse.issparse(features):
        features = features.tocsr()
        features = (features.shape, features.data, features.indices, features.indptr)
    digest = joblib.hash((features, np.asarray(y), content, probe))
    if probe is None or probe.ndim != 2:
        return digest
    return f"{digest}-{n_rows(X)}x{probe.shape[1]}"


def _expected_shape(key: str, shape) -> tuple[int, int] | None:
    if shape is not None:
        return tuple(int(n) for n in shape)
    match = _SHAPE_SUFFIX.search(key)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _problem_with(path: Path, expected) -> tuple[np.ndarray | None, str | None]:
    """``(logits, None)`` for a good book, ``(None, reason)`` for a bad one, ``(None, None)`` if absent."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None, None
    except OSError as error:
        if error.errno == errno.ELOOP or path.is_symlink():
            return None, "it is a symbolic link, which is never followed"
        return None, f"it cannot be opened ({error})"
    with os.fdopen(fd, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)(handle)
            shape, _, dtype = header
            if expected is not None and tuple(shape) != expected:
                return None, f"it holds an array of shape {tuple(shape)}, expected {expected}"
            if (expected is None and len(shape) != 2) or dtype.kind != "f":
                return None, f"it holds a {dtype} array of shape {tuple(shape)}, not float logits"
            handle.seek(0)
            logits = np.load(handle, allow_pickle=False)
        except (ValueError, OSError, EOFError, TypeError) as error:
            return None, f"it is not a complete .npy array (truncated?): {error}"
    if not np.isfinite(logits).all():
        return None, "it holds NaN or infinite logits"
    return logits, None


def _write_atomically(cache: Path, key: str, path: Path, logits: np.ndarray) -> None:
    """Write ``logits`` to ``path`` through an exclusive temporary file; warn if the disk refuses."""
    partial = None
    try:
        fd, partial = tempfile.mkstemp(dir=cache, prefix=f".{key}.", suffix=".partial.npy")
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, logits, allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)  # atomic, and replaces a link at path rather than following it
        partial = None
    except OSError as error:
        warnings.warn(
            f"The book could not be written to the book_dir file {path} ({error}); the fit goes "
            "on with the book in memory. Free space in the cache directory or set book_dir=None.",
            BookCacheWarning, stacklevel=3,
        )
    finally:
        if partial is not None:  # also on KeyboardInterrupt: nothing is left behind
            with suppress(OSError):
                os.unlink(partial)


def cached_book_logits(cache: Path | None, key: str, write, shape=None) -> np.ndarray:
    """The logits stored under ``key`` in ``cache``, or ``write()`` stored there first.

    A cached file is checked as a user's book is; a bad one is named in a
    :class:`BookCacheWarning`, removed and rebuilt with ``write()``.

    Parameters
    ----------
    cache : Path or None
        None: just ``write()``.
    key : str
        From :func:`book_key`.
    write : callable
        Runs the teacher over the data; returns the logits (ndarray).
    shape : tuple of int or None, default=None
        The book's ``(n_rows, n_classes)``; by default read from the end of
        ``key``. Any float array of this exact shape is accepted (a hint's
        teacher features, ``(n_rows, *layer shape)``).
    """
    if cache is None:
        return write()
    expected = _expected_shape(key, shape)
    path = cache / f"{key}.npy"
    lock = str(path) + ".lock"
    try:
        guard = FileLock(lock)
        guard.acquire()
    except OSError as error:
        warnings.warn(
            f"The lock file {lock} of book_dir cannot be used ({error}); is it a symbolic link "
            "planted there? The book is computed without the cache. Remove the file or use a "
            "book_dir directory that only you can write.",
            BookCacheWarning, stacklevel=2,
        )
        return write()
    try:
        logits, problem = _problem_with(path, expected)
        if logits is not None:
            return logits
        if problem is not None:
            warnings.warn(
                f"The cached book {path} is not usable: {problem}. It is rebuilt from the teacher.",
                BookCacheWarning, stacklevel=2,
            )
            with suppress(FileNotFoundError):
                os.unlink(path)
        logits = write()
        _write_atomically(cache, key, path, np.asarray(logits))
    finally:
        guard.release()
    return logits
