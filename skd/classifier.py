"""``DistillationClassifier``: the scikit-learn face of skd.

It wires the parts together and owns none of their work: input checks in
:mod:`skd._validation`, labels in :mod:`skd.labels`, the book in
:mod:`skd.book`, teachers in :mod:`skd.teachers`, losses in
:mod:`skd.losses`, the epochs in :mod:`skd.training`.
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochScoring, EpochTimer
from skorch.utils import to_numpy

from skd._constraints import Interval, Options, Satisfies, validate_params
from skd._device import checked_seed, resolved_device, seeded
from skd._prediction import StudentPrediction
from skd._transaction import fit_or_restore
from skd._validation import check_augment, check_module_dims, data_dims, validate_X, with_data_dims
from skd.book import check_book, is_book
from skd.book.cache import check_book_cache
from skd.book.writing import write_book as write_teacher_book
from skd.callbacks import (
    DistillationPrintLog,
    check_resume_callbacks,
    find_schedules,
    watch_unscaled,
    with_loss,
)
from skd.hints import fit_hint_terms, student_projectors
from skd.labels import UNLABELLED, Labels, check_unlabelled_fit, labelled_rows, partial_labels
from skd.losses.base import DistillationLoss, foreign_loss_params, make_loss
from skd.metrics import labelled_accuracy_score
from skd.persist import SavesStudent, refuse_if_exported
from skd.students import MeasureInputs
from skd.teachers import teacher_classes
from skd.teachers.checks import score_book, warn_if_undertrained
from skd.teachers.cloning import KeepsFittedTeachers
from skd.teachers.fitting import book_for, chosen_teacher, self_teacher, setup_teacher, teacher_rows
from skd.training.hooks import TrainerHooks
from skd.training.step import StepParts
from skd.training.threads import fit_threads
from skd.training.trainer import Trainer

__all__ = ["DistillationClassifier", "DEFAULT_MAX_EPOCHS"]

#: skd's default ``max_epochs`` (skorch's is 10): enough for small students with Adam at 1e-3.
DEFAULT_MAX_EPOCHS = 40


def _encoded_accuracy(net, X, y):
    """Validation accuracy on encoded labels (skorch's scorer sees encoded y)."""
    predicted = net.predict_proba(X).argmax(axis=1)
    return labelled_accuracy_score(to_numpy(y), predicted, unlabelled=UNLABELLED)


class DistillationClassifier(TrainerHooks, StudentPrediction, KeepsFittedTeachers, SavesStudent,
                             NeuralNetClassifier):
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
        A trained ``torch.nn.Module``, a fitted skorch net, a scikit-learn
        classifier (prefit in ``FrozenEstimator``, or unfitted: fitted in each
        ``fit``), a callable ``X -> logits``, a list of these (an ensemble),
        or a :class:`skd.teachers.Teacher`; ``teacher__<param>`` sets its
        parameters. None for teacher-free losses or when X is a book.
    loss : str or DistillationLoss, default="kd"
        A registered name (``"ce"``, ``"kd"``, ``"dkd"``, ``"cakd"``,
        ``"r2kd"``, ``"dist"``, ``"tfkd"``) or an instance. Its parameters are
        set as ``loss__<param>``, e.g. ``loss__temperature=2``.
    trainer : class or instance, default=skd.training.Trainer
        The engine that runs the epochs (a component, like ``optimizer``):
        its options are routed as ``trainer__<option>``: ``step_mode``
        (``"auto"``, ``"eager"``, ``"graph"``: the captured CUDA step),
        ``precision`` (``"32"``, ``"bf16"``), ``on_nonfinite`` (``"raise"``,
        ``"skip"``), ``check_every``, ``record_batches``, ``batching`` and
        ``compile_loss`` (``torch.compile`` of the loss; off by default).
        See :class:`skd.training.Trainer` and the "GPU and scale" page.
    book : {"auto", "memory", "online"}, default="auto"
        ``"memory"``: the teacher runs once per training row before the first
        epoch and its logits (the "book") stay in memory; ``"online"``: it
        runs on every batch; ``"auto"``: memory unless X is a torch ``Dataset``.
    book_dir : str, os.PathLike or None, default=None
        A directory of books on disk keyed by rows, labels and teacher, so
        that a grid search runs the teacher once per fold ("Scale out").
        Whoever can write to it controls the teacher's targets.
    augment : callable or None, default=None
        A batch augmentation ``(X_batch, y_batch) -> X_batch`` run on the
        device each step (e.g. ``skd.augment.BatchAugment(v2.CutMix(...))``);
        the teacher labels augmented batches online.
    augment_mode : {"add", "replace"}, default="add"
        ``"add"`` (R2KD's recipe): every term on the clean batch plus the
        distillation terms on the augmented one (``<term>_aug``);
        ``"replace"``: every term on the augmented batch only.
    random_state : int or None, default=None
        Seeds torch's generators during ``fit`` (initial weights, shuffling),
        without changing the global random state. None leaves them alone.
    unlabelled : object or None, default=None
        The label that marks a row without one, e.g. ``-1`` (scikit-learn's
        semi-supervised convention): such rows get the teacher's terms only,
        never CE, and ``score`` skips them. Use a string (e.g. ``""``) with
        string labels. None (the default): every value of ``y`` is a class,
        so labels such as ``{-1, 0, 1}`` keep their three classes. See
        ``docs/unlabelled.md``.
    hints : Hint, list of Hint or None, default=None
        Feature distillation between named layers (FitNets, attention transfer): docs/features.md.
    hint_book : {"auto", "memory", "online"}, default="auto"
        The hints' teacher features: in the book (n x feature size x 4 bytes) or online.
    teacher_other : {"drop", "bucket"}, default="drop"
        A student of a subset of the teacher's classes: ``"drop"`` renormalises
        the teacher over it; ``"bucket"`` adds an "other" class (``-2`` or
        ``"other"``) with the log-sum-exp of the rest.
    teacher_cv : int, CV splitter or None, default=None
        For an unfitted scikit-learn teacher (fitted in ``fit``): the book on the labelled
        training rows holds out-of-fold predictions (``cross_val_predict``; an int gives
        stratified folds, as ``StackingClassifier``), while the teacher fitted on all rows
        labels the rest and serves ``teacher_score_``. None: the in-sample book. See
        "Out-of-fold books" in docs/views.md.
    criterion : torch criterion class, default=torch.nn.CrossEntropyLoss
        Kept for skorch compatibility; the loss computes the loss.
    train_split : callable or None, default=None
        No data is held out unless asked (skorch holds out 20% by default),
        e.g. ``skorch.dataset.ValidSplit(0.2)``.
    device : str, default="auto"
        CUDA when available, else the CPU; ``"cuda"`` without CUDA fails at ``fit``.
    **kwargs
        Any other :class:`skorch.NeuralNetClassifier` parameter
        (``max_epochs``, ``lr``, ``optimizer``, ``batch_size``, ``callbacks``,
        ``module__*``, ``optimizer__*``, ...). Three defaults depart from
        skorch's, so that a fit with none of them set trains a good student:
        ``optimizer=torch.optim.Adam`` (skorch: SGD), ``lr=1e-3`` (skorch:
        0.01) and ``max_epochs=DEFAULT_MAX_EPOCHS`` (skorch: 10). A fourth
        keeps it quiet, as scikit-learn's estimators are: ``verbose=0``
        (skorch: 1) prints nothing, so a grid search shows its own output
        and the warnings (a 42-fit search printed 1,838 lines at
        ``verbose=1``); ``verbose=1`` prints skorch's table of epochs. A student
        that ends far below its teacher gets an :class:`UnderTrainedWarning`
        naming the settings to change. torch's ``Adam``, ``AdamW``, ``SGD``
        and ``Adagrad`` run their fused update (``fused=True``, one kernel
        per step) unless ``optimizer__fused`` or ``optimizer__foreach`` is
        set (see :mod:`skd.training.optimizers`).

    Attributes
    ----------
    classes_ : ndarray
        The labels seen in ``fit``, sorted; ``predict`` returns them.
    n_features_in_ : int
    loss_ : DistillationLoss
        The loss of the last fit (built once per fit from ``loss`` and ``loss__*``).
    trainer_ : Trainer
        The trainer of the last fit.
    teacher_ : skd.teachers.Teacher or None
        The teacher adapter used by the last ``fit``.
    teacher_fitted_in_fit_ : bool
        Whether ``fit`` fitted the teacher (passed unfitted) or used it as it
        was (prefit; ``clone`` keeps a fitted skorch net).
    teacher_score_ : float or None
        The teacher's accuracy on the book's rows (None for online teachers);
        see :func:`skd.teachers.checks.score_book` for when it warns; a prefit classifier at
        chance on the rows it labels raises :class:`skd.teachers.TeacherAtChanceError`.
    history : skorch History
        Per epoch: ``train_loss``, every loss term, ``*_unscaled_loss`` (no
        warm-up or schedule factors; ``EarlyStopping`` watches it), and
        ``valid_*`` twins with a validation split.
    train_step_path_ : {"graph", "eager", "graph+eager"}
        Which training step ran in the last fit.
    eager_reasons_ : list of str
        Why the captured step did not run (empty when it did).
    n_captures_ : int
        CUDA graphs recorded by the last fit (1 unless something structural changed).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skd import MLP, DistillationClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=500), loss="kd",
    ...                              verbose=0, device="cpu", random_state=0)
    >>> clf.fit(X / 16, y).predict(X[:3] / 16).shape
    (3,)
    >>> clf.teacher_fitted_in_fit_, clf.teacher_score_ > 0.9  # fitted in fit, accurate
    (True, True)
    """

    prefixes_ = NeuralNetClassifier.prefixes_ + ["loss", "teacher", "trainer"]
    # The teacher is not a cuda_dependent_attribute: skorch pickles those in a
    # nested stream that stores classes by reference, which breaks teachers
    # defined in __main__ (notebooks) in joblib/Dask workers; see skd.persist.

    #: The constraints of skd's own parameters, checked once at the start of each fit.
    _parameter_constraints = {
        "book": [Options(("auto", "memory", "online"))],
        "book_dir": [None, str, os.PathLike],
        "augment": [None, Satisfies(callable, "a callable (X_batch, y_batch) -> X_batch")],
        "augment_mode": [Options(("add", "replace"))],
        "hint_book": [Options(("auto", "memory", "online"))],
        "random_state": [None, Interval(Integral, None, None)],
        "teacher_other": [Options(("drop", "bucket"))],
        "teacher_cv": [None, Interval(Integral, 2, None), Satisfies(lambda cv: hasattr(cv, "split") and hasattr(cv, "get_n_splits"), "a CV splitter (split and get_n_splits), e.g. StratifiedKFold(5)")],  # noqa: E501
        "max_epochs": [Interval(Integral, 1, None)],
        "trainer": [Trainer, Satisfies(lambda t: isinstance(t, type) and issubclass(t, Trainer),
                                       "skd.training.Trainer or a subclass of it")],
    }

    def __init__(
        self,
        module,
        teacher: Any = None,
        loss: str | DistillationLoss = "kd",
        *,
        trainer=Trainer,
        book: str = "auto",
        book_dir=None,
        augment=None,
        augment_mode: str = "add",
        hints=None, hint_book: str = "auto",
        random_state: int | None = None,
        unlabelled: Any = None,
        teacher_other: str = "drop",
        teacher_cv: Any = None,
        criterion=torch.nn.CrossEntropyLoss,
        train_split=None,
        device: str | None = "auto",
        **kwargs,
    ):
        kwargs.setdefault("optimizer", torch.optim.Adam)
        kwargs.setdefault("lr", 1e-3)
        kwargs.setdefault("max_epochs", DEFAULT_MAX_EPOCHS)
        kwargs.setdefault("verbose", 0)  # quiet as scikit-learn's estimators; verbose=1 prints the epochs
        super().__init__(module, criterion=criterion, train_split=train_split, device=device, **kwargs)
        self.teacher = teacher
        self.loss = loss
        self.trainer = trainer
        self.book = book
        self.book_dir = book_dir
        self.augment = augment
        self.augment_mode = augment_mode
        self.hints, self.hint_book = hints, hint_book
        self.random_state = random_state
        self.unlabelled = unlabelled
        self.teacher_other = teacher_other
        self.teacher_cv = teacher_cv

    # ------------------------------------------------------------------ setup
    def get_params(self, deep=True, **kwargs):
        # skorch lists private bookkeeping (``_params_to_validate``) among the
        # parameters; it is not one, and set_params must never receive it.
        params = super().get_params(deep=deep, **kwargs)
        return {key: value for key, value in params.items() if not key.startswith("_")}

    def set_params(self, **kwargs):
        """Set parameters; ``loss__*``, ``teacher__*`` and ``trainer__*`` are read at the next fit.

        Changing ``loss`` to another loss drops the ``loss__*`` settings made
        earlier that the new loss does not have (they belonged to the old
        one), so ``set_params(loss="dist")`` after ``loss__kd_weight=0.5`` works.
        """
        if "augment" in kwargs:  # a new view maker first, then its augment__* settings
            self.augment = kwargs.pop("augment")
        nested = {key.split("__", 1)[1]: kwargs.pop(key) for key in list(kwargs)
                  if key.startswith("augment__")}
        if nested:
            if not hasattr(self.augment, "set_params"):
                raise ValueError(
                    f"augment__{next(iter(nested))} needs augment to be a view maker with parameters "
                    f"(skd.augment: Affine, MixUp, Munge, ...), but augment={self.augment!r}. Set augment "
                    "itself instead, e.g. set_params(augment=...).")
            self.augment.set_params(**nested)
        if "loss" in kwargs:
            for key in foreign_loss_params(kwargs["loss"], [k for k in vars(self) if k not in kwargs]):
                delattr(self, key)
                self._params_to_validate.discard(key)
        # skd's own prefixes, and two parameters whose names skorch would read as a teacher_ prefix
        routed = [key for key in kwargs if key.split("__")[0] in ("loss", "teacher", "trainer")
                  or key in ("teacher_other", "teacher_cv")]
        for key in routed:
            setattr(self, key, kwargs.pop(key))
            if "__" in key:
                self._params_to_validate.add(key)
        if kwargs:
            super().set_params(**kwargs)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # scipy sparse X is densified per batch (skd.training.batching)
        return tags

    @property
    def _default_callbacks(self):
        # train_loss, valid_loss and the loss terms are recorded per epoch by
        # the trainer, from sums kept on the device (no PassthroughScoring).
        return [
            ("epoch_timer", EpochTimer()),
            ("measure_inputs", MeasureInputs()),  # skd.MLP's input statistics
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

    def initialize(self):
        with resolved_device(self), seeded(checked_seed(self.random_state)):
            return super().initialize()

    def initialize_module(self):
        kwargs = with_data_dims(self.module, self.get_params_for("module"), getattr(self, "data_dims_", None))
        check_module_dims(self.module, kwargs)
        self.module_ = self.initialized_instance(self.module, kwargs)
        self.projectors_ = student_projectors(getattr(self, "hint_plan_", None), self.module_)
        return self

    def check_data(self, X, y=None):
        # Labels are validated and encoded in fit; skorch sees encoded y.
        pass

    def write_book(self, X) -> dict:
        """Return the book ``{"X": X, "teacher_logits": logits}`` for ``X``.

        The teacher of the last ``fit`` runs once over ``X`` as given (a
        DataFrame keeps its dtypes), in batches, on the device; the book's
        ``"X"`` is the student's checked features. The book can be passed to
        ``fit`` in place of X.
        """
        if getattr(self, "teacher_", None) is None:
            raise NotFittedError("write_book needs the teacher set up by fit; call fit first.")
        with resolved_device(self):
            features = validate_X(self, X, reset=False)
            plan = getattr(self, "hint_plan_", None)
            return write_teacher_book(self.teacher_, teacher_rows(X, features), features=features,
                                      layers=plan.book_layers if plan is not None else ()).as_dict()

    def fit(self, X, y=None, **fit_params):
        """Fit the student to the labels and the teacher.

        A fit that fails leaves a fitted estimator as it was before the call
        (every fitted attribute, the weights, the optimizer state and
        ``history``; the error says so in a note). An unfitted one keeps the
        epochs that a failed fit finished, at the last good weights, and
        stays unfitted if none finished. A ``KeyboardInterrupt`` during
        training ends it, as in skorch: the fit returns with the weights
        reached. See :mod:`skd._transaction`.

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
        fresh = not self.warm_start or not self.initialized_
        with fit_or_restore(self):
            return self._fit(X, y, self.classes, first=True, initialize=fresh, **fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Continue training for ``max_epochs`` without re-initialising; ``classes`` gives all
        labels on the first call when a batch of data may miss some. A failed call leaves the
        estimator as ``fit`` does."""
        first = not self.initialized_ or not hasattr(self, "label_encoder_")
        with fit_or_restore(self):
            return self._fit(X, y, classes, first=first, initialize=not self.initialized_, **fit_params)

    def _fit(self, X, y, classes, first: bool, initialize: bool, **fit_params):
        """validate → labels → teacher → book → fitted attributes → train → check."""
        fit_params.pop("_routing_method", None)
        with resolved_device(self), fit_threads():
            loss, trainer, cache = self._checked_settings()
            features, labels = self._checked_data(X, y, first, classes, loss)
            teacher = self._teacher_for(features, labels, loss, original=X)
            book, hints = book_for(self, features, labels, teacher, cache, loss, original=X)
            self._set_fitted(labels, book, loss, trainer, teacher, first, initialize, hints)
            self._train(book, labels.encoded, whole=initialize, **fit_params)
            warn_if_undertrained(self, book, labels.encoded)
        return self

    def _checked_settings(self) -> tuple[DistillationLoss, Trainer, Any]:
        """Every parameter checked once; the fit's loss and trainer built once."""
        refuse_if_exported(self)
        validate_params(self._parameter_constraints, self.get_params(deep=False), "",
                        type(self).__name__)
        checked_seed(self.random_state)
        loss = make_loss(self.loss, self.get_params_for("loss"))
        trainer = self.trainer
        trainer = (type(trainer)(**{**trainer.get_params(), **self.get_params_for("trainer")})
                   if isinstance(trainer, Trainer) else trainer(**self.get_params_for("trainer")))
        return loss, trainer.validate(), check_book_cache(self.book_dir)

    def _checked_data(self, X, y, first: bool, classes, loss) -> tuple[Any, Labels]:
        """The checked features (or book) and labels; nothing is stored on the estimator."""
        check_augment(self.augment, self.augment_mode, self.book, X)
        features = validate_X(self, X, reset=first)
        labels = partial_labels(y, features, classes, None if first else self.label_encoder_,
                                type(self).__name__, marker=self.unlabelled,
                                teacher_known=teacher_classes(self.teacher),
                                bucket=self.teacher_other == "bucket")
        check_unlabelled_fit(labels.encoded, loss, self.loss, self.unlabelled)
        if is_book(features):
            features = check_book(features, len(labels.encoder.classes_), loss)
        return features, labels

    def _teacher_for(self, X, labels: Labels, loss: DistillationLoss, original):
        """The set-up teacher of this fit, or None (no teacher needed, or X is a book).

        It sees X as the user gave it (``original``: a DataFrame keeps its
        dtypes and categoricals); the student trains on the checked ``X``.
        """
        if is_book(X) and self.teacher is not None and loss.capabilities.teacher:
            warnings.warn(
                "teacher= is ignored because X carries a book (its teacher's logits, written "
                "earlier, e.g. by WriteBook): the student learns from the book. Pass X's features "
                "to use teacher=..., or drop teacher= to silence this warning.",
                UserWarning, stacklevel=4,
            )
        if not loss.capabilities.teacher or is_book(X):
            return None
        if loss.capabilities.self_teaching:
            chosen = self_teacher(self, X, labels.raw)
        else:
            chosen = chosen_teacher(self.teacher, self.get_params_for("teacher"), self.loss)
        return setup_teacher(chosen, teacher_rows(original, X), labels, self.device,
                             bucket=self.teacher_other == "bucket")

    def _set_fitted(self, labels: Labels, book, loss, trainer, teacher, first: bool,
                    initialize: bool, hints=None) -> None:
        """Store what the fit learnt before training (a failure is rolled back by ``fit_or_restore``)."""
        if first:
            self.label_encoder_ = labels.encoder
            self.classes_inferred_ = labels.encoder.classes_
            self.data_dims_ = data_dims(book, len(self.classes_))
        self.loss_, self.trainer_, self.teacher_ = loss, trainer, teacher
        self.teacher_fitted_in_fit_ = bool(getattr(teacher, "fitted_in_setup_", False))
        self.hint_plan_ = hints  # before initialize: the student's projectors are built from it
        if initialize:
            self.initialize()
        self.teacher_score_ = score_book(book, labels.encoded, teacher, self.verbose)

    def _train(self, X, y_encoded, whole: bool, **fit_params) -> None:
        """skorch's training sequence through the trainer. With ``whole`` (a fit, not a warm start)
        ``max_epochs`` in all: epochs restored by ``LoadInitState`` are not trained again."""
        # the fit's loss is one of its callbacks (skorch calls its hooks); EarlyStopping watches the
        # unscaled loss
        self.callbacks_ = watch_unscaled(with_loss(self.callbacks_, self.loss_))
        check_resume_callbacks(self.callbacks_)
        before = len(self.history)
        self.notify("on_train_begin", X=X, y=y_encoded)
        restored = max(len(self.history) - before, 0) if whole else 0
        hints, trained = fit_hint_terms(self.hint_plan_, self.module_, getattr(self, "projectors_", None),
                                        self.teacher_, torch.device(self.device))
        parts = StepParts(forward=self.infer, loss=self.loss_, teacher=self.teacher_,
                          augment=self.augment, augment_mode=self.augment_mode,
                          n_classes=len(self.classes_), device=torch.device(self.device),
                          labelled_only=y_encoded is not None and bool(labelled_rows(y_encoded).all()),
                          hints=hints, trained=trained, set_training=self._set_training,
                          net_steps=self.net_steps())
        self.trainer_.start(self, parts, find_schedules(self.callbacks_, self.max_epochs))
        try:
            self.fit_loop(X, y_encoded, epochs=max(self.max_epochs - restored, 0), **fit_params)
        except KeyboardInterrupt:
            pass  # as skorch: an interrupt ends training, the student keeps its weights
        finally:
            self.train_step_path_ = self.trainer_.path
            self.eager_reasons_ = list(self.trainer_.blockers or [])
            self.n_captures_ = self.trainer_.captures
            self.trainer_.finish()
        self.notify("on_train_end", X=X, y=y_encoded)
