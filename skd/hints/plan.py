"""A fit's hints, planned before the student is built: checks, shapes, and where features come from.

:func:`plan_hints` runs once per fit, after the teacher is set up: it checks
``hints`` and the refusals (a teacher without layers, an unknown layer,
augmentation in ``"add"`` mode), runs the teacher on one training row to
learn each hooked layer's output shape, and decides whether the teacher's
features are written in the book (once per sample) or taken online. The
book's one writer (:func:`skd.book.write_book`) writes them: the logits and
every hooked layer in one pass of the teacher, kept in memory and, with
``book_dir``, on disk.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from torch.utils.data import Dataset

from skd.book import features_of, is_book, teacher_features_of
from skd.book.rows import n_rows
from skd.hints.projectors import feature_bytes
from skd.hints.spec import Hint, checked_hints
from skd.hints.taps import FeatureTap, find_layer, teacher_module

__all__ = ["HINT_BOOK_LIMIT", "HintBookWarning", "HintPlan", "plan_hints"]

#: ``hint_book="auto"`` keeps the teacher's features in the book up to this many bytes (1 GiB).
HINT_BOOK_LIMIT = 2**30


class HintBookWarning(UserWarning):
    """``hint_book="auto"`` found the teacher's features too large for the book: they run online."""


@dataclass
class HintPlan:
    """A fit's checked hints and what the student needs to build its projectors.

    Attributes
    ----------
    hints : tuple of Hint
    names : tuple of str
        Each hint's term name in ``history``.
    teacher_shapes : dict of str to tuple of int
        One sample's output shape at each hooked teacher layer.
    online : bool
        Whether the teacher's features are taken online (every batch) rather than from the book.
    probe : Tensor
        One training row (float32, on the CPU): the student runs on it once
        to learn its layers' shapes when its projectors are built.
    """

    hints: tuple[Hint, ...]
    names: tuple[str, ...]
    teacher_shapes: dict
    online: bool
    probe: torch.Tensor

    @property
    def teacher_layers(self) -> tuple[str, ...]:
        """The hooked teacher layers, each once, in the hints' order."""
        return tuple(dict.fromkeys(hint.teacher_layer for hint in self.hints))

    @property
    def book_layers(self) -> dict:
        """``{layer: one sample's output shape}`` of the teacher layers the book must hold
        (none when the features are online)."""
        return {} if self.online else {layer: self.teacher_shapes[layer] for layer in self.teacher_layers}


def _first_row(X) -> torch.Tensor:
    features = features_of(X)
    if isinstance(features, Dataset):
        first = features[0]
        row = first[0] if isinstance(first, (tuple, list)) else first
        return torch.as_tensor(np.asarray(row), dtype=torch.float32)[None]
    row = features[:1]
    if hasattr(row, "to_numpy"):
        row = row.to_numpy()
    if scipy.sparse.issparse(row):
        row = row.toarray()
    if isinstance(row, torch.Tensor):
        return row.detach().to("cpu", torch.float32)
    return torch.as_tensor(np.asarray(row, dtype=np.float32))


def plan_hints(hints, loss_terms, teacher, X, writes_book: bool, hint_book: str, augment,
               augment_mode: str) -> HintPlan | None:
    """Check the fit's ``hints`` and plan them; None when there are none.

    Parameters
    ----------
    hints : Hint, list of Hint or None
        The classifier's ``hints``.
    loss_terms : sequence of str
        The logit loss's terms (a hint may not take their names).
    teacher : skd.teachers.Teacher or None
        The set-up teacher; None when X is a book.
    X : array-like, Tensor, Dataset or book
        The checked training data.
    writes_book : bool
        Whether this fit writes a book of logits (else the teacher is online).
    hint_book : {"auto", "memory", "online"}
        The classifier's ``hint_book``.
    augment, augment_mode
        The classifier's augmentation settings.
    """
    hints, names = checked_hints(hints, loss_terms)
    if not hints:
        return None
    if augment is not None and augment_mode == "add":
        raise ValueError(
            "hints cannot be combined with augment_mode='add': each step would need the teacher's "
            "features of both the clean and the augmented batch, and the student's of two forwards. "
            "Use augment_mode='replace' (the features are then taken online), or no augment."
        )
    layers = tuple(dict.fromkeys(hint.teacher_layer for hint in hints))
    probe = _first_row(X)
    if teacher is None:
        return _plan_from_book(hints, names, layers, X, probe)
    module = teacher_module(teacher)
    if module is None:
        raise ValueError(
            f"hints need a teacher with layers to hook, but the teacher ({teacher.describe()}) has "
            "no torch modules (a scikit-learn teacher, a callable or an ensemble). Use a "
            "torch.nn.Module or a fitted skorch net as the teacher, or hints=None."
        )
    for position, hint in enumerate(hints):
        find_layer(module, hint.teacher_layer, f"hints[{position}].teacher_layer")
    with FeatureTap(module, layers, gather=True) as tap:
        teacher.predict_logits(probe)
        shapes = {layer: tuple(tap.output(layer).shape[1:]) for layer in layers}
    online = not writes_book or hint_book == "online"
    if not online and hint_book == "auto":
        size = feature_bytes(n_rows(features_of(X)), shapes.values())
        if size > HINT_BOOK_LIMIT:
            warnings.warn(
                f"The teacher's features at {list(layers)} would take {size / 2**30:.1f} GiB in the "
                f"book (n x feature size x 4 bytes), above hint_book='auto''s limit of "
                f"{HINT_BOOK_LIMIT / 2**30:.0f} GiB: the teacher runs online on every batch instead. "
                "hint_book='memory' keeps them anyway; hint_book='online' silences this warning.",
                HintBookWarning, stacklevel=3,
            )
            online = True
    return HintPlan(hints, names, shapes, online, probe)


def _plan_from_book(hints, names, layers, X, probe) -> HintPlan:
    written = teacher_features_of(X) if is_book(X) else {}
    missing = [layer for layer in layers if layer not in written]
    if missing:
        where = "X is a book without them" if is_book(X) else "there is no teacher"
        raise ValueError(
            f"hints need the teacher's outputs at {missing}, but {where}. Pass teacher=..., or "
            f"write them in the book: PrunedTeacher(..., hint_layers={list(layers)}) or "
            f"WriteBook(..., hint_layers={list(layers)})."
        )
    shapes = {layer: tuple(np.shape(written[layer])[1:]) for layer in layers}
    return HintPlan(hints, names, shapes, False, probe)
