"""What the zoo's context networks share: a dilated ResNet trunk, an optional auxiliary head, multi-grid and deep stem.

DeepLab, PSPNet, DANet, CCNet, OCRNet, CPNet and ACFNet all read a ResNet's last feature maps (dilated
to output stride 8 or 16), add a context head, and up-sample the head's logits to the input.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones import ResNetEncoder
from segarch.blocks import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_bool, check_choice, check_positive_int, check_spatial_dims
from segarch.nets._base import SegmentationNet

__all__ = ["DilatedResNetNet", "FCNHead", "apply_multi_grid", "apply_deep_stem"]


def apply_multi_grid(stage: nn.Module, grid, net: str) -> None:
    """Give the residual units of a dilated stage DeepLab v3's multi-grid rates, in place.

    Unit ``i`` of the stage gets dilation ``stage_rate · grid[i % len(grid)]`` on its 3×3 convolutions
    (padding kept "same"), e.g. (2, 4, 8) for grid (1, 2, 4) at output stride 16. Parameters are unchanged.
    """
    try:
        grid = tuple(int(g) for g in grid)
        ok = len(grid) >= 1 and all(g >= 1 for g in grid)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"`multi_grid` must be a non-empty sequence of positive integers or None for {net}, got "
                         f"{grid!r}.")
    for i, unit in enumerate(stage):
        convs = [m for name, m in unit.named_modules()
                 if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.kernel_size[0] == 3 and "shortcut" not in name]
        for conv in convs:
            rate = conv.dilation[0] * grid[i % len(grid)]
            conv.dilation = (rate,) * len(conv.kernel_size)
            conv.padding = (rate,) * len(conv.kernel_size)


def apply_deep_stem(encoder: ResNetEncoder, in_channels: int) -> None:
    """Replace a ResNet encoder's 7×7 stem by PSPNet's deep stem, in place.

    Three 3×3 conv-norm-acts (stride 2, then 1, 1) with ``w, w, 2w`` channels (``w`` = the stem width: 64,
    64, 128 in PSPNet's ResNet), so the first residual unit reads ``2w`` channels: its input convolution
    and shortcut are rebuilt for that width.
    """
    from segarch.backbones.resnet import BasicBlock, Bottleneck

    d = encoder.spatial_dims
    w = encoder.out_channels[0]
    encoder.stem = nn.Sequential(
        ConvNormAct(d, in_channels, w, 3, stride=2), ConvNormAct(d, w, w, 3), ConvNormAct(d, w, 2 * w, 3)
    )
    first = encoder.layers[0][0]
    block = Bottleneck if isinstance(first, Bottleneck) else BasicBlock
    dilation = first.conv2.conv.dilation[0]
    encoder.layers[0][0] = block(d, 2 * w, w, 1, dilation)
    encoder.out_channels = (2 * w,) + tuple(encoder.out_channels[1:])


class FCNHead(nn.Sequential):
    """A 3×3 conv-norm-act, dropout and a 1×1 classifier: PSPNet's auxiliary head (and FCN-style side heads)."""

    def __init__(self, spatial_dims: int, in_channels: int, mid_channels: int, out_channels: int,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.add_module("conv", ConvNormAct(spatial_dims, in_channels, mid_channels, 3, dropout=dropout))
        self.add_module("classifier", Conv[Conv.CONV, spatial_dims](mid_channels, out_channels, 1))


class DilatedResNetNet(SegmentationNet):
    """Base of the dilated-ResNet context networks.

    Builds ``self.encoder`` (:class:`~segarch.backbones.ResNetEncoder`), sets ``size_divisor`` to the
    output stride (or ``size_divisor`` when larger) and, with ``aux_head``, an FCN head
    on the third stage whose logits (training mode only) are kept in ``self.aux_logits`` at the input's
    size, for a weighted auxiliary loss as in PSPNet (weight 0.4); ``forward`` still returns only the
    main logits.

    Subclasses implement :meth:`head` (encoder features → logits at the trunk's resolution).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int, output_stride: int,
                 base_width: int, aux_head: bool, net: str, output_strides=(8, 16),
                 size_divisor: int | None = None) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), net)
        check_choice(output_stride, tuple(output_strides), "output_stride", net)
        check_bool(aux_head, "aux_head", net)
        self.spatial_dims = spatial_dims
        # The trunk must split the input evenly into cells of ``output_stride``; a net whose card promises a
        # larger divisor for every option (DeepLab v3 at 8 or 16) keeps that one so card and net agree.
        self.size_divisor = max(output_stride, size_divisor or 1)
        self.encoder = ResNetEncoder(spatial_dims, in_channels, depth=depth, output_stride=output_stride,
                                     base_width=check_positive_int(base_width, "base_width", net))
        self.aux = None
        if aux_head:
            c3 = self.encoder.out_channels[3]
            self.aux = FCNHead(spatial_dims, c3, max(c3 // 4, 1), out_channels)
        self.aux_logits: torch.Tensor | None = None

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        features = self.encoder(x)
        if self.aux is not None and self.training:
            self.aux_logits = resize_to(self.aux(features[3]), x.shape[2:])
        else:
            self.aux_logits = None
        return resize_to(self.head(features), x.shape[2:])
