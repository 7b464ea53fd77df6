"""Feature (hint) distillation: the maths, the hooks, the projectors, the book, the refusals."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit

import skd.hints.plan as hint_plan
from skd import DistillationClassifier, Hint, PrunedTeacher, SmallCNN, WriteBook
from skd.augment import BatchAugment
from skd.book import feature_key
from skd.hints import HintBookWarning, attention_map, attention_transfer_loss, fit_hint_terms, fitnet_loss
from tests.strategies import feature_maps

N_ROWS = 300


# ----------------------------------------------------------------- the maths
def _at_map_numpy(features):
    """Zagoruyko & Komodakis (2017): mean over channels of |A|^2, flattened, divided by its L2 norm."""
    q = (np.abs(features) ** 2).mean(axis=1).reshape(features.shape[0], -1)
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


def _released_at_loss(x, y):
    """szagoruyko/attention-transfer, utils.py, transcribed: at(x) and at_loss(x, y)."""
    def at(t):
        return torch.nn.functional.normalize(t.pow(2).mean(1).view(t.size(0), -1))
    return (at(x) - at(y)).pow(2).mean()


@given(feature_maps)
def test_fitnet_term_is_the_mean_squared_error_and_its_gradient(shape):
    batch, channels, side, _, seed = shape
    generator = torch.Generator().manual_seed(seed)
    projected = torch.randn(batch, channels, side, side, generator=generator, dtype=torch.float64,
                            requires_grad=True)
    teacher = torch.randn(batch, channels, side, side, generator=generator, dtype=torch.float64)
    value = fitnet_loss(projected, teacher)
    expected = np.mean((projected.detach().numpy() - teacher.numpy()) ** 2)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    (grad,) = torch.autograd.grad(value, projected)
    np.testing.assert_allclose(grad.numpy(), 2 * (projected.detach().numpy() - teacher.numpy())
                               / projected.numel(), rtol=1e-12)


@given(feature_maps)
def test_attention_transfer_equals_the_papers_map_and_the_released_loss(shape):
    batch, channels, side, teacher_channels, seed = shape
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, channels, side, side, generator=generator, dtype=torch.float64,
                          requires_grad=True)
    teacher = torch.randn(batch, teacher_channels, side, side, generator=generator, dtype=torch.float64)
    np.testing.assert_allclose(attention_map(student).detach().numpy(),
                               _at_map_numpy(student.detach().numpy()), rtol=1e-10, atol=1e-12)
    value = attention_transfer_loss(student, teacher)
    expected = np.mean((_at_map_numpy(student.detach().numpy()) - _at_map_numpy(teacher.numpy())) ** 2)
    assert value.item() == pytest.approx(expected, rel=1e-9, abs=1e-15)
    released = student.detach().clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(value, student)
    (theirs,) = torch.autograd.grad(_released_at_loss(released, teacher), released)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-9, atol=1e-15)


@given(feature_maps, st.floats(0.01, 100.0))
def test_attention_transfer_is_zero_for_equal_maps_and_blind_to_scale(shape, scale):
    batch, channels, side, _, seed = shape
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, channels, side, side, generator=generator, dtype=torch.float64)
    assert attention_transfer_loss(features, features).item() == 0.0
    assert attention_transfer_loss(features * scale, features).item() == pytest.approx(0.0, abs=1e-20)
    # duplicated channels change nothing: the map is a mean over channels
    assert torch.allclose(attention_map(torch.cat([features, features], 1)), attention_map(features))


def test_attention_transfer_gradient_passes_gradcheck():
    student = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: attention_transfer_loss(s, teacher), (student,))


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def small(digits):
    X, y = digits
    return X[:N_ROWS], y[:N_ROWS]


class CountingCNN(SmallCNN):
    """SmallCNN that counts the samples of its forwards in a class attribute (copies count too:
    PrunedTeacher copies its teacher through its pickle)."""

    samples = 0

    def __init__(self):
        super().__init__(64, 10, channels=(8, 16), hidden=32)

    def forward(self, X):
        type(self).samples += X.shape[0]
        return super().forward(X)


@pytest.fixture(scope="module")
def cnn(digits):
    """A small CNN teacher trained for 40 full-batch Adam steps on digits."""
    X, y = digits
    torch.manual_seed(0)
    teacher = CountingCNN()
    opt = torch.optim.Adam(teacher.parameters(), 1e-2)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(teacher(torch.as_tensor(X)), torch.as_tensor(y)).backward()
        opt.step()
    return teacher.eval()


CONV_HINTS = [Hint("features.5", "features.5", kind="fitnet"), Hint("features.2", "features.2", kind="at",
                                                                      weight=50.0)]


@pytest.fixture
def cnn_student(cnn):
    def make(**kwargs):
        params = dict(teacher=cnn, module__channels=(4, 8), module__hidden=16, hints=CONV_HINTS,
                      max_epochs=2, lr=1e-2, batch_size=64, verbose=0, device="cpu", random_state=0)
        params.update(kwargs)
        return DistillationClassifier(SmallCNN, **params)
    return make


def _vector_student(make_student, **kwargs):
    return make_student(module__hidden_units=(16,), hints=[Hint("net.0", "layers.1")], **kwargs)


# --------------------------------------------------------------- in a fit
def test_hint_terms_are_in_history_and_equal_a_transcription(cnn, cnn_student, small):
    X, y = small
    clf = cnn_student().fit(X, y)
    row = clf.history[-1]
    assert {"ce", "kd", "fitnet", "at", "train_unscaled_loss"} <= set(row)
    assert row["train_loss"] == pytest.approx(row["ce"] + row["kd"] + row["fitnet"] + row["at"], rel=1e-5)
    # the terms of a batch, as the step computes them, against FitNets and AT written out by hand
    student, projector = clf.module_, clf.projectors_["fitnet"]
    xb = torch.as_tensor(X[:32]).reshape(-1, 1, 8, 8)
    with torch.no_grad():
        t_conv, t_pool = cnn.features[:3](xb), cnn.features(xb)
        s_conv, s_pool = student.features[:3](xb), student.features(xb)
        manual_fitnet = ((projector(s_pool) - t_pool) ** 2).mean()
        manual_at = np.mean((_at_map_numpy(s_conv.numpy()) - _at_map_numpy(t_conv.numpy())) ** 2)
    hints, _ = fit_hint_terms(clf.hint_plan_, student, clf.projectors_, clf.teacher_, torch.device("cpu"))
    try:
        with torch.no_grad():
            student(torch.as_tensor(X[:32]))
            book = {"X": X[:32], "teacher_logits": np.zeros((32, 10), np.float32),
                    feature_key("features.5"): t_pool.numpy(), feature_key("features.2"): t_conv.numpy()}
            _, outputs = hints.teacher_outputs(book)
            terms = hints.terms(outputs)
    finally:
        hints.close()
    assert terms["fitnet"].item() == pytest.approx(manual_fitnet.item(), rel=1e-5)
    assert terms["at"].item() == pytest.approx(50.0 * manual_at, rel=1e-5)


def test_the_projector_is_trained_pickled_and_dropped_at_export(cnn_student, small, tmp_path):
    X, y = small
    clf = cnn_student(max_epochs=1)
    clf.fit(X, y)
    trained = {id(p) for group in clf.optimizer_.param_groups for p in group["params"]}
    assert all(id(p) in trained for p in clf.projectors_.parameters())
    first = clf.projectors_["fitnet"].weight.detach().clone()
    clf.partial_fit(X, y)
    assert not torch.equal(first, clf.projectors_["fitnet"].weight)  # the optimizer moves it
    loaded = pickle.loads(pickle.dumps(clf))
    assert torch.equal(loaded.projectors_["fitnet"].weight, clf.projectors_["fitnet"].weight)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    lean = clf.export_student()
    assert lean.projectors_ is None and lean.teacher_ is None
    np.testing.assert_array_equal(lean.predict(X), clf.predict(X))
    path = tmp_path / "student.safetensors"
    clf.save_student(path)
    assert set(load_file(path)) == set(clf.module_.state_dict())
    assert clf.module_._forward_hooks == {} and clf.teacher_.hooked_module()._forward_hooks == {}


def test_book_and_online_hints_train_the_same_student(cnn_student, small):
    X, y = small
    book = cnn_student(hint_book="memory").fit(X, y)
    online = cnn_student(hint_book="online").fit(X, y)
    for a, b in zip(book.module_.parameters(), online.module_.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert book.history[-1, "fitnet"] == pytest.approx(online.history[-1, "fitnet"], rel=1e-5)


def test_features_are_written_once_per_sample_and_reused(make_teacher, make_student, small):
    X, y = small
    teacher = make_teacher(hidden=32)
    _vector_student(make_student, teacher=teacher, max_epochs=4).fit(X, y)
    assert teacher.samples == len(X) + 1  # the book's pass, and one row to learn the layer's shape
    online = make_teacher(hidden=32)
    _vector_student(make_student, teacher=online, max_epochs=4, hint_book="online").fit(X, y)
    assert online.samples == 4 * len(X) + len(X) + 1  # the logits' book, then the features every batch


def test_book_dir_keeps_the_features_across_fits(make_teacher, make_student, small, tmp_path):
    X, y = small
    teacher = make_teacher(hidden=32)
    first = _vector_student(make_student, teacher=teacher, book_dir=tmp_path).fit(X, y)
    written = teacher.samples
    assert any(".features.net.0" in path.name for path in tmp_path.iterdir())
    again = _vector_student(make_student, teacher=teacher, book_dir=tmp_path).fit(X, y)
    assert teacher.samples - written == 1 + 16  # the shape probe and the cache key's probe, no pass
    for a, b in zip(first.module_.parameters(), again.module_.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_grid_search_tunes_hints_and_clones_them(make_teacher, make_student, small):
    X, y = small
    student = _vector_student(make_student, teacher=make_teacher(hidden=32), max_epochs=1)
    grid = {"hints": [[Hint("net.0", "layers.1", weight=w)] for w in (0.0, 5.0)],
            "hint_book": ["memory", "online"]}
    search = GridSearchCV(student, grid, cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    copy = clone(student)
    assert copy.hints[0] is not student.hints[0]
    assert copy.hints[0].get_params() == student.hints[0].get_params()


def test_pruned_teacher_writes_features_in_its_book(cnn, small):
    X, y = small
    before = cnn.samples
    book = PrunedTeacher(cnn, amount=0.2, hint_layers=["features.5", "features.2"]).fit_transform(X, y)
    assert book[feature_key("features.5")].shape == (len(X), 16, 2, 2)
    assert cnn.samples - before == 2 * len(X)  # one pass of the teacher and its pruned copy: logits, features
    pipe = make_pipeline(PrunedTeacher(cnn, amount=0.2, hint_layers=["features.5", "features.2"]),
                         DistillationClassifier(SmallCNN, module__channels=(4, 8), module__hidden=16,
                                                hints=CONV_HINTS, max_epochs=2, verbose=0, device="cpu"))
    before = cnn.samples
    pipe.fit(X, y)
    assert cnn.samples - before == 2 * len(X)  # the book's one pass; the student read everything from it
    assert "fitnet" in pipe[-1].history[-1]
    assert WriteBook(cnn, hint_layers=["features.2"]).fit_transform(X, y)[feature_key("features.2")].shape \
        == (len(X), 8, 4, 4)


def test_validation_rows_get_hint_terms_from_the_split_book(cnn_student, small):
    X, y = small
    clf = cnn_student(train_split=ValidSplit(4)).fit(X, y)
    assert {"valid_fitnet", "valid_at"} <= set(clf.history[-1])


def test_hints_run_eagerly_and_say_why(cnn_student, small):
    X, y = small
    clf = cnn_student(max_epochs=1).fit(X, y)
    assert clf.train_step_path_ == "eager"
    with pytest.raises(ValueError, match="hints"):
        cnn_student(max_epochs=1, trainer__step_mode="graph").fit(X, y)


def test_a_large_book_goes_online_with_a_warning(make_teacher, make_student, small, monkeypatch):
    X, y = small
    monkeypatch.setattr(hint_plan, "HINT_BOOK_LIMIT", 1000)
    teacher = make_teacher(hidden=32)
    with pytest.warns(HintBookWarning, match="online"):
        clf = _vector_student(make_student, teacher=teacher, max_epochs=2).fit(X, y)
    assert clf.hint_plan_.online and teacher.samples == 3 * len(X) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", HintBookWarning)
        _vector_student(make_student, teacher=make_teacher(hidden=32), max_epochs=1,
                        hint_book="memory").fit(X, y)


def test_replace_augmentation_takes_features_online(cnn_student, small):
    X, y = small
    clf = cnn_student(max_epochs=1, augment=BatchAugment(lambda x: x + 0.01), augment_mode="replace")
    clf.fit(X, y)
    assert "fitnet" in clf.history[-1]


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("teacher", [LogisticRegression(max_iter=200), lambda X: X[:, :10]],
                         ids=["scikit-learn", "callable"])
def test_a_teacher_without_modules_is_refused(teacher, make_student, small):
    X, y = small
    with pytest.raises(ValueError, match="no torch modules"):
        _vector_student(make_student, teacher=teacher).fit(X, y)


def test_an_unknown_layer_lists_the_close_names(cnn_student, small):
    X, y = small
    with pytest.raises(ValueError, match=r"hints\[0\].teacher_layer='feature.5'.*'features.5'"):
        cnn_student(hints=[Hint("feature.5", "features.5")]).fit(X, y)
    with pytest.raises(ValueError, match=r"hints\[0\].student_layer='head.9'.*'head"):
        cnn_student(hints=[Hint("features.5", "head.9")]).fit(X, y)


def test_shapes_no_projector_maps_are_refused(cnn_student, small):
    X, y = small
    with pytest.raises(ValueError, match=r"no projector maps .*\(4, 4, 4\).*\(16, 2, 2\)"):
        cnn_student(hints=[Hint("features.5", "features.2")]).fit(X, y)
    with pytest.raises(ValueError, match="attention transfer compares spatial maps"):
        cnn_student(hints=[Hint("head.1", "head.1", kind="at")]).fit(X, y)
    with pytest.raises(ValueError, match="attention transfer compares spatial maps"):
        cnn_student(hints=[Hint("features.5", "features.2", kind="at")]).fit(X, y)


def test_add_mode_augmentation_is_refused(cnn_student, small):
    X, y = small
    with pytest.raises(ValueError, match="augment_mode='add'"):
        cnn_student(augment=BatchAugment(lambda x: x), augment_mode="add").fit(X, y)


@pytest.mark.parametrize(("hints", "message"), [
    ([Hint("a", "b", kind="crd")], r"hints\[0\].kind must be one of"),
    ([Hint("a", "b", weight=-1)], r"hints\[0\].weight must be a number >= 0"),
    ([Hint("a", "")], r"hints\[0\].student_layer must be a module name"),
    ([Hint("a", "b", name="my term")], r"hints\[0\].name must be"),
    ([Hint("a", "b", name="kd")], r"hints\[0\] names its term 'kd'"),
    ([Hint("a", "b", name="x"), Hint("a", "b", kind="at", name="x")], r"hints\[1\] names its term 'x'"),
    (["net.0"], "hints must be None, a skd.Hint or a list of them"),
])
def test_bad_hints_are_refused_naming_the_hint(hints, message, make_teacher, make_student, small):
    X, y = small
    with pytest.raises((ValueError, TypeError), match=message):
        make_student(teacher=make_teacher(hidden=32), hints=hints).fit(X, y)


def test_write_book_writes_the_hinted_layers_and_a_book_fit_reads_them(make_teacher, make_student, small):
    X, y = small
    teacher = make_teacher(hidden=32)
    clf = _vector_student(make_student, teacher=teacher).fit(X, y)
    book = clf.write_book(X)
    assert book[feature_key("net.0")].shape == (len(X), 32)
    before = teacher.samples
    again = _vector_student(make_student, teacher=None).fit(book, y)
    assert teacher.samples == before and "fitnet" in again.history[-1]


def test_a_book_without_the_features_is_refused(make_teacher, make_student, small):
    X, y = small
    book = WriteBook(make_teacher(hidden=32)).fit_transform(X, y)
    with pytest.raises(ValueError, match=r"X is a book without them.*hint_layers=\['net.0'\]"):
        _vector_student(make_student, teacher=None).fit(book, y)
    written = WriteBook(make_teacher(hidden=32), hint_layers=["net.0"]).fit_transform(X, y)
    clf = _vector_student(make_student, teacher=None).fit(written, y)
    assert "fitnet" in clf.history[-1]


def test_bad_hint_book_and_hint_layers_are_refused(make_teacher, make_student, small):
    X, y = small
    with pytest.raises(ValueError, match="hint_book"):
        _vector_student(make_student, teacher=make_teacher(hidden=32), hint_book="disk").fit(X, y)
    with pytest.raises(ValueError, match=r"hint_layers=\['a'\] needs a teacher with torch modules"):
        WriteBook(LogisticRegression(max_iter=200), hint_layers=["a"]).fit_transform(X, y)


def test_a_skorch_teacher_that_batches_its_input_gives_every_rows_features(cnn, small):
    X, y = small
    net = DistillationClassifier(SmallCNN, loss="ce", module__channels=(8, 16), module__hidden=32,
                                 max_epochs=5, lr=1e-2, batch_size=64, verbose=0, device="cpu",
                                 random_state=0)
    net.fit(X, y)  # its forward runs batches of 64: the hooks fire several times per call
    book = WriteBook(net, hint_layers=["features.5"]).fit_transform(X, y)
    assert book[feature_key("features.5")].shape == (len(X), 16, 2, 2)
    with torch.no_grad():
        expected = net.module_.features(torch.as_tensor(X).reshape(-1, 1, 8, 8))
    np.testing.assert_allclose(book[feature_key("features.5")], expected.numpy(), rtol=1e-5, atol=1e-6)
    for hint_book in ("memory", "online"):
        clf = DistillationClassifier(SmallCNN, teacher=net, module__channels=(4, 8), module__hidden=16,
                                     hints=[Hint("features.5", "features.5")], hint_book=hint_book,
                                     batch_size=100, max_epochs=1, verbose=0, device="cpu").fit(X, y)
        assert np.isfinite(clf.history[-1, "fitnet"])


class PoisonedStudent(torch.nn.Module):
    """A student whose logits are NaN on a batch holding a row marked 42 in its first feature."""

    def __init__(self, n_features=64, n_classes=10):
        super().__init__()
        self.hidden = torch.nn.Linear(n_features, 16)
        self.out = torch.nn.Linear(16, n_classes)

    def forward(self, X):
        logits = self.out(torch.relu(self.hidden(X)))
        return torch.where((X[:, :1] == 42).any(), torch.full_like(logits, float("nan")), logits)


class KeepProjector(Callback):
    """Keeps the projector's weight before and after the first training batch."""

    def on_train_begin(self, net, **kwargs):
        self.batches = 0

    def on_batch_begin(self, net, training=False, **kwargs):
        if training and self.batches == 0:
            self.weight = net.projectors_["fitnet"].weight.detach().clone()

    def on_batch_end(self, net, training=False, **kwargs):
        if training and self.batches == 0:
            self.after = net.projectors_["fitnet"].weight.detach().clone()
        self.batches += bool(training)


def test_a_skipped_batch_leaves_the_projector_as_it_was(make_teacher, small):
    X, y = small
    X = X.copy()
    X[7, 0] = 42.0
    keep = KeepProjector()
    clf = DistillationClassifier(PoisonedStudent, teacher=make_teacher(hidden=32),
                                 hints=[Hint("net.0", "hidden")], trainer__on_nonfinite="skip",
                                 trainer__check_every=64, callbacks=[("keep", keep)], max_epochs=1,
                                 batch_size=len(X) // 2, iterator_train__shuffle=False, verbose=0,
                                 device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    assert clf.history[-1, "skipped_batches"] == 1
    # the first batch (row 7 is in it) was skipped: the guard undid its update of the projector too
    assert torch.equal(keep.after, keep.weight)
