"""A fit either succeeds or leaves a fitted estimator as it was.

``fit`` and ``partial_fit`` run inside :func:`fit_or_restore`. If they raise
(bad features or labels, a teacher that fails, a non-finite loss, a
callback's error), a fitted estimator gets back every attribute it had
before the call: ``n_features_in_``, ``classes_``, the label encoder,
``data_dims_``, the student's and the optimizer's state, ``history``. The
error gets a note saying so.

An estimator that was not fitted has no earlier state worth more than the
failed fit's work: it keeps the epochs that the failed fit finished (the
guard leaves the student at its last good weights), and stays unfitted if
none finished. A ``KeyboardInterrupt`` during training is no failure: as
in skorch, training stops and the fit returns with the weights reached.

Not restored: the callbacks' own state (a scheduler's position, an early
stopping's count) and what the fit wrote outside the estimator (a book
cache, checkpoint files).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch

__all__ = ["fit_or_restore"]


class _Saved:
    """What a failed fit must give back: the attributes, the trained state, the history rows."""

    def __init__(self, net):
        self.attributes = dict(vars(net))
        self.fitted = bool(getattr(net, "initialized_", False)) and "classes_inferred_" in self.attributes
        history = self.attributes.get("history_")  # cleared in place by a fresh fit's initialize
        self.rows = [dict(row) for row in history] if history is not None else None
        # trained in place by a warm start or partial_fit; a fresh fit builds new objects
        self.modules = {key: {name: t.detach().clone() for name, t in value.state_dict().items()}
                        for key, value in self.attributes.items()
                        if isinstance(value, torch.nn.Module) and key.endswith("_")
                        and not key.startswith("teacher")}
        self.optimizers = {key: copy.deepcopy(value.state_dict())
                           for key, value in self.attributes.items()
                           if isinstance(value, torch.optim.Optimizer)}

    def keeps_failed_work(self, net) -> bool:
        """An unfitted estimator keeps a failed fit that finished an epoch (nothing is lost)."""
        history = getattr(net, "history_", None)
        return not self.fitted and history is not None and len(history) > len(self.rows or ())

    def restore(self, net) -> None:
        vars(net).clear()
        vars(net).update(self.attributes)
        with torch.no_grad():
            for key, state in self.modules.items():
                self.attributes[key].load_state_dict(state)
        for key, state in self.optimizers.items():
            self.attributes[key].load_state_dict(state)
        if self.rows is not None:
            net.history_.clear()
            net.history_.extend(self.rows)


@contextlib.contextmanager
def fit_or_restore(net) -> Iterator[None]:
    """Run a fit of ``net``; on an exception, give ``net`` back its state from before (see the module).

    Parameters
    ----------
    net : DistillationClassifier
    """
    saved = _Saved(net)
    try:
        yield
    except BaseException as error:
        if saved.keeps_failed_work(net):
            raise
        saved.restore(net)
        state = ("as it was before this call (fitted attributes, weights, optimizer state and history)"
                 if saved.fitted else "unfitted, as before this call")
        error.add_note(f"skd: this {type(net).__name__} is left {state}.")
        raise
