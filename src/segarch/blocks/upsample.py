"""Up-sampling by a factor: a learned transposed convolution or a fixed interpolation."""

from __future__ import annotations

from torch import nn
from monai.networks.blocks import UpSample as _MonaiUpSample

from segarch.blocks.resize import interp_mode

__all__ = ["UpSample", "UPSAMPLE_MODES"]

UPSAMPLE_MODES = ("deconv", "interp")


class UpSample(nn.Module):
    """Up-sample by ``scale`` along every spatial axis.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        scale: integer up-sampling factor.
        mode: ``"deconv"`` — a transposed convolution with kernel and stride ``scale`` (U-Net's
            "up-convolution"); ``"interp"`` — (bi/tri)linear interpolation, with a 1×1 convolution
            only when the channel count changes.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: int = 2,
                 mode: str = "deconv") -> None:
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise ValueError(f"`mode` must be one of {UPSAMPLE_MODES}, got {mode!r}.")
        if mode == "deconv":
            self.up = _MonaiUpSample(spatial_dims, in_channels, out_channels, scale_factor=scale, mode="deconv")
        else:
            self.up = _MonaiUpSample(
                spatial_dims, in_channels, out_channels, scale_factor=scale, mode="nontrainable",
                interp_mode="linear" if spatial_dims == 1 else interp_mode(spatial_dims),
                align_corners=False,
            )

    def forward(self, x):
        return self.up(x)
