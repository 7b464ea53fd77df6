"""``DistillationClassifier``: a skorch classifier whose student learns from a teacher."""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse
import torch
from skorch import NeuralNet, NeuralNetClassifier
from skorch.callbacks import EpochScoring, EpochTimer, PassthroughScoring, PrintLog
from skorch.dataset import unpack_data
from skorch.utils import to_numpy, to_tensor
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _assert_all_finite,
    check_consistent_length,
    column_or_1d,
    validate_data,
)
from torch.utils.data import DataLoader, Dataset

from skd._batching import DeviceBatches, in_memory_tensors
from skd.losses.base import DistillationLoss, make_loss
from skd.teachers import as_teacher

__all__ = ["DistillationClassifier", "resolve_device", "BOOK_X", "BOOK_LOGITS"]

_SEED_LOCK = threading.RLock()

#: Keys of a book: ``{"X": features, "teacher_logits": logits}``.
BOOK_X = "X"
BOOK_LOGITS = "teacher_logits"


def resolve_device(device):
    """Turn ``"auto"`` into ``"cuda"`` or ``"cpu"``; refuse CUDA where it is absent."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested, but CUDA is not available on this machine "
            "(torch.cuda.is_available() is False). Use device='auto' to train on CUDA "
            "when present and on the CPU otherwise, or device='cpu'."
        )
    return device


def _softmax(logits):
    return torch.softmax(logits, dim=-1)


def _encoded_accuracy(net, X, y):
    """Validation accuracy on encoded labels (skorch's scorer sees encoded y)."""
    predicted = net.predict_proba(X).argmax(axis=1)
    return float(np.mean(predicted == to_numpy(y)))


def is_book(X) -> bool:
    """Whether ``X`` is a book: a mapping with ``"X"`` and ``"teacher_logits"``."""
    return isinstance(X, Mapping) and BOOK_LOGITS in X


class DistillationClassifier(NeuralNetClassifier):
    """A scikit-learn classifier that distils a teacher into a student network.

    A skorch :class:`~skorch.NeuralNetClassifier` whose only trained module is
    the student (``module``, returning logits). Its loss is a
    :class:`skd.losses.DistillationLoss` that combines the student's logits,
    the teacher's logits and the labels into named terms, each recorded in
    ``history``.

    Parameters
    ----------
    module : torch.nn.Module class or instance
        The student; it returns logits of shape (batch, n_classes). A class
        whose ``__init__`` takes ``n_features`` and/or ``n_classes`` gets them
        from the data unless given as ``module__n_features`` /
        ``module__n_classes`` (see :class:`skd.students.MLP`).
    teacher : object, default=None
        A trained ``torch.nn.Module``; a fitted skorch net; a scikit-learn
        classifier (prefit inside ``sklearn.frozen.FrozenEstimator``, or
        unfitted, then fitted on the training data of each ``fit``); a
        callable ``X -> logits``; a list of these (an ensemble, mean logits;
        use :class:`skd.teachers.EnsembleTeacher` for weights); or a
        :class:`skd.teachers.Teacher`. None for teacher-free losses or when X
        is a book. Parameters of a scikit-learn teacher can be set as
        ``teacher__<param>``.
    loss : str or DistillationLoss, default="kd"
        A registered name (``"ce"``, ``"kd"``, ``"dkd"``, ``"cakd"``,
        ``"r2kd"``, ``"dist"``, ``"tfkd"``) or an instance. Its parameters are
        set as ``loss__<param>``, e.g. ``loss__temperature=2``.
    teacher_cache : {"auto", True, False}, default="auto"
        Whether to write the teacher's logits for the training data once,
        before the first epoch (the "book"), instead of calling the teacher
        on every batch of every epoch. ``"auto"`` writes the book for
        in-memory data and calls the teacher online for a torch ``Dataset``.
    augment : callable or None, default=None
        A batch augmentation ``(X_batch, y_batch) -> X_batch`` run on the
        device each training step, e.g. ``skd.augment.BatchAugment`` around
        torchvision's ``MixUp``/``CutMix``. The teacher runs online on every
        augmented batch; the clean batches of ``"add"`` mode still read their
        logits from the book.
    augment_mode : {"add", "replace"}, default="add"
        ``"add"`` (R2KD's released recipe): CE and the distillation terms on
        the clean batch, plus the distillation terms again on the augmented
        batch (recorded as ``<term>_aug``). ``"replace"``: every term on the
        augmented batch only.
    on_nonfinite : {"raise", "skip"}, default="raise"
        What a NaN or infinite loss term does in training. ``"raise"`` stops
        the fit with a ``RuntimeError`` naming the epoch, the batch and the
        term, before the optimizer step, so the student keeps its last good
        weights and ``history`` is kept. ``"skip"`` drops the batch (no
        optimizer step; its terms count as 0 in the epoch means) and counts
        it in ``history[:, "skipped_batches"]``.
    batching : {"auto", "loader"}, default="auto"
        ``"auto"`` batches in-memory data (arrays, tensors, DataFrames,
        books) by slicing tensors kept on the device, without skorch's
        per-sample indexing and collation; the batches are the same as the
        DataLoader's. It is used with the default ``DataLoader`` iterators
        and no iterator options other than ``batch_size``, ``shuffle`` and
        ``drop_last``. ``"loader"`` always uses skorch's ``DataLoader``. A
        torch ``Dataset`` always goes through the ``DataLoader``. Training
        batches are shuffled each epoch unless ``iterator_train__shuffle=False``
        (skorch does not shuffle by default).
    random_state : int or None, default=None
        Seeds torch's generators during ``fit`` (initial weights, shuffling),
        without changing the global random state. None leaves them alone.
    criterion : torch criterion class, default=torch.nn.CrossEntropyLoss
        Kept for skorch compatibility; the loss callback computes the loss.
    train_split : callable or None, default=None
        skorch's split for internal validation. Unlike skorch's default, no
        data is held out unless asked, e.g. ``skorch.dataset.ValidSplit(0.2)``.
    device : str, default="auto"
        ``"auto"`` trains on CUDA when available, else on the CPU. Asking for
        ``"cuda"`` on a machine without it fails at ``fit``.
    **kwargs
        Any other :class:`skorch.NeuralNetClassifier` parameter
        (``max_epochs``, ``lr``, ``optimizer``, ``batch_size``, ``callbacks``,
        ``module__*``, ``optimizer__*``, ...).

    Attributes
    ----------
    classes_ : ndarray
        The labels seen in ``fit``, sorted; ``predict`` returns them.
    n_features_in_ : int
    loss_ : DistillationLoss
        The initialised loss callback.
    teacher_ : skd.teachers.Teacher or None
        The teacher adapter used by the last ``fit``.
    history : skorch History
        Per epoch: ``train_loss`` and every loss term (e.g. ``"kd"``), and
        ``valid_*`` twins when there is a validation split.
    """

    prefixes_ = NeuralNetClassifier.prefixes_ + ["loss", "teacher"]
    cuda_dependent_attributes_ = NeuralNetClassifier.cuda_dependent_attributes_ + ["teacher"]

    def __init__(
        self,
        module,
        teacher: Any = None,
        loss: str | DistillationLoss = "kd",
        *,
        teacher_cache: str | bool = "auto",
        augment=None,
        augment_mode: str = "add",
        on_nonfinite: str = "raise",
        batching: str = "auto",
        random_state: int | None = None,
        criterion=torch.nn.CrossEntropyLoss,
        train_split=None,
        device: str | None = "auto",
        **kwargs,
    ):
        super().__init__(
            module, criterion=criterion, train_split=train_split, device=device, **kwargs
        )
        self.teacher = teacher
        self.loss = loss
        self.teacher_cache = teacher_cache
        self.augment = augment
        self.augment_mode = augment_mode
        self.on_nonfinite = on_nonfinite
        self.batching = batching
        self.random_state = random_state

    # ------------------------------------------------------------------ setup
    def get_params(self, deep=True, **kwargs):
        # skorch lists private bookkeeping (``_params_to_validate``) among the
        # parameters; it is not one, and set_params must never receive it.
        params = super().get_params(deep=deep, **kwargs)
        return {key: value for key, value in params.items() if not key.startswith("_")}

    def set_params(self, **kwargs):
        # loss__/teacher__ values are read at the next fit; skorch's own
        # re-initialisation logic knows only modules, criteria and optimizers.
        routed = [key for key in kwargs if key.startswith(("loss", "teacher"))]
        for key in routed:
            setattr(self, key, kwargs.pop(key))
            if "__" in key:
                self._params_to_validate.add(key)
        if kwargs:
            super().set_params(**kwargs)
        return self

    @property
    def _default_callbacks(self):
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_acc", EpochScoring(_encoded_accuracy, name="valid_acc", lower_is_better=False)),
            ("print_log", PrintLog()),
        ]

    @property
    def classes_(self):
        try:
            return self.classes_inferred_
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__} has no classes_ before fit; call fit first."
            ) from None

    @contextlib.contextmanager
    def _device_context(self):
        """Run with ``self.device`` resolved (``"auto"`` is restored after)."""
        requested = self.device
        resolved = resolve_device(requested)
        if resolved == requested:
            yield
            return
        self.device = resolved
        try:
            yield
        finally:
            self.device = requested

    def _checked_seed(self):
        seed = self.random_state
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(
                f"random_state must be an int or None, got {seed!r} ({type(seed).__name__})."
            )
        return None if seed is None else int(seed)

    @contextlib.contextmanager
    def _rng_context(self):
        """Seed torch's global generator for initialisation, then restore it.

        Held under a process-wide lock so that estimators fitted concurrently
        in threads cannot interleave their seeded initialisations.
        """
        seed = self._checked_seed()
        if seed is None:
            yield
            return
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with _SEED_LOCK, torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def _epoch_generator(self):
        """A generator for this epoch's shuffle, from (random_state, epoch).

        Depends only on the seed and the epoch number, so a fit resumed from a
        checkpoint shuffles exactly as an uninterrupted one.
        """
        seed = self._checked_seed()
        if seed is None:
            return None
        epoch = len(self.history) if getattr(self, "history_", None) is not None else 0
        return torch.Generator().manual_seed(seed * 1_000_003 + epoch)

    def initialize(self):
        with self._device_context(), self._rng_context():
            return super().initialize()

    def initialize_callbacks(self):
        self.loss_ = make_loss(self.loss, self.get_params_for("loss"))
        super().initialize_callbacks()
        extra = [("loss", self.loss_)]
        terms = list(self.loss_.term_names())
        if self.augment is not None and self.augment_mode == "add":
            terms += [f"{term}_aug" for term in terms if term != "ce"]
        for term in terms:
            extra.append((f"{term}_scoring", PassthroughScoring(name=term, lower_is_better=None, on_train=True).initialize()))
            extra.append((f"valid_{term}_scoring", PassthroughScoring(name=f"valid_{term}", lower_is_better=None).initialize()))
        names = [name for name, _ in self.callbacks_]
        clash = sorted({name for name, _ in extra} & set(names))
        if clash:
            raise ValueError(
                f"Callback names {clash} are reserved by skd for the loss and its terms; "
                "rename your callbacks."
            )
        first_log = next(
            (i for i, (_, cb) in enumerate(self.callbacks_) if isinstance(cb, PrintLog)),
            len(self.callbacks_),
        )
        self.callbacks_[first_log:first_log] = extra
        return self

    def initialize_module(self):
        kwargs = self.get_params_for("module")
        module = self.module
        dims = getattr(self, "data_dims_", None)
        if dims and not isinstance(module, torch.nn.Module) and callable(module):
            try:
                accepted = inspect.signature(module).parameters
            except (TypeError, ValueError):
                accepted = {}
            for key, value in dims.items():
                if key in accepted and key not in kwargs:
                    kwargs[key] = value
        self.module_ = self.initialized_instance(module, kwargs)
        return self

    def check_data(self, X, y=None):
        # Labels are validated and encoded in fit; skorch sees encoded y.
        pass

    # ------------------------------------------------------------- validation
    def _validate_features(self, X, reset: bool):
        """Check and convert one feature block (not a book) to float32."""
        if isinstance(X, Dataset):
            return X
        if isinstance(X, torch.Tensor):
            if X.ndim < 2:
                raise ValueError(
                    f"Expected a 2D (or higher) tensor X, got shape {tuple(X.shape)}. "
                    "Reshape a single feature with X.reshape(-1, 1), a single sample with "
                    "X.reshape(1, -1)."
                )
            X = X.float() if X.dtype != torch.float32 else X
            if not torch.isfinite(X).all():
                raise ValueError("Input X contains NaN or infinity; clean or impute it first.")
            if reset:
                self.n_features_in_ = X.shape[1]
            elif hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input."
                )
            return X
        X = validate_data(self, X, reset=reset, dtype=np.float32, allow_nd=True)
        if not X.flags.writeable:  # e.g. pandas copy-on-write views; torch needs writable
            X = X.copy()
        return X

    def _validate_X(self, X, reset: bool):
        if isinstance(X, Mapping) and not scipy.sparse.issparse(X):
            if BOOK_X not in X:
                raise ValueError(
                    f"X is a dict with keys {sorted(X)}; skd takes a dict X only as a book "
                    "{'X': features, 'teacher_logits': logits of shape (n_samples, n_classes)}."
                )
            features = self._validate_features(X[BOOK_X], reset)
            if BOOK_LOGITS not in X:
                return features
            return {BOOK_X: features, BOOK_LOGITS: X[BOOK_LOGITS]}
        return self._validate_features(X, reset)

    def _validate_book_logits(self, book):
        logits = book[BOOK_LOGITS]
        logits = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
        n_samples = len(book[BOOK_X])
        expected = (n_samples, len(self.classes_))
        if logits.shape != expected:
            raise ValueError(
                f"X['teacher_logits'] has shape {logits.shape}, expected {expected} "
                "(one row per row of X['X'], one column per class in classes_ order). "
                "Was the book written for other data?"
            )
        if not np.issubdtype(logits.dtype, np.number) or not np.isfinite(logits).all():
            raise ValueError("X['teacher_logits'] must be finite numbers (no NaN or inf).")
        return {BOOK_X: book[BOOK_X], BOOK_LOGITS: logits.astype(np.float32, copy=False)}

    def _validate_y(self, y, X, reset: bool, classes=None):
        if y is None and isinstance(X, Dataset):
            known = classes if classes is not None else self.classes
            if known is None:
                raise ValueError(
                    f"{type(self).__name__} requires y or classes= when X is a torch Dataset "
                    "and y is None; the Dataset must yield labels as indices 0..n_classes-1 "
                    "into classes."
                )
            if reset:
                self.label_encoder_ = LabelEncoder().fit(np.asarray(known))
                self.classes_inferred_ = self.label_encoder_.classes_
            return None, None
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        y = column_or_1d(y, warn=True)
        if y.dtype.kind in "fc":
            _assert_all_finite(y, input_name="y")
        check_classification_targets(y)
        if not isinstance(X, Dataset):
            features = X[BOOK_X] if isinstance(X, Mapping) else X
            check_consistent_length(features, y)
        if reset:
            known = classes if classes is not None else self.classes
            encoder = LabelEncoder().fit(y if known is None else np.asarray(known))
            if len(encoder.classes_) < 2:
                raise ValueError(
                    f"y contains only one class ({encoder.classes_[0]!r}); a classifier "
                    "needs at least 2 classes."
                )
            self.label_encoder_ = encoder
            self.classes_inferred_ = encoder.classes_
        try:
            return y, self.label_encoder_.transform(y).astype(np.int64)
        except ValueError:
            unseen = sorted(set(np.unique(y).tolist()) - set(self.classes_.tolist()))
            raise ValueError(
                f"y contains labels {unseen} not seen in the first fit (classes_ = "
                f"{self.classes_.tolist()}); pass classes= to partial_fit on the first call."
            ) from None

    def _validate_training_data(self, X, y, reset: bool, classes=None):
        if self.on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {self.on_nonfinite!r}.")
        if self.teacher_cache not in ("auto", True, False):
            raise ValueError(
                f"teacher_cache must be 'auto', True or False, got {self.teacher_cache!r}."
            )
        if self.augment is not None:
            if not callable(self.augment):
                raise TypeError(f"augment must be a callable (X_batch, y_batch) -> X_batch, got {self.augment!r}.")
            if self.augment_mode not in ("add", "replace"):
                raise ValueError(f"augment_mode must be 'add' or 'replace', got {self.augment_mode!r}.")
            if self.teacher_cache is True and self.augment_mode == "replace":
                raise ValueError(
                    "teacher_cache=True cannot be combined with augment_mode='replace': the teacher "
                    "must see each augmented batch and no clean one. Use teacher_cache='auto'."
                )
            if is_book(X):
                raise ValueError(
                    "augment needs a teacher to label augmented batches, but X is a book; pass "
                    "the features and teacher=... instead."
                )
        X = self._validate_X(X, reset)
        y_raw, y_encoded = self._validate_y(y, X, reset, classes)
        features = X[BOOK_X] if isinstance(X, Mapping) else X
        if reset:
            if isinstance(features, Dataset):
                first = features[0]
                first = first[0] if isinstance(first, (tuple, list)) else first
                shape = (None, *np.shape(first))
            else:
                shape = tuple(features.shape)
            self.data_dims_ = {
                "n_features": int(np.prod(shape[1:])),
                "n_classes": len(self.classes_),
            }
        if is_book(X):
            X = self._validate_book_logits(X)
        return X, y_raw, y_encoded

    # ---------------------------------------------------------------- teacher
    def _teacher_from_params(self):
        teacher = self.teacher
        params = self.get_params_for("teacher")
        if params:
            if not hasattr(teacher, "set_params"):
                raise ValueError(
                    f"teacher__ parameters {sorted(params)} can only be set on a "
                    f"scikit-learn or skorch teacher, not on {type(teacher).__name__}."
                )
            from sklearn.base import clone

            teacher = clone(teacher).set_params(**params)
        return teacher

    def _prepare_teacher(self, X, y_raw):
        """Build and set up ``teacher_``, or return None if none is needed."""
        if not self.loss_.requires_teacher or is_book(X):
            return None
        teacher = self.loss_.make_teacher(self, X, y_raw)
        if teacher is None:
            if self.teacher is None:
                raise ValueError(
                    f"loss={self.loss!r} needs a teacher: pass teacher=..., or pass X as a "
                    "book {'X': X, 'teacher_logits': logits}; the losses 'ce' and "
                    "'tfkd' (mode='reg') need none."
                )
            teacher = self._teacher_from_params()
        return as_teacher(teacher).setup(X, y_raw, self.classes_, self.device)

    def _use_book(self, X) -> bool:
        # With augmentation the augmented batches are labelled online; in "add"
        # mode the clean batches still read their logits from the book.
        if self.teacher_cache is False or (self.augment is not None and self.augment_mode == "replace"):
            return False
        if isinstance(X, Dataset):
            if self.teacher_cache is True:
                raise ValueError(
                    "teacher_cache=True needs in-memory X (array, tensor or DataFrame); a "
                    "torch Dataset is read online. Use teacher_cache='auto' or False."
                )
            return False
        return True

    def write_book(self, X) -> dict:
        """Return the book ``{"X": X, "teacher_logits": logits}`` for ``X``.

        The teacher of the last ``fit`` runs once over ``X``, in batches, on
        the device. The book can be passed to ``fit`` in place of X.
        """
        if getattr(self, "teacher_", None) is None:
            raise NotFittedError("write_book needs the teacher set up by fit; call fit first.")
        with self._device_context():
            X = self._validate_features(X, reset=False)
            return {BOOK_X: X, BOOK_LOGITS: self.teacher_.book_logits(X)}

    # -------------------------------------------------------------------- fit
    def fit(self, X, y=None, **fit_params):
        """Fit the student to the labels and the teacher.

        Parameters
        ----------
        X : array-like, DataFrame, Tensor, torch Dataset, or book
            Training inputs; a book is ``{"X": X, "teacher_logits": logits}``
            with logits aligned to the sorted labels.
        y : array-like of shape (n_samples,)
            Labels of any sortable type.
        **fit_params
            Passed to skorch (forwarded to the module and train_split).

        Returns
        -------
        self
        """
        if not isinstance(self.max_epochs, (int, np.integer)) or self.max_epochs < 1:
            raise ValueError(
                f"max_epochs must be an int >= 1 for fit, got {self.max_epochs!r}; "
                "max_epochs=0 would return an untrained student."
            )
        with self._device_context():
            self._checked_seed()
            X, y_raw, y_encoded = self._validate_training_data(X, y, reset=True)
            if not self.warm_start or not self.initialized_:
                self.initialize()
            self._in_fit_ = True
            try:
                return self._fit_validated(X, y_raw, y_encoded, **fit_params)
            finally:
                self._in_fit_ = False

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Continue training for ``max_epochs`` without re-initialising.

        ``classes`` gives all labels on the first call when a batch of data
        may miss some.
        """
        with self._device_context():
            self._checked_seed()
            first = not self.initialized_ or not hasattr(self, "label_encoder_")
            X, y_raw, y_encoded = self._validate_training_data(X, y, reset=first, classes=classes)
            if not self.initialized_:
                self.initialize()
            return self._fit_validated(X, y_raw, y_encoded, **fit_params)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        # In fit (not partial_fit), history is fresh unless a LoadInitState
        # callback restored a checkpoint in on_train_begin: then train only the
        # epochs that remain, so that a resumed fit ends where an uninterrupted
        # one would.
        if epochs is None and getattr(self, "_in_fit_", False):
            epochs = max(self.max_epochs - len(self.history), 0)
        return super().fit_loop(X, y, epochs=epochs, **fit_params)

    def _fit_validated(self, X, y_raw, y_encoded, **fit_params):
        fit_params.pop("_routing_method", None)
        self.teacher_ = self._prepare_teacher(X, y_raw)
        if self.teacher_ is not None and self._use_book(X):
            X = {BOOK_X: X, BOOK_LOGITS: self.teacher_.book_logits(X)}
        NeuralNet.partial_fit(self, X, y_encoded, **fit_params)
        return self

    # --------------------------------------------------------------- batching
    _FAST_ITERATOR_OPTIONS = frozenset({"batch_size", "shuffle", "drop_last"})

    def get_iterator(self, dataset, training=False):
        """Batches of ``dataset``: device slices for in-memory data, else a DataLoader."""
        if self.batching not in ("auto", "loader"):
            raise ValueError(f"batching must be 'auto' or 'loader', got {self.batching!r}.")
        prefix = "iterator_train" if training else "iterator_valid"
        kwargs = self.get_params_for(prefix)
        if training:
            kwargs.setdefault("shuffle", True)
        iterator = self.iterator_train if training else self.iterator_valid
        fast = (
            self.batching == "auto"
            and iterator is DataLoader
            and set(kwargs) <= self._FAST_ITERATOR_OPTIONS
        )
        tensors = in_memory_tensors(dataset, self.device) if fast else None
        batch_size = kwargs.pop("batch_size", self.batch_size)
        if batch_size == -1:
            batch_size = len(dataset)
        shuffle = kwargs.get("shuffle", False)
        if tensors is None:
            if training and shuffle and iterator is DataLoader and "generator" not in kwargs:
                kwargs["generator"] = self._epoch_generator()
            return iterator(dataset, batch_size=batch_size, **kwargs)
        X, y = tensors
        generator = self._epoch_generator if training and shuffle else None
        return DeviceBatches(
            X, y, batch_size, shuffle=shuffle, drop_last=kwargs.get("drop_last", False),
            generator=generator,
        )

    # ------------------------------------------------------------ train step
    def train_step(self, batch, **fit_params):
        if self.on_nonfinite != "skip":
            return super().train_step(batch, **fit_params)
        # no closure: a skipped batch must not reach optimizer.step at all
        self._skip_step_ = False
        self._zero_grad_optimizer()
        step = self.train_step_single(batch, **fit_params)
        if self._skip_step_:
            self._zero_grad_optimizer()
            self.history.record_batch("skipped", 1)
            return {"loss": torch.zeros((), device=step["loss"].device), "y_pred": step["y_pred"]}
        self.notify("on_grad_computed", named_parameters=list(self.module_.named_parameters()), batch=batch,
                    training=True)
        self._step_optimizer(None)
        return step

    def on_epoch_end(self, net, **kwargs):
        super().on_epoch_end(net, **kwargs)
        if self.on_nonfinite == "skip":
            batches = self.history[-1]["batches"]
            self.history.record("skipped_batches", sum(row.get("skipped", 0) for row in batches))

    def _set_training(self, training=True):
        # skorch calls module.train() on every batch, which walks every
        # submodule; skip it when the student is already in that mode.
        module = getattr(self, "module_", None)
        if isinstance(module, torch.nn.Module) and module.training == training:
            return
        super()._set_training(training)

    def train_step_single(self, batch, **fit_params):
        if self.augment is None:
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        features = Xi[BOOK_X] if isinstance(Xi, Mapping) else Xi
        x = to_tensor(features, device=self.device)
        y = to_tensor(yi, device=self.device).long()
        augmented = self.augment(x, y)
        if isinstance(augmented, (tuple, list)):
            augmented = augmented[0]
        if not isinstance(augmented, torch.Tensor) or augmented.shape != x.shape:
            raise ValueError(
                f"augment returned {type(augmented).__name__} of shape "
                f"{tuple(getattr(augmented, 'shape', ()))}; it must return a tensor shaped like "
                f"the batch, {tuple(x.shape)}."
            )
        if self.augment_mode == "replace":
            y_pred = self.infer(augmented, **fit_params)
            loss = self.get_loss(y_pred, y, X=augmented, training=True)
        else:
            y_pred = self.infer(x, **fit_params)
            loss = self.get_loss(y_pred, y, X=Xi, training=True)  # the book, when there is one
            aug_pred = self.infer(augmented, **fit_params)
            teacher_logits = self._batch_teacher_logits(augmented)
            for name, value in self.loss_(aug_pred, teacher_logits, y).items():
                if name != "ce":
                    self.history.record_batch(f"{name}_aug", value.item())
                    loss = loss + value
        loss.backward()
        return {"loss": loss, "y_pred": y_pred}

    def infer(self, x, **fit_params):
        if isinstance(x, Mapping) and BOOK_X in x:
            x = x[BOOK_X]
        return super().infer(x, **fit_params)

    def _batch_teacher_logits(self, X):
        if is_book(X):
            return to_tensor(X[BOOK_LOGITS], device=self.device).float()
        if getattr(self, "teacher_", None) is None:
            raise RuntimeError("The loss needs teacher logits, but no teacher was set up.")
        features = X[BOOK_X] if isinstance(X, Mapping) else X
        return self.teacher_.predict_logits(to_tensor(features, device=self.device))

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Sum of the loss terms for a batch; each term is recorded in history."""
        n_classes = len(self.classes_)
        if y_pred.ndim != 2 or y_pred.shape[1] != n_classes:
            raise ValueError(
                f"The student module returns outputs of shape {tuple(y_pred.shape)}, but y "
                f"has {n_classes} classes: it must return logits of shape (batch, {n_classes})."
            )
        y_true = to_tensor(y_true, device=self.device).long()
        teacher_logits = self._batch_teacher_logits(X) if self.loss_.requires_teacher else None
        terms = self.loss_(y_pred, teacher_logits, y_true)
        prefix = "" if training else "valid_"
        # one device-to-host copy for all terms, not one sync per term
        values = dict(zip(terms, torch.stack([v.detach().float() for v in terms.values()]).tolist()))
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad and training:
            self._handle_nonfinite(bad, values)
            values = dict.fromkeys(values, 0.0)
        for name, value in values.items():
            self.history.record_batch(prefix + name, value)
        total = None
        for value in terms.values():
            total = value if total is None else total + value
        return total

    def _handle_nonfinite(self, bad, values):
        epoch = len(self.history)
        batch = len(self.history[-1]["batches"])
        if self.on_nonfinite == "raise":
            details = ", ".join(f"{name}={values[name]}" for name in bad)
            raise RuntimeError(
                f"Non-finite loss at epoch {epoch}, batch {batch}: {details}. The student keeps "
                "its weights from before this batch and history is kept. Lower the learning "
                "rate, check X and the teacher's logits, or pass on_nonfinite='skip' to drop "
                "such batches."
            )
        self._skip_step_ = True

    # ---------------------------------------------------------------- predict
    def _check_fitted(self):
        if not getattr(self, "initialized_", False) or not hasattr(self, "classes_inferred_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def forward_iter(self, X, training=False, device="cpu"):
        with self._device_context():
            yield from super().forward_iter(X, training=training, device=device)

    def predict_proba(self, X):
        """Class probabilities of the student, columns in ``classes_`` order.

        The teacher is never called. A book may be passed; its logits are ignored.
        """
        self._check_fitted()
        X = self._validate_X(X, reset=False)
        if isinstance(X, Mapping):
            X = X[BOOK_X]
        return super().predict_proba(X)

    def predict(self, X):
        """Predicted labels, values from ``classes_``."""
        indices = self.predict_proba(X).argmax(axis=1)
        return self.classes_[indices]

    def export_student(self) -> DistillationClassifier:
        """A lean copy for prediction: no teacher, no book, no optimizer.

        The copy predicts exactly as this estimator; its pickle holds the
        student and ``classes_`` only (plus ``history``), however large the
        teacher. It cannot be trained further.
        """
        self._check_fitted()
        lean = copy.copy(self)
        for key in list(vars(lean)):
            if key.startswith("teacher") and key not in ("teacher_cache",):
                setattr(lean, key, None)
        lean.augment = None
        lean.callbacks_ = []
        lean.callbacks = None
        lean.predict_nonlinearity = _softmax  # trimming drops the criterion it is inferred from
        lean.trim_for_prediction()
        return lean

    def load_params(self, *args, **kwargs):
        with self._device_context():
            return super().load_params(*args, **kwargs)

    def __setstate__(self, state):
        requested = state.get("device")
        if requested == "auto":
            state["device"] = resolve_device("auto")
        super().__setstate__(state)
        if requested == "auto":
            self.device = "auto"
