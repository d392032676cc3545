"""What every zoo network shares: the input-shape contract (the argument checks are in :mod:`segarch.layers.checks`)."""

from __future__ import annotations

import torch

from segarch.layers.batch_statistics import ExplainsBatchStatistics
from segarch.layers.checks import padded_shape

__all__ = ["SegmentationNet"]


class SegmentationNet(ExplainsBatchStatistics):
    """Base of the zoo's dense-prediction networks.

    Subclasses set ``spatial_dims`` and ``size_divisor`` and call :meth:`check_input_shape` first
    in ``forward``, so a wrong input fails with a message that states the divisor and a padded shape. Training on
    too small a batch and input for the network's batch norm fails with a message saying what is allowed
    (:class:`~segarch.layers.batch_statistics.ExplainsBatchStatistics`).
    """

    spatial_dims: int = 2
    size_divisor: int = 1

    def check_input_shape(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{type(self).__name__} ({self.spatial_dims}D) expects input of shape (B, C, "
                f"{', '.join('ZYX'[-self.spatial_dims:])}), got shape {tuple(x.shape)}."
            )
        spatial = tuple(x.shape[2:])
        if any(s % self.size_divisor for s in spatial):
            raise ValueError(
                f"{type(self).__name__} needs spatial sizes that are multiples of {self.size_divisor}, "
                f"got {spatial}; pad the input to {padded_shape(spatial, self.size_divisor)} "
                "(segarch.predict pads automatically)."
            )
