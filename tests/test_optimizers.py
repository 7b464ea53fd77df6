"""The fused optimizer update by default: where torch has one and the user chose none."""

import pickle

import numpy as np
import pytest
import torch

from skd import MLP, DistillationClassifier
from skd.training.optimizers import with_fused_default


def _params(dtype=torch.float32):
    return [torch.nn.Parameter(torch.zeros(3, dtype=dtype))]


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD,
                                       torch.optim.Adagrad])
def test_torchs_optimizers_with_a_fused_form_get_it_on_the_cpu(optimizer):
    assert with_fused_default(optimizer, (_params(),), {"lr": 0.1}) == {"lr": 0.1, "fused": True}


@pytest.mark.parametrize("kwargs", [{"fused": False}, {"foreach": True}, {"foreach": None},
                                    {"differentiable": True}])
def test_a_choice_the_user_made_is_kept(kwargs):
    assert with_fused_default(torch.optim.Adam, (_params(),), kwargs) == kwargs


def test_a_parameter_group_that_chooses_is_kept():
    groups = [{"params": _params(), "foreach": False}, {"params": _params()}]
    assert "fused" not in with_fused_default(torch.optim.Adam, (groups,), {})
    groups = [{"params": _params(), "lr": 0.5}, {"params": _params()}]
    assert with_fused_default(torch.optim.Adam, (groups,), {})["fused"] is True


class MyAdam(torch.optim.Adam):
    pass


@pytest.mark.parametrize("optimizer", [torch.optim.RMSprop, torch.optim.LBFGS, MyAdam])
def test_other_optimizers_and_subclasses_are_left_alone(optimizer):
    assert with_fused_default(optimizer, (_params(),), {}) == {}


def test_integer_parameters_and_sparse_embeddings_are_left_alone():
    mixed = [*_params(), torch.nn.Parameter(torch.zeros(3, dtype=torch.long), requires_grad=False)]
    assert with_fused_default(torch.optim.Adam, (mixed,), {}) == {}
    sparse = torch.nn.Sequential(torch.nn.Embedding(5, 2, sparse=True))
    assert with_fused_default(torch.optim.SGD, (_params(),), {}, sparse) == {}
    assert with_fused_default(torch.optim.Adagrad, (_params(),), {}, sparse) == {}
    assert with_fused_default(torch.optim.Adam, (_params(),), {}, sparse)["fused"] is True


def test_adagrad_is_not_fused_on_cuda_where_torch_has_no_fused_kernel():
    meta = [torch.nn.Parameter(torch.zeros(3, device="meta"))]
    assert with_fused_default(torch.optim.Adagrad, (meta,), {}) == {}
    assert with_fused_default(torch.optim.Adam, (meta,), {}) == {}  # neither CPU nor CUDA


def _fit(X, y, **params):
    # the plain MLP: standardized digits (rare edge pixels scaled up) make Adam at lr=0.05, the
    # high rate these tests use to see the update work, amplify rounding differences chaotically
    return DistillationClassifier(MLP, loss="ce", max_epochs=3, batch_size=64, verbose=0, random_state=0,
                                  module__standardize=False, **params).fit(X, y)


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.SGD])
def test_a_fit_runs_the_fused_update_and_matches_torchs_default_to_rounding(digits, optimizer):
    X, y = digits
    fused = _fit(X, y, optimizer=optimizer, lr=0.05)
    assert fused.optimizer_.param_groups[0]["fused"] is True
    loop = _fit(X, y, optimizer=optimizer, lr=0.05, optimizer__fused=False)
    assert not loop.optimizer_.param_groups[0]["fused"]
    assert fused.get_params()["optimizer"] is optimizer and "optimizer__fused" not in fused.get_params()
    for a, b in zip(fused.module_.parameters(), loop.module_.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fused.history[:, "train_loss"], loop.history[:, "train_loss"], rtol=1e-5)


def test_a_fused_fit_pickles_and_keeps_training(digits):
    X, y = digits
    clf = pickle.loads(pickle.dumps(_fit(X, y)))
    assert clf.optimizer_.param_groups[0]["fused"] is True
    before = clf.history[-1, "train_loss"]
    clf.partial_fit(X, y)
    assert clf.optimizer_.param_groups[0]["fused"] is True and clf.history[-1, "train_loss"] < before


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="needs a CUDA GPU"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer, step_mode", [(torch.optim.Adam, "eager"), (torch.optim.Adam, "graph"),
                                                  (torch.optim.SGD, "eager"), (torch.optim.SGD, "graph"),
                                                  (torch.optim.Adagrad, "eager")])
def test_the_fused_update_trains_in_the_eager_and_the_captured_step(digits, device, optimizer, step_mode):
    X, y = digits
    clf = _fit(X, y, optimizer=optimizer, lr=0.05, device=device, trainer__step_mode=step_mode,
               iterator_train__drop_last=True)
    fused = optimizer is not torch.optim.Adagrad or device == "cpu"  # torch has no fused CUDA Adagrad
    assert bool(clf.optimizer_.param_groups[0]["fused"]) is fused
    # the captured step warms up with a few eager steps before its capture
    assert clf.train_step_path_ == ("graph+eager" if step_mode == "graph" else "eager")
    losses = clf.history[:, "train_loss"]
    assert losses[-1] < losses[0]
