"""Distillation losses: pure functions in :mod:`skd.losses.functional` and
one thin skorch callback per method, registered by name."""

from skd.losses import functional
from skd.losses.base import (
    DistillationLoss,
    LossCapabilities,
    available_losses,
    get_loss_class,
    make_loss,
    register_loss,
)
from skd.losses.cakd import CAKD
from skd.losses.dist import DIST
from skd.losses.dkd import DKD
from skd.losses.kd import CE, KD
from skd.losses.r2kd import R2KD
from skd.losses.tfkd import TfKD

__all__ = [
    "CAKD",
    "CE",
    "DIST",
    "DKD",
    "KD",
    "R2KD",
    "DistillationLoss",
    "LossCapabilities",
    "TfKD",
    "available_losses",
    "functional",
    "get_loss_class",
    "make_loss",
    "register_loss",
]

# the methods of issue 21 (registered by importing them)
from skd.losses.adaptive_ls import SelfKnowledgeLS  # noqa: E402
from skd.losses.nkd import NKD  # noqa: E402
from skd.losses.selective import SelectiveKD  # noqa: E402
from skd.losses.topk import TopKKD  # noqa: E402
from skd.losses.wttm import WTTM  # noqa: E402

__all__ += ["NKD", "WTTM", "SelectiveKD", "SelfKnowledgeLS", "TopKKD"]
from skd.losses.conskd import ConsKD  # noqa: E402
from skd.losses.ctkd import CTKD  # noqa: E402

__all__ += ["CTKD", "ConsKD"]
