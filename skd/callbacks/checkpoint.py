"""Checkpoints that a crash cannot tear, and a resume that equals an uninterrupted fit.

skorch's ``Checkpoint`` writes each file in place: a crash mid-write leaves a
truncated ``params.pt`` (and no good checkpoint), and a crash between two
files leaves params and history from different epochs, which resume silently
to other weights. skd's :class:`Checkpoint` writes every file of a
checkpoint to a temporary file in the same directory, then renames them all
into place under a small journal, so a reader sees either the whole old
checkpoint or the whole new one (:class:`LoadInitState` finishes a commit
that a crash interrupted).

A checkpoint is one unit: with its files, :class:`Checkpoint` writes a
manifest (``skd-checkpoint.json``) holding the epoch and the SHA-256 of
every file, renamed into place under the same journal. :class:`LoadInitState`
refuses a set whose parts disagree (params of epoch 3 beside a history of
epoch 2, a ``history.json`` edited to more epochs), naming the file.

skorch's own ``LoadInitState`` trusts whatever it finds: a truncated
``params.pt`` gives a bare ``OSError: [Errno 22] Invalid argument``, and
files of different epochs resume silently. Use skd's :class:`Checkpoint`
and :class:`LoadInitState` (``skd.Checkpoint``, ``skd.LoadInitState``),
which give a :class:`CheckpointError` naming the file instead.

skorch's ``LRScheduler`` derives its position from ``net.history`` in
``on_train_begin``: listed before ``LoadInitState`` it sees an empty history
and starts over; a per-batch policy (``OneCycleLR``, ``CyclicLR``) is
positioned by the number of epochs instead of batches in either order. skd's
:class:`LoadInitState` rebuilds every scheduler after the checkpoint is
loaded by replaying its steps from the start (one per finished epoch, or one
per training batch), whatever the order of the callbacks, so the learning
rates of a resumed fit are those of an uninterrupted one. Combinations it
cannot replay are refused by :func:`check_resume_callbacks`.

Use them together, with ``monitor=None`` (a checkpoint every epoch)::

    cp = Checkpoint(dirname="run1")
    clf = DistillationClassifier(..., callbacks=[("cp", cp), ("resume", LoadInitState(cp))])
"""

from __future__ import annotations

import os
import pickle
import warnings
from contextlib import suppress

from skorch.callbacks import Checkpoint as SkorchCheckpoint
from skorch.callbacks import LoadInitState as SkorchLoadInitState
from skorch.callbacks import LRScheduler, TrainEndCheckpoint
from skorch.history import History
from skorch.utils import _check_f_arguments, noop
from torch.optim.lr_scheduler import ReduceLROnPlateau

from skd.callbacks.commit import (
    JOURNAL,
    MANIFEST,
    CheckpointError,
    CheckpointWarning,
    apply_journal,
    check_manifest,
    damaged,
    fsync_file,
    recover_checkpoint,
    temporary_beside,
    write_journal,
    write_manifest,
)

__all__ = ["Checkpoint", "CheckpointError", "CheckpointWarning", "LoadInitState", "check_resume_callbacks"]

