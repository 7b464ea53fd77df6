"""What a scikit-learn user trips on (issue #14): early stopping, persistence, errors, the log."""

import io
from contextlib import redirect_stdout

import numpy as np
import pytest
from skorch.callbacks import EarlyStopping
from skorch.dataset import ValidSplit

from skd import MLP, DistillationClassifier


# ------------------------------------------------------------- 3. early stopping under warm-up
def test_unscaled_loss_removes_the_warmup(digits, make_student):
    X, y = digits
    clf = make_student(loss="dkd", loss__warmup=4, max_epochs=2, train_split=ValidSplit(4)).fit(X, y)
    for epoch, scale in ((0, 1 / 4), (1, 2 / 4)):
        row = clf.history[epoch]
        expected = row["valid_ce"] + (row["valid_tckd"] + row["valid_nckd"]) / scale
        assert row["valid_unscaled_loss"] == pytest.approx(expected, rel=1e-5)
        assert row["valid_loss"] < row["valid_unscaled_loss"]
        assert "train_unscaled_loss" in row


def test_early_stopping_watches_the_unscaled_loss(digits, make_student):
    X, y = digits
    stopper = EarlyStopping(patience=2)
    clf = make_student(loss="dkd", loss__warmup=4, max_epochs=1, train_split=ValidSplit(4),
                       callbacks=[stopper]).fit(X, y)
    used = dict(clf.callbacks_)["EarlyStopping"]
    assert used.monitor == "valid_unscaled_loss"
    assert stopper.monitor == "valid_loss"  # the user's object is not changed


# ------------------------------------------------------------- 5. saving without pickle
def test_save_and_load_student_round_trip(digits, make_student, tmp_path):
    X, y = digits
    labels = np.array([f"digit {k}" for k in range(10)])[y]
    clf = make_student(module__hidden_units=(32,), max_epochs=1).fit(X, labels)
    path = tmp_path / "student.safetensors"
    clf.save_student(path)
    loaded = DistillationClassifier.load_student(path, module=MLP)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), atol=1e-6)
    assert loaded.classes_.tolist() == clf.classes_.tolist()


def test_initialize_and_load_params_with_classes(digits, make_student, tmp_path):
    X, y = digits
    clf = make_student(max_epochs=1).fit(X, y)
    clf.save_params(f_params=tmp_path / "w.pt")
    fresh = DistillationClassifier(MLP, module__n_features=64, module__n_classes=10,
                                   classes=list(range(10)), device="cpu")
    fresh.initialize()
    fresh.load_params(f_params=tmp_path / "w.pt")
    np.testing.assert_array_equal(fresh.predict(X), clf.predict(X))


def test_initialize_without_dims_names_the_missing_parameters():
    with pytest.raises(ValueError, match="module__n_features"):
        DistillationClassifier(MLP, device="cpu").initialize()


def test_exported_student_says_it_was_exported(digits, make_student):
    X, y = digits
    lean = make_student(max_epochs=1).fit(X, y).export_student()
    with pytest.raises(RuntimeError, match="export_student"):
        lean.partial_fit(X, y)


# ------------------------------------------------------------- 6. errors that say what to do
def test_teacher_with_another_feature_count_is_named(digits, make_student, make_teacher):
    X, y = digits
    with pytest.raises(ValueError, match=r"CountingTeacher.*\(1024, 64\).*features"):
        make_student(teacher=make_teacher(n_features=32)).fit(X, y)


def test_string_temperature_is_refused(digits, make_student):
    X, y = digits
    with pytest.raises(TypeError, match="loss__temperature"):
        make_student(loss__temperature="4").fit(X, y)


# ------------------------------------------------------------- 7. the verbose log
def test_log_puts_train_loss_first_then_terms_in_loss_order(digits, make_student):
    X, y = digits
    out = io.StringIO()
    with redirect_stdout(out):
        make_student(loss="dkd", verbose=1, max_epochs=1).fit(X, y)
    header = next(line for line in out.getvalue().splitlines() if "train_loss" in line).split()
    # the unscaled loss follows train_loss (DistillationPrintLog), then the terms in the loss's order
    assert header[:6] == ["epoch", "train_loss", "train_unscaled_loss", "ce", "tckd", "nckd"]
    assert "teacher accuracy on the training rows" in out.getvalue()


# ------------------------------------------------------------- quiet by default (issue 33)
def test_a_fit_at_the_defaults_prints_nothing(digits, capfd):
    from sklearn.linear_model import LogisticRegression

    X, y = digits
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=200), max_epochs=2, device="cpu")
    assert clf.verbose == 0 and clf.get_params()["verbose"] == 0
    clf.fit(X, y)
    assert capfd.readouterr().out == ""


def test_a_grid_search_at_the_defaults_prints_only_what_the_user_asks_for(digits, capfd):
    from sklearn.model_selection import GridSearchCV

    X, y = digits
    search = GridSearchCV(DistillationClassifier(MLP, loss="ce", max_epochs=1, device="cpu"),
                          {"lr": [1e-3, 3e-3]}, cv=2).fit(X[:400], y[:400])
    assert capfd.readouterr().out == ""
    assert search.best_params_["lr"] in (1e-3, 3e-3)
