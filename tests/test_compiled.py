"""The compiled loss (skd/losses/compiled.py): the same terms and gradients, one compilation per class,
a warning (never a silent fallback) when a loss cannot be compiled, and the trainer's option.

The fast tests trace through Dynamo and AOTAutograd with the ``aot_eager`` backend (the graph skd compiles,
run by eager kernels: seconds); the same checks with TorchInductor's code, 1.5-4 minutes per loss on a
busy 2-core CPU, are marked slow."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from skd import MLP, DistillationClassifier
from skd.losses import DistillationLoss, available_losses, make_loss
from skd.losses import compiled as compiled_module
from skd.losses.compiled import CompileFallbackWarning, _compiled, loss_terms, should_compile

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
#: The losses whose TorchInductor code is checked against the eager loss (slow); every registered loss is
#: checked with the "aot_eager" backend.
COMPILED = ["kd", "dkd", "cakd", "dist", "r2kd"]


@pytest.fixture
def dynamo_only(monkeypatch):
    """skd's compiled call traced by Dynamo and run by eager torch (no AOTAutograd): a graph break raises."""
    monkeypatch.setattr(compiled_module, "_compile",
                        lambda function: torch.compile(function, fullgraph=True, backend="eager"))
    monkeypatch.setattr(compiled_module, "_COMPILED", {})


@pytest.fixture
def aot_eager(monkeypatch):
    """skd's compiled call with the ``aot_eager`` backend, in a cache of its own for the test."""
    monkeypatch.setattr(compiled_module, "_compile",
                        lambda function: torch.compile(function, fullgraph=True, backend="aot_eager"))
    monkeypatch.setattr(compiled_module, "_COMPILED", {})


