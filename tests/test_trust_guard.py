"""Issue 30, item 1: the non-finite guard checks what it protects, the weights after the update."""

import math

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback

from skd.training.guard import NonFiniteGuard
from skd.training.ledger import EpochLedger
from tests.poison import PoisonableMLP, PoisonAt

INF = float("inf")


class InfiniteLrAt(Callback):
    """Sets every learning rate to infinity for one training batch (epoch, batch), 1-based."""

    def __init__(self, epoch, batch):
        self.epoch, self.batch = epoch, batch

    def on_batch_begin(self, net, training=False, **kwargs):
        self.saved = [group["lr"] for group in net.optimizer_.param_groups]
        if training and (len(net.history), len(net.history[-1]["batches"])) == (self.epoch, self.batch):
            for group in net.optimizer_.param_groups:
                group["lr"] = INF

    def on_batch_end(self, net, training=False, **kwargs):
        for group, lr in zip(net.optimizer_.param_groups, self.saved, strict=True):
            group["lr"] = lr


def _finite_student(clf):
    return all(bool(torch.isfinite(p).all()) for p in clf.module_.parameters())


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam])
def test_skip_with_an_infinite_learning_rate_raises_instead_of_returning_a_nan_model(
        digits, make_student, optimizer):
    X, y = digits
    clf = make_student(optimizer=optimizer, lr=INF, trainer__on_nonfinite="skip")
    # was: fitted, predict_proba all NaN, history 3.08, 0.0, 0.0
    with pytest.raises(RuntimeError, match=r"Every batch of epoch 1 was skipped \(29 of 29\).*In 29 of them "
                                           r"the loss was finite but the update.*\(lr=inf\).*lower lr"):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):  # nothing trained: it stays unfitted, no NaN model
        clf.predict(X[:3])


@pytest.mark.parametrize("check_every", [1, 4])
def test_raise_mode_refuses_an_update_that_makes_the_weights_nan(digits, make_student, check_every):
    X, y = digits
    kept = {}

    class Keep(Callback):
        def on_batch_end(self, net, training=False, **kwargs):
            kept[(len(net.history), len(net.history[-1]["batches"]))] = {
                k: v.clone() for k, v in net.module_.state_dict().items()}

    clf = make_student(optimizer=torch.optim.SGD, lr=0.05, trainer__check_every=check_every,
                       callbacks=[InfiniteLrAt(epoch=2, batch=7), Keep()])
    with pytest.raises(RuntimeError, match=r"Non-finite weights at epoch 2, batch 7: the update made "
                                           r"layers\.\d\.weight.* non-finite, though the loss was finite "
                                           r"\(ce=[\d.]+, kd=[\d.]+\).*The learning rate"
                                           + (r" \(lr=inf\)" if check_every == 1 else " or")):
        clf.fit(X, y)
    assert _finite_student(clf)
    restored_from = (1, 29) if check_every == 1 else (2, 4)  # the epoch's start, or the last check
    for key, value in clf.module_.state_dict().items():
        assert torch.equal(value, kept[restored_from][key])
    assert len(clf.history) == 1  # the finished epoch is kept


def test_skip_undoes_an_update_that_makes_the_weights_nan_and_leaves_it_out_of_the_means(
        digits, make_student):
    X, y = digits
    clf = make_student(optimizer=torch.optim.SGD, lr=0.05, trainer__on_nonfinite="skip",
                       trainer__record_batches=True, callbacks=[InfiniteLrAt(epoch=2, batch=7)]).fit(X, y)
    assert clf.history[:, "skipped_batches"] == [0, 1, 0]
    assert _finite_student(clf)
    assert np.isfinite(clf.predict_proba(X)).all()
    batches = clf.history[1, "batches"]
    losses = [b["train_loss"] for b in batches]
    sizes = [b["train_batch_size"] for b in batches]
    assert math.isnan(losses[6])  # the skipped batch: NaN, never a loss of 0
    kept = [(loss, n) for loss, n in zip(losses, sizes, strict=True) if not math.isnan(loss)]
    mean = sum(loss * n for loss, n in kept) / sum(n for _, n in kept)
    assert clf.history[1, "train_loss"] == pytest.approx(mean, rel=1e-5)  # was: the 0.0 counted in


class InfiniteLrEpoch(Callback):
    """An infinite learning rate for the whole of epoch 2 (an epoch hook: the captured step runs)."""

    def on_epoch_begin(self, net, **kwargs):
        self.saved = [group["lr"] for group in net.optimizer_.param_groups]
        if len(net.history) == 2:
            for group in net.optimizer_.param_groups:
                group["lr"] = INF

    def on_epoch_end(self, net, **kwargs):
        for group, lr in zip(net.optimizer_.param_groups, self.saved, strict=True):
            group["lr"] = lr
        self.weights = getattr(self, "weights", []) + [[p.clone() for p in net.module_.parameters()]]


@pytest.mark.parametrize("step_mode", ["eager", "graph"])
def test_skip_undoes_every_bad_update_of_an_epoch_and_records_its_loss_as_nan(digits, make_student,
                                                                              step_mode):
    X, y = digits
    watch = InfiniteLrEpoch()
    clf = make_student(optimizer=torch.optim.SGD, lr=0.05, trainer__on_nonfinite="skip",
                       trainer__step_mode=step_mode, callbacks=[watch]).fit(X, y)
    assert clf.history[:, "skipped_batches"] == [0, 29, 0]
    assert math.isnan(clf.history[1, "train_loss"])  # was 0.0: a converged-looking loss
    assert all(torch.equal(a, b) for a, b in zip(watch.weights[1], watch.weights[0], strict=True))
    assert _finite_student(clf) and np.isfinite(clf.history[2, "train_loss"])