class Checkpoint(SkorchCheckpoint):
    """skorch's ``Checkpoint``, writing each checkpoint atomically.

    Every file (params, optimizer, criterion, history, pickle) is written to
    a temporary file created exclusively in its own directory, flushed to
    disk, and renamed over the old one only when all are written; the
    renames are recorded in a journal first, so a crash between two renames
    is finished by :class:`LoadInitState`. With the files, a manifest
    (``skd-checkpoint.json``) records the epoch and the SHA-256 of each, so
    that :class:`LoadInitState` refuses files that are not this checkpoint's. A failed write (a full disk)
    leaves the previous checkpoint as it was, removes the temporary files
    and gives a :class:`CheckpointWarning` (skorch only logs to ``sink``).

    Parameters are skorch's (see ``skorch.callbacks.Checkpoint``), except:

    Parameters
    ----------
    monitor : str, callable or None, default=None
        None saves every epoch: what a resume needs (at most one epoch is
        lost). ``"valid_unscaled_loss_best"`` keeps the best model on
        validation data (it needs a ``train_split``); a ``*_best`` column
        absent from the history is a clear error, not a ``KeyError``.
    f_params, f_optimizer, f_criterion, f_history, f_pickle, fn_prefix, dirname, event_name, sink, \
load_best, use_safetensors, **kwargs
        As in skorch. File-like objects (not paths) are written in place.
    """

    def __init__(self, monitor=None, f_params="params.pt", f_optimizer="optimizer.pt",
                 f_criterion="criterion.pt", f_history="history.json", f_pickle=None, fn_prefix="",
                 dirname="", event_name="event_cp", sink=noop, load_best=False,
                 use_safetensors=False, **kwargs):
        super().__init__(monitor=monitor, f_params=f_params, f_optimizer=f_optimizer,
                         f_criterion=f_criterion, f_history=f_history, f_pickle=f_pickle,
                         fn_prefix=fn_prefix, dirname=dirname, event_name=event_name,
                         sink=sink, load_best=load_best,
                         use_safetensors=use_safetensors, **kwargs)

    @property
    def journal_(self) -> str:
        """Path of the journal of a commit in progress."""
        return os.path.join(self.dirname, self.fn_prefix + JOURNAL)

    @property
    def manifest_(self) -> str:
        """Path of the manifest: the epoch of the checkpoint and the hash of each of its files."""
        return os.path.join(self.dirname, self.fn_prefix + MANIFEST)

    def on_epoch_end(self, net, **kwargs):
        monitor = self.monitor
        if isinstance(monitor, str) and monitor not in net.history[-1]:
            hint = (" There is no validation data (train_split=None): monitor a train_* column, "
                    "e.g. 'train_unscaled_loss_best', use monitor=None, or give a train_split."
                    if monitor.startswith("valid") else "")
            raise CheckpointError(
                f"Checkpoint(monitor={monitor!r}): the history has no column {monitor!r}; it has "
                f"{sorted(key for key in net.history[-1] if key != 'batches')}.{hint}"
            )
        return super().on_epoch_end(net, **kwargs)

    def _targets(self, net) -> list[tuple[str, str | None, object]]:
        """``(kind, f_name, target)`` of every file of this checkpoint."""
        kwargs_module, kwargs_other = _check_f_arguments(type(self).__name__, **self._f_kwargs())
        targets = [("state", "f_" + key[:-1], self._format_target(net, value, -1))
                   for key, value in kwargs_module.items() if value is not None]
        if kwargs_other.get("f_history") is not None:
            targets.append(("state", "f_history", self.f_history_))
        if kwargs_other.get("f_pickle"):
            targets.append(("pickle", None, self._format_target(net, kwargs_other["f_pickle"], -1)))
        return targets

    def save_model(self, net):
        """Write every file to a temporary file, then rename them all into place (journalled)."""
        recover_checkpoint(self)
        staged: dict[str, str] = {}
        journalled = False
        try:
            for kind, f_name, target in self._targets(net):
                if not isinstance(target, (str, os.PathLike)):  # a file-like object: in place
                    self._write(net, kind, f_name, target)
                    continue
                target = os.fspath(target)
                staged[target] = temporary_beside(target)
                self._write(net, kind, f_name, staged[target])
                fsync_file(staged[target])
            if staged:  # the manifest travels with the files: renamed under the same journal
                files = dict(staged)
                staged[self.manifest_] = temporary_beside(self.manifest_)
                write_manifest(staged[self.manifest_], self.dirname, len(net.history), files)
            journalled = write_journal(self.journal_, staged)
            apply_journal(self.journal_, staged)
        except Exception as error:  # noqa: BLE001 - skorch goes on training after a failed save
            if journalled:  # every file is written: finish the renames the journal lists
                with suppress(OSError):
                    recover_checkpoint(self)
            message = (f"Checkpoint: could not write {list(staged) or 'the checkpoint'} "
                       f"({type(error).__name__}: {error}); "
                       + ("it was completed from its journal." if journalled
                          else "the previous checkpoint is kept."))
            self._sink(message, net.verbose)
            warnings.warn(message, CheckpointWarning, stacklevel=2)
        finally:
            if not journalled:  # after the journal, its temporary files are the checkpoint
                for temporary in staged.values():
                    with suppress(OSError):
                        os.unlink(temporary)

    def _write(self, net, kind, f_name, target):
        if kind == "pickle":
            if isinstance(target, str):
                with open(target, "wb") as handle:
                    pickle.dump(net, handle)
            else:
                pickle.dump(net, target)
        else:
            net.save_params(**{f_name: target, "use_safetensors": self.use_safetensors})


# ----------------------------------------------------------------------------- resume
def _schedulers(callbacks) -> list[LRScheduler]:
    items = [cb[1] if isinstance(cb, tuple) else cb for cb in callbacks or ()]
    return [cb for cb in items if isinstance(cb, LRScheduler)]


