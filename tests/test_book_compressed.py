"""The compressed book (top-k classes + a tail) written, checked, batched and read by a fit."""

import numpy as np
import pytest
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.helper import SliceDict

from skd import MLP, DistillationClassifier, OnFeatures, WriteBook
from skd.book import check_book, compress_book, compress_chunks, is_book
from skd.book.compressed import (
    BOOK_TAIL,
    BOOK_TEMPERATURE,
    BOOK_TOPK,
    BOOK_TOPK_INDEX,
    COMPRESSED_KEYS,
    is_compressed_book,
    topk_book_of,
)
from skd.losses import available_losses, make_loss
from skd.losses.functional import compress_teacher, topk_kd_divergence
from skd.teachers import Teacher


@pytest.fixture(scope="module")
def digits_book(digits):
    X, y = digits
    teacher = LogisticRegression(max_iter=1000).fit(X, y)
    return X, y, teacher, {"X": X, "teacher_logits": teacher.decision_function(X).astype(np.float32)}


def fit(X, y, **params):
    params = {"max_epochs": 3, "random_state": 0, "verbose": 0, "train_split": None, **params}
    return DistillationClassifier(MLP, **params).fit(X, y)


def test_compress_book_keeps_the_top_k_the_tail_and_the_temperature(digits_book):
    *_, book = digits_book
    compressed = compress_book(book, k=3, temperature=4.0)
    assert is_compressed_book(compressed) and is_book(compressed) and "teacher_logits" not in compressed
    assert compressed[BOOK_TOPK].shape == (len(book["X"]), 3)
    assert compressed[BOOK_TOPK_INDEX].dtype == np.int16
    reference = compress_teacher(torch.from_numpy(book["teacher_logits"]), 3, 4.0)
    np.testing.assert_array_equal(compressed[BOOK_TOPK_INDEX], reference.indices.numpy())
    np.testing.assert_allclose(compressed[BOOK_TOPK], reference.log_probs.numpy())
    np.testing.assert_allclose(compressed[BOOK_TAIL], reference.log_tail.numpy())
    assert (compressed[BOOK_TEMPERATURE] == 4.0).all()
    # top-k and tail hold all the mass
    mass = np.exp(compressed[BOOK_TOPK]).sum(1) + np.exp(compressed[BOOK_TAIL])
    np.testing.assert_allclose(mass, 1.0, rtol=1e-5)


def test_a_batch_of_a_compressed_book_gives_the_loss_what_compressing_gives(digits_book):
    *_, book = digits_book
    compressed = compress_book(book, k=4, temperature=2.0)
    rows = np.arange(10, 42)
    batch = {key: value[rows] for key, value in compressed.items()}
    from_book = topk_book_of(batch, 10, "cpu")
    direct = compress_teacher(torch.from_numpy(book["teacher_logits"][rows]), 4, 2.0)
    student = torch.randn(len(rows), 10)
    expected = topk_kd_divergence(student, direct, 2.0)
    assert torch.allclose(topk_kd_divergence(student, from_book, 2.0), expected)


def test_kd_topk_writes_a_compressed_book_and_trains(digits):
    X, y = digits
    teacher = FrozenEstimator(LogisticRegression(max_iter=1000).fit(X, y))
    clf = fit(X, y, teacher=teacher, loss="kd_topk", loss__k=3, max_epochs=15)
    assert clf.teacher_score_ > 0.95  # scored from the compressed book's top class
    assert clf.score(X, y) > 0.85
    assert np.isfinite(clf.history[:, "kd_topk"]).all()


def test_the_fit_compresses_batch_by_batch_without_the_full_logits(digits, monkeypatch):
    X, y = digits
    teacher = FrozenEstimator(LogisticRegression(max_iter=1000).fit(X, y))
    full = DistillationClassifier(MLP, teacher=teacher).fit(X[:10], y[:10]).write_book(X)  # a set-up teacher
    expected = fit(compress_book(full, 3, 2.0), y, loss="kd_topk", loss__k=3, loss__temperature=2.0)

    def refuse(*args, **kwargs):
        raise AssertionError("the full logits were written")

    monkeypatch.setattr(Teacher, "book_logits", refuse)
    streamed = fit(X, y, teacher=teacher, loss="kd_topk", loss__k=3, loss__temperature=2.0)
    losses = streamed.history[:, "train_loss"]
    np.testing.assert_allclose(losses, expected.history[:, "train_loss"], rtol=1e-6)
    assert streamed.teacher_score_ == expected.teacher_score_


def test_compress_chunks_equals_compress_book(digits_book):
    *_, book = digits_book
    chunks = torch.from_numpy(book["teacher_logits"]).split(100)
    by_chunks, whole = compress_chunks(chunks, 4, 3.0), compress_book(book, 4, 3.0)
    for key in COMPRESSED_KEYS:
        np.testing.assert_array_equal(by_chunks[key], whole[key])


