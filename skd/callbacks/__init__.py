"""skd's skorch callbacks, in one package.

- :class:`SoftLossSchedule`, :class:`TemperatureSchedule`: epoch schedules
  of the loss (read by the loss through :func:`find_schedules`);
- :class:`StudentPruning`: prune the student while it learns;
- :class:`GradientAllReduce`: data-parallel fits over ``torch.distributed``;
- :class:`DistillationPrintLog` and :func:`watch_unscaled`: the printed log
  and the unscaled loss that ``EarlyStopping`` watches; :func:`with_loss`:
  the fit's loss among the callbacks (a loss is a skorch callback);
- :class:`Checkpoint` and :class:`LoadInitState`: atomic checkpoints, and a
  resume that equals an uninterrupted fit (LR schedulers included).
"""

from skd.callbacks.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointWarning,
    LoadInitState,
    check_resume_callbacks,
)
from skd.callbacks.distributed import GradientAllReduce
from skd.callbacks.monitor import (
    LOSS_CALLBACK,
    UNSCALED,
    DistillationPrintLog,
    unscaled_key,
    unscaled_loss,
    watch_unscaled,
    with_loss,
)
from skd.callbacks.pruning import StudentPruning
from skd.callbacks.schedules import Schedules, SoftLossSchedule, TemperatureSchedule, find_schedules

__all__ = [
    "UNSCALED",
    "Checkpoint",
    "CheckpointError",
    "CheckpointWarning",
    "LoadInitState",
    "check_resume_callbacks",
    "DistillationPrintLog",
    "GradientAllReduce",
    "Schedules",
    "SoftLossSchedule",
    "StudentPruning",
    "TemperatureSchedule",
    "find_schedules",
    "unscaled_key",
    "unscaled_loss",
    "watch_unscaled",
    "with_loss",
    "LOSS_CALLBACK",
]
