"""The one writer of books: a set-up teacher runs once over the rows.

:func:`write_book` is used by a fit (:func:`skd.teachers.fitting.book_for`),
by :class:`skd.pipeline.WriteBook`, by ``PrunedTeacher.fit_transform`` and by
``DistillationClassifier.write_book``; the hints' teacher features are written
in the same pass. The teacher is handed in set up (any object with the
:class:`skd.teachers.Teacher` methods ``logit_chunks``, ``outputs``,
``hooked_module`` and ``describe``), so this module needs no teacher code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from skd.book.cache import cached_book_logits
from skd.book.compressed import compress_chunks
from skd.book.rows import as_rows, n_rows
from skd.book.value import Book

__all__ = ["write_book"]


class _OnePass:
    """The teacher's logits and hooked outputs over all of X, computed once, when first asked."""

    def __init__(self, teacher, X, layers):
        self.teacher, self.X, self.layers = teacher, X, layers
        self.result = None

    def __call__(self):
        if self.result is None:
            self.result = self.teacher.outputs(self.X, self.layers)
        return self.result


def _file_key(key: str, layer: str) -> str:
    return f"{key}.features.{re.sub(r'[^A-Za-z0-9_.-]', '_', layer)}"


def write_book(teacher, X, *, features: Any = None, layers: Sequence[str] | Mapping[str, tuple] = (),
               topk: tuple[int, float] | None = None, cache=None, key: str | None = None) -> Book:
    """Run a set-up teacher once over ``X`` and return the :class:`Book` of its answers.

    Parameters
    ----------
    teacher : skd.teachers.Teacher
        Set up (fitted, placed, aligned to the student's ``classes_``).
    X : array-like, DataFrame, sparse matrix or Tensor of shape (n_samples, ...)
        The rows as the user gave them: what the teacher sees.
    features : object or None, default=None
        The book's features, the same rows as the student takes them (e.g. the
        checked float32 features); None: ``X`` itself.
    layers : sequence of str, or dict of str to tuple, default=()
        Teacher layers (``named_modules()`` paths of its hooked module) whose
        outputs the same pass writes, for hints; a dict also gives one
        sample's output shape at each (checked against cached files).
    topk : (k, temperature) or None, default=None
        Write the compressed form (:mod:`skd.book.compressed`). Without
        ``cache`` and ``layers`` it is compressed batch by batch as the teacher
        runs: the whole logits array never exists.
    cache : Path or None, default=None
        ``book_dir``: each part is read from or written to its own file under ``key``.
    key : str or None, default=None
        The cache key (:func:`skd.book.cache.book_key`).

    Returns
    -------
    Book

    Raises
    ------
    ValueError
        If ``layers`` are asked of a teacher without torch modules to hook.
    """
    X = as_rows(X)
    features = X if features is None else features
    shapes = dict(layers) if isinstance(layers, Mapping) else dict.fromkeys(layers)
    names = tuple(shapes)
    if names and teacher.hooked_module() is None:
        raise ValueError(
            f"hint_layers={list(names)} needs a teacher with torch modules to hook, but the teacher "
            f"({teacher.describe()}) has none. Use a torch.nn.Module or a fitted skorch net, or "
            "hint_layers=None."
        )
    if topk is not None and cache is None and not names:
        return Book(features, topk=compress_chunks(teacher.logit_chunks(X), *topk))
    one_pass = _OnePass(teacher, X, names)
    logits = cached_book_logits(cache, key, lambda: one_pass()[0])
    written = {
        layer: cached_book_logits(cache, None if key is None else _file_key(key, layer),
                                  lambda layer=layer: one_pass()[1][layer],
                                  shape=None if shape is None else (n_rows(X), *shape))
        for layer, shape in shapes.items()
    }
    book = Book(features, logits, teacher_features=written)
    return book if topk is None else book.compressed(*topk)
