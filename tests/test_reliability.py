"""A failed or interrupted fit loses nothing; a saved student loads safely."""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from skorch.callbacks import Callback

from tests.poison import PoisonableMLP, PoisonAt


@pytest.fixture
def student(make_student, make_teacher):
    return make_student.bind(fresh_teacher=lambda: make_teacher(hidden=256, seed=1), max_epochs=4)


def test_nonfinite_loss_raises_with_epoch_batch_and_term(digits, student):
    X, y = digits
    clf = student(callbacks=[PoisonAt(epoch=2, batch=3)])
    clf.module = PoisonableMLP
    weights_before = {}

    class Snapshot(Callback):
        def on_batch_end(self, net, training=False, **kwargs):
            weights_before.update({k: v.clone() for k, v in net.module_.state_dict().items()})

    clf.set_params(callbacks=[Snapshot(), PoisonAt(epoch=2, batch=3)])
    with pytest.raises(RuntimeError, match=r"Non-finite loss at epoch 2, batch 3: ce=nan, kd=nan"):
        clf.fit(X, y)
    # history kept: the finished epoch 1 (an unfinished epoch leaves no row)
    assert len(clf.history) == 1 and len(clf.history[0, "batches"]) > 0
    for key, value in clf.module_.state_dict().items():
        assert torch.equal(value, weights_before[key])  # no step was taken on the bad batch
    assert clf.predict(X[:5]).shape == (5,)  # the last good student still predicts


def test_teacher_nonfinite_logits_are_refused(digits, student):
    X, y = digits

    class NaNTeacher(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 10)
            self.calls = 0

        def forward(self, X):
            self.calls += 1
            out = self.linear(X)
            if self.calls % 5 == 0:  # every fifth online batch is bad
                out = out * float("nan")
            return out

    # online teacher so that bad logits appear during training, after the book's checks
    clf = student(teacher=NaNTeacher(), book="online", trainer__on_nonfinite="skip", max_epochs=2)
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        clf.fit(X, y)  # the teacher adapter refuses non-finite logits outright
    assert not clf.initialized_  # no epoch finished: the estimator stays unfitted, as before the fit


def test_skip_mode_skips_student_nan_batches(digits, student):
    X, y = digits
    clf = student(trainer__on_nonfinite="skip", max_epochs=3,
                  callbacks=[PoisonAt(epoch=1, batch=2), PoisonAt(epoch=2, batch=5)])
    clf.module = PoisonableMLP
    clf.fit(X, y)
    assert clf.history[:, "skipped_batches"] == [1, 1, 0]
    assert all(np.isfinite(clf.history[:, "train_loss"]))
    assert clf.score(X, y) > 0.8