@pytest.mark.parametrize("step_mode", ["eager", "graph"])
def test_a_compressed_book_trains_as_the_full_book_does_with_kd_topk(digits_book, step_mode):
    # online, kd_topk compresses the teacher's logits per batch at its temperature; a book
    # compressed at that temperature gives the same loss, so the same weights
    X, y, teacher, book = digits_book
    params = {"loss": "kd_topk", "loss__k": 3, "loss__temperature": 2.0}
    from_full = fit(X, y, teacher=FrozenEstimator(teacher), book="online", **params)
    from_compressed = fit(compress_book(book, 3, 2.0), y, trainer__step_mode=step_mode, **params)
    assert from_compressed.train_step_path_.startswith(step_mode)
    np.testing.assert_allclose(from_full.history[:, "train_loss"], from_compressed.history[:, "train_loss"],
                               rtol=1e-5)
    for a, b in zip(from_full.module_.parameters(), from_compressed.module_.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.filterwarnings("ignore:The student scores")
@pytest.mark.parametrize("loss", ["kd", "dkd", "cakd", "dist", "r2kd", "wttm", "nkd", "ctkd", "conskd"])
def test_every_other_loss_refuses_a_compressed_book_before_anything_changes(digits_book, loss):
    X, y, _, book = digits_book
    clf = fit(book, y, max_epochs=1)
    before = [p.detach().clone() for p in clf.module_.parameters()]
    with pytest.raises(ValueError, match=rf"compressed book.*{type(make_loss(loss, {})).__name__}.*kd_topk"):
        clf.set_params(loss=loss).fit(compress_book(book, 3), y)
    assert all(torch.equal(a, b) for a, b in zip(before, clf.module_.parameters(), strict=True))


def test_the_refusal_covers_every_registered_loss_that_needs_a_teacher():
    takers = {name for name in available_losses() if make_loss(name, {}).capabilities.compressed_book}
    assert takers == {"kd_topk"}


def test_a_loss_called_with_a_compressed_book_refuses_it():
    book = compress_teacher(torch.randn(4, 5), 2)
    with pytest.raises(TypeError, match="compressed book"):
        make_loss("dkd", {})(torch.randn(4, 5), book, torch.tensor([0, 1, 2, 3]))


def test_a_loss_without_a_teacher_ignores_a_compressed_book(digits_book):
    X, y, _, book = digits_book
    assert fit(compress_book(book, 2), y, loss="ce").score(X, y) > 0.5


def bad(book, key, value):
    return {**book, key: value}


@pytest.mark.parametrize(("change", "match"), [
    (lambda b: {k: v for k, v in b.items() if k != BOOK_TAIL}, "lacks"),
    (lambda b: bad(b, BOOK_TOPK, b[BOOK_TOPK][:-1]), "teacher_topk.*shape"),
    (lambda b: bad(b, BOOK_TOPK_INDEX, b[BOOK_TOPK_INDEX][:, :2]), "teacher_topk_index.*shape"),
    (lambda b: bad(b, BOOK_TOPK_INDEX, b[BOOK_TOPK_INDEX] + 10), r"class indices in \[0, 10\)"),
    (lambda b: bad(b, BOOK_TOPK, -b[BOOK_TOPK] + 1), "log-probabilities"),
    (lambda b: bad(b, BOOK_TAIL, np.full_like(b[BOOK_TAIL], np.nan)), "log-probabilities"),
    (lambda b: bad(b, BOOK_TEMPERATURE, np.arange(len(b[BOOK_TEMPERATURE]), dtype=np.float32) + 1),
     "one positive temperature"),
])
def test_a_broken_compressed_book_gets_an_error_naming_its_key(digits_book, change, match):
    X, y, _, book = digits_book
    with pytest.raises(ValueError, match=match):
        fit(change(compress_book(book, 3)), y, loss="kd_topk", loss__k=3)


def test_a_book_with_both_forms_is_refused(digits_book):
    X, y, _, book = digits_book
    with pytest.raises(ValueError, match="both 'teacher_logits'"):
        fit({**compress_book(book, 3), "teacher_logits": book["teacher_logits"]}, y, loss="kd_topk")


def test_check_book_returns_compact_dtypes(digits_book):
    *_, book = digits_book
    compressed = compress_book(book, 3)
    wide = {**compressed, BOOK_TOPK: compressed[BOOK_TOPK].astype(np.float64),
            BOOK_TOPK_INDEX: compressed[BOOK_TOPK_INDEX].astype(np.int64)}
    checked = check_book(wide, 10, make_loss("kd_topk", {"k": 3}))
    assert checked[BOOK_TOPK].dtype == np.float32 and checked[BOOK_TOPK_INDEX].dtype == np.int16


@pytest.mark.parametrize("k", [0, 11, 2.5])
def test_compress_book_refuses_a_bad_k(digits_book, k):
    with pytest.raises(ValueError, match="k must be an integer"):
        compress_book(digits_book[3], k)


def test_write_book_writes_a_compressed_book_in_a_pipeline(digits):
    X, y = digits
    pipe = make_pipeline(WriteBook(LogisticRegression(max_iter=1000), topk=3, topk_temperature=2.0),
                         OnFeatures(StandardScaler()),
                         DistillationClassifier(MLP, loss="kd_topk", loss__k=3, loss__temperature=2.0,
                                                max_epochs=10, random_state=0, verbose=0))
    book = pipe[0].fit_transform(X, y)
    assert isinstance(book, SliceDict) and is_compressed_book(book) and book[BOOK_TOPK].shape == (len(X), 3)
    assert is_compressed_book(pipe[1].fit_transform(book))  # OnFeatures keeps the compressed keys
    assert pipe.fit(X, y).score(X, y) > 0.85


def test_the_compressed_book_is_smaller(digits_book):
    *_, book = digits_book
    compressed = compress_book(book, 2)
    size = sum(compressed[key].nbytes for key in (BOOK_TOPK, BOOK_TOPK_INDEX, BOOK_TAIL, BOOK_TEMPERATURE))
    assert size == len(book["X"]) * (2 * (4 + 2) + 4 + 4) < book["teacher_logits"].nbytes
