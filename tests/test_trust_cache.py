"""Issue 19, items 2, 3, 11, 13 and 14 (book_dir): a cache that never serves a wrong book."""

import os
import warnings

import numpy as np
import pytest
import torch

from skd import MLP, DistillationClassifier
from skd.book.cache import BookCacheWarning, book_key, cached_book_logits, check_book_cache
from skd.teachers import as_teacher

torch.manual_seed(0)
#: A notebook's global, read by ``global_teacher``: the key cannot see it by content.
NET = torch.nn.Linear(64, 10)


def global_teacher(X):
    return NET(X)


def _student(**params):
    defaults = dict(teacher=global_teacher, loss="kd", max_epochs=1, verbose=0, device="cpu",
                    batch_size=256, random_state=0)
    return DistillationClassifier(MLP, **{**defaults, **params})


@pytest.fixture
def small_digits(digits):
    X, y = digits
    return X[:300], y[:300]


def _books(folder):
    return sorted(p for p in folder.glob("*.npy") if not p.name.startswith("."))


# ---------------------------------------------------------------- item 2: stale books
def test_key_changes_when_a_global_the_teacher_reads_changes(small_digits, tmp_path):
    X, y = small_digits
    first = _student(book_dir=tmp_path).fit(X, y)
    with torch.no_grad():
        NET.bias.add_(torch.arange(10.0) * 5)  # the teacher's answers change, its code does not
    try:
        cached = _student(book_dir=tmp_path).fit(X, y)
        fresh = _student().fit(X, y)
    finally:
        with torch.no_grad():
            NET.bias.sub_(torch.arange(10.0) * 5)
    assert len(_books(tmp_path)) == 2  # a second book, not the stale first one
    assert cached.teacher_score_ == fresh.teacher_score_ != first.teacher_score_


def test_book_key_holds_the_teachers_outputs_on_a_probe(small_digits):
    X, y = small_digits
    classes = np.unique(y)
    teacher = as_teacher(global_teacher).setup(X, y, classes, "cpu")
    before = book_key(X, y, teacher)
    with torch.no_grad():
        NET.weight.mul_(-1)
    try:
        after = book_key(X, y, teacher)
    finally:
        with torch.no_grad():
            NET.weight.mul_(-1)
    assert before != after
    assert before.endswith(f"-{len(X)}x10") and book_key(X, y, teacher) == before


# ---------------------------------------------------------------- item 3: bad cached books
def _plant(path, kind):
    good = np.load(path)
    if kind == "nan":
        bad = good.copy()
        bad[5, 3] = np.nan
        np.save(path, bad)
    elif kind == "columns":
        np.save(path, good[:, :7])
    elif kind == "rows":
        np.save(path, good[:-10])
    elif kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"not a numpy file at all")
    elif kind == "objects":
        np.save(path, np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    elif kind == "ints":
        np.save(path, np.zeros(good.shape, dtype=np.int64))


@pytest.mark.parametrize("kind", ["nan", "columns", "rows", "truncated", "garbage", "objects", "ints"])
def test_a_bad_cached_book_is_named_and_rebuilt(small_digits, tmp_path, kind):
    X, y = small_digits
    reference = _student(book_dir=tmp_path, trainer__on_nonfinite="skip").fit(X, y)
    (book,) = _books(tmp_path)
    _plant(book, kind)
    with pytest.warns(BookCacheWarning, match=str(book.name)):
        again = _student(book_dir=tmp_path, trainer__on_nonfinite="skip").fit(X, y)
    assert again.teacher_score_ == reference.teacher_score_
    assert np.allclose(again.predict_proba(X), reference.predict_proba(X), atol=1e-6)
    assert np.isfinite(np.load(book)).all() and np.load(book).shape == (len(X), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BookCacheWarning)  # rebuilt: the next fit reads it quietly
        _student(book_dir=tmp_path).fit(X, y)


def test_cached_book_logits_checks_an_explicit_shape(tmp_path):
    np.save(tmp_path / "k.npy", np.zeros((4, 3), dtype=np.float32))
    with pytest.warns(BookCacheWarning, match="shape"):
        out = cached_book_logits(tmp_path, "k", lambda: np.ones((5, 3), np.float32), shape=(5, 3))
    assert out.shape == (5, 3) and np.load(tmp_path / "k.npy").shape == (5, 3)


# ---------------------------------------------------------------- item 11: a full disk
def test_a_full_disk_leaves_no_partial_file_and_the_fit_goes_on(small_digits, tmp_path, monkeypatch):
    X, y = small_digits
    real_save = np.save

    def disk_full(file, arr, *args, **kwargs):
        target = open(file, "wb") if isinstance(file, (str, os.PathLike)) else file
        target.write(b"\x93NUMPY" + b"\0" * 100)  # part of the file, then the disk is full
        target.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.warns(BookCacheWarning, match="No space left"):
        clf = _student(book_dir=tmp_path).fit(X, y)
    monkeypatch.setattr(np, "save", real_save)
    assert clf.score(X, y) > 0
    leftovers = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_an_interrupt_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    def interrupted(file, arr, *args, **kwargs):
        target = open(file, "wb") if isinstance(file, (str, os.PathLike)) else file
        target.write(b"\x93NUMPY")  # half written, then Ctrl-C
        target.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cached_book_logits(tmp_path, "k-2x2", lambda: np.ones((2, 2), np.float32))
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


# ---------------------------------------------------------------- item 13: planted links
def test_a_planted_symlink_is_never_followed(small_digits, tmp_path):
    X, y = small_digits
    cache, outside = tmp_path / "cache", tmp_path / "outside.npy"
    _student(book_dir=cache).fit(X, y)
    (book,) = _books(cache)
    key = book.name[: -len(".npy")]
    hostile = np.load(book) * -1  # targets an attacker would like the student to learn
    np.save(outside, hostile)
    before = outside.read_bytes()
    book.unlink()
    book.symlink_to(outside)
    # the name the old code wrote its temporary file to
    (cache / f"{key}.{os.getpid()}.partial.npy").symlink_to(outside)
    with pytest.warns(BookCacheWarning, match="symbolic link"):
        clf = _student(book_dir=cache).fit(X, y)
    assert outside.read_bytes() == before  # nothing written through a link
    assert not book.is_symlink() and not np.array_equal(np.load(book), hostile)
    assert clf.teacher_score_ > 0.0


def test_a_planted_lock_symlink_is_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "k-2x2.npy.lock").symlink_to(outside)
    with pytest.warns(BookCacheWarning, match="lock"):
        out = cached_book_logits(cache, "k-2x2", lambda: np.ones((2, 2), np.float32))
    assert out.shape == (2, 2) and outside.read_text() == "precious"


def test_temporary_files_are_created_exclusively_in_the_cache(tmp_path, monkeypatch):
    import tempfile

    made = []
    real = tempfile.mkstemp

    def spy(*args, **kwargs):
        made.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    cached_book_logits(tmp_path, "k-2x2", lambda: np.ones((2, 2), np.float32))
    assert made == [tmp_path]


# ---------------------------------------------------------------- item 14: a file as the cache
def test_book_cache_that_is_a_file_gives_a_clear_error(tmp_path):
    target = tmp_path / "books"
    target.write_text("I am a file")
    with pytest.raises(ValueError, match="book_dir=.*is a file, not a directory"):
        check_book_cache(target)
    with pytest.raises(ValueError, match="book_dir=.*cannot be created"):
        check_book_cache(target / "inner")
