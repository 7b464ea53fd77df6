"""The captured step: one capture per fit, replays that stay correct, fallbacks that say why.

On the CPU the captured step runs eagerly with the same signature, warm-up and capture
bookkeeping (``n_captures`` counts the captures a GPU would make): the simulated path.
The CUDA-marked tests capture for real.
"""

import functools

import numpy as np
import pytest
import torch
from skorch.callbacks import (
    Callback,
    EpochScoring,
    Freezer,
    GradientNormClipping,
    LRScheduler,
    ProgressBar,
)

from skd import MLP, DistillationClassifier
from skd.callbacks import StudentPruning, TemperatureSchedule
from skd.losses import make_loss
from skd.training import fallback
from skd.training.fallback import body_clipper, fallback_warning, graph_blockers
from skd.training.graph import WARMUP_STEPS, CapturedStep, prepare_capturable
from skd.training.guard import NonFiniteGuard
from skd.training.ledger import EpochLedger
from skd.training.step import StepParts, batch_loss
from tests.compare import OPTIMIZERS, assert_same_fit

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def captures(clf) -> int:
    """Captures of the fit (the ones a GPU made, or would make on the CPU), as the fitted attribute."""
    assert clf.n_captures_ == sum(step.n_captures for step in clf.captured_steps)
    return clf.n_captures_


