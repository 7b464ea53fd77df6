"""Labels: checking and encoding ``y``, unlabelled rows, and the "other" bucket.

- **Encoding**: labels of any sortable type become indices into
  ``classes_`` (:func:`validate_labels`, a ``LabelEncoder``).
- **Unlabelled rows** follow scikit-learn's semi-supervised convention
  (``SelfTrainingClassifier``, ``LabelPropagation``) once the user names the
  marker (``unlabelled=-1``, say): a row whose label is the marker has no
  label. It is encoded as :data:`UNLABELLED` and gets the teacher's terms
  only; ``classes_`` never holds the marker. With ``unlabelled=None`` (the
  default) every value of ``y`` is a class: a ``-1`` is never silently
  dropped.
- **Specialist students** learn a strict subset of the teacher's classes
  (``classes=`` or the labels of ``y``). With ``teacher_other="bucket"`` the
  student also has an "other" class (:func:`other_label`): the teacher's
  remaining classes folded into one logit, and the labels of ``y`` outside
  the subset that the teacher knows are encoded as "other".

The classifier calls :func:`partial_labels`, which wraps :func:`validate_labels`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _assert_all_finite, check_consistent_length, column_or_1d
from torch.utils.data import Dataset

from skd.book import features_of
from skd.losses.functional import UNLABELLED  # the encoded label of a row without one (defined once, there)

__all__ = [
    "TEACHER_OTHER",
    "UNLABELLED",
    "Labels",
    "check_unlabelled_fit",
    "labelled_rows",
    "marker_rows",
    "other_label",
    "partial_labels",
    "validate_labels",
]

#: Choices of ``teacher_other``.
TEACHER_OTHER = ("drop", "bucket")


class Labels(NamedTuple):
    """Checked labels: the user's values, their encoding, and the encoder."""

    raw: np.ndarray | None
    encoded: np.ndarray | None
    encoder: LabelEncoder


def _label_kind(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, float, np.number)):
        return "number"
    return "text" if isinstance(value, (str, np.str_)) else type(value).__name__


def _check_one_label_type(y: np.ndarray) -> None:
    """Refuse an object ``y`` whose labels mix types (e.g. ints and strings): they are not one set of classes.

    scikit-learn calls them "unknown" and suggests a regression target.
    """
    if y.dtype != object:
        return
    examples: dict[str, object] = {}
    for value in y:
        examples.setdefault(_label_kind(value), value)
        if len(examples) > 1:
            kinds = " and ".join(f"{kind} (e.g. {example!r})" for kind, example in examples.items())
            raise ValueError(
                f"y mixes label types: {kinds}. Convert the labels to one type, e.g. "
                "y = np.asarray(y).astype(str), or map them to integers, so that each label is one class."
            )


def validate_labels(y, X, known_classes, encoder: LabelEncoder | None, name: str) -> Labels:
    """Check ``y`` against ``X`` and encode it.

    Parameters
    ----------
    y : array-like or None
    X : validated features, book or Dataset
    known_classes : array-like or None
        ``classes=`` from the user, if any (used to fit a new encoder).
    encoder : LabelEncoder or None
        The fitted encoder of an earlier fit; None fits a new one.
    name : str
        The estimator's class name, for messages.
    """
    if y is None and isinstance(X, Dataset):
        if encoder is None:
            if known_classes is None:
                raise ValueError(
                    f"{name} requires y or classes= when X is a torch Dataset and y is None; "
                    "the Dataset must yield labels as indices 0..n_classes-1 into classes."
                )
            encoder = LabelEncoder().fit(np.asarray(known_classes))
        return Labels(None, None, encoder)
    if y is None:
        raise ValueError(f"{name} requires y to be passed, but the target y is None.")
    y = column_or_1d(y, warn=True)
    if y.dtype.kind in "fc":
        _assert_all_finite(y, input_name="y")
    _check_one_label_type(y)
    check_classification_targets(y)
    if not isinstance(X, Dataset):
        check_consistent_length(features_of(X), y)
    first_fit = encoder is None
    if encoder is None:
        encoder = LabelEncoder().fit(y if known_classes is None else np.asarray(known_classes))
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"y contains only one class ({encoder.classes_[0]!r}); a classifier "
                "needs at least 2 classes."
            )
    try:
        return Labels(y, encoder.transform(y).astype(np.int64), encoder)
    except ValueError:
        unseen = sorted(set(np.unique(y).tolist()) - set(encoder.classes_.tolist()))
        if first_fit:  # the classes came from the classes= parameter
            raise ValueError(
                f"y contains labels {unseen} that are not in classes= "
                f"({encoder.classes_.tolist()}); add them to classes=, or drop those rows."
            ) from None
        raise ValueError(
            f"y contains labels {unseen} not seen in the first fit (classes_ = "
            f"{encoder.classes_.tolist()}); pass every label as classes= on the first "
            "partial_fit call."
        ) from None


