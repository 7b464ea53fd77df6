"""The compressed book: per row, the teacher's top-k log-probabilities and the mass of its tail.

A full book keeps C teacher logits per row (4C bytes); with many classes that
is most of a fit's memory. A compressed book keeps, per row, the log-
probabilities of the teacher's k most likely classes (softened at the
temperature it was written at), their class indices, the log-mass of the
other ``C - k`` classes and that temperature: ``k * (4 + 2) + 8`` bytes with
int16 indices (int32 from 32 768 classes on). It is a mapping like the full
book, so skorch's splitting and batching carry it untouched::

    {"X": features,
     "teacher_topk": (n, k) float32,       # log softmax(z / T), descending
     "teacher_topk_index": (n, k) int16,   # their classes, in classes_ order
     "teacher_tail": (n,) float32,         # log of the other classes' mass (-inf if k = C)
     "teacher_temperature": (n,) float32}  # T, the same on every row

Only a loss that says so (``capabilities.compressed_book``, e.g.
``"kd_topk"``) reads one; the classifier writes one for such a loss, and
every other loss refuses one (:func:`check_loss_takes`). The maths is
:mod:`skd.losses.functional.compressed`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import scipy.sparse
import torch
from skorch.utils import to_tensor

from skd.book.rows import as_numpy
from skd.losses.base import MAX_TEMPERATURE
from skd.losses.functional.compressed import TopKBook, compress_teacher

__all__ = ["BOOK_TAIL", "BOOK_TEMPERATURE", "BOOK_TOPK", "BOOK_TOPK_INDEX", "COMPRESSED_KEYS",
           "MASS_TOLERANCE", "check_compressed_book", "check_loss_k", "check_loss_takes", "compress_chunks",
           "is_compressed_book", "topk_book_of"]

#: Key of the top-k teacher log-probabilities, shape (n_samples, k), descending per row.
BOOK_TOPK = "teacher_topk"
#: Key of their class indices, shape (n_samples, k).
BOOK_TOPK_INDEX = "teacher_topk_index"
#: Key of the log-mass of the other ``C - k`` classes, shape (n_samples,).
BOOK_TAIL = "teacher_tail"
#: Key of the temperature the book was written at, shape (n_samples,), one value.
BOOK_TEMPERATURE = "teacher_temperature"
#: The keys of a compressed book besides ``"X"``.
COMPRESSED_KEYS = (BOOK_TOPK, BOOK_TOPK_INDEX, BOOK_TAIL, BOOK_TEMPERATURE)
#: How far a row's top-k mass plus its tail may be from 1 (float32 rounding of k + 1 terms).
MASS_TOLERANCE = 1e-3


def is_compressed_book(X: Any) -> bool:
    """Whether ``X`` is a compressed book: a mapping with ``"X"`` and ``"teacher_topk"``."""
    return isinstance(X, Mapping) and not scipy.sparse.issparse(X) and BOOK_TOPK in X


def _index_dtype(n_classes: int) -> np.dtype:
    return np.dtype(np.int16) if n_classes <= np.iinfo(np.int16).max else np.dtype(np.int32)


def compress_chunks(chunks: Iterable[torch.Tensor], k: int, temperature: float = 1.0) -> dict:
    """The compressed-book keys of teacher logits given in chunks of rows, kept as they come.

    What :func:`skd.book.compress_book` writes, without the whole logits array: a
    teacher's batches (:meth:`skd.teachers.Teacher.logit_chunks`) are
    compressed one by one.

    Parameters
    ----------
    chunks : iterable of Tensor of shape (batch, n_classes)
    k : int
        Classes kept per row, ``1 <= k <= n_classes``.
    temperature : float, default=1.0
        In ``(0, MAX_TEMPERATURE]`` (:data:`skd.losses.base.MAX_TEMPERATURE`), the losses' bounds.

    Returns
    -------
    dict
        ``teacher_topk``, ``teacher_topk_index``, ``teacher_tail`` and ``teacher_temperature`` (numpy).
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating, np.integer)) \
            or not 0 < temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be a number in (0, {MAX_TEMPERATURE:g}], the losses' bounds, "
                         f"got {temperature!r}; write the book at the temperature the loss uses "
                         "(loss__temperature).")
    parts, n_classes = [], None
    for chunk in chunks:
        if n_classes is None:
            n_classes = chunk.shape[1]
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_classes:
                raise ValueError(f"k must be an integer in [1, n_classes={n_classes}], got {k!r}.")
        part = compress_teacher(chunk.float(), int(k), float(temperature))
        parts.append((part.log_probs, part.indices.numpy().astype(_index_dtype(n_classes)), part.log_tail))
    n_rows = sum(len(tail) for *_, tail in parts)
    return {BOOK_TOPK: torch.cat([top for top, *_ in parts]).numpy(),
            BOOK_TOPK_INDEX: np.concatenate([index for _, index, _ in parts]),
            BOOK_TAIL: torch.cat([tail for *_, tail in parts]).numpy(),
            BOOK_TEMPERATURE: np.full(n_rows, temperature, dtype=np.float32)}