# ------------------------------------------------------------ the step alone
class Recording(MLP):
    """An MLP that records the keyword arguments of each forward."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def forward(self, X, scale=None):
        self.seen.append(scale)
        out = super().forward(X)
        return out if scale is None else out * scale


class Bench:
    """A CapturedStep over 512 random rows of a book (16 batches of 32 per epoch), without a classifier."""

    def __init__(self, optimizer=torch.optim.Adam, loss="kd", module=None, **options):
        generator = torch.Generator().manual_seed(0)
        self.X = torch.randn(512, 20, generator=generator)
        self.logits = torch.randn(512, 5, generator=generator)
        self.y = torch.randint(0, 5, (512,), generator=generator)
        torch.manual_seed(0)
        self.module = module or Recording(20, 5)
        self.optimizer = optimizer(self.module.parameters(), lr=0.01)
        self.loss = make_loss(loss, {})
        self.state = self.loss.epoch_state(1)
        parts = StepParts(forward=self.module, loss=self.loss, teacher=None, augment=None, augment_mode="add",
                          n_classes=5, device=torch.device("cpu"))
        self.guard = NonFiniteGuard("raise", 64, self.module, lambda: self.optimizer, "cpu")
        self.ledger = EpochLedger("", "train_loss", "cpu", False)
        self.step = CapturedStep(parts, lambda: self.optimizer, self.module, self.guard, self.ledger,
                                 self.take, 32, state=self.state, **options)
        self.left = 0

    def take(self, index):
        return {"X": self.X[index], "teacher_logits": self.logits[index]}, self.y[index]

    def epoch(self, steps=6, **fit_params):
        self.ledger.reset()
        self.guard.reset_epoch()
        self.step.load_epoch(torch.arange(512).view(16, 32))
        self.left = 16
        return [self.next(**fit_params) for _ in range(steps)]

    def next(self, **fit_params):
        self.left -= 1
        return self.step.run(**fit_params)


def test_warm_up_runs_before_each_capture_and_counts_per_capture():
    bench = Bench()
    assert bench.epoch() == [False] * WARMUP_STEPS + [True] * 3
    bench.epoch()
    assert bench.step.n_captures == 1 and bench.step.n_warmup == WARMUP_STEPS
    bench.module.layers[1].weight.requires_grad_(False)
    assert bench.epoch() == [False] * WARMUP_STEPS + [True] * 3
    assert bench.step.n_captures == 2 and bench.step.n_warmup == 2 * WARMUP_STEPS


def test_a_warm_up_across_an_epoch_boundary_goes_on_where_it_was():
    bench = Bench()
    assert bench.epoch(steps=2) == [False, False]  # the optimizer state appears meanwhile
    assert bench.epoch(steps=2) == [False, True]
    assert bench.step.n_captures == 1 and bench.step.n_warmup == WARMUP_STEPS


def test_forward_fit_params_reach_every_replayed_step():
    bench = Bench()
    scale = torch.tensor(2.0)
    bench.epoch(scale=scale)
    bench.epoch(scale=scale)
    assert bench.module.seen == [scale] * 12 and bench.step.n_captures == 1
    other = torch.tensor(3.0)
    bench.epoch(scale=other)  # another object: a new capture
    assert bench.module.seen[-1] is other and bench.step.n_captures == 2


def test_the_step_takes_the_epoch_table_in_order_and_refuses_a_batch_past_the_epoch():
    bench = Bench()
    bench.step.load_epoch(torch.arange(64).view(2, 32))
    bench.step.run()
    expected = bench.module(bench.X[32:64]).detach()  # the second row of the table, at today's weights
    bench.step.run()
    torch.testing.assert_close(bench.step.last_pred, expected)
    assert int(bench.step.cursor) == 2
    with pytest.raises(RuntimeError, match="load the next epoch"):
        bench.step.run()


def test_the_captured_body_is_the_eager_step():
    """Batch for batch, the captured step (simulated) leaves the weights that the eager step does."""
    bench, eager = Bench(), Bench()
    bench.epoch(steps=8)
    for start in range(0, 256, 32):
        eager.optimizer.zero_grad()
        result = batch_loss(eager.step.parts, *eager.take(torch.arange(start, start + 32)), eager.state)
        result.total.backward()
        eager.optimizer.step()
    for p, q in zip(bench.module.parameters(), eager.module.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("change", ["optimizer rebuilt", "optimizer state loaded", "requires_grad",
                                    "betas", "parameter replaced", "buffer replaced", "eval mode"])
def test_every_structural_change_captures_again(change):
    bench = Bench()
    bench.epoch()
    if change == "optimizer rebuilt":
        bench.optimizer = torch.optim.Adam(bench.module.parameters(), lr=0.01)
    elif change == "optimizer state loaded":
        bench.optimizer.load_state_dict(bench.optimizer.state_dict())
    elif change == "requires_grad":
        bench.module.layers[1].bias.requires_grad_(False)
    elif change == "betas":
        bench.optimizer.param_groups[0]["betas"] = (0.8, 0.99)
    elif change == "parameter replaced":
        layer = bench.module.layers[1]
        layer.weight = torch.nn.Parameter(layer.weight.detach().clone())
    elif change == "buffer replaced":
        bench.module.register_buffer("mask", torch.ones(1))
    else:
        bench.module.eval()
    bench.epoch()
    assert bench.step.n_captures == 2


def test_a_rebuilt_optimizer_steps_with_its_own_state():
    bench, twin = Bench(), Bench()
    for b in (bench, twin):
        b.epoch()
    bench.optimizer = torch.optim.Adam(bench.module.parameters(), lr=0.01)
    bench.epoch()
    assert len(bench.optimizer.state) == len(list(bench.module.parameters()))
    twin.optimizer = torch.optim.Adam(twin.module.parameters(), lr=0.01)
    twin.epoch()
    for a, b in zip(bench.module.parameters(), twin.module.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("optimizer, recaptures", [(torch.optim.Adam, False), (torch.optim.AdamW, False),
                                                   (torch.optim.SGD, False), (torch.optim.RMSprop, True)])
def test_a_new_learning_rate_is_copied_into_its_tensor_without_a_capture(optimizer, recaptures):
    bench = Bench(optimizer)
    bench.epoch()
    bench.optimizer.param_groups[0]["lr"] = 0.005  # what a scheduler does, mid-epoch or between epochs
    bench.next()
    bench.epoch()
    assert bench.step.n_captures == (2 if recaptures else 1)
    assert bench.optimizer.param_groups[0]["lr"] == 0.005  # the user's float stays
    if not recaptures:
        assert bench.step._lr_slots[0][1].item() == pytest.approx(0.005)  # float32


def test_new_epoch_values_replay_the_same_graph_and_reach_the_step():
    bench = Bench(loss="dkd")
    loss, state = bench.loss, bench.state
    loss.set_params(warmup=4)
    values = loss.epoch_values(1)
    state.load(values, loss.term_coefficients(values))
    bench.epoch()
    before = bench.step.last_row.clone()
    for epoch in (2, 3, 4):  # the warm-up and a temperature schedule move the scalars
        values = loss.epoch_values(epoch)
        state.load(values, loss.term_coefficients(values))
        bench.epoch()
    assert bench.step.n_captures == 1
    assert float(state.soft_scale) == 1.0 and not torch.equal(before, bench.step.last_row)


def test_gradients_after_a_replay_are_the_batch_gradients():
    bench, eager = Bench(), Bench()
    bench.epoch(steps=5)
    eager.epoch(steps=5)
    # the eager twin: the same step through the plain body
    bench.next()
    eager.optimizer.zero_grad()
    eager.step.body()
    for a, b in zip(bench.module.parameters(), eager.module.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_prepare_capturable_makes_adam_capturable_and_sgd_fused_on_cuda():
    param = torch.nn.Parameter(torch.zeros(2))
    adam, sgd = torch.optim.Adam([param]), torch.optim.SGD([param], lr=0.1, foreach=True)
    assert prepare_capturable(adam, on_cuda=True) is None and adam.param_groups[0]["capturable"]
    assert prepare_capturable(sgd, on_cuda=True) is None
    assert sgd.param_groups[0]["fused"] and not sgd.param_groups[0]["foreach"]
    assert "Adagrad has no capturable mode" in prepare_capturable(torch.optim.Adagrad([param]), True)


@cuda
def test_prepare_capturable_fuses_adam_on_cuda():
    param = torch.nn.Parameter(torch.zeros(2, device="cuda"))
    adamw = torch.optim.AdamW([param])
    assert prepare_capturable(adamw, on_cuda=True) is None
    group = adamw.param_groups[0]
    assert group["fused"] and group["capturable"] and not group["foreach"]


def test_prepare_capturable_leaves_cpu_adam_unfused():
    adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))])
    assert prepare_capturable(adam, on_cuda=True) is None
    assert not adam.param_groups[0]["fused"]


# ----------------------------------------------------------------- blockers
class Data:
    X = {"X": None, "teacher_logits": None}
    sparse = False


def blockers_for(*callbacks, optimizer=None):
    parts = StepParts(forward=None, loss=make_loss("kd", {}), teacher=None, augment=None, augment_mode="add",
                      n_classes=5, device=torch.device("cuda"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fallback, "is_book", lambda X: True)
        return graph_blockers(parts, Data(), [(f"cb{i}", cb) for i, cb in enumerate(callbacks)], None,
                              optimizer=optimizer)


@pytest.mark.parametrize("callback", [
    LRScheduler("StepLR", step_size=1), LRScheduler("ExponentialLR", gamma=0.9, step_every="batch"),
    LRScheduler("CyclicLR", base_lr=0.01, max_lr=0.1, step_every="batch", cycle_momentum=False),
    ProgressBar(), GradientNormClipping(1.0), StudentPruning(0.5), EpochScoring("accuracy"), Freezer("x"),
], ids=lambda cb: type(cb).__name__)
def test_known_safe_callbacks_do_not_block_the_capture(callback):
    assert blockers_for(callback) == []


@pytest.mark.parametrize("callback, reason", [
    (LRScheduler("OneCycleLR", max_lr=0.1, total_steps=10, step_every="batch"), "cycles the momentum"),
    (StudentPruning(0.5, structured=True), "prunes structurally"),
    (EpochScoring("accuracy", on_train=True), "acts on every batch"),
    (type("EveryBatch", (Callback,), {"on_batch_begin": lambda self, net, **kw: None})(),
     "acts on every batch"),
], ids=lambda x: type(x).__name__ if not isinstance(x, str) else "")
def test_callbacks_that_block_the_capture_are_named(callback, reason):
    (found,) = blockers_for(callback)
    assert reason in found and "'cb0'" in found
    assert reason in fallback_warning([found]) and "trainer__step_mode='eager'" in fallback_warning([found])


def test_a_batch_wise_schedule_blocks_an_optimizer_with_its_lr_baked_in():
    param = torch.nn.Parameter(torch.zeros(2))
    schedule = LRScheduler("ExponentialLR", gamma=0.9, step_every="batch")
    assert blockers_for(schedule, optimizer=torch.optim.Adam([param])) == []
    (reason,) = blockers_for(schedule, optimizer=torch.optim.RMSprop([param]))
    assert "baked into the graph" in reason


def test_the_fallback_warning_says_how_to_avoid_each_cause():
    text = fallback_warning(["the teacher runs online (no book)", "the device is not CUDA"])
    assert "book='auto'" in text and "CUDA device" in text and text.count("\n- ") == 2


# ---------------------------------------------------------------- whole fits
class Recorded(CapturedStep):
    """A CapturedStep that keeps a list of its instances (the fit drops its trainer)."""

    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        Recorded.made.append(self)


CLIP = body_clipper([("clip", GradientNormClipping(0.05))])


def fit(digits, step_mode, callbacks=(), patch=None, **options):
    X, y = digits
    params = dict(loss="kd", max_epochs=4, verbose=0, device="cpu", optimizer=torch.optim.Adam, lr=1e-2,
                  batch_size=64, random_state=0, trainer__step_mode=step_mode, callbacks=list(callbacks))
    clf = DistillationClassifier(MLP, teacher=_Teacher(), **{**params, **options})
    Recorded.made = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr("skd.training.trainer.CapturedStep", Recorded)
        if patch is not None:
            patch(monkeypatch)
        clf.fit(X, y)
    clf.captured_steps = Recorded.made
    return clf


class _Teacher(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Linear(64, 10)

    def forward(self, X):
        return self.net(X)


def same_weights(a, b):
    for p, q in zip(a.module_.parameters(), b.module_.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_kd_captures_once_per_fit(digits):
    clf = fit(digits, "graph")
    assert captures(clf) == 1 and clf.train_step_path_ == "graph+eager"


@pytest.mark.parametrize("step_every", ["epoch", "batch"])
def test_an_lr_schedule_runs_with_the_captured_step_and_captures_once(digits, step_every):
    schedule = lambda: LRScheduler("StepLR", step_size=1 if step_every == "epoch" else 10,  # noqa: E731
                                   gamma=0.5, step_every=step_every)
    graph_fit = fit(digits, "graph", [schedule()])
    assert captures(graph_fit) == 1 and graph_fit.eager_reasons_ == []
    same_weights(graph_fit, fit(digits, "eager", [schedule()]))
    assert isinstance(graph_fit.optimizer_.param_groups[0]["lr"], float)  # the user's float stays
    if step_every == "epoch":  # the tensor holds the lr of the last step, recorded by the schedule
        used = graph_fit.history[-1, "event_lr"]
        assert graph_fit.captured_steps[0]._lr_slots[0][1].item() == pytest.approx(used)


def test_a_progress_bar_runs_with_the_captured_step(digits):
    clf = fit(digits, "graph", [ProgressBar()])
    assert clf.eager_reasons_ == [] and captures(clf) == 1


def test_gradient_clipping_runs_inside_the_captured_step(digits):
    def clipped(monkeypatch):  # what the trainer passes: body_clipper(callbacks)
        monkeypatch.setattr("skd.training.trainer.CapturedStep",
                            functools.partial(Recorded, clip=CLIP))

    graph_fit = fit(digits, "graph", [GradientNormClipping(0.05)], patch=clipped)
    assert graph_fit.eager_reasons_ == []
    same_weights(graph_fit, fit(digits, "eager", [GradientNormClipping(0.05)]))


def test_unstructured_pruning_runs_with_the_captured_step_and_captures_per_pruning_step(digits):
    graph_fit = fit(digits, "graph", [StudentPruning(0.5, start=1, end=3)])
    assert graph_fit.eager_reasons_ == []
    prunes = int(np.sum(np.diff([0.0, *graph_fit.history[:, "sparsity"]])[:-1] > 0))
    assert captures(graph_fit) == 1 + prunes
    same_weights(graph_fit, fit(digits, "eager", [StudentPruning(0.5, start=1, end=3)]))


def test_freezing_a_layer_captures_again_and_keeps_it_frozen(digits):
    graph_fit = fit(digits, "graph", [Freezer("layers.1.*", at=2)])
    assert captures(graph_fit) == 2
    same_weights(graph_fit, fit(digits, "eager", [Freezer("layers.1.*", at=2)]))


def test_dkd_with_warm_up_captures_once_per_fit(digits):
    assert captures(fit(digits, "graph", loss="dkd", loss__warmup=3)) == 1


def test_a_temperature_schedule_captures_once_per_fit(digits):
    schedule = TemperatureSchedule(start=8.0, end=2.0)
    assert captures(fit(digits, "graph", [schedule])) == 1


# ---------------------------------------------------------------- CUDA only
CUDA_CASES = {
    "kd": (lambda: [], {}),
    "dkd warm-up": (lambda: [], dict(loss="dkd", loss__warmup=3)),
    "temperature schedule": (lambda: [TemperatureSchedule(start=8.0, end=2.0)], {}),
    "StepLR": (lambda: [LRScheduler("StepLR", step_size=1, gamma=0.5)], {}),
    "batch StepLR": (lambda: [LRScheduler("StepLR", step_size=10, gamma=0.5, step_every="batch")], {}),
    "progress bar": (lambda: [ProgressBar()], {}),
    "pruning": (lambda: [StudentPruning(0.5, start=1, end=1)], {}),
}


@cuda
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("case", list(CUDA_CASES))
def test_cuda_captures_once_per_fit_and_matches_the_eager_step(digits, case, optimizer):
    callbacks, options = CUDA_CASES[case]
    options = {**OPTIMIZERS[optimizer], **options}
    graph_fit = fit(digits, "auto", callbacks(), device="cuda", **options)
    assert graph_fit.train_step_path_ == "graph+eager" and graph_fit.eager_reasons_ == []
    assert captures(graph_fit) == (2 if case == "pruning" else 1)
    eager = fit(digits, "eager", callbacks(), device="cuda", **options)
    assert_same_fit(graph_fit, eager, optimizer)


@cuda
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_cuda_gradient_clipping_runs_inside_the_captured_step(digits, optimizer):
    def clipped(monkeypatch):
        monkeypatch.setattr("skd.training.trainer.CapturedStep",
                            functools.partial(Recorded, clip=CLIP))

    options = OPTIMIZERS[optimizer]
    graph_fit = fit(digits, "auto", [GradientNormClipping(0.05)], patch=clipped, device="cuda", **options)
    assert graph_fit.train_step_path_ == "graph+eager" and captures(graph_fit) == 1
    eager = fit(digits, "eager", [GradientNormClipping(0.05)], device="cuda", **options)
    assert_same_fit(graph_fit, eager, optimizer)


# ------------------------------------------------- a net that overrides a step
class _Penalised(DistillationClassifier):
    """Overrides skorch's get_loss: the eager step goes through it."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        return super().get_loss(y_pred, y_true, X, training) + 0.01 * y_pred.pow(2).mean()


