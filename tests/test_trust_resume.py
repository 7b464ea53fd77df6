"""Issue 19, items 4, 10 and 14: atomic checkpoints and a resume that equals an uninterrupted fit."""

import json
import os

import pytest
import torch
from skorch.callbacks import Callback, LRScheduler
from skorch.callbacks import LoadInitState as SkorchLoadInitState
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR, ReduceLROnPlateau, StepLR

import skd.callbacks.checkpoint as checkpoint_module
from skd import MLP, DistillationClassifier
from skd.callbacks.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointWarning,
    LoadInitState,
    check_resume_callbacks,
)

N_ROWS, EPOCHS, STOP, BATCH = 400, 6, 3, 64
N_BATCHES = -(-N_ROWS // BATCH)


@pytest.fixture(scope="module")
def data(digits):
    X, y = digits
    return X[:N_ROWS], y[:N_ROWS]


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


class Stop(Callback):
    """A crash after ``at`` epochs (after the checkpoint of that epoch was written)."""

    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.at:
            raise KeyboardInterrupt


SCHEDULES = {
    "step": lambda: LRScheduler(StepLR, step_size=2, gamma=0.5),
    "onecycle": lambda: LRScheduler(OneCycleLR, max_lr=0.05, total_steps=EPOCHS * N_BATCHES,
                                    step_every="batch"),
    "plateau": lambda: LRScheduler(ReduceLROnPlateau, monitor="train_loss", patience=0, factor=0.5,
                                   threshold=0.5),
    "cyclic": lambda: LRScheduler(CyclicLR, base_lr=0.001, max_lr=0.05, step_size_up=5,
                                  step_every="batch"),
}


def _student(teacher, callbacks, **params):
    defaults = dict(teacher=teacher, loss="kd", max_epochs=EPOCHS, lr=0.01, optimizer=torch.optim.SGD,
                    optimizer__momentum=0.9, batch_size=BATCH, verbose=0, random_state=0, device="cpu",
                    module__hidden_units=[32])
    return DistillationClassifier(MLP, callbacks=callbacks, **{**defaults, **params})


def _largest_difference(a, b):
    a, b = a.module_.state_dict(), b.module_.state_dict()
    return max((a[key] - b[key]).abs().max().item() for key in a)


def _resumable(schedule, order, cp, extra=()):
    load = LoadInitState(cp)
    first = [("lr", SCHEDULES[schedule]()), ("load", load)]
    return (first if order == "scheduler-first" else first[::-1]) + [("cp", cp), *extra]


# ------------------------------------------------------------- item 4: the LR scheduler
@pytest.mark.parametrize("order", ["scheduler-first", "load-first"])
@pytest.mark.parametrize("schedule", ["step", "onecycle", "plateau", "cyclic"])
def test_a_resumed_fit_with_a_scheduler_equals_an_uninterrupted_one(data, teacher, tmp_path, schedule,
                                                                    order):
    # skorch's own LoadInitState: step 0.0022 (scheduler first), onecycle 0.011 / 0.012,
    # plateau 0.0017, cyclic 0.0003 / 0.0007 (max weight difference)
    X, y = data
    reference = _student(teacher, [("lr", SCHEDULES[schedule]())]).fit(X, y)
    cp = Checkpoint(dirname=str(tmp_path))
    _student(teacher, _resumable(schedule, order, cp, [("stop", Stop(STOP))])).fit(X, y)
    assert len(json.loads((tmp_path / "history.json").read_text())) == STOP
    resumed = _student(teacher, _resumable(schedule, order, cp)).fit(X, y)
    assert len(resumed.history) == EPOCHS
    assert _largest_difference(reference, resumed) < 1e-6
    final_lr = [group["lr"] for group in reference.optimizer_.param_groups]
    assert [group["lr"] for group in resumed.optimizer_.param_groups] == pytest.approx(final_lr)


def test_resume_callbacks_that_cannot_be_replayed_are_refused():
    with pytest.raises(CheckpointError, match="Use skd.callbacks.checkpoint.LoadInitState"):
        check_resume_callbacks([("lr", SCHEDULES["step"]()), ("load", SkorchLoadInitState(Checkpoint()))])
    with pytest.raises(CheckpointError, match="2 LRScheduler callbacks"):
        check_resume_callbacks([SCHEDULES["step"](), SCHEDULES["cyclic"]()])
    with pytest.raises(CheckpointError, match="ReduceLROnPlateau"):
        check_resume_callbacks([LRScheduler(ReduceLROnPlateau, monitor=lambda net: 1.0)])
    with pytest.raises(CheckpointError, match="last_epoch"):
        check_resume_callbacks([LRScheduler(StepLR, step_size=2, last_epoch=3)])
    check_resume_callbacks([("lr", SCHEDULES["onecycle"]()), ("load", LoadInitState(Checkpoint()))])


def test_load_init_state_refuses_a_combination_it_cannot_replay(data, teacher, tmp_path):
    X, y = data
    cp = Checkpoint(dirname=str(tmp_path))
    callbacks = [("a", SCHEDULES["step"]()), ("b", SCHEDULES["step"]()), ("cp", cp),
                 ("load", LoadInitState(cp))]
    with pytest.raises(CheckpointError, match="LRScheduler callbacks"):
        _student(teacher, callbacks, max_epochs=1).fit(X, y)


# ------------------------------------------------------------- item 10: lost checkpoints
def test_a_truncated_params_file_is_a_clear_error_naming_it(data, teacher, tmp_path):
    X, y = data
    cp = Checkpoint(dirname=str(tmp_path))
    _student(teacher, [("cp", cp), ("load", LoadInitState(cp))], max_epochs=2).fit(X, y)
    params = tmp_path / "params.pt"
    params.write_bytes(params.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"params\.pt \(f_module\) is not the one recorded.*damaged or "
                                              r"truncated"):
        _student(teacher, [("cp", cp), ("load", LoadInitState(cp))]).fit(X, y)
    (tmp_path / checkpoint_module.MANIFEST).unlink()  # as skorch's own Checkpoint leaves it: no hashes
    with pytest.raises(CheckpointError, match=r"params\.pt cannot be read.*damaged or truncated"), \
            pytest.warns(CheckpointWarning, match="no skd-checkpoint.json"):
        _student(teacher, [("cp", cp), ("load", LoadInitState(cp))]).fit(X, y)


def test_a_damaged_history_file_is_a_clear_error_naming_it(data, teacher, tmp_path):
    X, y = data
    cp = Checkpoint(dirname=str(tmp_path))
    _student(teacher, [("cp", cp), ("load", LoadInitState(cp))], max_epochs=2).fit(X, y)
    history = tmp_path / "history.json"
    history.write_text(history.read_text()[:50])
    with pytest.raises(CheckpointError, match=r"history\.json cannot be read"):
        _student(teacher, [("cp", cp), ("load", LoadInitState(cp))]).fit(X, y)


def test_an_incomplete_checkpoint_is_a_clear_error(data, teacher, tmp_path):
    X, y = data
    cp = Checkpoint(dirname=str(tmp_path))
    _student(teacher, [("cp", cp), ("load", LoadInitState(cp))], max_epochs=2).fit(X, y)
    (tmp_path / "optimizer.pt").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete.*optimizer\.pt"):
        _student(teacher, [("cp", cp), ("load", LoadInitState(cp))]).fit(X, y)


def test_a_failed_write_keeps_the_previous_checkpoint(data, teacher, tmp_path, monkeypatch):
    X, y = data
    cp = Checkpoint(dirname=str(tmp_path))
    reference = _student(teacher, [("lr", SCHEDULES["onecycle"]())]).fit(X, y)
    real_save = DistillationClassifier.save_params

    def disk_full_after_the_third_epoch(net, **kwargs):
        if len(net.history) > STOP:
            target = next(value for key, value in kwargs.items() if key.startswith("f_"))
            with open(target, "wb") as handle:
                handle.write(b"\0" * 10)  # half a file, then the disk is full
            raise OSError(28, "No space left on device")
        return real_save(net, **kwargs)

    monkeypatch.setattr(DistillationClassifier, "save_params", disk_full_after_the_third_epoch)
    with pytest.warns(CheckpointWarning, match="the previous checkpoint is kept"):
        _student(teacher, _resumable("onecycle", "load-first", cp, [("stop", Stop(STOP + 1))])).fit(X, y)
    monkeypatch.setattr(DistillationClassifier, "save_params", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["criterion.pt", "history.json", "optimizer.pt",
                                                           "params.pt", checkpoint_module.MANIFEST]  # no temp
    resumed = _student(teacher, _resumable("onecycle", "load-first", cp)).fit(X, y)
    assert _largest_difference(reference, resumed) < 1e-6


def test_a_crash_between_two_renames_is_finished_on_resume(data, teacher, tmp_path, monkeypatch):
    X, y = data
    cp = Checkpoint(dirname=str(tmp_path))
    reference = _student(teacher, [("lr", SCHEDULES["step"]())]).fit(X, y)
    real_replace = os.replace
    calls = {"n": 0}

    def killed_mid_commit(src, dst):
        history = tmp_path / "history.json"
        if str(dst).endswith(".pt") and history.exists() and len(json.loads(history.read_text())) == STOP:
            calls["n"] += 1
            if calls["n"] == 2:  # params renamed, the rest not: a torn checkpoint on disk
                raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", killed_mid_commit)
    _student(teacher, _resumable("step", "scheduler-first", cp)).fit(X, y)  # interrupted
    monkeypatch.setattr(checkpoint_module.os, "replace", real_replace)
    assert calls["n"] == 2 and (tmp_path / checkpoint_module.JOURNAL).exists()
    assert len(list(tmp_path.glob(".*.tmp"))) == 4  # optimizer, criterion, history, manifest: to rename
    resumed = _student(teacher, _resumable("step", "scheduler-first", cp)).fit(X, y)
    assert not (tmp_path / checkpoint_module.JOURNAL).exists()
    assert len(resumed.history) == EPOCHS
    assert _largest_difference(reference, resumed) < 1e-6


def test_a_journal_naming_other_files_is_ignored(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    cp = Checkpoint(dirname=str(tmp_path / "cp"))
    os.makedirs(cp.dirname)
    (tmp_path / "cp" / checkpoint_module.JOURNAL).write_text(
        json.dumps({"replace": [[str(tmp_path / "cp" / "params.pt"), str(outside)]]}))
    with pytest.warns(CheckpointWarning, match="not this checkpoint's"):
        assert not checkpoint_module.recover_checkpoint(cp)
    assert outside.read_text() == "keep me"


def test_no_checkpoint_yet_is_a_fresh_fit(data, teacher, tmp_path):
    X, y = data
    cp = Checkpoint(dirname=str(tmp_path / "new"))
    clf = _student(teacher, _resumable("step", "load-first", cp), max_epochs=2).fit(X, y)
    assert len(clf.history) == 2 and (tmp_path / "new" / "params.pt").exists()


# ------------------------------------------------------------- item 14: the monitor
def test_a_validation_monitor_without_validation_data_is_a_clear_error(data, teacher, tmp_path):
    X, y = data
    cp = Checkpoint(monitor="valid_unscaled_loss_best", dirname=str(tmp_path))
    with pytest.raises(CheckpointError, match=r"no validation data \(train_split=None\).*"
                                              r"'train_unscaled_loss_best'"):
        _student(teacher, [("cp", cp)], max_epochs=1).fit(X, y)
    cp = Checkpoint(monitor="train_unscaled_loss_best", dirname=str(tmp_path))
    _student(teacher, [("cp", cp)], max_epochs=1).fit(X, y)
    assert (tmp_path / "params.pt").exists()


def test_checkpoint_default_saves_every_epoch():
    assert Checkpoint().monitor is None


# ------------------------------------------------------------- issue 30, item 3: one consistent unit
class CopyAt(Callback):
    """Copies the checkpoint's files as they are after epoch ``at`` (listed after the Checkpoint)."""

    def __init__(self, at, directory, into):
        self.at, self.directory, self.into = at, directory, into

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.at:
            self.into.mkdir()
            for name in ("params.pt", "optimizer.pt", "history.json"):
                (self.into / name).write_bytes((self.directory / name).read_bytes())


def _interrupted_at_3(data, teacher, tmp_path):
    X, y = data
    cp = Checkpoint(dirname=str(tmp_path / "cp"))
    old = tmp_path / "epoch2"
    _student(teacher, [("cp", cp), ("copy", CopyAt(2, tmp_path / "cp", old)), ("stop", Stop(STOP))]).fit(X, y)
    return cp, old


@pytest.mark.parametrize("stale", ["history.json", "params.pt", "optimizer.pt"])
def test_files_of_another_epoch_are_refused_naming_the_file(data, teacher, tmp_path, stale):
    # was: params of epoch 3 with a history of epoch 2 resumed silently (0.076 from an uninterrupted fit)
    X, y = data
    cp, old = _interrupted_at_3(data, teacher, tmp_path)
    (tmp_path / "cp" / stale).write_bytes((old / stale).read_bytes())
    clf = _student(teacher, [("cp", cp), ("load", LoadInitState(cp))])
    with pytest.raises(CheckpointError, match=rf"{stale}.*is not the one recorded in .*skd-checkpoint\.json "
                                              r"for epoch 3: its SHA-256 differs.*files disagree"):
        clf.fit(X, y)


def test_a_history_edited_to_more_epochs_is_refused(data, teacher, tmp_path):
    # was: max_epochs=6 trained nothing and returned the epoch-3 weights with an 8-epoch history
    X, y = data
    cp, _ = _interrupted_at_3(data, teacher, tmp_path)
    history = tmp_path / "cp" / "history.json"
    rows = json.loads(history.read_text())
    rows += [{**rows[-1], "epoch": len(rows) + i + 1} for i in range(5)]
    history.write_text(json.dumps(rows))
    with pytest.raises(CheckpointError, match=r"history\.json \(f_history\) is not the one recorded"):
        _student(teacher, [("cp", cp), ("load", LoadInitState(cp))]).fit(X, y)


def test_a_consistent_checkpoint_resumes_and_records_its_epoch(data, teacher, tmp_path):
    X, y = data
    cp, _ = _interrupted_at_3(data, teacher, tmp_path)
    manifest = json.loads((tmp_path / "cp" / checkpoint_module.MANIFEST).read_text())
    files = {"params.pt", "optimizer.pt", "criterion.pt", "history.json"}
    assert manifest["epoch"] == STOP and set(manifest["files"]) == files
    resumed = _student(teacher, [("cp", cp), ("load", LoadInitState(cp))]).fit(X, y)
    assert len(resumed.history) == EPOCHS


def test_a_checkpoint_without_manifest_resumes_with_a_warning(data, teacher, tmp_path):
    X, y = data
    cp, _ = _interrupted_at_3(data, teacher, tmp_path)
    (tmp_path / "cp" / checkpoint_module.MANIFEST).unlink()  # as skorch's own Checkpoint writes it
    with pytest.warns(CheckpointWarning, match=r"no skd-checkpoint\.json.*cannot be checked "
                                               r".*skd\.Checkpoint"):
        resumed = _student(teacher, [("cp", cp), ("load", LoadInitState(cp))]).fit(X, y)
    assert len(resumed.history) == EPOCHS