def other_label(classes) -> str | int:
    """The label of the "other" class of a bucket-mode student.

    ``"other"`` for string (or object) labels, ``-2`` for numbers (-1 being
    the unlabelled marker). It is in ``classes_``, so ``predict`` returns it.
    """
    return "other" if np.asarray(classes).dtype.kind in "OUS" else -2


def marker_rows(y: np.ndarray, marker) -> np.ndarray:
    """Boolean mask of the rows labelled ``marker`` (elementwise for any dtype); none for None."""
    if marker is None:
        return np.zeros(len(y), dtype=bool)
    if y.dtype.kind in "OUS" and not isinstance(marker, str):
        return np.array([value == marker and not isinstance(value, str) for value in y.tolist()],
                        dtype=bool)
    return np.asarray(y == marker, dtype=bool).reshape(len(y))


def _check_y(y: np.ndarray, marker, unlabelled: np.ndarray) -> None:
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError(
            f"y contains NaN at rows {np.flatnonzero(np.isnan(y))[:5].tolist()}; NaN is no "
            f"label. Mark rows without a label with the unlabelled marker ({marker!r}, the "
            "unlabelled= parameter) instead."
        )
    if y.dtype.kind == "f" and unlabelled.any():
        raise ValueError(
            f"y is a float array holding the unlabelled marker {marker!r} (rows "
            f"{np.flatnonzero(unlabelled)[:5].tolist()}); with float labels a -1.0 could be "
            "a class. Pass whole-number labels as ints (y.astype(int)), or use string labels "
            "with a string marker (unlabelled='...')."
        )


def _check_marker(marker, known, source: str) -> None:
    if known is not None and len(_as_array(known)) and marker_rows(_as_array(known), marker).any():
        raise ValueError(
            f"The unlabelled marker {marker!r} is also a class of {source} "
            f"({_as_array(known).tolist()}); rows labelled {marker!r} would be both. Set "
            "unlabelled= to a value that is no class."
        )


def _as_array(values) -> np.ndarray:
    return np.asarray(values, dtype=object if isinstance(values, list) else None)