def test_an_overridden_get_loss_refuses_the_captured_step_naming_the_method(digits):
    X, y = digits
    clf = _Penalised(MLP, teacher=_Teacher(), max_epochs=2, verbose=0, device="cpu", batch_size=64,
                     trainer__step_mode="graph")
    with pytest.raises(ValueError, match=r"_Penalised\.get_loss is overridden"):
        clf.fit(X, y)


def test_an_overridden_get_loss_trains_eagerly_through_it_with_auto(digits):
    X, y = digits
    options = dict(teacher=_Teacher(), max_epochs=2, verbose=0, device="cpu", batch_size=64, random_state=0)
    auto = _Penalised(MLP, trainer__step_mode="auto", **options).fit(X, y)
    assert auto.train_step_path_ == "eager"
    assert any("_Penalised.get_loss is overridden" in reason for reason in auto.eager_reasons_)
    same_weights(auto, _Penalised(MLP, trainer__step_mode="eager", **options).fit(X, y))
    # the penalty is in train_loss (what get_loss returned), not in the loss's own terms
    assert auto.history[0, "train_loss"] > auto.history[0, "ce"] + auto.history[0, "kd"] + 1e-4


def test_an_overridden_step_with_a_second_forward_is_refused(digits):
    X, y = digits
    clf = _Penalised(MLP, teacher=_Teacher(), max_epochs=1, verbose=0, device="cpu",
                     augment=lambda X, y: X + 0.01)
    with pytest.raises(ValueError, match=r"_Penalised\.get_loss is overridden, but augment"):
        clf.fit(X, y)
