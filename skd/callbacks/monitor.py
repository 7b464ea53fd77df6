"""What watches a fit: the loss without its schedules, early stopping, and the printed log.

A loss with a warm-up (DKD, CAKD) or a :class:`skd.SoftLossSchedule`
multiplies its terms by factors that change from epoch to epoch, so
``train_loss`` and ``valid_loss`` (the sums that are optimised) can rise
while the student improves. The trainer also records ``train_unscaled_loss``
and ``valid_unscaled_loss``: the same terms with those factors divided out,
one fixed objective across epochs. skorch's ``EarlyStopping`` watching the
loss is pointed at it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from skorch.callbacks import EarlyStopping, PrintLog

from skd.state import EpochValues

__all__ = ["LOSS_CALLBACK", "UNSCALED", "DistillationPrintLog", "unscaled_key", "unscaled_loss",
           "watch_unscaled", "with_loss"]

#: The name of the fit's loss among the net's ``callbacks_``.
LOSS_CALLBACK = "loss"

#: History keys of the loss with the schedules' factors divided out.
UNSCALED = {"train_loss": "train_unscaled_loss", "valid_loss": "valid_unscaled_loss"}


def unscaled_key(loss_name: str) -> str:
    """``"train_unscaled_loss"`` for ``"train_loss"``, ``"valid_unscaled_loss"`` for ``"valid_loss"``."""
    return UNSCALED[loss_name]


def unscaled_loss(means: dict, names: Sequence[str], prefix: str, values: EpochValues) -> float:
    """The sum of the epoch's term means, each divided by its factor in ``values``.

    A term whose factor is 0 this epoch (switched off by a schedule) carries
    no value to scale back and is left out.
    """
    total = 0.0
    for name in names:
        scale = values.scale_of(name)
        if scale > 0:
            total += means[prefix + name] / scale
    return total


def watch_unscaled(callbacks: list) -> list:
    """Point ``EarlyStopping`` callbacks that watch the scaled loss at the unscaled one.

    The user's callback is left alone; a copy with ``monitor`` changed takes
    its place in the initialised list.
    """
    watched = []
    for name, callback in callbacks:
        if isinstance(callback, EarlyStopping) and callback.monitor in UNSCALED:
            callback = copy.copy(callback)
            callback.monitor = UNSCALED[callback.monitor]
        watched.append((name, callback))
    return watched


def with_loss(callbacks: list, loss) -> list:
    """``callbacks`` with the fit's ``loss`` as the callback :data:`LOSS_CALLBACK`, last.

    A loss is a skorch callback: in ``callbacks_`` skorch calls its hooks
    (its ``on_epoch_begin`` loads the epoch's values into the fit's state).
    The previous fit's loss, if any, makes way: each fit builds its own.
    """
    if any(name == LOSS_CALLBACK and callback is not loss and not hasattr(callback, "fit_state")
           for name, callback in callbacks):
        raise ValueError(f"A callback is named {LOSS_CALLBACK!r}, the name of the fit's loss among the "
                         "callbacks: give it another name, e.g. callbacks=[('my_loss', ...)].")
    kept = [(name, callback) for name, callback in callbacks if name != LOSS_CALLBACK]
    return [*kept, (LOSS_CALLBACK, loss)]


class DistillationPrintLog(PrintLog):
    """skorch's ``PrintLog`` with the loss first: ``train_loss``, then the terms in the loss's order.

    Columns: ``epoch``, ``train_loss``, the training terms in the order the
    loss returns them (``ce`` first), ``valid_loss``, the validation terms,
    ``valid_unscaled_loss``, then every other key in the order it was
    recorded, and ``dur`` last. ``train_unscaled_loss`` follows ``train_loss``:
    with a warm-up or a schedule, ``train_loss`` (the sum optimised) can rise
    while the student improves, and the unscaled loss is the steady measure.
    Parameters are skorch's; the trainer's step counts (``graph_steps``,
    ``eager_steps``) are recorded in ``history`` but not printed by default.
    """

    def __init__(self, keys_ignored=("graph_steps", "eager_steps"), sink=print, tablefmt="simple",
                 floatfmt=".4f", stralign="right"):
        super().__init__(keys_ignored=keys_ignored, sink=sink, tablefmt=tablefmt,
                         floatfmt=floatfmt, stralign=stralign)

    def on_epoch_end(self, net, **kwargs):
        loss = getattr(net, "loss_", None)
        terms = list(loss.terms) if loss is not None else []
        self.term_names_ = terms + [name + "_aug" for name in terms if name != "ce"]
        super().on_epoch_end(net, **kwargs)

    def _sorted_keys(self, keys):
        shown = [key for key in super()._sorted_keys(keys) if key not in ("epoch", "dur")]
        terms = getattr(self, "term_names_", [])
        first = ["train_loss", "train_unscaled_loss", *terms, "valid_loss", *["valid_" + t for t in terms],
                 "valid_unscaled_loss"]
        head = [key for key in first if key in shown]
        rest = [key for key in shown if key not in head]
        return [key for key in ("epoch",) if key in keys and key not in self.keys_ignored_] + head + rest \
            + [key for key in ("dur",) if key in keys and key not in self.keys_ignored_]
