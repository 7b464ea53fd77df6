"""Scale out: teachers that travel to workers, one book per fold, Dask, data-parallel fits."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cloudpickle  # joblib's own dependency, as loky pickles with it
import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from skorch import NeuralNetClassifier

import skd.persist
from skd.book.cache import PROBE_ROWS, book_key, check_book_cache
from skd.callbacks import GradientAllReduce
from skd.distributed import shard
from skd.teachers import TorchTeacher, as_teacher

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def run_script(name, *args, timeout):
    """Run ``tests/scripts/<name>`` as ``__main__`` (the notebook case); its JSON lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], env=env,
                          capture_output=True, check=False, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


# --------------------------------------------------------- notebook teachers
def test_notebook_classes_reach_loky_workers(tmp_path):
    # MLP and the teacher's class are defined in the script's __main__; without a
    # book cache every candidate of every fold runs the teacher once.
    runs = run_script("notebook_grid.py", "--kinds", "module,closure", "--backends", "loky",
                      "--workdir", tmp_path, timeout=240)
    assert [run["kind"] for run in runs] == ["module", "closure"]
    for run in runs:
        assert len(run["scores"]) == run["candidates"] == 4
        assert np.isfinite(run["scores"]).all()
        assert len(run["teacher_calls"]) == 4 * 3  # candidates x folds


@pytest.mark.slow
def test_dask_cluster_equals_loky_and_writes_one_book_per_fold(tmp_path):
    runs = run_script("notebook_grid.py", "--kinds", "module", "--backends", "dask,loky",
                      "--book-dir", "--workdir", tmp_path, timeout=400)
    by_backend = {run["backend"]: run for run in runs}
    assert by_backend["dask"]["scores"] == by_backend["loky"]["scores"]
    for run in runs:  # 3 folds of 400 rows: one book each, shared by the 4 candidates
        assert [n for n in run["teacher_calls"] if n != PROBE_ROWS] == [400, 400, 400]
        # and the cache key's probe (PROBE_ROWS rows) for each candidate of each fold
        assert run["teacher_calls"].count(PROBE_ROWS) == 4 * 3


