"""ESPNet (Mehta et al., ECCV 2018, "ESPNet: Efficient Spatial Pyramid of Dilated Convolutions for Semantic
Segmentation", arXiv:1803.06815).

The ESP module reduces ``N`` channels to ``d = N / K`` with a 1×1 convolution, filters them with
``K = 5`` parallel 3×3 convolutions dilated by 1, 2, 4, 8, 16, and merges them with hierarchical
feature fusion (each dilated output is added to the sum of the less dilated ones before concatenation,
which removes gridding artefacts), plus a residual connection. The strided ESP module reduces with a
3×3 stride-2 convolution and has no residual. ESPNet-C (Fig. 4c) reinforces the input image at 1/2
and 1/4; ESPNet (Fig. 4d) adds a light decoder that fuses class maps at 1/8, 1/4 and 1/2.
BatchNorm and PReLU follow every convolution.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Norm, Pool

from segarch.blocks.conv import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_features, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["ESPNet", "ESPModule", "norm_prelu"]


def norm_prelu(spatial_dims: int, channels: int) -> nn.Sequential:
    """Batch norm followed by a per-channel PReLU (ESPNet's "BR")."""
    return nn.Sequential(Norm[Norm.BATCH, spatial_dims](channels), nn.PReLU(channels))


def _cbr(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> ConvNormAct:
    return ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride=stride,
                       act=("prelu", {"num_parameters": out_channels}))


class ESPModule(nn.Module):
    """The (strided) ESP module: reduce, split into ``K`` dilated 3×3 convolutions, hierarchical fusion.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels; each branch has ``out_channels // K`` channels and the first
            takes the remainder, so the concatenation has exactly ``out_channels``.
        stride: 2 for the strided module (3×3 stride-2 reduction, no residual).
        residual: add the input (only when the shapes match; the paper's ESP modules in ESPNet's
            body do, the one in its decoder does not).
        branches: ``K`` (5 in the paper: dilations 1, 2, 4, 8, 16); with fewer output channels than
            ``K`` (the decoder's module at two classes) only the first ``out_channels`` branches are kept.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1,
                 residual: bool = True, branches: int = 5) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        branches = min(branches, out_channels)
        n = out_channels // branches
        n1 = out_channels - (branches - 1) * n
        k = 3 if stride == 2 else 1
        self.reduce = conv(in_channels, n, k, stride=stride, padding=k // 2, bias=False)
        self.branches = nn.ModuleList(
            conv(n, n1 if i == 0 else n, 3, padding=2 ** i, dilation=2 ** i, bias=False) for i in range(branches)
        )
        self.residual = residual and stride == 1 and in_channels == out_channels
        self.out = norm_prelu(spatial_dims, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        outs = [self.branches[0](reduced)]
        total = None
        for branch in self.branches[1:]:
            total = branch(reduced) if total is None else total + branch(reduced)  # hierarchical feature fusion
            outs.append(total)
        y = torch.cat(outs, dim=1)
        return self.out(y + x if self.residual else y)


class _InputPyramid(nn.Module):
    """The image down-sampled by repeated 3×3 stride-2 average pooling (input reinforcement)."""

    def __init__(self, spatial_dims: int, times: int) -> None:
        super().__init__()
        self.pool = Pool[Pool.AVG, spatial_dims](kernel_size=3, stride=2, padding=1)
        self.times = times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.times):
            x = self.pool(x)
        return x


@register(
    name="espnet", full_name="ESPNet",
    paper="ESPNet: Efficient Spatial Pyramid of Dilated Convolutions for Semantic Segmentation",
    reference="arXiv:1803.06815", year=2018, task="semantic", spatial_dims=(2, 3), size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 20, "alpha2": 2, "alpha3": 8, "decoder": True},
    paper_params=0.364,
    paper_params_source="Mehta et al. 2018, Cityscapes comparison with efficient networks: ESPNet (α2 = 2, α3 = 8) "
                        "0.364M parameters.",
    test_config={"alpha2": 1, "alpha3": 1, "features": (8, 20, 40)},
    notes="Fig. 4d with the authors' Cityscapes setting of 20 classes (19 + ignored). Transposed convolutions "
          "(2×2, stride 2) up-sample the decoder's class maps; ESPNet-C (decoder=False) up-samples bilinearly.",
)
class ESPNet(SegmentationNet):
    """ESPNet (with its decoder) or ESPNet-C (encoder with a 1×1 classifier), 2D or 3D.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        alpha2: ESP modules at 1/4 (``α2``; 2 in the paper).
        alpha3: ESP modules at 1/8 (``α3``; 8 in the paper).
        features: widths at 1/2, 1/4 and 1/8 (``(16, 64, 128)`` in the paper).
        decoder: ESPNet (``True``) or ESPNet-C (``False``: the 1/8 class map up-sampled bilinearly).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 8.

    Examples::

        >>> net = ESPNet(2, 3, 20)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 20, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, alpha2: int = 2, alpha3: int = 8,
                 features=(16, 64, 128), decoder: bool = True) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "ESPNet")
        f1, f2, f3 = check_features(features, 3, "ESPNet")
        for name, value in (("alpha2", alpha2), ("alpha3", alpha3)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer for ESPNet, got {value!r}.")
        if not isinstance(decoder, bool):
            raise ValueError(f"`decoder` must be True or False for ESPNet, got {decoder!r}.")
        d, c = spatial_dims, out_channels
        self.spatial_dims, self.size_divisor, self.decoder = spatial_dims, 8, decoder
        self.level1 = _cbr(d, in_channels, f1, 3, stride=2)
        self.sample1, self.sample2 = _InputPyramid(d, 1), _InputPyramid(d, 2)
        l1 = f1 + in_channels
        self.br1 = norm_prelu(d, l1)
        self.down2 = ESPModule(d, l1, f2, stride=2)
        self.level2 = nn.Sequential(*[ESPModule(d, f2, f2) for _ in range(alpha2)])
        l2 = 2 * f2 + in_channels
        self.br2 = norm_prelu(d, l2)
        self.down3 = ESPModule(d, l2, f3, stride=2)
        self.level3 = nn.Sequential(*[ESPModule(d, f3, f3) for _ in range(alpha3)])
        self.br3 = norm_prelu(d, 2 * f3)
        conv, deconv = Conv[Conv.CONV, d], Conv[Conv.CONVTRANS, d]
        self.classifier = conv(2 * f3, c, 1, bias=False)
        if decoder:
            self.norm3 = Norm[Norm.BATCH, d](c)
            self.up3 = nn.Sequential(deconv(c, c, 2, stride=2, bias=False), norm_prelu(d, c))
            self.classifier2 = conv(l2, c, 1, bias=False)
            self.merge2 = nn.Sequential(norm_prelu(d, 2 * c), ESPModule(d, 2 * c, c, residual=False))
            self.up2 = nn.Sequential(deconv(c, c, 2, stride=2, bias=False), norm_prelu(d, c))
            self.merge1 = _cbr(d, l1 + c, c, 3)
            self.up1 = deconv(c, c, 2, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        half, quarter = self.sample1(x), self.sample2(x)
        out1 = self.br1(torch.cat([self.level1(x), half], dim=1))
        down2 = self.down2(out1)
        out2 = self.br2(torch.cat([self.level2(down2), down2, quarter], dim=1))
        down3 = self.down3(out2)
        out3 = self.br3(torch.cat([down3, self.level3(down3)], dim=1))
        logits3 = self.classifier(out3)
        if not self.decoder:
            return resize_to(logits3, x.shape[2:])
        up3 = self.up3(self.norm3(logits3))
        merged2 = self.up2(self.merge2(torch.cat([self.classifier2(out2), up3], dim=1)))
        return self.up1(self.merge1(torch.cat([merged2, out1], dim=1)))
