"""DEXTR (Maninis, Caelles, Pont-Tuset and Van Gool, CVPR 2018, "Deep Extreme Cut: From Extreme Points
to Object Segmentation", arXiv:1711.09081), and a light variant for interactive use on a CPU.

DEXTR segments one object from its extreme points: the image crop around the points (their bounding box
relaxed by a margin, resized to a fixed size) gets one extra input channel holding a Gaussian at each
point, and a dense network predicts the object's mask in the crop. The paper's network is a ResNet-101
whose last two stages are dilated (output stride 8) with the pyramid scene parsing head of PSPNet
(bins 1, 2, 3, 6), up-sampled bilinearly to the input. The recipe around the network (crop, heat map,
paste) lives in :mod:`segarch.prompts`.

Both networks take ``in_channels`` = image channels + 1 heat-map channel and return logits
``(B, out_channels, *spatial)`` at the input's size: one channel (the object's logit) for a
sigmoid, or two (background, object) for a softmax, as :func:`segarch.train` trains them.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Pool

from segarch.blocks import ConvNormAct, DoubleConv, UpSample
from segarch.blocks.context_upsample import upsample_to
from segarch.blocks.pyramid_pooling import PyramidPooling
from segarch.layers.checks import check_features, check_positive_int, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.nets._context import DilatedResNetNet
from segarch.zoo import register

__all__ = ["DEXTR", "DEXTRLight"]

_REFERENCE = "arXiv:1711.09081"
_PAPER = "Deep Extreme Cut: From Extreme Points to Object Segmentation"


@register(
    name="dextr",
    full_name="DEXTR (ResNet-101 + PSP head)",
    paper=_PAPER,
    reference=_REFERENCE,
    year=2018,
    task="interactive",
    spatial_dims=(2, 3),
    size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 4, "out_channels": 1, "depth": 101, "output_stride": 8,
                  "bins": (1, 2, 3, 6), "head_channels": 512},
    paper_params=48.80,
    paper_params_source=(
        "Pinned: the paper gives no count. 48.80M is the count of the authors' released PyTorch network "
        "(DEXTR-PyTorch, networks/deeplab_resnet.py, resnet101(classifier='psp', nInputChannels=4)): the "
        "ResNet-101 trunk without its classifier (42.50M, plus 3136 weights for the 4th input channel), four "
        "pyramid levels 2048->512 (4.20M), a 1x1 bottleneck 4096->512 (2.10M) and a 1x1 classifier."
    ),
    test_config={"depth": 18, "base_width": 4, "head_channels": 16},
    notes=(
        "Input: RGB (or any image channels) + 1 heat map of Gaussians at the extreme points; output: one object "
        "logit (out_channels=1, the paper) or background/object (2). The trunk strides on the 3x3 convolution "
        "(the zoo's shared ResNet) where the authors' Caffe-style ResNet strides on the 1x1: same parameters. "
        "The recipe (crop relaxed by 50 px, 512x512, sigma 10) is in segarch.prompts."
    ),
)
class DEXTR(DilatedResNetNet):
    """DEXTR: a dilated ResNet (output stride 8) with a pyramid scene parsing head.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels + 1 (the extreme points' heat map); 4 for RGB in the paper.
        out_channels: 1 in the paper (the object's logit, trained with a class-balanced cross-entropy).
        depth: ResNet depth (101 in the paper).
        output_stride: 8 (the paper) or 16.
        base_width: ResNet stem width (64).
        bins: pyramid bins per axis (1, 2, 3, 6).
        head_channels: channels of the 1×1 bottleneck after the pyramid (512).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of ``output_stride``.

    Examples::

        >>> net = DEXTR(2, 4, 1)                                   # the paper's network (48.8M)
        >>> small = DEXTR(3, 2, 1, depth=18, base_width=8, head_channels=16)
        >>> small(torch.zeros(1, 2, 16, 32, 32)).shape
        torch.Size([1, 1, 16, 32, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101,
                 output_stride: int = 8, base_width: int = 64, bins: Sequence[int] = (1, 2, 3, 6),
                 head_channels: int = 512) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, depth, output_stride, base_width, False, "DEXTR")
        check_positive_int(head_channels, "head_channels", "DEXTR")
        trunk = self.encoder.out_channels[-1]
        # The authors' head: each level reduced to a quarter of the trunk's channels, concatenated with
        # the trunk, a 1×1 conv-BN-ReLU bottleneck and a 1×1 classifier with bias.
        self.ppm = PyramidPooling(spatial_dims, trunk, bins=bins, reduction_channels=max(trunk // 4, 1))
        self.bottleneck = ConvNormAct(spatial_dims, self.ppm.out_channels, head_channels, 1)
        self.classifier = Conv[Conv.CONV, spatial_dims](head_channels, out_channels, 1)

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.bottleneck(self.ppm(features[-1])))


@register(
    name="dextr_light",
    full_name="DEXTR light (small U-Net + pyramid pooling)",
    paper=_PAPER,
    reference=_REFERENCE,
    year=2018,
    task="interactive",
    spatial_dims=(2, 3),
    size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 2, "out_channels": 2, "features": (16, 32, 64, 128),
                  "bins": (1, 2, 4)},
    paper_params=0.524,
    paper_params_source=(
        "Pinned: not in the paper; segarch's own light variant of DEXTR for a CPU (grey image + heat map in, "
        "background/object out), its count at the shipped configuration."
    ),
    test_config={"features": (8, 16, 32, 64)},
    notes=(
        "Our design, not the paper's network: DEXTR's input (image + extreme-point heat map) and pyramid pooling "
        "context on a 4-level U-Net (16-128 channels) that runs a 64x64 crop in about ten milliseconds on "
        "one CPU core (a 32x32x32 crop in 3D). Shipped trained as 'dextr_light.objects2d' (2D) and "
        "'dextr_light.objects3d' (3D) (segarch.pretrained)."
    ),
)
class DEXTRLight(SegmentationNet):
    """A light DEXTR for interactive use on a CPU: a small U-Net with a pyramid pooling bottleneck.

    The encoder has two 3×3 conv-BN-ReLU per level and max-pooling between levels; at the bottleneck the
    paper's pyramid pooling (bins 1, 2, 4 by default) gives every pixel the whole crop's context (the
    heat map's four points are far apart), reduced back by a 1×1 conv-BN-ReLU; the decoder up-samples
    (transposed convolution), concatenates the skip and applies two 3×3 convolutions, at full resolution,
    so thin parts and boundaries survive (the paper's output stride 8 blurs them at small crops).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels + 1 (the heat map).
        out_channels: 1 (object logit) or 2 (background, object).
        features: channels per level, first to bottleneck; ``size_divisor = 2 ** (len - 1)``.
        bins: pyramid bins per axis at the bottleneck (``()`` for none).

    Examples::

        >>> net = DEXTRLight(2, 2, 2)
        >>> net(torch.zeros(1, 2, 128, 128)).shape
        torch.Size([1, 2, 128, 128])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 features: Sequence[int] = (16, 32, 64, 128), bins: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "DEXTRLight")
        features = check_features(features, None, "DEXTRLight")
        self.spatial_dims = spatial_dims
        self.size_divisor = 2 ** (len(features) - 1)
        self.down = nn.ModuleList()
        channels = in_channels
        for f in features:
            self.down.append(DoubleConv(spatial_dims, channels, f))
            channels = f
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        bins = tuple(bins)
        self.ppm = None
        if bins:
            self.ppm = nn.Sequential(
                PyramidPooling(spatial_dims, channels, bins=bins, reduction_channels=max(channels // 4, 1)),
            )
            self.ppm.append(ConvNormAct(spatial_dims, self.ppm[0].out_channels, channels, 1))
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for f in reversed(features[:-1]):
            self.up.append(UpSample(spatial_dims, channels, f, 2, mode="deconv"))
            self.merge.append(DoubleConv(spatial_dims, 2 * f, f))
            channels = f
        self.classifier = Conv[Conv.CONV, spatial_dims](channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        skips = []
        for i, level in enumerate(self.down):
            x = level(x if i == 0 else self.pool(x))
            skips.append(x)
        if self.ppm is not None:
            x = self.ppm(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([skip, upsample_to(up(x), skip.shape[2:])], dim=1))
        return self.classifier(x)
