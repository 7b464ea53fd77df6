"""``DistillationClassifier``: the scikit-learn face of skd.

It wires the parts together and owns none of their work: input checks live
in :mod:`skd._validation`, device and seeding in :mod:`skd._device`, the
book in :mod:`skd.book`, teachers in :mod:`skd.teachers`, losses in
:mod:`skd.losses`, and the training step with its epoch loop in
:mod:`skd.training`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from skorch import NeuralNet, NeuralNetClassifier
from skorch.callbacks import EpochScoring, EpochTimer, PrintLog
from skorch.utils import to_numpy, to_tensor

from skd._batching import make_iterator
from skd._book_cache import book_key, cached_book_logits, check_book_cache
from skd._device import checked_seed, epoch_generator, resolved_device, seeded
from skd._export import refuse_if_exported
from skd._fit_teacher import score_book, self_teacher, teacher_for_fit, writes_book
from skd._partial_labels import (
    check_unlabelled_fit,
    forget_failed_fit,
    labelled_part,
    partial_labels,
    probe_teacher,
    teacher_classes,
)
from skd._persist import SavesStudent
from skd._prediction import StudentPrediction
from skd._validation import (
    check_loss_numbers,
    check_module_dims,
    check_options,
    data_dims,
    validate_X,
    with_data_dims,
)
from skd.book import check_book_logits, features_of, is_book, make_book
from skd.losses.base import DistillationLoss, make_loss
from skd.metrics import labelled_accuracy_score
from skd.teachers.cloning import KeepsFittedTeachers
from skd.training import StepParts, Trainer, stack_terms, terms_for
from skd.training.monitor import DistillationPrintLog, watch_unscaled

__all__ = ["DistillationClassifier"]


def _encoded_accuracy(net, X, y):
    """Validation accuracy on encoded labels (skorch's scorer sees encoded y)."""
    predicted = net.predict_proba(X).argmax(axis=1)
    return labelled_accuracy_score(to_numpy(y), predicted, unlabelled=-1)


class DistillationClassifier(StudentPrediction, KeepsFittedTeachers, SavesStudent, NeuralNetClassifier):
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
        A NaN or infinite loss term in training: ``"raise"`` stops with a
        ``RuntimeError`` naming the epoch, the first bad batch and the term,
        leaving the student at good weights (from before the bad batch when
        checked every batch; else restored from an on-device snapshot of the
        last passing check) and ``history`` kept. ``"skip"`` undoes the bad
        batch's update on the device and counts it in ``"skipped_batches"``.
        The exact promises are on the "GPU and scale" docs page.
    nonfinite_check_every : "auto" or int, default="auto"
        Batches between host checks in ``"raise"`` mode (and at each epoch's
        end); ``"auto"``: 1 on the CPU, 64 on CUDA and in the captured step.
    batching : {"auto", "loader"}, default="auto"
        ``"auto"`` batches in-memory data (arrays, tensors, DataFrames, books,
        scipy sparse) by slicing tensors kept on the device, with the same
        batches as the DataLoader's, when the iterators are skorch's default
        with at most ``batch_size``/``shuffle``/``drop_last``; ``"loader"``
        always uses skorch's ``DataLoader`` (a torch ``Dataset`` always does).
        Training batches are shuffled unless ``iterator_train__shuffle=False``.
    random_state : int or None, default=None
        Seeds torch's generators during ``fit`` (initial weights, shuffling),
        without changing the global random state. None leaves them alone.
    step_mode : {"auto", "eager", "graph"}, default="auto"
        ``"auto"`` captures the whole training step in a CUDA graph and
        replays it for full batches of in-memory data on CUDA when nothing
        needs Python on every batch, else runs the eager step; ``"graph"``
        insists (an error names what prevents it). ``train_step_path_`` and
        ``eager_reasons_`` say what ran and why; see "GPU and scale".
    record_batches : "auto" or bool, default="auto"
        Also record the loss and every term per batch in
        ``history[..., "batches"]`` (one device-to-host copy per batch).
        ``"auto"``: on the CPU yes, on CUDA no. Epoch means are always
        recorded, from sums kept on the device.
    precision : {"32", "bf16"}, default="32"
        ``"bf16"`` runs the student's training forward under bfloat16
        autocast (for CNN students on GPUs); the loss terms are always
        computed in float32.
    book_cache : str, os.PathLike or None, default=None
        A directory of books keyed by the training rows, labels and teacher
        (by content, file-locked), so that in a grid search the teacher runs
        once per fold, not once per candidate; see "Scale out".
    unlabelled : object, default=-1
        The label of a row without one (scikit-learn's semi-supervised
        convention): such rows get the teacher's terms only, never CE, and
        ``score`` skips them. Use a string (e.g. ``""``) with string labels.
        See ``docs/unlabelled.md``.
    teacher_other : {"drop", "bucket"}, default="drop"
        For a student with a strict subset of the teacher's classes:
        ``"drop"`` renormalises the teacher over the subset; ``"bucket"`` adds
        an "other" class (``-2`` or ``"other"``) whose teacher logit is the
        log-sum-exp of the rest.
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
    teacher_fitted_in_fit_ : bool
        Whether ``fit`` fitted the teacher (passed unfitted) or used it as it
        was (prefit; ``clone`` keeps a fitted skorch net).
    teacher_score_ : float or None
        The teacher's accuracy on the book's rows (None for online teachers);
        see :func:`skd._fit_teacher.score_book` for when it warns.
    history : skorch History
        Per epoch: ``train_loss`` and every loss term (e.g. ``"kd"``), and
        ``valid_*`` twins when there is a validation split;
        ``*_unscaled_loss`` (no warm-up or schedule factors; ``EarlyStopping``
        watches it); ``graph_steps``/``eager_steps``.
    train_step_path_ : {"graph", "eager", "graph+eager"}
        Which training step ran in the last fit.
    eager_reasons_ : list of str
        Why the captured step did not run (empty when it did).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skd import MLP, DistillationClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=500), loss="kd",
    ...                              max_epochs=2, verbose=0, device="cpu", random_state=0)
    >>> clf.fit(X / 16, y).predict(X[:3] / 16).shape
    (3,)
    >>> clf.teacher_fitted_in_fit_, clf.teacher_score_ > 0.9  # fitted in fit, accurate
    (True, True)
    """

    prefixes_ = NeuralNetClassifier.prefixes_ + ["loss", "teacher"]
    # The teacher is not a cuda_dependent_attribute: skorch pickles those in a
    # nested stream that stores classes by reference, which breaks teachers
    # defined in __main__ (notebooks) in joblib/Dask workers; see skd._pickling.

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
        nonfinite_check_every: str | int = "auto",
        batching: str = "auto",
        random_state: int | None = None,
        step_mode: str = "auto",
        record_batches: str | bool = "auto",
        precision: str = "32",
        book_cache=None,
        unlabelled: Any = -1,
        teacher_other: str = "drop",
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
        self.nonfinite_check_every = nonfinite_check_every
        self.batching = batching
        self.random_state = random_state
        self.step_mode = step_mode
        self.record_batches = record_batches
        self.precision = precision
        self.book_cache = book_cache
        self.unlabelled = unlabelled
        self.teacher_other = teacher_other

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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # scipy sparse X is densified per batch (skd._batching)
        return tags

    @property
    def _default_callbacks(self):
        # train_loss, valid_loss and the loss terms are recorded per epoch by
        # the trainer, from sums kept on the device (no PassthroughScoring).
        return [
            ("epoch_timer", EpochTimer()),
            ("valid_acc", EpochScoring(_encoded_accuracy, name="valid_acc", lower_is_better=False)),
            ("print_log", DistillationPrintLog()),
        ]

    @property
    def classes_(self):
        try:
            return self.classes_inferred_
        except AttributeError:
            if self.classes is not None:  # given, e.g. to predict with loaded weights
                return np.asarray(self.classes)
            raise AttributeError(
                f"{type(self).__name__} has no classes_ before fit; call fit first."
            ) from None

    def _epoch_generator(self):
        epoch = len(self.history) if getattr(self, "history_", None) is not None else 0
        return epoch_generator(checked_seed(self.random_state), epoch)

    def initialize(self):
        with resolved_device(self), seeded(checked_seed(self.random_state)):
            return super().initialize()

    def initialize_callbacks(self):
        self.loss_ = make_loss(self.loss, self.get_params_for("loss"))
        check_loss_numbers(self.loss_)
        super().initialize_callbacks()
        self.callbacks_ = watch_unscaled(self.callbacks_)
        if "loss" in [name for name, _ in self.callbacks_]:
            raise ValueError("The callback name 'loss' is reserved by skd for the loss; rename yours.")
        first_log = next(
            (i for i, (_, cb) in enumerate(self.callbacks_) if isinstance(cb, PrintLog)),
            len(self.callbacks_),
        )
        self.callbacks_[first_log:first_log] = [("loss", self.loss_)]
        return self

    def initialize_module(self):
        kwargs = with_data_dims(self.module, self.get_params_for("module"), getattr(self, "data_dims_", None))
        check_module_dims(self.module, kwargs)
        self.module_ = self.initialized_instance(self.module, kwargs)
        return self

    def check_data(self, X, y=None):
        # Labels are validated and encoded in fit; skorch sees encoded y.
        pass

    # ------------------------------------------------------------- validation
    def _validate_X(self, X, reset: bool):
        return validate_X(self, X, reset)

    def _validate_training_data(self, X, y, reset: bool, classes=None):
        refuse_if_exported(self)
        check_options(self, X)
        X = validate_X(self, X, reset)
        known = classes if classes is not None else self.classes
        encoder = None if reset else self.label_encoder_
        labels = partial_labels(y, X, known, encoder, type(self).__name__, marker=self.unlabelled,
                                teacher_known=teacher_classes(self.teacher),
                                bucket=self.teacher_other == "bucket")
        check_unlabelled_fit(labels.encoded, make_loss(self.loss, self.get_params_for("loss")),
                             self.loss, self.unlabelled)
        if reset:
            self.label_encoder_ = labels.encoder
            self.classes_inferred_ = labels.encoder.classes_
            self.data_dims_ = data_dims(X, len(self.classes_))
        if is_book(X):
            X = check_book_logits(X, len(self.classes_))
        return X, labels.raw, labels.encoded

    # ---------------------------------------------------------------- teacher
    def write_book(self, X) -> dict:
        """Return the book ``{"X": X, "teacher_logits": logits}`` for ``X``.

        The teacher of the last ``fit`` runs once over ``X``, in batches, on
        the device. The book can be passed to ``fit`` in place of X.
        """
        if getattr(self, "teacher_", None) is None:
            raise NotFittedError("write_book needs the teacher set up by fit; call fit first.")
        with resolved_device(self):
            features = validate_X(self, X, reset=False)
            return make_book(features, self.teacher_.book_logits(features, original=X))

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
        with resolved_device(self):
            checked_seed(self.random_state)
            self._in_fit_, self._training_started_ = True, False
            try:
                original, (X, y_raw, y_encoded) = X, self._validate_training_data(X, y, reset=True)
                if not self.warm_start or not self.initialized_:
                    self.initialize()
                return self._fit_validated(X, y_raw, y_encoded, original, **fit_params)
            except BaseException:
                # bad input leaves nothing half-fitted; a failure while training (a
                # non-finite loss, an interrupt) keeps the student at its last good weights
                if not getattr(self, "_training_started_", False):
                    forget_failed_fit(self)
                raise
            finally:
                self._in_fit_ = False

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Continue training for ``max_epochs`` without re-initialising.

        ``classes`` gives all labels on the first call when a batch of data
        may miss some.
        """
        with resolved_device(self):
            checked_seed(self.random_state)
            first = not self.initialized_ or not hasattr(self, "label_encoder_")
            original, (X, y_raw, y_encoded) = X, self._validate_training_data(X, y, first, classes)
            if not self.initialized_:
                self.initialize()
            return self._fit_validated(X, y_raw, y_encoded, original, **fit_params)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        # In fit (not partial_fit), history is fresh unless a LoadInitState
        # callback restored a checkpoint in on_train_begin: then train only the
        # epochs that remain, so that a resumed fit ends where an uninterrupted
        # one would.
        if epochs is None and getattr(self, "_in_fit_", False):
            epochs = max(self.max_epochs - len(self.history), 0)
        return super().fit_loop(X, y, epochs=epochs, **fit_params)

    def _step_parts(self) -> StepParts:
        return StepParts(
            forward=self.infer, loss=self.loss_, teacher=getattr(self, "teacher_", None),
            augment=self.augment, augment_mode=self.augment_mode,
            n_classes=len(self.classes_), device=torch.device(self.device), precision=self.precision,
        )

    def _fit_validated(self, X, y_raw, y_encoded, original, **fit_params):
        fit_params.pop("_routing_method", None)
        fit_X, fit_y = labelled_part(X, y_raw, y_encoded)
        self.teacher_ = teacher_for_fit(
            self.teacher, self.get_params_for("teacher"), self.loss_, self.loss, fit_X, fit_y,
            self.classes_, self.device, lambda: self_teacher(self, X, y_raw),
            original=original if fit_y is y_raw else None, bucket=self.teacher_other == "bucket",
        )
        self.teacher_fitted_in_fit_ = bool(getattr(self.teacher_, "fitted_in_setup_", False))
        if self.teacher_ is not None and writes_book(self.teacher_cache, self.augment,
                                                     self.augment_mode, X):
            cache = check_book_cache(self.book_cache)
            key = book_key(X, y_raw, self.teacher_) if cache is not None else None
            X = make_book(X, cached_book_logits(
                cache, key, lambda: self.teacher_.book_logits(X, original=original)))
        elif self.teacher_ is not None:
            probe_teacher(self.teacher_, X, y_encoded, self.unlabelled)
        self.teacher_score_ = score_book(X, y_encoded, self.teacher_, self.verbose)
        self.trainer_ = Trainer(
            self._step_parts(), self.module_, lambda: self.optimizer_, lambda: self.history, self.notify,
            self.callbacks_, self._set_training, on_nonfinite=self.on_nonfinite,
            check_every=self.nonfinite_check_every, record_batches=self.record_batches,
            step_mode=self.step_mode,
        )
        self._training_started_ = True
        try:
            NeuralNet.partial_fit(self, X, y_encoded, **fit_params)
        finally:
            # the trainer holds CUDA graphs and device buffers: keep only what it says
            self.train_step_path_ = self.trainer_.path
            self.eager_reasons_ = list(self.trainer_.blockers or [])
            del self.trainer_
        return self

    # --------------------------------------------------------------- batching
    def get_iterator(self, dataset, training=False):
        """Batches of ``dataset``: device slices for in-memory data, else a DataLoader."""
        prefix = "iterator_train" if training else "iterator_valid"
        return make_iterator(
            dataset, self.iterator_train if training else self.iterator_valid,
            self.get_params_for(prefix), self.batch_size, self.device, training=training,
            fast=self.batching == "auto", generator=self._epoch_generator,
        )

    # ------------------------------------------------------------ train step
    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """One epoch through :class:`skd.training.Trainer` (terms summed on the device)."""
        self.trainer_.run_epoch(iterator, training=training, prefix=prefix, **fit_params)

    def train_step(self, batch, **fit_params):
        """One eager training step on ``batch`` (inside a fit)."""
        return self.trainer_.train_step(batch, len(self.history), **fit_params)[0]

    def _set_training(self, training=True):
        # skorch calls module.train() on every batch, which walks every
        # submodule; skip it when the student is already in that mode.
        module = getattr(self, "module_", None)
        if isinstance(module, torch.nn.Module) and module.training == training:
            return
        super()._set_training(training)

    def infer(self, x, **fit_params):
        return super().infer(features_of(x), **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Sum of the loss terms for a batch (nothing is recorded)."""
        y_true = to_tensor(y_true, device=self.device).long()
        return stack_terms(terms_for(self._step_parts(), y_pred, y_true, X))[1]
