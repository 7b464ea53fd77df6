"""The teacher contract: "logits for this X, aligned to the student's ``classes_``".

:class:`Teacher` owns what every adapter shares: the bookkeeping of
:meth:`Teacher.setup` (device, classes, forward count), the alignment of
columns to ``classes_``, the output checks (shape, finiteness, probabilities
instead of logits) and the passes over the data that write a book.

A teacher sees X as the user gave it (a DataFrame keeps its dtypes and
categoricals); each adapter converts what it needs (:meth:`Teacher._as_input`:
float32 tensors on the student's device for torch teachers, the rows as they
are for scikit-learn ones) and returns float32 logits on the device.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import scipy.sparse
import torch

from skd.book.rows import as_rows, n_rows, rows_of
from skd.hints.taps import FeatureTap
from skd.teachers.subset import other_columns, subset_logits

__all__ = ["BOOK_BATCH_SIZE", "PROBA_FLOOR", "TEACHER_KINDS", "Teacher", "TeacherScoreWarning",
           "as_float_tensor", "teacher_classes"]

TEACHER_KINDS = (
    "a trained torch.nn.Module, a fitted skorch net, a scikit-learn classifier "
    "(prefit inside sklearn.frozen.FrozenEstimator, or unfitted), a callable "
    "X -> logits, or a list of these (an ensemble)"
)

#: Floor for probabilities turned into log-probabilities.
PROBA_FLOOR = 1e-7

#: Rows per teacher call while writing a book.
BOOK_BATCH_SIZE = 1024


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


class TeacherScoreWarning(UserWarning):
    """The teacher scores near chance on the training rows it labels.

    Usually the teacher was fitted on other features than it is given, e.g. a
    prefit teacher after a scaler in a Pipeline (see the Pipelines page).
    """


def as_float_tensor(X, device) -> torch.Tensor:
    """Rows as a float32 tensor on ``device``: what a torch teacher takes.

    Arrays, DataFrames (numeric columns), sparse matrices (densified) and tensors.

    Raises
    ------
    ValueError
        If the rows hold values that are not numbers (e.g. a string column), naming the fix.
    """
    if scipy.sparse.issparse(X):
        X = X.toarray()
    if not isinstance(X, torch.Tensor):
        try:
            X = np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"A torch teacher takes numbers, but X holds other values ({error}). Encode them "
                "first (e.g. sklearn.compose.ColumnTransformer with OneHotEncoder), or use a teacher "
                "that takes the table as it is (e.g. HistGradientBoostingClassifier("
                "categorical_features='from_dtype'))."
            ) from None
    return torch.as_tensor(X).to(device=device, dtype=torch.float32)


def _looks_like_probabilities(out: torch.Tensor) -> bool:
    if out.ndim != 2 or out.shape[1] < 2:
        return False
    return bool(
        (out >= 0).all() and (out <= 1).all() and torch.allclose(out.sum(1), out.new_ones(()), atol=1e-4)
    )


class Teacher:
    """Base adapter: a teacher that answers "logits for this X".

    Subclasses implement :meth:`raw_logits`, and may fit (``_fit_if_needed``)
    and place (``_place``) the object they wrap. Teachers made of other
    teachers derive from :class:`skd.teachers.CompositeTeacher` instead.

    Attributes
    ----------
    classes_ : ndarray or None
        The labels of the teacher's output columns, when the teacher knows
        them (scikit-learn and skorch classifiers). None means the columns are
        in the order of the student's ``classes_``.
    device_ : torch.device
        The student's device (set by :meth:`setup`).
    student_classes_ : ndarray
        The student's ``classes_`` (set by :meth:`setup`).
    n_forward_samples_ : int
        Samples the teacher has been asked about since :meth:`setup`.
    fitted_in_setup_ : bool
        Whether :meth:`setup` fitted the teacher (an unfitted scikit-learn or
        skorch model), or found it fitted.
    """

    classes_: np.ndarray | None = None
    #: Whether outputs that look like probabilities are expected (no warning).
    outputs_probabilities = False
    #: Whether the teacher is a classifier trained on labels (scikit-learn, skorch): at chance on
    #: the rows it labels, it is refused (:mod:`skd.teachers.checks`); a bare module or callable
    #: may be an untrained stand-in, and is only warned about.
    trained_classifier = False
    fitted_in_setup_ = False

    def setup(self, X, y, classes, device, original=None, other=None) -> Teacher:
        """Fit the teacher if needed, place it on ``device`` and align it.

        Parameters
        ----------
        X : array-like, DataFrame, sparse matrix, Tensor or Dataset
            The training rows of this fit as the user gave them (used only to
            fit an unfitted teacher; not kept).
        y : ndarray
            The training labels, original values.
        classes : ndarray
            The student's ``classes_``.
        device : str or torch.device
        original : array-like, DataFrame or None, default=None
            ``X`` as the user gave it, when ``X`` is a converted copy: used in its place.
        other : label or None, default=None
            The student's "other" class (``teacher_other="bucket"``): its
            logit is the log-sum-exp of the teacher's classes that are not
            among ``classes``. Needs a teacher that knows its ``classes_``.

        Returns
        -------
        self : Teacher
        """
        self.device_ = torch.device(device)
        self.student_classes_ = np.asarray(classes)
        self.n_forward_samples_ = 0
        self.other_label_ = other
        self._prepare(as_rows(X if original is None else original), y)  # passed on, never stored
        return self

    def _prepare(self, X, y):
        """Make the teacher ready to answer; ``setup`` has set the device and classes."""
        self._fit_if_needed(X, y)
        self._place(self.device_)
        self.columns_ = self._align(self.classes_)
        self.other_columns_ = other_columns(self.classes_, self.student_classes_, self.other_label_,
                                            self.describe())
        self._checked = False

    def _fit_if_needed(self, X, y):
        pass

    def _place(self, device):
        pass

    def _align(self, teacher_classes):
        if teacher_classes is None:
            return None
        teacher_classes = np.asarray(teacher_classes)
        index = {label: i for i, label in enumerate(teacher_classes.tolist())}
        other = getattr(self, "other_label_", None)
        wanted = [label for label in self.student_classes_.tolist() if other is None or label != other]
        missing = [label for label in wanted if label not in index]
        if missing:
            raise ValueError(
                f"The teacher ({self.describe()}) does not know the classes {missing} "
                f"of y; its classes_ are {teacher_classes.tolist()}. Train the teacher on "
                "the same labels as the student, or leave those classes out of y "
                "(a student may learn a subset of the teacher's classes)."
            )
        columns = [index[label] for label in wanted]
        if columns == list(range(len(teacher_classes))):
            return None
        return torch.as_tensor(columns, dtype=torch.long)

    def describe(self) -> str:
        """A short name of the teacher for error messages."""
        return type(self).__name__

    def content(self):
        """What this teacher's answers depend on, for the book cache's key (:mod:`skd.book.cache`).

        Each adapter declares it (its module, net, estimator or function, and
        its ``classes_``); the cache hashes it by content. None by default: a
        subclass that declares nothing is keyed by its class and by its
        outputs on the cache's probe rows only.
        """
        return None

    def cache_token(self) -> tuple:
        """The set-up teacher's identity for the book cache: its class, :meth:`content`, and the
        student's classes and "other" label it was aligned to."""
        return (type(self).__module__, type(self).__qualname__, self.content(),
                getattr(self, "student_classes_", None), getattr(self, "other_label_", None))

    def hooked_module(self):
        """The ``torch.nn.Module`` whose named layers hints hook (feature distillation), or None.

        None by default: a teacher without torch modules cannot give hints.
        """
        return None

    def raw_logits(self, X):
        """Teacher outputs for a batch (as :meth:`_as_input` made it), in the teacher's own column order."""
        raise NotImplementedError

    def _as_input(self, X):
        """A batch as this teacher takes it: a float32 tensor on the device (:func:`as_float_tensor`)."""
        return as_float_tensor(X, self.device_)

    def _first_call(self, X):
        """Outputs of the first batch; a failure names the teacher, the shapes and the likely cause."""
        try:
            return self.raw_logits(X)
        except RuntimeError as error:
            shape = tuple(X.shape)
            raise ValueError(
                f"The teacher ({self.describe()}) failed on its first batch, of shape {shape} "
                f"({shape[1] if len(shape) > 1 else '?'} features per sample): {error}. Most "
                "likely it expects another number of features: was it trained on other "
                "features, or are they transformed by an earlier Pipeline step? See "
                "'Which X the teacher sees' in the Pipelines docs."
            ) from error

    def predict_logits(self, X) -> torch.Tensor:
        """Logits for a batch, aligned to the student's ``classes_``.

        Parameters
        ----------
        X : array-like, DataFrame, sparse matrix or Tensor of shape (n_samples, ...)
            Rows as the user gave them (a book's writer), or a float32 batch
            on the student's device (online); :meth:`_as_input` makes them
            what this teacher takes.

        Returns
        -------
        logits : Tensor of shape (n_samples, n_classes)
            float32, on the student's device, without gradient.
        """
        n_samples = n_rows(X)
        with torch.no_grad():
            X = self._as_input(X)
            out = self._first_call(X) if not self._checked else self.raw_logits(X)
            out = torch.as_tensor(out).to(device=self.device_, dtype=torch.float32)
            if out.ndim != 2 or out.shape[0] != n_samples:
                raise ValueError(
                    f"The teacher ({self.describe()}) returned an output of shape "
                    f"{tuple(out.shape)} for a batch of {n_samples} samples; it must "
                    f"return logits of shape ({n_samples}, n_classes)."
                )
            out = self._check_output(out)
            out = subset_logits(out, self.columns_, getattr(self, "other_columns_", None))
        self.n_forward_samples_ += n_samples
        return out

    def book_logits(self, X, batch_size: int = BOOK_BATCH_SIZE, original=None) -> np.ndarray:
        """Aligned logits for all of ``X``, in batches: one pass of the teacher over the data.

        Parameters
        ----------
        X : array-like, DataFrame, sparse matrix or Tensor of shape (n_samples, ...)
            The rows as the user gave them.
        batch_size : int, default=BOOK_BATCH_SIZE
            Rows per teacher call.
        original : array-like, DataFrame or None, default=None
            ``X`` as the user gave it, when ``X`` is a converted copy: used in its place.

        Returns
        -------
        logits : ndarray of shape (n_samples, n_classes)
        """
        return torch.cat(list(self.logit_chunks(X if original is None else original, batch_size))).numpy()

    def logit_chunks(self, X, batch_size: int = BOOK_BATCH_SIZE) -> Iterator[torch.Tensor]:
        """The logits of :meth:`book_logits`, one CPU tensor per batch of rows, as they are computed.

        For a writer that keeps less than the logits (a compressed book):
        the whole ``(n_samples, n_classes)`` array never exists.
        """
        X = as_rows(X)
        for start in range(0, n_rows(X), batch_size):
            yield self.predict_logits(rows_of(X, start, start + batch_size)).cpu()

    def outputs(self, X, layers, batch_size: int = BOOK_BATCH_SIZE) -> tuple[np.ndarray, dict]:
        """``(logits, {layer: outputs})`` over all of ``X``, in batches: one pass, with hooks on ``layers``.

        ``layers`` are paths in :meth:`hooked_module`'s ``named_modules()``;
        the outputs are float32 numpy arrays of shape ``(n_samples, *layer shape)``.
        """
        if not layers:
            return self.book_logits(X, batch_size), {}
        X = as_rows(X)
        chunks, outputs = [], {layer: [] for layer in layers}
        with FeatureTap(self.hooked_module(), layers, gather=True) as tap:
            for start in range(0, n_rows(X), batch_size):
                tap.clear()
                chunks.append(self.predict_logits(rows_of(X, start, start + batch_size)).cpu())
                for layer in layers:
                    outputs[layer].append(tap.output(layer).detach().float().cpu())
        return (torch.cat(chunks).numpy(),
                {layer: torch.cat(parts).numpy() for layer, parts in outputs.items()})

    def _check_output(self, out):
        n_classes = len(self.student_classes_)
        expected = n_classes if self.classes_ is None else len(self.classes_)
        if out.shape[1] != expected:
            raise ValueError(
                f"The teacher ({self.describe()}) returns {out.shape[1]} outputs per "
                f"sample, but y has {n_classes} classes {self.student_classes_.tolist()}. "
                "The teacher must output one logit per class, in the order of classes_; "
                "a teacher with more classes than y needs its labels, e.g. "
                "TorchTeacher(module, classes=...)."
            )
        if self.outputs_probabilities:
            return torch.log(out.clamp_min(PROBA_FLOOR))
        if not torch.isfinite(out).all():
            raise ValueError(
                f"The teacher ({self.describe()}) returned NaN or infinite logits. "
                "Check the teacher on this data before distilling from it."
            )
        if not self._checked:  # decided on the first batch: the teacher is one function
            self._returns_probabilities = _looks_like_probabilities(out)
            self._checked = True
            if self._returns_probabilities:
                warnings.warn(
                    f"The teacher ({self.describe()}) returned probabilities (rows in "
                    "[0, 1] summing to 1), not logits; skd uses their logarithm as "
                    "logits. Return logits (no softmax) to silence this warning.",
                    UserWarning,
                    stacklevel=4,
                )
        if self._returns_probabilities:
            return torch.log(out.clamp_min(PROBA_FLOOR))
        return out