def partial_labels(y, X, known_classes, encoder, name: str, *, marker, teacher_known,
                   bucket: bool) -> Labels:
    """Check ``y`` (with unlabelled rows and, in bucket mode, "other" rows) and encode it.

    Parameters
    ----------
    y, X, known_classes, encoder, name
        As for :func:`skd._validation.validate_labels`.
    marker : object
        The ``unlabelled`` parameter: rows whose label equals it are unlabelled.
    teacher_known : ndarray or None
        The teacher's classes, when it knows them (:func:`teacher_classes`).
    bucket : bool
        Whether the student has an "other" class (``teacher_other="bucket"``).

    Returns
    -------
    Labels
        ``raw`` the user's labels (marker and all), ``encoded`` indices into
        ``classes_`` with -1 for unlabelled rows, and the encoder.
    """
    if y is None or isinstance(X, Dataset):
        return validate_labels(y, X, known_classes, encoder, name)
    y = column_or_1d(y, warn=True)
    check_consistent_length(features_of(X), y)
    unlabelled = marker_rows(y, marker)
    _check_y(y, marker, unlabelled)
    _check_marker(marker, known_classes, "classes=")
    _check_marker(marker, teacher_known, "the teacher")
    labelled_y = y[~unlabelled]
    if encoder is None:
        known = known_classes
        if known is None and not len(labelled_y):
            if teacher_known is None:
                raise ValueError(
                    f"Every row of y is unlabelled ({marker!r}), so the classes must come from "
                    "the teacher, but it does not say which they are. Pass classes=..., or a "
                    "teacher that knows them: TorchTeacher(module, classes=...) or a fitted "
                    "scikit-learn classifier."
                )
            known = teacher_known
        if bucket:
            known = _with_other(np.unique(labelled_y) if known is None else np.asarray(known))
    else:
        known = encoder.classes_
    if known is None and unlabelled.any() and len(np.unique(labelled_y)) < 2:
        raise ValueError(
            f"y has one class besides {int(unlabelled.sum())} rows labelled {marker!r}, the "
            f"unlabelled marker (the unlabelled= parameter). If {marker!r} is a class (as in "
            "labels {-1, 1}), pass unlabelled=None."
        )
    if bucket and teacher_known is None:
        raise ValueError(
            "teacher_other='bucket' needs a teacher that names its classes, to tell the "
            "labels of y that are 'other'. Pass TorchTeacher(module, classes=...), or a "
            "fitted scikit-learn or skorch classifier."
        )
    if bucket:
        labelled_y = _fold_other(labelled_y, np.asarray(known), teacher_known)
    labels = validate_labels(labelled_y if len(labelled_y) else np.asarray(known), None, known,
                             encoder, name)
    encoded = np.full(len(y), UNLABELLED, dtype=np.int64)
    encoded[~unlabelled] = labels.encoded[: len(labelled_y)]
    return Labels(y, encoded, labels.encoder)


def _with_other(classes: np.ndarray) -> np.ndarray:
    other = other_label(classes)
    if other in classes.tolist():
        return classes
    return np.sort(np.append(classes.astype(object) if classes.dtype.kind in "US" else classes, other))


def _fold_other(y: np.ndarray, classes: np.ndarray, teacher_known) -> np.ndarray:
    """Labels the teacher knows but the specialist does not become "other"."""
    if teacher_known is None:
        return y
    outside = ~np.isin(y, classes) & np.isin(y, teacher_known)
    if not outside.any():
        return y
    y = y.astype(object) if y.dtype.kind in "US" else y.copy()
    y[outside] = other_label(classes)
    return y


def check_unlabelled_fit(y_encoded, loss, loss_spec, marker) -> None:
    """Refuse unlabelled rows where the loss has nothing to learn from them.

    Teacher-free losses (``"ce"``, ``"tfkd"``) learn from labels only;
    Tf-KD's self-teacher is a CE fit of the student, which needs labels too.
    """
    if y_encoded is None or labelled_rows(y_encoded).all():
        return
    if not loss.capabilities.teacher or loss.capabilities.self_teaching:
        raise ValueError(
            f"y has {int((~labelled_rows(y_encoded)).sum())} unlabelled rows ({marker!r}), but "
            f"loss={loss_spec!r} learns from labels only and would ignore them. Use a loss "
            "with a teacher (e.g. 'kd', 'dist') for unlabelled rows, or drop them from X "
            "and y."
        )


def labelled_rows(y_encoded) -> np.ndarray:
    """Boolean mask of the encoded labels that are a class (not :data:`UNLABELLED`)."""
    return np.asarray(y_encoded) != UNLABELLED
