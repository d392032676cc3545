"""A transposed convolution initialised to (bi/tri)linear interpolation, as FCN's in-network up-sampling.

Long et al. 2015 (arXiv:1411.4038, Sec. 3.3) initialise their 2× up-sampling layers to bilinear
interpolation and let them learn; LRR (arXiv:1605.02264) starts its reconstruction filters the same way.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

__all__ = ["BilinearDeconv", "linear_kernel"]


def linear_kernel(size: int, spatial_dims: int) -> torch.Tensor:
    """The separable (bi/tri)linear interpolation kernel of side ``size`` for up-sampling by ``ceil(size / 2)``."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    kernel = ramp
    for _ in range(spatial_dims - 1):
        kernel = kernel[..., None] * ramp
    return kernel


class BilinearDeconv(nn.Module):
    """Up-sample ``channels`` maps by ``scale`` with a transposed convolution started at linear interpolation.

    Kernel ``2 * scale``, stride ``scale`` and padding ``scale // 2`` give exactly ``scale``× the input size.
    Each channel's filter is the interpolation kernel on the diagonal (channel ``i`` → channel ``i``), zero
    elsewhere, so an untrained layer interpolates; training may change it and mix channels, as in FCN.

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels.
        scale: even up-sampling factor (2, 4, ...).
    """

    def __init__(self, spatial_dims: int, channels: int, scale: int = 2) -> None:
        super().__init__()
        if scale < 2 or scale % 2:
            raise ValueError(f"`scale` must be an even integer >= 2 for BilinearDeconv, got {scale!r}.")
        self.deconv = Conv[Conv.CONVTRANS, spatial_dims](
            channels, channels, kernel_size=2 * scale, stride=scale, padding=scale // 2, bias=False
        )
        with torch.no_grad():
            weight = torch.zeros_like(self.deconv.weight)
            kernel = linear_kernel(2 * scale, spatial_dims)
            for c in range(channels):
                weight[c, c] = kernel
            if self.deconv.weight.device.type != "meta":
                self.deconv.weight.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(x)
