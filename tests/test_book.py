"""The book as a value with one writer, and the book cases of the trust review (issue 29 item 2,
issue 30): a compressed book's k and rows, temperatures, a teacher beside a book, boolean books."""

import ast
import pathlib
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from skd import MLP, DistillationClassifier
from skd.book import BOOK_LOGITS, Book, compress_book, is_book, write_book
from skd.book.compressed import BOOK_TAIL, BOOK_TOPK, BOOK_TOPK_INDEX, check_compressed_book
from skd.losses.base import MAX_TEMPERATURE
from skd.teachers import CallableTeacher, TorchTeacher, as_teacher


@pytest.fixture(scope="module")
def digits_book(digits):
    X, y = digits
    teacher = LogisticRegression(max_iter=1000).fit(X, y)
    return X, y, {"X": X, "teacher_logits": teacher.decision_function(X).astype(np.float32)}


def fit(X, y, **params):
    params = {"max_epochs": 2, "random_state": 0, "verbose": 0, "train_split": None, "device": "cpu",
              "lr": 1e-2, **params}
    return DistillationClassifier(MLP, **params).fit(X, y)


# ------------------------------------------------------------------ the value
def test_a_book_round_trips_through_skorchs_dict(digits_book):
    X, y, full = digits_book
    book = Book.of(full)
    assert book.n_rows == len(X) and not book.is_compressed
    assert set(book.as_dict()) == {"X", BOOK_LOGITS}
    np.testing.assert_array_equal(Book.of(book.as_dict()).logits, full[BOOK_LOGITS])
    assert book.score(y) == pytest.approx(np.mean(full[BOOK_LOGITS].argmax(1) == y))


def test_a_compressed_book_keeps_its_features_and_predictions(digits_book):
    X, y, full = digits_book
    compressed = Book.of(full).compressed(3, 2.0)
    assert compressed.is_compressed and compressed.logits is None and compressed.features is X
    np.testing.assert_array_equal(compressed.predictions(), full[BOOK_LOGITS].argmax(1))
    assert is_book(compressed.as_dict()) and BOOK_LOGITS not in compressed.as_dict()


def test_a_book_is_frozen_and_holds_one_form(digits_book):
    X, _, full = digits_book
    book = Book.of(full)
    with pytest.raises(AttributeError):
        book.features = X[:2]
    with pytest.raises(ValueError, match="one"):
        Book(X)
    assert book.with_features(X * 2).logits is book.logits


def test_write_book_is_the_one_writer_of_the_fit_and_of_the_classifier(digits):
    X, y = digits
    clf = fit(X, y, teacher=LogisticRegression(max_iter=300))
    adapter = clf.teacher_
    written = write_book(adapter, X[:50])
    np.testing.assert_allclose(clf.write_book(X[:50])[BOOK_LOGITS], written.logits, rtol=1e-6)
    compressed = write_book(adapter, X[:50], topk=(3, 1.0))
    np.testing.assert_array_equal(compressed.predictions(), written.predictions())


def test_the_book_package_imports_neither_teachers_nor_hints():
    # the book is written from a set-up teacher it is handed: teachers and hints both read books
    root = pathlib.Path(__file__).parents[1] / "skd" / "book"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("skd.teachers", "skd.hints")), (path.name, node.module)


def test_the_cache_key_is_what_the_teacher_declares(digits):
    X, y = digits
    classes = np.unique(y)
    a = as_teacher(torch.nn.Linear(64, 10)).setup(X, y, classes, "cpu")
    assert a.cache_token()[2][0] is a.module  # its module (hashed by content by the cache)
    fn = CallableTeacher(lambda x: x[:, :10]).setup(X, y, classes, "cpu")
    assert fn.content()[0] is fn.fn


