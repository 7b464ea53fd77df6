"""``loss__extract``: extractive distillation's teacher transform, on every logit loss (the base class)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax, softmax, xlogy
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from skd import MLP, DistillationClassifier
from skd.losses import DistillationLoss, available_losses, get_loss_class, make_loss
from skd.losses import functional as Fn
from tests.strategies import EXTREME, logits_pairs, temperatures

#: Losses that soften the teacher at their temperature (WTTM at 1), so ``extract == T`` changes nothing.
SOFTENING_LOSSES = {"kd": {}, "dkd": {}, "cakd": {}, "dist": {}, "r2kd": {}, "nkd": {"temperature": 3.0},
                    "selective_kd": {}, "wttm": {}, "tfkd": {"mode": "self"}, "skls": {}}


def transcribed_extractive_kd(student, teacher, temperature, confidence_temperature):
    """An independent numpy transcription: ``T² mean KL(q || softmax(z^S / T))`` and its student gradient.

    ``q``: the teacher's top class keeps ``softmax(z / c)_m``; the rest share ``1 - that`` in the
    proportions of ``softmax(z / T)`` over the other classes.
    """
    student, teacher = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
    batch = teacher.shape[0]
    q = np.empty_like(teacher)
    for row in range(batch):
        top = int(np.argmax(teacher[row]))
        confident = softmax(teacher[row] / confidence_temperature)[top]
        others = np.delete(np.arange(teacher.shape[1]), top)
        spread = softmax(teacher[row, others] / temperature)
        q[row, top] = confident
        q[row, others] = (1.0 - confident) * spread
    log_student = log_softmax(student / temperature, axis=1)
    kl = (xlogy(q, q) - q * log_student).sum(1)
    value = temperature**2 * kl.mean()
    gradient = temperature * (np.exp(log_student) - q) / batch  # d value / d z^S
    return value, gradient


def kd_term(student, teacher, temperature, extract):
    loss = make_loss("kd", {"temperature": temperature, "kd_weight": 1.0, "extract": extract})
    student = student.clone().requires_grad_(True)
    term = loss(student, teacher, torch.zeros(student.shape[0], dtype=torch.long))["kd"]
    term.backward()
    return term.detach(), student.grad


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize(("temperature", "confidence_temperature"), [(4.0, 1.0), (2.0, 0.5), (1.0, 3.0)])
def test_kd_with_extract_equals_an_independent_transcription(extreme, temperature, confidence_temperature):
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(6, 7)), 3 * rng.normal(size=(6, 7))
    if extreme:
        teacher[:, 2] = EXTREME
        student[1, 4] = -EXTREME
    value, gradient = transcribed_extractive_kd(student, teacher, temperature, confidence_temperature)
    ours, ours_grad = kd_term(torch.tensor(student), torch.tensor(teacher), temperature,
                              confidence_temperature)
    assert ours.item() == pytest.approx(value, rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(ours_grad.numpy(), gradient, rtol=1e-9, atol=1e-13)


@settings(max_examples=40, deadline=None)
@given(logits_pairs(max_classes=40), temperatures, temperatures)
def test_extracted_logits_soften_to_the_extractive_teacher(pair, temperature, confidence_temperature):
    _, teacher, _ = pair
    logits = Fn.extracted_teacher_logits(teacher, temperature, confidence_temperature)
    expected = Fn.extractive_teacher_log_probs(teacher, temperature, confidence_temperature)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(torch.log_softmax(logits / temperature, 1), expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(logits_pairs(max_classes=40, extremes=False, ties=False), temperatures, st.floats(0.05, 1.0))
def test_a_confidence_temperature_at_most_t_keeps_the_top_class_on_top(pair, temperature, share):
    _, teacher, _ = pair
    log_q = Fn.extractive_teacher_log_probs(teacher, temperature, share * temperature)
    top = teacher.argmax(1, keepdim=True)
    assert (log_q.argmax(1, keepdim=True) == top).all()
    softened = torch.softmax(teacher / temperature, 1).gather(1, top)
    assert (log_q.exp().gather(1, top) >= softened - 1e-12).all()


@settings(max_examples=20, deadline=None)
@given(logits_pairs(max_classes=30, ties=False), st.sampled_from(sorted(SOFTENING_LOSSES)))
def test_extract_at_the_loss_temperature_changes_no_loss(pair, name):
    """Without ties: with tied teacher logits, rounding decides R2KD's teacher ranks (a jump)."""
    student, teacher, target = pair
    params = SOFTENING_LOSSES[name]
    plain = make_loss(name, params)
    temperature = plain.epoch_values(10**9).temperature  # WTTM softens at 1
    extracted = make_loss(name, {**params, "extract": temperature})
    for (key, left), right in zip(plain(student, teacher, target).items(),
                                  extracted(student, teacher, target).values(), strict=True):
        torch.testing.assert_close(left, right, rtol=1e-7, atol=1e-7, msg=key)