def test_keyboard_interrupt_leaves_a_usable_estimator(digits, student):
    X, y = digits

    class Interrupt(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 2:
                raise KeyboardInterrupt

    clf = student(callbacks=[Interrupt()], max_epochs=10).fit(X, y)
    assert len(clf.history) == 2
    assert clf.score(X, y) > 0.5


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np, torch
    from sklearn.datasets import load_digits
    from skorch.callbacks import Checkpoint, LoadInitState, Callback
    from skd import DistillationClassifier, MLP, SoftLossSchedule

    class Slow(Callback):
        def on_epoch_end(self, net, **kwargs):
            time.sleep(float(sys.argv[2]))

    X, y = load_digits(return_X_y=True); X = (X / 16).astype(np.float32)
    torch.manual_seed(1)
    teacher = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    cp = Checkpoint(dirname=sys.argv[1], monitor=None, f_params="params.pt", f_optimizer="opt.pt",
                    f_criterion=None, f_history="history.json")
    clf = DistillationClassifier(MLP, teacher=teacher, loss="dkd", loss__warmup=5, max_epochs=8,
                                 optimizer=torch.optim.Adam, lr=1e-2, batch_size=64, verbose=0,
                                 random_state=0, device="cpu",
                                 callbacks=[("slow", Slow()), ("gslr", SoftLossSchedule(end=0.5)),
                                            ("cp", cp), ("load", LoadInitState(cp))])
    clf.fit(X, y)
    torch.save(clf.module_.state_dict(), sys.argv[1] + "/final.pt")
    print(len(clf.history))
    """
)


def test_killed_fit_resumes_to_the_same_weights(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(RESUME_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    reference = tmp_path / "reference"
    done = subprocess.run([sys.executable, str(script), str(reference), "0"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(killed), "0.5"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    history = killed / "history.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if history.exists() and history.read_text().count('"epoch"') >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final.pt").exists()  # it really died mid-way
    resumed = subprocess.run([sys.executable, str(script), str(killed), "0"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "8"  # 8 epochs in all, not 8 more
    a = torch.load(reference / "final.pt", weights_only=True)
    b = torch.load(killed / "final.pt", weights_only=True)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_export_student_is_lean_and_predicts_the_same(digits, student):
    X, y = digits
    big = torch.nn.Sequential(torch.nn.Linear(64, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 10))
    clf = student(teacher=big, max_epochs=2).fit(X, y)
    lean = clf.export_student()
    full_size = len(pickle.dumps(clf))
    lean_size = len(pickle.dumps(lean))
    assert lean_size < full_size / 5
    assert np.array_equal(lean.predict_proba(X), clf.predict_proba(X))
    restored = pickle.loads(pickle.dumps(lean))
    assert np.array_equal(restored.predict(X), clf.predict(X))
    assert clf.teacher is big and clf.callbacks_  # the original is untouched
    clf.fit(X[:200], y[:200])


def test_save_and_load_params_with_safetensors_and_weights_only(digits, tmp_path, monkeypatch, student):
    X, y = digits
    clf = student(max_epochs=2).fit(X, y)
    clf.save_params(f_params=tmp_path / "p.safetensors", use_safetensors=True)
    clf.save_params(f_params=tmp_path / "p.pt")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    for path, safe in ((tmp_path / "p.safetensors", True), (tmp_path / "p.pt", False)):
        fresh = student(max_epochs=2).fit(X[:100], y[:100])
        fresh.load_params(f_params=path, use_safetensors=safe)
        assert np.array_equal(fresh.predict_proba(X), clf.predict_proba(X))
    assert calls and all(flag is True for flag in calls)


def test_estimator_trained_on_cuda_loads_on_a_cpu_machine(digits, student):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    X, y = digits
    clf = student(max_epochs=1).fit(X, y)
    clf.device = "cuda"  # as if it had been trained there
    with pytest.warns(UserWarning, match="CUDA"):
        restored = pickle.loads(pickle.dumps(clf))
    assert str(restored.device) == "cpu"
    clf.device = "cpu"
    assert np.array_equal(restored.predict(X), clf.predict(X))


@pytest.mark.parametrize("backend", ["threading", "loky"])
def test_concurrent_fits_equal_sequential_and_leave_the_teacher_alone(digits, backend, student, make_teacher):
    X, y = digits
    teacher = make_teacher(hidden=256, seed=1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}

    # built up front: the test's helpers reseed torch, which must not happen inside the threads
    estimators = [student(teacher=teacher, random_state=seed, max_epochs=2) for seed in range(3)]

    def fit(clf):
        return clf.fit(X, y).predict_proba(X)

    sequential = [fit(clone(clf)) for clf in estimators]
    parallel = joblib.Parallel(n_jobs=3, backend=backend)(joblib.delayed(fit)(clf) for clf in estimators)
    for a, b in zip(sequential, parallel, strict=False):
        assert np.allclose(a, b, atol=1e-6)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("epochs", [0, -1])
def test_max_epochs_below_one(digits, epochs, student):
    X, y = digits
    with pytest.raises(ValueError,
                       match=r"max_epochs of DistillationClassifier must be an int in \[1, inf\]; got "):
        student(max_epochs=epochs).fit(X, y)


def test_unseen_labels_at_score_are_just_wrong_predictions(digits, student):
    X, y = digits
    from sklearn.linear_model import LogisticRegression

    clf = student(teacher=LogisticRegression(max_iter=300), max_epochs=2).fit(X[y < 9], y[y < 9])
    assert 9 not in clf.classes_
    score = clf.score(X, y)  # class 9 is unseen: counted as errors, no crash
    assert 0 < score < 1


def test_single_sample_predict_and_fit(digits, student):
    X, y = digits
    clf = student(max_epochs=1).fit(X, y)
    assert clf.predict(X[:1]).shape == (1,)
    with pytest.raises(ValueError, match="only one class"):
        student().fit(X[:1], y[:1])


def test_teacher_on_another_device_is_moved_to_the_students(digits, student, make_teacher):
    X, y = digits
    teacher = make_teacher(hidden=256, seed=1).to(torch.float64)  # another dtype: outputs are cast
    clf = student(teacher=lambda X: teacher(X.double())).fit(X, y)
    assert clf.teacher_.predict_logits(torch.as_tensor(X[:3])).dtype == torch.float32


def test_book_for_other_data_is_refused(digits, student):
    X, y = digits
    logits = np.zeros((len(X) - 1, 10), dtype=np.float32)
    with pytest.raises(ValueError, match="Was the book written for other data"):
        student(teacher=None).fit({"X": X, "teacher_logits": logits}, y)


def test_bad_on_nonfinite(digits, student):
    X, y = digits
    with pytest.raises(ValueError, match="trainer__on_nonfinite of Trainer must be one of 'raise', "
                                         "'skip'; got 'ignore'"):
        student(trainer__on_nonfinite="ignore").fit(X, y)
