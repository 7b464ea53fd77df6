"""scikit-learn's conformance suite on a small default student."""

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from skd import MLP, DistillationClassifier


def small_student():
    return DistillationClassifier(
        MLP,
        teacher=LogisticRegression(max_iter=200),
        loss="kd",
        unlabelled=None,  # scikit-learn's checks use -1 as a class (labels {-1, 1})
        module__hidden_units=(32,),
        optimizer=torch.optim.Adam,
        lr=0.02,
        max_epochs=30,
        batch_size=64,
        verbose=0,
        random_state=0,
        device="cpu",
    )


EXPECTED_FAILED = {
    "check_no_attributes_set_in_init": (
        "skorch sets history_, initialized_ and virtual_params_ in __init__ and stores "
        "routed module__/loss__ parameters as attributes"
    ),
}


@parametrize_with_checks([small_student()], expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_compatible(estimator, check):
    check(estimator)
