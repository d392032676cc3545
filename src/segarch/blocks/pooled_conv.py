"""A 1×1 conv-norm-act for globally pooled features that also trains at batch size 1.

Image-level pooling (DeepLab v3's ASPP), PSPNet's 1×1 pyramid level and attention weights computed
from a global average (AttaNet) apply batch norm to one value per channel and sample. In training
mode ``BatchNorm`` refuses a batch of one such value (there is no batch statistic), which would make
these networks untrainable at batch size 1 — common for 3D volumes. Here the normalisation falls back
to its running statistics in that one case, and behaves as ``BatchNorm`` otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer

__all__ = ["PooledConvNormAct", "PooledBatchNorm"]


class PooledBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm for any dimensionality that uses running statistics when a channel has a single value."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"PooledBatchNorm expects input of shape (B, C, ...), got shape {tuple(input.shape)}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() // x.shape[1] == 1:
            # One value per channel has no batch statistics: normalise with the running ones, update nothing.
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class PooledConvNormAct(nn.Sequential):
    """1×1 convolution (no bias), :class:`PooledBatchNorm` and an activation (MONAI name, or ``None``)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, act="relu") -> None:
        super().__init__()
        self.add_module("conv", Conv[Conv.CONV, spatial_dims](in_channels, out_channels, 1, bias=False))
        self.add_module("norm", PooledBatchNorm(out_channels))
        if act is not None:
            self.add_module("act", get_act_layer(act))
