"""skorch's hooks of the net that hand its training loop to the trainer (a mixin of the classifier).

skorch's ``fit_loop`` calls ``get_iterator`` and ``run_single_epoch`` per
epoch; ``infer`` and ``get_loss`` are skorch's per-batch extension points
(the trainer's step calls ``infer``; ``get_loss`` sums the same terms). Here each of
them is routed to the fit's :class:`~skd.training.trainer.Trainer`
(``net.trainer_``) or to :mod:`skd.training.batching`; nothing else of the
net is touched.
"""

from __future__ import annotations

import torch
from sklearn.exceptions import NotFittedError
from skorch import NeuralNet

from skd._device import checked_seed, epoch_generator
from skd.book import features_of
from skd.training.batching import make_iterator
from skd.training.optimizers import with_fused_default

__all__ = ["TrainerHooks"]


class TrainerHooks:
    """``get_iterator``, ``run_single_epoch``, ``infer`` and ``get_loss``, routed to the trainer;
    ``get_params_for_optimizer`` with the fused update by default (:mod:`skd.training.optimizers`)."""

    def net_steps(self) -> tuple[str, ...]:
        """The step methods this net's class overrides (``"Class.method"``): ``get_loss``,
        ``train_step_single``, ``validation_step``. The trainer's eager step honours them and
        the captured step is refused (:class:`skd.training.Trainer`)."""
        own = {"get_loss": TrainerHooks.get_loss, "train_step_single": NeuralNet.train_step_single,
               "validation_step": NeuralNet.validation_step}
        cls = type(self)
        return tuple(f"{cls.__name__}.{name}" for name, method in own.items()
                     if getattr(cls, name) is not method)

    def get_iterator(self, dataset, training=False):
        """Batches of ``dataset``: device slices for in-memory data, else a DataLoader."""
        prefix = "iterator_train" if training else "iterator_valid"
        batching = self.get_params_for("trainer").get("batching", getattr(self.trainer, "batching", "auto"))
        return make_iterator(
            dataset, self.iterator_train if training else self.iterator_valid,
            self.get_params_for(prefix), self.batch_size, self.device, training=training,
            fast=batching == "auto",
            generator=self._epoch_generator,
        )

    def get_params_for_optimizer(self, prefix, named_parameters):
        """skorch's optimizer options, with ``fused=True`` where torch has it and the user chose none."""
        args, kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        if prefix == "optimizer":
            kwargs = with_fused_default(self.optimizer, args, kwargs, getattr(self, "module_", None))
        return args, kwargs

    def _epoch_generator(self):
        """This epoch's shuffle generator, read when the epoch's batches start (skorch makes the
        iterator once per fit): it depends only on the seed and the epoch number, so a resumed
        fit shuffles as an uninterrupted one."""
        epoch = len(self.history) if getattr(self, "history_", None) is not None else 0
        return epoch_generator(checked_seed(self.random_state), epoch)

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """One epoch through :class:`skd.training.Trainer` (terms summed on the device)."""
        self.trainer_.run_epoch(iterator, training=training, prefix=prefix, **fit_params)

    def _set_training(self, training=True):
        # skorch calls module.train() on every batch, which walks every
        # submodule; skip it when the student is already in that mode.
        module = getattr(self, "module_", None)
        if isinstance(module, torch.nn.Module) and module.training == training:
            return
        super()._set_training(training)

    def infer(self, x, **fit_params):
        """The student's logits for ``x`` (a book's features), in the trainer's precision."""
        trainer = getattr(self, "trainer_", None)
        if trainer is None:
            return super().infer(features_of(x), **fit_params)
        with trainer.autocast():
            return super().infer(features_of(x), **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The sum of the loss terms of a batch, at the fit's epoch state (skorch's extension point).

        The same terms as the trainer's step (:func:`skd.training.step.terms_for`);
        a subclass may override it: the eager step then goes through it, and
        the captured step is refused (see :class:`skd.training.Trainer`).
        """
        if getattr(self, "trainer_", None) is None:
            raise NotFittedError("get_loss needs the loss and trainer of a fit; call fit first.")
        return self.trainer_.loss_of(y_pred, y_true, X)