def test_nonfinite_loss_advice_names_the_routed_option(digits, make_student):
    X, y = digits
    clf = make_student(module=PoisonableMLP, callbacks=[PoisonAt(epoch=1, batch=2)])
    with pytest.raises(RuntimeError, match=r"pass trainer__on_nonfinite='skip'") as info:
        clf.fit(X, y)
    assert " on_nonfinite='skip'" not in str(info.value)  # the bare name is refused by the classifier


def test_skip_with_every_loss_nan_names_the_loss_as_the_cause(digits, make_student):
    X, y = digits

    class PoisonAll(Callback):
        def on_batch_begin(self, net, training=False, **kwargs):
            net.module_.poison = training

    clf = make_student(module=PoisonableMLP, trainer__on_nonfinite="skip", callbacks=[PoisonAll()])
    with pytest.raises(RuntimeError, match=r"skipped \(29 of 29\).*In 29 of them the loss was not finite: "
                                           r"check X and the teacher's logits"):
        clf.fit(X, y)


# -- the guard alone ----------------------------------------------------------------------------------
def _guard(mode, lr):
    torch.manual_seed(0)
    module = torch.nn.Linear(6, 3)
    optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)
    return NonFiniteGuard(mode, 8, module, lambda: optimizer, "cpu"), module, optimizer


def _step(guard, module, optimizer):
    optimizer.zero_grad()
    loss = module(torch.ones(2, 6)).sum()
    loss.backward()
    finite = guard.observe(loss.detach().reshape(1), loss.detach())
    return guard.step(optimizer.step, lambda: finite)


def test_the_skip_guard_judges_the_weights_after_the_step_on_the_device():
    guard, module, optimizer = _guard("skip", 0.1)
    assert bool(_step(guard, module, optimizer))
    before = [p.clone() for p in module.parameters()]
    momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in module.parameters()]
    optimizer.param_groups[0]["lr"] = INF
    kept = _step(guard, module, optimizer)
    assert kept.dtype == torch.bool and not bool(kept)  # a device flag, the loss was finite
    assert all(torch.equal(a, b) for a, b in zip(module.parameters(), before, strict=True))
    assert all(torch.equal(optimizer.state[p]["momentum_buffer"], m)
               for p, m in zip(module.parameters(), momentum, strict=True))
    assert (int(guard.bad_losses), int(guard.bad_updates), int(guard.skipped)) == (0, 1, 1)


def test_the_raise_guard_folds_a_bad_update_into_its_flag_and_names_that_batch():
    guard, module, optimizer = _guard("raise", 0.1)
    guard.take_snapshot()
    for batch in range(1, 4):
        if batch == 3:
            optimizer.param_groups[0]["lr"] = INF
        assert _step(guard, module, optimizer) is None
    assert not bool(guard.ok)
    with pytest.raises(RuntimeError, match=r"Non-finite weights at epoch 1, batch 3: the update made weight, "
                                           r"bias non-finite, though the loss was finite \(loss="):
        guard.after_step(1, ["loss"], end_of_epoch=True)


def test_the_ledger_leaves_skipped_batches_out_of_the_means():
    ledger = EpochLedger("", "train_loss", "cpu", record_batches=True)
    ledger.reset()
    ledger.start(["ce"])
    rows = []
    for total, kept, n in ((1.0, True, 10), (5.0, False, 10), (3.0, True, 30)):
        row = ledger.row(torch.tensor(total), torch.tensor([total]), torch.tensor(kept))
        ledger.add(row, n)
        ledger.count(n)
        rows.append(ledger.batch_record(row))
    assert ledger.means() == pytest.approx({"train_loss": 2.5, "ce": 2.5})  # (10 + 90) / 40
    assert math.isnan(rows[1]["train_loss"]) and rows[0]["train_loss"] == 1.0


def test_a_failure_before_the_first_check_restores_state_created_after_the_snapshot(digits, make_student):
    X, y = digits
    # the epoch's snapshot holds no optimizer state yet (Adam creates it at the first step): was a bare
    # "zip() argument 2 is shorter than argument 1"
    clf = make_student(module=PoisonableMLP, trainer__check_every=8, callbacks=[PoisonAt(epoch=1, batch=3)])
    with pytest.raises(RuntimeError, match=r"Non-finite loss at epoch 1, batch 3: ce=nan, kd=nan\. The "
                                           r"student, its buffers and the optimizer state are restored"):
        clf.fit(X, y)


def test_the_captured_step_refuses_a_bad_update_naming_its_batch(digits, make_student):
    X, y = digits
    watch = InfiniteLrEpoch()
    clf = make_student(optimizer=torch.optim.SGD, lr=0.05, trainer__step_mode="graph", callbacks=[watch])
    with pytest.raises(RuntimeError, match=r"Non-finite weights at epoch 2, batch 1: the update made layers\."
                                           r".*restored to the last check before that batch"):
        clf.fit(X, y)  # the simulated CUDA graph: the flag is checked on the device, read every 64 batches
    assert len(clf.history) == 1
    assert all(torch.equal(a, b) for a, b in zip(clf.module_.parameters(), watch.weights[0], strict=True))