def check_resume_callbacks(callbacks) -> None:
    """Refuse callbacks whose resumed fit could not equal an uninterrupted one.

    Parameters
    ----------
    callbacks : list of Callback or of (name, Callback)
        A net's ``callbacks`` or ``callbacks_``.

    Raises
    ------
    CheckpointError
        For skorch's own ``LoadInitState`` beside an ``LRScheduler`` (use
        :class:`skd.callbacks.checkpoint.LoadInitState`), for two ``LRScheduler`` s, for a
        scheduler given ``last_epoch``, and for ``ReduceLROnPlateau`` stepped
        per batch or monitoring a callable (its scores cannot be replayed).
    """
    items = [cb[1] if isinstance(cb, tuple) else cb for cb in callbacks or ()]
    schedulers = _schedulers(items)
    if not schedulers:
        return
    if any(isinstance(cb, SkorchLoadInitState) and not isinstance(cb, LoadInitState) for cb in items):
        raise CheckpointError(
            "skorch's LoadInitState beside an LRScheduler resumes with other learning rates than an "
            "uninterrupted fit (the scheduler restarts, or counts epochs for a per-batch policy). "
            "Use skd.callbacks.checkpoint.LoadInitState, which replays the scheduler to its place."
        )
    if len(schedulers) > 1:
        raise CheckpointError(
            f"{len(schedulers)} LRScheduler callbacks: a resume replays one scheduler, not the "
            "interleaving of several. Combine them into one policy (e.g. torch's SequentialLR)."
        )
    (scheduler,) = schedulers
    if "last_epoch" in scheduler.kwargs:
        raise CheckpointError(
            "LRScheduler(last_epoch=...) cannot be resumed: its position comes from the checkpoint. "
            "Remove last_epoch."
        )
    if scheduler._get_policy_cls() is ReduceLROnPlateau and (
            scheduler.step_every != "epoch" or not isinstance(scheduler.monitor, str)):
        raise CheckpointError(
            "LRScheduler(ReduceLROnPlateau) is replayed from the scores in the history, so it must "
            "step every epoch (step_every='epoch') and monitor a history column by name, not "
            f"step_every={scheduler.step_every!r} and monitor={scheduler.monitor!r}."
        )


def _training_batches(row: dict) -> int:
    if "train_batch_count" in row:
        return int(row["train_batch_count"])
    return sum(1 for batch in row.get("batches", ()) if "train_loss" in batch or "train_batch_size" in batch)


def replay_scheduler(net, scheduler: LRScheduler, initial_lrs, finished) -> None:
    """Rebuild ``scheduler.lr_scheduler_`` at the position after the ``finished`` epochs.

    The learning rates are set back to where the fit began and the policy is
    stepped once per finished epoch (or training batch), with the history's
    scores for ``ReduceLROnPlateau``: the same sequence an uninterrupted fit
    took, hence the same rates (and momenta, for cyclic policies).

    Parameters
    ----------
    net : NeuralNet
    scheduler : skorch LRScheduler
    initial_lrs : list of float
        Each parameter group's learning rate where the fit began (used where
        the group has no ``initial_lr``).
    finished : list of dict
        The history rows of the finished epochs.
    """
    optimizer = net.optimizer_
    for group, initial in zip(optimizer.param_groups, initial_lrs, strict=True):
        group["lr"] = group.get("initial_lr", initial)
    policy = scheduler._get_policy_cls()
    kwargs = dict(scheduler.kwargs)
    if policy is not ReduceLROnPlateau:
        kwargs["last_epoch"] = -1
    n_batches = sum(_training_batches(row) for row in finished)
    steps = len(finished) if scheduler.step_every == "epoch" else n_batches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        replayed = policy(optimizer, **kwargs)
        for step in range(steps):
            if policy is ReduceLROnPlateau:
                replayed.step(finished[step][scheduler.monitor])
            else:
                replayed.step()
    scheduler.lr_scheduler_ = replayed
    scheduler.batch_idx_ = n_batches


