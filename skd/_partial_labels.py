"""Labels that say less than one class per row: unlabelled rows and specialist students.

- **Unlabelled rows** follow scikit-learn's semi-supervised convention
  (``SelfTrainingClassifier``, ``LabelPropagation``): a row whose label is
  the ``unlabelled`` marker (default -1) has no label. It is encoded as -1
  and gets the teacher's terms only; ``classes_`` never holds the marker.
- **Specialist students** learn a strict subset of the teacher's classes
  (``classes=`` or the labels of ``y``). With ``teacher_other="bucket"`` the
  student also has an "other" class (:func:`other_label`): the teacher's
  remaining classes folded into one logit, and the labels of ``y`` outside
  the subset that the teacher knows are encoded as "other".

The classifier calls :func:`partial_labels` in place of
:func:`skd._validation.validate_labels`, which it wraps.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_consistent_length, column_or_1d
from torch.utils.data import Dataset

from skd._validation import Labels, validate_labels
from skd.book import features_of

__all__ = [
    "TEACHER_OTHER",
    "check_unlabelled_fit",
    "forget_failed_fit",
    "labelled_part",
    "marker_rows",
    "other_label",
    "partial_labels",
    "probe_teacher",
    "teacher_classes",
]

#: Choices of ``teacher_other``.
TEACHER_OTHER = ("drop", "bucket")


def other_label(classes) -> str | int:
    """The label of the "other" class of a bucket-mode student.

    ``"other"`` for string (or object) labels, ``-2`` for numbers (-1 being
    the unlabelled marker). It is in ``classes_``, so ``predict`` returns it.
    """
    return "other" if np.asarray(classes).dtype.kind in "OUS" else -2


def teacher_classes(teacher) -> np.ndarray | None:
    """The labels of the teacher's columns when the teacher knows them, else None.

    A fitted scikit-learn or skorch classifier (``classes_``), or a
    :class:`skd.teachers.TorchTeacher` / ``CallableTeacher`` given ``classes=``.
    """
    try:
        classes = getattr(teacher, "classes_", None)
    except Exception:  # noqa: BLE001 - any property that raises before fit means "unknown"
        return None
    return None if classes is None else np.asarray(classes)


def marker_rows(y: np.ndarray, marker) -> np.ndarray:
    """Boolean mask of the rows labelled ``marker`` (elementwise for any dtype)."""
    if marker is None:
        return np.array([value is None for value in y.tolist()], dtype=bool)
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
    encoded = np.full(len(y), -1, dtype=np.int64)
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


def labelled_part(X, y_raw, y_encoded):
    """``(X, y)`` of the labelled rows, to fit an unfitted teacher on.

    Unchanged when every row is labelled, or for a torch Dataset (no y).
    """
    if y_encoded is None or (y_encoded >= 0).all() or isinstance(X, Dataset):
        return X, y_raw
    rows = np.flatnonzero(y_encoded >= 0)
    return features_of(X)[rows], y_raw[rows]


def check_unlabelled_fit(y_encoded, loss, loss_spec, marker) -> None:
    """Refuse unlabelled rows where the loss has nothing to learn from them.

    Teacher-free losses (``"ce"``, ``"tfkd"``) learn from labels only;
    Tf-KD's self-teacher is a CE fit of the student, which needs labels too.
    """
    if y_encoded is None or (y_encoded >= 0).all():
        return
    if not loss.requires_teacher or loss.self_teaching:
        raise ValueError(
            f"y has {int((y_encoded < 0).sum())} unlabelled rows ({marker!r}), but "
            f"loss={loss_spec!r} learns from labels only and would ignore them. Use a loss "
            "with a teacher (e.g. 'kd', 'dist') for unlabelled rows, or drop them from X "
            "and y."
        )


#: Unlabelled rows the teacher is asked about before an online fit.
PROBE_ROWS = 256


def probe_teacher(teacher, X, y_encoded, marker) -> None:
    """Ask an online teacher about the first unlabelled rows before training starts.

    With ``teacher_cache=False`` nothing else runs the teacher on the
    unlabelled rows before the epochs, and a teacher that cannot answer for
    them would fail mid-fit; this fails first, naming the cause.
    """
    if y_encoded is None or isinstance(X, Dataset) or (y_encoded >= 0).all():
        return
    rows = np.flatnonzero(y_encoded < 0)[:PROBE_ROWS]
    try:
        teacher.book_logits(features_of(X)[rows])
    except Exception as error:
        raise ValueError(
            f"The teacher ({teacher.describe()}) failed on the unlabelled rows of y "
            f"({marker!r}, first at row {rows[0]}): {error} Unlabelled rows get the "
            "teacher's terms only, so the teacher must answer for them; check it on those "
            "rows, or drop them."
        ) from error


def forget_failed_fit(estimator) -> None:
    """Leave an estimator whose ``fit`` raised unfitted, not half-fitted."""
    estimator.initialized_ = False
    for name in ("classes_inferred_", "label_encoder_", "teacher_", "data_dims_"):
        estimator.__dict__.pop(name, None)