def test_extract_is_a_parameter_of_every_loss_and_survives_clone():
    for name in available_losses():
        assert get_loss_class(name)().get_params()["extract"] is None
    loss = make_loss("dkd", {"extract": 1.0})
    copy = clone(loss)
    copy.set_params(extract=2.0)
    assert clone(loss).extract == 1.0 and copy.extract == 2.0 and loss.extract == 1.0


def test_a_users_loss_gets_extract_from_the_base_class():
    class Mine(DistillationLoss):
        terms = ("ce", "mine")

        def __init__(self, temperature: float = 2.0):
            self.temperature = temperature

        def compute_terms(self, student_logits, teacher_logits, y, temperature):
            return {"mine": Fn.kd_divergence(student_logits, teacher_logits, temperature).mean()}

    loss = clone(Mine(extract=1.0)).initialize()
    assert loss.get_params() == {"temperature": 2.0, "extract": 1.0}
    student, teacher = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    kd = make_loss("kd", {"temperature": 2.0, "kd_weight": 1.0, "extract": 1.0})(student, teacher, y)["kd"]
    torch.testing.assert_close(loss(student, teacher, y)["mine"] * 4.0, kd)


@pytest.mark.parametrize(("spec", "message"), [
    ({"extract": -1.0}, "loss__extract"),
    ({"extract": 0.0}, "loss__extract"),
    ({"extract": True}, "loss__extract"),
    ({"extract": "1"}, "loss__extract"),
])
def test_a_bad_extract_is_refused_by_name(spec, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make_loss("kd", spec)


@pytest.mark.parametrize(("name", "params"), [("ce", {}), ("tfkd", {"mode": "reg"}), ("kd_topk", {"k": 3})])
def test_extract_is_refused_where_there_are_no_teacher_logits_to_transform(name, params):
    with pytest.raises(ValueError, match="loss__extract=1.0"):
        make_loss(name, {**params, "extract": 1.0})


def test_ctkd_refuses_extract():
    with pytest.raises(ValueError, match="loss__extract"):
        make_loss("ctkd", {"extract": 1.0})


@pytest.mark.parametrize("name", sorted(SOFTENING_LOSSES))
def test_extract_adds_no_host_sync(name):
    """On meta tensors any host read of data raises (as tests/test_losses.py checks every loss)."""
    loss = make_loss(name, {**SOFTENING_LOSSES[name], "extract": 1.0})
    student = torch.empty(8, 10, device="meta", requires_grad=True)
    teacher = torch.empty(8, 10, device="meta")
    y = torch.empty(8, dtype=torch.long, device="meta")
    sum(loss(student, teacher, y).values()).backward()
    assert student.grad.device.type == "meta"


def test_extract_routes_through_the_classifier_and_a_grid_search(digits, teacher):
    X, y = digits
    clf = DistillationClassifier(MLP, teacher=teacher, loss="kd", loss__extract=1.0, max_epochs=2,
                                 batch_size=128, verbose=0, device="cpu", random_state=0)
    assert clf.fit(X[:300], y[:300]).loss_.extract == 1.0
    plain = clone(clf).set_params(loss__extract=None).fit(X[:300], y[:300])
    assert not np.allclose(clf.predict_proba(X[:50]), plain.predict_proba(X[:50]))  # it reaches the step
    search = GridSearchCV(clf, {"loss__extract": [None, 1.0]}, cv=2).fit(X[:300], y[:300])
    assert search.best_params_["loss__extract"] in (None, 1.0)
