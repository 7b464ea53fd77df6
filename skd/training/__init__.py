"""The training engine: the trainer, its step (eager and CUDA-graph captured), the guard, the ledger.

The per-epoch state the loss and the step share lives below both, in :mod:`skd.state`.
"""

from skd.training.step import BatchLoss, StepParts, batch_loss, batch_terms, stack_terms, sum_terms, terms_for
from skd.training.trainer import TrainableNet, Trainer

__all__ = ["BatchLoss", "StepParts", "TrainableNet", "Trainer", "batch_loss", "batch_terms", "stack_terms",
           "sum_terms", "terms_for"]
