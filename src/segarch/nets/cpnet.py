"""CPNet (Yu et al., CVPR 2020, "Context Prior for Scene Segmentation", arXiv:2004.01547).

A ResNet dilated to output stride 8, then the context prior layer (Fig. 2–3): an aggregation module
(a 3×3 conv-norm-act to 512, then two paths of spatially separable depthwise convolutions with kernel
``k = 11``, in opposite axis orders, summed, normalised and activated); a 1×1 convolution predicts, for
every position, its affinity to all ``N`` positions of the prior grid — the *context prior map* ``P``
(``N × N`` after a sigmoid), supervised in training by the affinity loss against the ideal same-class
affinity. Intra-class context ``P V / N`` and inter-class context ``(1 - P) V / N`` (each through a 1×1
conv-norm-act) are concatenated with the trunk's features, fused by a 3×3 conv-norm-act (512) and
classified; logits are up-sampled bilinearly to the input.

The prior map has one channel per prior-grid position, so its size is fixed when the net is built
(``prior_size`` per axis; the authors set it to the training crop's feature size). Feature maps of
another size are resampled to the prior grid for the context and back; at the prior size this is the
paper's layer exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Dropout
from monai.networks.layers.utils import get_norm_layer

from segarch.blocks import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_positive_int, check_rate
from segarch.nets._context import DilatedResNetNet
from segarch.zoo import register

__all__ = ["CPNet", "AggregationModule"]


class AggregationModule(nn.Module):
    """CPNet's aggregation: reduce, then two orders of axis-wise depthwise convolutions, summed.

    In 2D the paths are ``k×1 → 1×k`` and ``1×k → k×1``; in 3D each path runs one depthwise convolution
    per axis, in opposite orders. Each path thus sees a full ``k^d`` window with ``d·k`` weights per channel.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 11) -> None:
        super().__init__()
        check_positive_int(kernel_size, "kernel_size", "CPNet aggregation")
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd for CPNet's aggregation module, got {kernel_size!r}.")
        conv = Conv[Conv.CONV, spatial_dims]
        self.reduce = ConvNormAct(spatial_dims, in_channels, out_channels, 3)

        def axis_conv(axis: int) -> nn.Module:
            size = [1] * spatial_dims
            size[axis] = kernel_size
            padding = [s // 2 for s in size]
            return conv(out_channels, out_channels, tuple(size), padding=tuple(padding), groups=out_channels)

        axes = list(range(spatial_dims))
        self.forward_path = nn.Sequential(*[axis_conv(a) for a in axes])
        self.reverse_path = nn.Sequential(*[axis_conv(a) for a in reversed(axes)])
        self.norm = get_norm_layer("batch", spatial_dims=spatial_dims, channels=out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.act(self.norm(self.forward_path(x) + self.reverse_path(x)))


@register(
    name="cpnet",
    full_name="CPNet (Context Prior, ResNet-101)",
    paper="Context Prior for Scene Segmentation",
    reference="arXiv:2004.01547",
    year=2020,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 150, "depth": 101, "output_stride": 8,
                  "prior_size": 64, "prior_channels": 512, "kernel_size": 11, "head_channels": 512},
    paper_params=68.83,
    paper_params_source=(
        "The paper gives no count; pinned to ours (ADE20K, 150 classes, 512x512 crops so a 64x64 prior grid): "
        "ResNet-101 trunk 42.50M + aggregation 9.46M + prior convolution 2.11M + intra/inter 0.53M + 3x3 fusion "
        "of 2048+1024 channels 14.16M + classifier."
    ),
    test_config={"depth": 18, "base_width": 4, "prior_size": 4, "prior_channels": 8, "kernel_size": 3,
                 "head_channels": 16},
    notes=(
        "Fusion as in the authors' head: concatenate trunk features, intra- and inter-class context, 3x3 "
        "conv-BN-ReLU to 512, dropout, 1x1. The prior grid is fixed at build time (prior_size per axis); other "
        "feature sizes are resampled to it and back (the paper trains and tests at its crop size). 3D: one "
        "depthwise convolution per axis in each aggregation path. The affinity loss is a training matter: the "
        "prior map is exposed as `context_prior`."
    ),
)
class CPNet(DilatedResNetNet):
    """CPNet: dilated ResNet with the context prior layer.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: ResNet depth (101).
        output_stride: 8 (the paper) or 16.
        base_width: ResNet stem width (64).
        prior_size: prior-grid size per axis (the paper: training crop / 8, e.g. 64 for 512×512 crops).
        prior_channels: channels of the aggregated value features (512).
        kernel_size: the aggregation module's separable kernel (11).
        head_channels: channels of the fusion convolution (512).
        dropout: dropout before the classifier (0.1).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of ``output_stride``.
    In training mode the context prior map ``(B, N, N)`` (sigmoid, on the prior grid) is kept in
    ``context_prior`` for the affinity loss.

    Examples::

        >>> net = CPNet(3, 1, 2, depth=18, base_width=8, prior_size=4, prior_channels=8, kernel_size=3, head_channels=8)
        >>> net(torch.zeros(1, 1, 32, 32, 32)).shape
        torch.Size([1, 2, 32, 32, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101,
                 output_stride: int = 8, base_width: int = 64, prior_size: int = 64, prior_channels: int = 512,
                 kernel_size: int = 11, head_channels: int = 512, dropout: float = 0.1) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, depth, output_stride, base_width, False, "CPNet")
        for name, value in (("prior_size", prior_size), ("prior_channels", prior_channels),
                            ("head_channels", head_channels)):
            check_positive_int(value, name, "CPNet")
        c = self.encoder.out_channels[-1]
        self.prior_grid = (prior_size,) * spatial_dims
        n = prior_size ** spatial_dims
        self.aggregation = AggregationModule(spatial_dims, c, prior_channels, kernel_size)
        self.prior_conv = ConvNormAct(spatial_dims, prior_channels, n, 1, act=None)
        self.intra_conv = ConvNormAct(spatial_dims, prior_channels, prior_channels, 1)
        self.inter_conv = ConvNormAct(spatial_dims, prior_channels, prior_channels, 1)
        self.bottleneck = ConvNormAct(spatial_dims, c + 2 * prior_channels, head_channels, 3)
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](check_rate(dropout, "dropout", "CPNet"))
        self.classifier = Conv[Conv.CONV, spatial_dims](head_channels, out_channels, 1)
        self.context_prior: torch.Tensor | None = None

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        value = resize_to(self.aggregation(x), self.prior_grid)  # (B, C, *prior grid)
        b, c = value.shape[:2]
        # prior[b, i, j]: affinity of position i to position j (channel j of the prior convolution at i).
        prior = torch.sigmoid(self.prior_conv(value).flatten(2).transpose(1, 2))  # (B, N, N)
        self.context_prior = prior if self.training else None
        v = value.flatten(2)  # (B, C, N)
        n = v.shape[-1]
        intra = torch.einsum("bij,bcj->bci", prior, v).reshape(value.shape) / n
        inter = torch.einsum("bij,bcj->bci", 1 - prior, v).reshape(value.shape) / n
        size = x.shape[2:]
        intra = resize_to(self.intra_conv(intra), size)
        inter = resize_to(self.inter_conv(inter), size)
        return self.classifier(self.dropout(self.bottleneck(torch.cat([x, intra, inter], dim=1))))