def check_compressed_book(book: Mapping, n_rows: int, n_classes: int) -> dict:
    """Check a user's compressed book against the data and the classes; return it with compact dtypes.

    Raises
    ------
    ValueError
        Naming the key that is missing, mis-shaped or out of range.
    """
    missing = [key for key in COMPRESSED_KEYS if key not in book]
    if missing:
        raise ValueError(f"X is a compressed book (it has {BOOK_TOPK!r}) but lacks {missing}: a "
                         f"compressed book has the keys {list(COMPRESSED_KEYS)}; write one with "
                         "skd.book.compress_book(book, k, temperature).")
    top, index, tail, temperature = (as_numpy(book[key]) for key in COMPRESSED_KEYS)
    if top.ndim != 2 or top.shape[0] != n_rows or not 1 <= top.shape[1] <= n_classes:
        raise ValueError(f"X[{BOOK_TOPK!r}] has shape {top.shape}, expected ({n_rows}, k) with 1 <= k <= "
                         f"{n_classes} (one row per row of X['X'], k classes kept of {n_classes}).")
    for key, value, shape in ((BOOK_TOPK_INDEX, index, top.shape), (BOOK_TAIL, tail, (n_rows,)),
                              (BOOK_TEMPERATURE, temperature, (n_rows,))):
        if value.shape != shape:
            raise ValueError(f"X[{key!r}] has shape {value.shape}, expected {shape}, like X[{BOOK_TOPK!r}].")
    in_range = index.min(initial=0) >= 0 and index.max(initial=0) < n_classes
    if not np.issubdtype(index.dtype, np.integer) or not in_range:
        raise ValueError(f"X[{BOOK_TOPK_INDEX!r}] must be integer class indices in [0, {n_classes}) "
                         "(classes_ order).")
    log_probabilities = np.isfinite(top).all() and (top <= 1e-5).all()
    if not (log_probabilities and (tail <= 1e-5).all() and not np.isnan(tail).any()):
        raise ValueError(f"X[{BOOK_TOPK!r}] and X[{BOOK_TAIL!r}] must be log-probabilities: finite "
                         "numbers <= 0 (the tail may be -inf when k = n_classes).")
    _check_distributions(top, index, tail)
    one = (temperature == temperature[0]).all()
    if not (np.isfinite(temperature).all() and (temperature > 0).all() and one):
        raise ValueError(f"X[{BOOK_TEMPERATURE!r}] must hold one positive temperature, the same on every "
                         "row (the temperature the book was written at).")
    checked = {key: value for key, value in book.items() if key not in COMPRESSED_KEYS}
    checked.update({BOOK_TOPK: top.astype(np.float32, copy=False),
                    BOOK_TOPK_INDEX: index.astype(_index_dtype(n_classes), copy=False),
                    BOOK_TAIL: tail.astype(np.float32, copy=False),
                    BOOK_TEMPERATURE: temperature.astype(np.float32, copy=False)})
    return checked


def _check_distributions(top: np.ndarray, index: np.ndarray, tail: np.ndarray) -> None:
    """Each row a distribution: distinct classes, top-k mass plus tail equal to 1 (:data:`MASS_TOLERANCE`)."""
    ordered = np.sort(index, axis=1)
    repeated = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if len(repeated):
        raise ValueError(f"X[{BOOK_TOPK_INDEX!r}] repeats a class within a row (first at row {repeated[0]}: "
                         f"{index[repeated[0]].tolist()}); each row holds k distinct classes. Write the "
                         "book with skd.book.compress_book(book, k, temperature).")
    mass = np.exp(top.astype(np.float64)).sum(axis=1) + np.exp(tail.astype(np.float64))
    wrong = np.flatnonzero(np.abs(mass - 1.0) > MASS_TOLERANCE)
    if len(wrong):
        raise ValueError(f"X[{BOOK_TOPK!r}] and X[{BOOK_TAIL!r}] are not a distribution in {len(wrong)} rows "
                         f"(first at row {wrong[0]}: top-k mass plus tail = {mass[wrong[0]]:.4g}, not 1). "
                         "They must be the log-probabilities of the top k classes and the log-mass of the "
                         "rest; write the book with skd.book.compress_book(book, k, temperature).")


def check_loss_k(book: Mapping, loss: Any, n_classes: int) -> None:
    """Refuse a compressed book whose ``k`` is not the loss's (``min(loss.k, n_classes)``).

    The loss reads the book's classes, so a book of 3 classes would silently
    turn ``loss__k=10`` into 3.
    """
    if not is_compressed_book(book) or getattr(loss, "k", None) is None:
        return
    book_k, loss_k = np.shape(book[BOOK_TOPK])[1], min(int(loss.k), n_classes)
    if book_k != loss_k:
        raise ValueError(f"X is a compressed book of k={book_k} classes per row, but the loss's k is "
                         f"{loss_k} (loss__k={loss.k}): the loss would read the book's {book_k}. Set "
                         f"loss__k={book_k}, or write the book with k={loss_k} "
                         f"(skd.book.compress_book(book, {loss_k}, temperature)).")


def check_loss_takes(book: Any, loss: Any) -> None:
    """Refuse a compressed book for a loss that needs full teacher logits.

    Raises
    ------
    ValueError
        If ``book`` is compressed and ``loss`` needs a teacher but does not
        declare ``capabilities.compressed_book``.
    """
    capabilities = getattr(loss, "capabilities", None)
    if not is_compressed_book(book) or (capabilities is not None and not capabilities.teacher):
        return
    if capabilities is None or not capabilities.compressed_book:
        raise ValueError(
            f"X is a compressed book (the teacher's top-k log-probabilities and a tail), but the loss "
            f"{type(loss).__name__} needs the teacher's full logits. Use a loss that reads a compressed "
            "book (loss='kd_topk'), or pass the full book {'X': X, 'teacher_logits': logits} (or "
            "teacher=...)."
        )


def topk_book_of(batch: Mapping, n_classes: int, device) -> TopKBook:
    """The :class:`TopKBook` of a batch of a compressed book, on ``device`` (no host read)."""
    top, index, tail, temperature = (to_tensor(batch[key], device=device) for key in COMPRESSED_KEYS)
    return TopKBook(top.float(), index.long(), tail.float(), n_classes, temperature.float()[0])
