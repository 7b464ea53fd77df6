"""skd: scikit-learn-native knowledge distillation on skorch and PyTorch."""

from skd.augment import BatchAugment
from skd.callbacks import Checkpoint, LoadInitState, SoftLossSchedule, StudentPruning, TemperatureSchedule
from skd.classifier import DistillationClassifier
from skd.hints import Hint
from skd.losses import (
    CAKD,
    CE,
    DIST,
    DKD,
    KD,
    R2KD,
    DistillationLoss,
    TfKD,
    available_losses,
)
from skd.pipeline import OnFeatures, WriteBook
from skd.students import MLP, SmallCNN
from skd.teachers import EnsembleTeacher, PrunedTeacher, Teacher
from skd.training.trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "BatchAugment",
    "CAKD",
    "CE",
    "Checkpoint",
    "DIST",
    "DKD",
    "KD",
    "LoadInitState",
    "MLP",
    "OnFeatures",
    "PrunedTeacher",
    "R2KD",
    "DistillationClassifier",
    "DistillationLoss",
    "EnsembleTeacher",
    "Hint",
    "SmallCNN",
    "SoftLossSchedule",
    "StudentPruning",
    "TemperatureSchedule",
    "Teacher",
    "Trainer",
    "TfKD",
    "WriteBook",
    "available_losses",
]