# ------------------------------------------------------------------ issue 30: compressed books
def test_a_compressed_book_of_another_k_than_the_loss_is_refused_naming_both(digits_book):
    X, y, full = digits_book
    with pytest.raises(ValueError, match=r"k=3 classes per row.*loss__k=10.*loss__k=3"):
        fit(compress_book(full, 3), y, loss="kd_topk", loss__k=10)
    assert fit(compress_book(full, 3), y, loss="kd_topk", loss__k=3).score(X, y) > 0.3


def test_a_compressed_book_with_a_repeated_class_is_refused(digits_book):
    _, y, full = digits_book
    book = compress_book(full, 3)
    index = book[BOOK_TOPK_INDEX].copy()
    index[5, 1] = index[5, 0]
    with pytest.raises(ValueError, match="repeats a class within a row.*row 5"):
        fit({**book, BOOK_TOPK_INDEX: index}, y, loss="kd_topk", loss__k=3)


def test_a_compressed_book_whose_rows_are_not_distributions_is_refused(digits_book):
    _, y, full = digits_book
    book = compress_book(full, 3)
    top = book[BOOK_TOPK].copy()
    top[:, :] = np.log(0.99)  # three classes at 0.99 each: mass 2.97
    with pytest.raises(ValueError, match=r"not a distribution.*top-k mass plus tail = 2\.97\d*, not 1"):
        fit({**book, BOOK_TOPK: top}, y, loss="kd_topk", loss__k=3)


@pytest.mark.parametrize("temperature", [1e30, 0.0, -1.0, float("nan"), MAX_TEMPERATURE * 2])
def test_compress_book_refuses_a_temperature_outside_the_losses_bounds(digits_book, temperature):
    with pytest.raises(ValueError, match=r"temperature must be a number in \(0, 1000\]"):
        compress_book(digits_book[2], 3, temperature=temperature)


def test_compress_book_takes_the_largest_temperature_the_losses_take(digits_book):
    book = compress_book(digits_book[2], 3, temperature=MAX_TEMPERATURE)
    mass = np.exp(book[BOOK_TOPK]).sum(1) + np.exp(book[BOOK_TAIL])
    np.testing.assert_allclose(mass, 1.0, atol=1e-4)


# ------------------------------------------------------------------ issue 30: a book and a teacher
def test_a_teacher_beside_a_book_is_ignored_with_a_warning_saying_why(digits_book):
    X, y, full = digits_book
    with pytest.warns(UserWarning, match="teacher= is ignored because X carries a book"):
        clf = fit(full, y, teacher=LogisticRegression())
    assert clf.teacher_ is None


def test_a_book_without_a_teacher_gets_no_such_warning(digits_book):
    _, y, full = digits_book
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="teacher= is ignored")
        fit(full, y)


def test_a_boolean_one_hot_book_gets_an_error_saying_what_to_pass(digits_book):
    X, y, _ = digits_book
    one_hot = np.eye(10, dtype=bool)[y]
    with pytest.raises(ValueError, match=r"boolean.*float numbers.*decision_function.*predict_proba"):
        fit({"X": X, "teacher_logits": one_hot}, y)


def test_torch_teacher_given_a_function_points_to_callable_teacher():
    with pytest.raises(TypeError, match="CallableTeacher"):
        TorchTeacher(lambda X: X[:, :10], classes=np.arange(10))


@given(st.integers(1, 12), st.integers(2, 40), st.data(),
       st.floats(0.05, MAX_TEMPERATURE), st.floats(1.0, 1e4))
def test_every_book_compress_book_writes_passes_the_distribution_check(rows, classes, data, temperature,
                                                                        scale):
    # the check's tolerance holds for any logits, extreme ones too, at any temperature the losses take
    k = data.draw(st.integers(1, classes))
    logits = np.random.default_rng(rows * classes).normal(size=(rows, classes)) * scale
    full = {"X": np.zeros((rows, 1)), "teacher_logits": logits.astype(np.float32)}
    book = compress_book(full, k, temperature)
    checked = check_compressed_book(book, rows, classes)
    assert checked[BOOK_TOPK].shape == (rows, k)