class LoadInitState(SkorchLoadInitState):
    """skorch's ``LoadInitState``, resuming to where an uninterrupted fit would be.

    Before the first epoch it loads the checkpoint (finishing an interrupted
    commit of an skd :class:`Checkpoint` first), and at the first epoch's
    start it replays each ``LRScheduler`` to the loaded position, so the
    callbacks may be listed in any order. A damaged or truncated file is a
    :class:`CheckpointError` naming it; so is a checkpoint with some of its
    files missing (no files at all: a fresh fit), and a file that is not the
    one the manifest records (from another epoch or run, or edited). A
    checkpoint without manifest (skorch's ``Checkpoint``) loads with a
    :class:`CheckpointWarning`: its parts cannot be checked. Callbacks that
    cannot be replayed are refused (:func:`check_resume_callbacks`).

    Parameters
    ----------
    checkpoint : Checkpoint or TrainEndCheckpoint
        Where to read the files from.
    use_safetensors : bool, default=False
        Whether the files were written with safetensors.
    """

    def __init__(self, checkpoint, use_safetensors: bool = False):  # skorch's, declared for the API docs
        super().__init__(checkpoint, use_safetensors=use_safetensors)

    def initialize(self):
        super().initialize()
        self.replay_pending_ = False
        self.initial_lrs_ = None
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        if self.did_load_:
            return
        self.did_load_ = True
        check_resume_callbacks(net.callbacks_)
        checkpoint = (self.checkpoint.checkpoint_ if isinstance(self.checkpoint, TrainEndCheckpoint)
                      else self.checkpoint)
        recover_checkpoint(checkpoint)
        # where the fit began: a scheduler built before this callback ran keeps it as 'initial_lr'
        initial_lrs = [group.get("initial_lr", group["lr"]) for group in net.optimizer_.param_groups]
        if not _load(net, checkpoint, self.use_safetensors):
            return
        if _schedulers(net.callbacks_):
            self.initial_lrs_ = initial_lrs
            self.replay_pending_ = True

    def on_epoch_begin(self, net, **kwargs):
        if not self.replay_pending_:
            return
        self.replay_pending_ = False
        # skorch opened this epoch's row before calling on_epoch_begin
        finished = list(net.history[:-1])
        for scheduler in _schedulers(net.callbacks_):
            replay_scheduler(net, scheduler, self.initial_lrs_, finished)


def _files(net, checkpoint) -> dict[str, str]:
    """``{f_name: path}`` of the checkpoint's module files (after the history: names may use it)."""
    if not net.history:  # nothing loaded: only names without epoch fields can be found
        formatted = {key: (os.path.join(checkpoint.dirname, checkpoint.fn_prefix + value)
                           if isinstance(value, str) else value)
                     for key, value in checkpoint._f_kwargs().items()
                     if not (isinstance(value, str) and "{" in value)}
    else:
        formatted = checkpoint.get_formatted_files(net)
    modules, _ = _check_f_arguments("LoadInitState", **{key: value for key, value in formatted.items()
                                                          if key not in ("f_history", "f_pickle")})
    return {"f_" + key[:-1]: value for key, value in modules.items() if isinstance(value, (str, os.PathLike))}


def _load(net, checkpoint, use_safetensors: bool) -> bool:
    """Load the checkpoint's files into ``net``; False if there is none, a clear error if it is damaged."""
    if not net.initialized_:
        net.initialize()
    history_path = checkpoint.f_history_
    if history_path is not None and os.path.exists(history_path):
        try:
            history = History.from_file(history_path)
        except (OSError, ValueError, TypeError) as error:
            raise damaged(history_path, error) from error
        if not all(isinstance(row, dict) and "epoch" in row for row in history):
            raise damaged(history_path, TypeError("not a list of epoch rows"))
        net.history = history
    files = _files(net, checkpoint)
    everything = dict(files, **({"f_history": history_path} if history_path is not None else {}))
    present = {name: path for name, path in everything.items() if os.path.exists(path)}
    if not present:
        return False
    missing = sorted(os.fspath(path) for name, path in everything.items() if name not in present)
    if missing:
        raise CheckpointError(
            f"The checkpoint is incomplete: {missing} are missing beside "
            f"{sorted(os.fspath(path) for path in present.values())}. Restore the missing files, or "
            "delete the checkpoint to start afresh."
        )
    if not check_manifest(checkpoint, present, len(net.history)):
        warnings.warn(
            f"The checkpoint in {checkpoint.dirname or '.'} has no {MANIFEST} (it was written by skorch's "
            "Checkpoint, or by an earlier skd): its params, optimizer state and history cannot be checked "
            "against each other. Write checkpoints with skd.Checkpoint.", CheckpointWarning, stacklevel=3)
    for name, path in files.items():
        try:
            net.load_params(**{name: path, "use_safetensors": use_safetensors})
        except Exception as error:  # noqa: BLE001 - torch.load raises many kinds; all mean "damaged"
            raise damaged(path, error) from error
    return True