def closure_teacher(seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(64, 10)
    return lambda X: layer(X)


@pytest.mark.parametrize("kind", ["module", "closure", "sklearn"])
def test_teachers_survive_clone_pickle_and_threads(digits, make_student, make_teacher, kind):
    X, y = digits
    teacher = {"module": make_teacher(), "closure": closure_teacher(),
               "sklearn": LogisticRegression(max_iter=100)}[kind]
    clf = make_student(teacher=teacher, max_epochs=1)
    dumps = cloudpickle.dumps if kind == "closure" else pickle.dumps  # stdlib can't pickle lambdas
    restored = pickle.loads(dumps(clone(clf)))
    fitted = clf.fit(X, y)
    assert np.array_equal(restored.fit(X, y).predict_proba(X), fitted.predict_proba(X))
    assert np.array_equal(pickle.loads(dumps(fitted)).predict_proba(X), fitted.predict_proba(X))
    with joblib.parallel_config(backend="threading"):
        search = GridSearchCV(clf, {"loss__temperature": [2.0, 4.0]}, cv=2, n_jobs=2).fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_teacher_on_an_accelerator_pickles_as_a_cpu_copy(digits, make_student, make_teacher,
                                                         monkeypatch):
    # No CUDA here: pretend every tensor of the teacher lives on an accelerator.
    X, y = digits
    teacher = make_teacher()
    clf = make_student(teacher=teacher, max_epochs=1).fit(X, y)
    assert skd.persist.cpu_portable(teacher) is teacher  # on the CPU: pickled as it is
    monkeypatch.setattr(skd.persist, "_on_accelerator", lambda tensor: True)
    copy = skd.persist.cpu_portable([teacher])[0]
    assert copy is not teacher
    for (name, theirs), mine in zip(teacher.named_parameters(), copy.parameters(), strict=True):
        assert isinstance(mine, torch.nn.Parameter) and torch.equal(mine, theirs), name
        assert mine.data_ptr() != theirs.data_ptr()
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.teacher is not teacher and restored.teacher_.module is not teacher
    assert np.array_equal(restored.predict_proba(X), clf.predict_proba(X))


# ---------------------------------------------------------------- book cache
def test_book_cache_runs_the_teacher_once_per_training_set(digits, make_student, make_teacher,
                                                           tmp_path):
    X, y = digits
    teacher = make_teacher()
    first = make_student(teacher=teacher, book_dir=tmp_path, max_epochs=1).fit(X, y)
    passes = teacher.calls
    assert passes == 3  # the key's probe of 16 rows, then 1797 rows in books of 1024
    second = make_student(teacher=teacher, loss="dkd", book_dir=tmp_path, max_epochs=1).fit(X, y)
    assert teacher.calls == passes + 1  # the probe, then read from the cache
    uncached = make_student(teacher=make_teacher(), loss="dkd", max_epochs=1).fit(X, y)
    assert np.allclose(second.predict_proba(X), uncached.predict_proba(X), atol=1e-6)
    make_student(teacher=teacher, book_dir=tmp_path, max_epochs=1).fit(X[:500], y[:500])
    assert teacher.calls == passes + 3  # other rows: another book
    with torch.no_grad():
        teacher.net.weight.add_(1.0)
    make_student(teacher=teacher, book_dir=tmp_path, max_epochs=1).fit(X, y)
    assert teacher.calls == passes + 6  # other weights: another book
    assert len(list(tmp_path.glob("*.npy"))) == 3
    assert first.history[-1, "train_loss"] > 0


def test_book_key_follows_content_not_identity(digits, make_teacher):
    X, y = digits
    classes = np.unique(y)

    def key(teacher, rows=X):
        return book_key(rows, y[: len(rows)], TorchTeacher(teacher).setup(rows, y, classes, "cpu"))

    assert key(make_teacher(seed=0)) == key(make_teacher(seed=0))
    assert key(make_teacher(seed=0)) != key(make_teacher(seed=1))
    assert key(make_teacher(seed=0)) != key(make_teacher(seed=0), X[:100])

    def skorch_key(seed):  # a fitted skorch net is keyed by its module's weights
        torch.manual_seed(seed)
        net = NeuralNetClassifier(torch.nn.Linear(64, 10), max_epochs=1, verbose=0, train_split=None)
        return book_key(X, y, as_teacher(net.fit(X, y)).setup(X, y, classes, "cpu"))

    assert skorch_key(0) == skorch_key(0) != skorch_key(1)


def test_book_cache_must_be_a_path(tmp_path, digits, make_student):
    assert check_book_cache(None) is None
    assert check_book_cache(tmp_path / "books").is_dir()
    with pytest.raises(TypeError, match="book_dir must be None or a directory path"):
        check_book_cache(3)
    X, y = digits
    with pytest.raises(ValueError,
                       match="book_dir of DistillationClassifier must be None or an instance of str"):
        make_student(book_dir=3).fit(X[:50], y[:50])


# ------------------------------------------------------- data-parallel fits
@pytest.mark.slow
def test_data_parallel_fit_on_two_gloo_processes_equals_one_process(tmp_path):
    # ~20 s on an idle 2-core machine, minutes on a busy one: two spawned processes import torch
    (result,) = run_script("ddp_fit.py", "--workdir", tmp_path, timeout=400)
    assert result["ranks_equal"] and result["saved_matches_rank0"]
    assert result["data_parallel_accuracy"] > 0.9
    assert abs(result["data_parallel_accuracy"] - result["single_process_accuracy"]) < 0.03


@pytest.fixture
def world_of_one(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous",
                                         rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_gradient_all_reduce_in_a_world_of_one_changes_nothing(digits, make_student, world_of_one):
    X, y = digits
    plain = make_student(max_epochs=2).fit(X, y)
    reduced = make_student(max_epochs=2, callbacks=[("allreduce", GradientAllReduce())]).fit(X, y)
    assert np.allclose(reduced.predict_proba(X), plain.predict_proba(X), atol=1e-6)


def test_gradient_all_reduce_needs_a_process_group(digits, make_student):
    X, y = digits
    with pytest.raises(RuntimeError, match="init_process_group"):
        make_student(max_epochs=1, callbacks=[("allreduce", GradientAllReduce())]).fit(X, y)


def test_shards_are_disjoint_equal_and_cover_the_data(digits):
    X, y = digits  # 1797 rows: one dropped
    book = {"X": X, "teacher_logits": np.arange(len(X) * 2.0).reshape(-1, 2)}
    shards = [shard(book, y, rank, 2) for rank in range(2)]
    assert [len(y_rank) for _, y_rank in shards] == [898, 898]
    rows = np.concatenate([book_rank["teacher_logits"][:, 0] // 2 for book_rank, _ in shards])
    assert sorted(rows.astype(int).tolist()) == list(range(1796))
    assert np.array_equal(shards[1][0]["X"], X[1:1796:2])
    X_rank, _ = shard(X, y, 1, 3)
    assert np.array_equal(X_rank, X[1::3])
    with pytest.raises(ValueError, match="rank must be in"):
        shard(X, y, 2, 2)