def batch(n_classes=7, rows=48, seed=0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(rows, n_classes, generator=generator).to(device).requires_grad_()
    teacher = (torch.randn(rows, n_classes, generator=generator) * 3).to(device)
    y = torch.randint(0, n_classes, (rows,), generator=generator).to(device)
    y[::5] = -1  # unlabelled rows: the masked CE path
    return student, teacher, y


def terms_and_grad(loss, student, teacher, y, compiled, state=None):
    student = student.detach().clone().requires_grad_()
    state = state or loss.epoch_state(10**9, device=student.device)
    teacher = teacher if loss.capabilities.teacher else None
    two_passes = loss.capabilities.student_passes == 2
    extra = {"second": student.detach() + 0.1} if two_passes else {}
    terms = loss_terms(loss, student, teacher, y, state, compiled, **extra)
    sum(terms.values()).backward()
    return {name: value.detach() for name, value in terms.items()}, student.grad


def check_compiled_equals_eager(name):
    loss = make_loss(name, {"warmup": 0} if name in ("dkd", "cakd") else {})
    student, teacher, y = batch()
    for rows in (48, 31):  # a ragged batch reuses the graph (the batch dimension is dynamic)
        compiled = terms_and_grad(loss, student[:rows], teacher[:rows], y[:rows], compiled=True)
        reference = terms_and_grad(loss, student[:rows], teacher[:rows], y[:rows], compiled=False)
        assert list(compiled[0]) == list(reference[0])
        for name_ in compiled[0]:
            torch.testing.assert_close(compiled[0][name_], reference[0][name_], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compiled[1], reference[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", [name for name in available_losses()
                                  if make_loss(name, {}).capabilities.compilable])
def test_every_compilable_loss_traces_as_one_graph(name, dynamo_only):
    """What the compiled call needs: no graph break (``fullgraph=True`` refuses one), the eager terms."""
    check_compiled_equals_eager(name)
    assert _compiled(type(make_loss(name, {}))).failure is None  # it ran compiled, not eagerly


@pytest.mark.parametrize("name", ["kd", "dist"])
def test_the_compiled_loss_gives_the_eager_terms_and_gradients(name, aot_eager):
    """The forward and backward graphs of AOTAutograd, as TorchInductor receives them."""
    check_compiled_equals_eager(name)
    assert _compiled(type(make_loss(name, {}))).failure is None


@pytest.mark.slow
@pytest.mark.parametrize("name", COMPILED)
def test_the_inductor_compiled_loss_gives_the_eager_terms_and_gradients(name):
    check_compiled_equals_eager(name)


def fit(loss="kd", compile_loss=True, **params):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 12)).astype(np.float32)
    y = rng.integers(0, 4, 300)
    logits = (rng.standard_normal((300, 4)) * 3).astype(np.float32)
    net = DistillationClassifier(MLP, loss=loss, max_epochs=3, batch_size=64, verbose=0, train_split=None,
                                 random_state=0, trainer__compile_loss=compile_loss, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random teacher scores near chance
        return net.fit({"X": X, "teacher_logits": logits}, y)


def test_a_compiled_fit_equals_the_eager_fit(aot_eager):
    eager, compiled = fit(compile_loss=False), fit(compile_loss=True)
    np.testing.assert_allclose(compiled.history[:, "train_loss"], eager.history[:, "train_loss"], rtol=1e-5)
    for a, b in zip(compiled.module_.parameters(), eager.module_.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_fits_with_other_hyper_parameters_and_a_warm_up_reuse_the_one_graph(aot_eager):
    fit("dkd", loss__warmup=2)  # compiled (or found compiled): what follows must add no graph
    before = counters["stats"]["unique_graphs"]
    fit("dkd", loss__warmup=3, loss__alpha=2.0, loss__beta=4.0, loss__temperature=2.0)
    assert counters["stats"]["unique_graphs"] == before


def test_compiling_is_asked_for_and_the_choice_is_not_pickled(aot_eager):
    assert fit("kd", compile_loss=False).trainer_.parts.compiled is False
    assert DistillationClassifier(MLP).get_params()["trainer"]().compile_loss is False  # the default
    net = fit("kd", compile_loss=True)
    assert net.trainer_.parts.compiled is True
    restored = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(restored.predict_proba(np.zeros((3, 12), np.float32)),
                                  net.predict_proba(np.zeros((3, 12), np.float32)))


def test_validation_runs_the_loss_eagerly():
    loss = make_loss("kd", {})
    student, teacher, y = batch(rows=16)
    before = counters["stats"]["calls_captured"]
    with torch.no_grad():
        loss_terms(loss, student, teacher, y, loss.epoch_state(1), compiled=True)
    assert counters["stats"]["calls_captured"] == before


def test_a_bad_compile_loss_option_names_the_parameter():
    with pytest.raises(ValueError, match="trainer__compile_loss of Trainer must be one of True, False"):
        fit(compile_loss="yes")


class HostReadKD(DistillationLoss):
    """KD that reads a value back to the host: a graph break, so it cannot be compiled whole."""

    terms = ("ce", "kd")

    def __init__(self, temperature=4.0):
        self.temperature = temperature

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        scale = max(teacher_logits.abs().amax(1).tolist())  # a host read Dynamo cannot trace: a graph break
        kl = torch.nn.functional.kl_div(torch.log_softmax(student_logits / temperature, 1),
                                        torch.log_softmax(teacher_logits / temperature, 1),
                                        log_target=True, reduction="batchmean")
        return {"kd": kl * (scale > 0)}


class FloatReadKD(HostReadKD):
    """The same read through ``float()``: torch 2.14 traces it into a graph whose compiled backward fails
    (a NameError at its first run), which the first call's probe finds before the step's backward."""

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        scale = float(teacher_logits.abs().max())
        kl = torch.nn.functional.kl_div(torch.log_softmax(student_logits / temperature, 1),
                                        torch.log_softmax(teacher_logits / temperature, 1),
                                        log_target=True, reduction="batchmean")
        return {"kd": kl * (scale > 0)}


@pytest.mark.parametrize("cls", [HostReadKD, pytest.param(FloatReadKD, marks=pytest.mark.slow)],
                         ids=lambda cls: cls.__name__)
def test_a_loss_that_cannot_be_compiled_warns_once_and_runs_eagerly(cls, request):
    if cls is HostReadKD:  # a graph break: refused by any backend (FloatReadKD: Inductor's backward fails)
        request.getfixturevalue("aot_eager")
    loss = cls().initialize()
    student, teacher, y = batch()
    message = rf"{cls.__name__} could not be compiled.*compile_loss=False"
    with pytest.warns(CompileFallbackWarning, match=message):
        terms, grad = terms_and_grad(loss, student, teacher, y, compiled=True)
    eager_terms, eager_grad = terms_and_grad(loss, student, teacher, y, compiled=False)
    torch.testing.assert_close(grad, eager_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)  # once per class and process
        terms_and_grad(loss, student, teacher, y, compiled=True)


class Picky(DistillationLoss):
    """KD that refuses a batch of fewer than 8 rows, with its own error."""

    terms = ("ce", "kd")

    def __init__(self, temperature=4.0):
        self.temperature = temperature

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        if student_logits.shape[0] < 8:
            raise ValueError("Picky needs batches of at least 8 rows")
        return {"kd": (student_logits - teacher_logits).pow(2).mean()}


def test_an_error_of_the_loss_itself_is_raised_as_without_compiling():
    loss = Picky().initialize()
    student, teacher, y = batch(rows=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        with pytest.raises(ValueError, match="at least 8 rows"):
            loss_terms(loss, student, teacher, y, loss.epoch_state(1), compiled=True)


def test_a_loss_that_is_not_compilable_is_not_compiled_and_says_so():
    assert should_compile(make_loss("kd", {}), True) and should_compile(Picky().initialize(), True)
    assert not should_compile(make_loss("kd", {}), False)
    with pytest.warns(CompileFallbackWarning, match="CTKD cannot be compiled"):
        assert not should_compile(make_loss("ctkd", {}), True)  # its call steps its own optimizer
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        assert not should_compile(make_loss("ctkd", {}), False)


def test_each_loss_class_has_its_own_compiled_code():
    kd, dist = _compiled(type(make_loss("kd", {}))).call, _compiled(type(make_loss("dist", {}))).call
    assert kd is _compiled(type(make_loss("kd", {}))).call
    assert kd is not dist


@cuda
def test_the_captured_cuda_step_replays_the_compiled_loss_with_one_capture():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2048, 20)).astype(np.float32)
    y = rng.integers(0, 10, 2048)
    logits = (rng.standard_normal((2048, 10)) * 3).astype(np.float32)
    runs = {}
    for compile_loss in (False, True):
        net = DistillationClassifier(MLP, loss="dist", max_epochs=3, batch_size=256, verbose=0,
                                     train_split=None, random_state=0, device="cuda",
                                     trainer__compile_loss=compile_loss)
        runs[compile_loss] = net.fit({"X": X, "teacher_logits": logits}, y)
    assert runs[True].trainer_.parts.compiled and runs[True].train_step_path_ == "graph+eager"
    assert runs[True].n_captures_ == 1
    np.testing.assert_allclose(runs[True].history[:, "train_loss"], runs[False].history[:, "train_loss"],
                               rtol=1e-4)
