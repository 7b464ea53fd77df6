"""Cons-KD: KD plus the consistency of two dropout passes of the student (skd/losses/conskd.py)."""

import numpy as np
import pytest
import torch
from skorch.dataset import ValidSplit

from skd import MLP, DistillationClassifier
from skd.augment import BatchAugment
from skd.hints import Hint
from skd.losses import make_loss
from skd.losses.functional import consistency_divergence
from skd.training.step import NoDropoutWarning


def logits(seed, shape=(16, 10)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kind", ["sym_kl", "mse"])
def test_terms_are_kd_plus_the_weighted_consistency_of_the_two_passes(kind):
    a, b, teacher = logits(0).requires_grad_(), logits(1).requires_grad_(), logits(2)
    y = torch.arange(16) % 10
    cons = make_loss("conskd", {"cons_weight": 0.7, "cons_kind": kind})
    kd = make_loss("kd", {})
    terms = cons(a, teacher, y, second=b)
    first, other = kd(a, teacher, y), kd(b, teacher, y)
    assert set(terms) == {"ce", "kd", "cons"}
    for name in ("ce", "kd"):  # the mean over the two passes, as R-Drop's task loss
        torch.testing.assert_close(terms[name], (first[name] + other[name]) / 2)
    expected = 0.7 * consistency_divergence(a, b, 1.0, kind).mean()
    torch.testing.assert_close(terms["cons"], expected)
    terms["cons"].backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0  # both passes learn, as in R-Drop


def test_without_a_second_pass_the_terms_are_kd_and_the_consistency_is_zero():
    student, teacher, y = logits(0), logits(1), torch.arange(16) % 10
    terms = make_loss("conskd", {})(student, teacher, y)
    assert float(terms["cons"]) == 0.0
    torch.testing.assert_close(terms["kd"], make_loss("kd", {})(student, teacher, y)["kd"])


def test_a_bad_kind_is_refused_naming_the_parameter():
    with pytest.raises(ValueError, match="loss__cons_kind"):
        make_loss("conskd", {"cons_kind": "l1"})


class CountingMLP(MLP):
    def __init__(self, n_features, n_classes, **kwargs):
        super().__init__(n_features, n_classes, **kwargs)
        self.calls = 0

    def forward(self, X):
        self.calls += 1
        return super().forward(X)


def conskd_student(**kwargs):
    params = dict(loss="conskd", module__dropout=0.3, max_epochs=2, batch_size=64, verbose=0,
                  random_state=0, device="cpu", train_split=None)
    torch.manual_seed(1)  # the same teacher for every student
    return DistillationClassifier(CountingMLP, teacher=torch.nn.Linear(64, 10), **{**params, **kwargs})


def test_a_fit_runs_the_student_twice_per_training_batch_and_records_the_term(digits):
    X, y = digits
    clf = conskd_student().fit(X, y)
    batches = sum(clf.history[:, "graph_steps"]) + sum(clf.history[:, "eager_steps"])
    prediction_calls = clf.module_.calls - 2 * batches  # what remains: the under-trained check's pass
    assert 0 < prediction_calls <= 2048 // 64 + 1
    assert all(value > 0 for value in clf.history[:, "cons"])


def test_validation_batches_run_once_and_their_consistency_is_zero(digits):
    X, y = digits
    clf = conskd_student(train_split=ValidSplit(5, stratified=True), max_epochs=1).fit(X, y)
    assert clf.history[-1, "valid_cons"] == 0.0 and clf.history[-1, "cons"] > 0


def test_the_captured_step_on_the_cpu_trains_as_the_eager_step(digits):
    X, y = digits
    eager = conskd_student(trainer__step_mode="eager").fit(X, y)
    graph = conskd_student(trainer__step_mode="graph").fit(X, y)
    assert graph.train_step_path_ == "graph+eager"
    for p, q in zip(eager.module_.parameters(), graph.module_.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_a_student_without_dropout_warns_that_the_term_is_zero(digits):
    X, y = digits
    with pytest.warns(NoDropoutWarning, match="module__dropout"):
        clf = conskd_student(module__dropout=0.0, max_epochs=1).fit(X, y)
    assert np.allclose(clf.history[:, "cons"], 0.0)


@pytest.mark.parametrize("option, match", [
    (dict(augment=BatchAugment(torch.nn.Identity())), "augment=None"),
    (dict(hints=[Hint("layers.0", "0")]), "hints"),
])
def test_what_cannot_run_with_two_passes_is_refused(digits, option, match):
    X, y = digits
    with pytest.raises(ValueError, match=match):
        conskd_student(**option).fit(X, y)
