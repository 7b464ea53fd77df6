"""The training step and its epoch loop (eager and CUDA-graph captured)."""

from skd.training.step import StepParts, batch_terms, stack_terms, terms_for
from skd.training.trainer import Trainer

__all__ = ["StepParts", "Trainer", "batch_terms", "stack_terms", "terms_for"]
