"""What an epoch leaves in ``history``: loss and term means, accumulated on the device.

A training step adds its batch's loss and terms to device tensors; the host
reads them once, at the end of the epoch. Per-batch records are optional
(``record_batches``): each one costs a device-to-host copy. A batch whose step
the guard undid (``trainer__on_nonfinite="skip"``) is left out of the epoch
means (the kept samples are counted on the device) and recorded per batch as
NaN, never as a loss of 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["EpochLedger"]


class EpochLedger:
    """Batch-size-weighted sums of the loss and its named terms, on the device.

    A row is ``[total, *terms, kept]``: ``kept`` is 1, or 0 for a skipped
    batch (whose row is all 0), so the sums' last entry counts the samples
    of kept batches, the divisor of the means.

    Parameters
    ----------
    prefix : str
        ``""`` for training, ``"valid_"`` for validation; prefixes the term names.
    loss_name : str
        History key of the summed loss (``"train_loss"`` or ``"valid_loss"``).
    device : torch.device
    record_batches : bool
        Also return each batch's values to the host, for per-batch history records.
    """

    def __init__(self, prefix: str, loss_name: str, device, record_batches: bool):
        self.prefix = prefix
        self.loss_name = loss_name
        self.device = device
        self.record_batches = record_batches
        self.names: tuple[str, ...] | None = None
        self.sums: torch.Tensor | None = None
        self.n_samples = 0
        #: Epochs started (:meth:`reset` calls); a captured step re-checks its signature on a new one.
        self.epochs = 0

    def start(self, names: Sequence[str]) -> None:
        """Fix the term names on the first batch and allocate the sums once.

        The sums keep their storage across epochs (a captured step adds to
        them in place); :meth:`reset` zeroes them.
        """
        names = tuple(names)
        if self.names is None:
            self.names = names
            self.sums = torch.zeros(len(names) + 2, device=self.device)
            self._one = torch.ones(1, device=self.device)
        elif names != self.names:
            raise RuntimeError(
                f"The loss returned the terms {list(names)} after {list(self.names)}; a loss "
                "must return the same terms on every batch."
            )

    def reset(self) -> None:
        """Start a new epoch."""
        if self.sums is not None:
            self.sums.zero_()
        self.n_samples = 0
        self.epochs += 1

    def row(self, total: torch.Tensor, values: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
        """``[total, *values, 1]`` of one batch, all 0 where the batch was skipped (``kept`` False)."""
        row = torch.cat([total.detach().reshape(1).float(), values, self._one])
        return row if kept is None else torch.where(kept, row, 0.0)

    def add(self, row: torch.Tensor, batch_size: int) -> None:
        """Add one batch's row (device work only)."""
        self.sums.add_(row, alpha=batch_size)

    def count(self, batch_size: int) -> None:
        """Count one batch's samples (host bookkeeping, no device work)."""
        self.n_samples += batch_size

    def batch_record(self, row: torch.Tensor) -> dict[str, float]:
        """One batch's values as host floats (a device-to-host copy); NaN for a skipped batch."""
        *values, kept = row.tolist()
        if not kept:
            values = [float("nan")] * len(values)
        terms = zip(self.names, values[1:], strict=True)
        return {self.loss_name: values[0], **{self.prefix + name: value for name, value in terms}}

    def means(self) -> dict[str, float]:
        """The epoch's means over the kept batches (one device-to-host copy); empty if no batch ran.

        NaN where every batch of the epoch was skipped.
        """
        if self.names is None or self.n_samples == 0:
            return {}
        values = (self.sums[:-1] / self.sums[-1]).tolist()
        terms = zip(self.names, values[1:], strict=True)
        return {self.loss_name: values[0], **{self.prefix + name: value for name, value in terms}}
