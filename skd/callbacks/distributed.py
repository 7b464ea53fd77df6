"""Data-parallel training: the gradient all-reduce callback."""

from __future__ import annotations

import torch
import torch.distributed as dist
from skorch.callbacks import Callback

from skd.distributed import world

__all__ = ["GradientAllReduce"]


class GradientAllReduce(Callback):
    """Average the student's gradients over the processes of a ``torch.distributed`` group.

    Add it to every rank's classifier, e.g.
    ``callbacks=[("allreduce", GradientAllReduce())]``, and fit each rank on
    its :func:`shard` with the same settings. With ``batch_size=b`` on ``k``
    ranks, each step uses the gradient of ``k * b`` samples.

    Parameters
    ----------
    group : torch.distributed.ProcessGroup or None, default=None
        The group to average over; None is the default (world) group.

    Notes
    -----
    A rank that stops early (an error, ``on_nonfinite="raise"``, an
    ``EarlyStopping`` on per-rank scores) leaves the others waiting in the
    all-reduce until the group's timeout; give ``init_process_group`` a
    ``timeout``.
    """

    def __init__(self, group=None):
        self.group = group

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        world(self.group)
        source = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        for tensor in net.module_.state_dict().values():  # views: broadcast writes the weights
            dist.broadcast(tensor, src=source, group=self.group)

    def on_grad_computed(self, net, named_parameters, X=None, y=None, training=None, **kwargs):
        grads = [param.grad for _, param in named_parameters if param.grad is not None]
        if not grads:
            return
        _, world_size = world(self.group)
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        dist.all_reduce(flat, group=self.group)
        flat /= world_size
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()
