"""A student that turns NaN on cue, for the non-finite guard's tests."""

from skorch.callbacks import Callback

from skd import MLP


class PoisonableMLP(MLP):
    """An MLP whose next forward returns NaN when ``poison`` is set."""

    poison = False

    def forward(self, X):
        out = super().forward(X)
        if self.poison:
            self.poison = False
            out = out * float("nan")
        return out


class PoisonAt(Callback):
    """Makes the student's output NaN at one (epoch, batch), 1-based."""

    def __init__(self, epoch, batch):
        self.epoch = epoch
        self.batch = batch

    def on_batch_begin(self, net, training=False, **kwargs):
        here = (len(net.history), len(net.history[-1]["batches"]))
        if training and here == (self.epoch, self.batch):
            net.module_.poison = True
