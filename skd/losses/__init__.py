"""Distillation losses: pure functions in :mod:`skd.losses.functional` and
one thin skorch callback per method, registered by name."""

from skd.losses import functional
from skd.losses.base import (
    DistillationLoss,
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
    "TfKD",
    "available_losses",
    "functional",
    "get_loss_class",
    "make_loss",
    "register_loss",
]
