"""DeepLab v3+ (Chen et al., ECCV 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation", arXiv:1802.02611).

DeepLab v3's encoder (a dilated trunk at output stride 16 and ASPP with image pooling) and a simple decoder:
the ASPP features, up-sampled 4×, are concatenated with the trunk's stride-4 features reduced to 48 channels by
a 1×1 convolution, refined by two 3×3 convolutions (256) and classified; logits are up-sampled 4× (bilinearly)
to the input.

The paper's headline model (its best PASCAL VOC result) uses the modified Xception-65
(:class:`~segarch.backbones.aligned_xception.AlignedXceptionEncoder`; Xception-71 for Cityscapes) with
depthwise-separable convolutions in ASPP and the decoder ("SC" in its Tables 3 and 5); its Sec. 4.1 experiments use
ResNet-101 with plain convolutions, which ``backbone="resnet"`` builds.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.backbones import ResNetEncoder
from segarch.backbones.resnet import RESNET_LAYERS
from segarch.backbones.aligned_xception import AlignedXceptionEncoder
from segarch.blocks import ConvNormAct
from segarch.blocks.aspp import ASPP
from segarch.blocks.resize import resize_to
from segarch.blocks.separable import SeparableConv
from segarch.layers.checks import check_bool, check_choice, check_positive_int, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["DeepLabV3Plus", "DEEPLAB_V3_PLUS_BACKBONES"]

DEEPLAB_V3_PLUS_BACKBONES = ("xception65", "xception71", "resnet")


@register(
    name="deeplab_v3_plus",
    full_name="DeepLab v3+ (Xception-65, separable ASPP and decoder)",
    paper="Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation",
    reference="arXiv:1802.02611",
    year=2018,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 21, "backbone": "xception65",
                  "output_stride": 16, "aspp_channels": 256, "low_level_channels": 48},
    paper_params=41.06,
    paper_params_source=(
        "Pinned: the paper gives no count. 41.06M is this implementation of its PASCAL VOC model (21 classes; "
        "Xception-65 trunk 37.87M with layer sizes from the authors' released xception_65, separable ASPP 3.02M, "
        "separable decoder and classifier 0.17M). Cross-check against a published count: the same code with the "
        "paper's deeper Cityscapes trunk (backbone='xception71', 19 classes) counts 43.48M, the figure Liu et al. "
        "2019 (Auto-DeepLab, arXiv:1901.02985, Cityscapes table, by DeepLab's own group) give for DeepLab v3+. "
        "backbone='resnet' (the Sec. 4.1 model, plain convolutions) counts 59.34M with 21 classes, no published "
        "figure; segmentation_models.pytorch's ResNet-101 DeepLabV3Plus is not that network: its ASPP and decoder "
        "are separable, about 45.7M (ours with separable=True: 45.69M)."
    ),
    test_config={"width": 0.0625, "middle_units": 2, "aspp_channels": 16, "low_level_channels": 8,
                 "rates": (1, 2, 3)},
    notes=(
        "backbone='xception65' (the paper's configuration, its best PASCAL VOC model): the modified aligned "
        "Xception-65 (middle flow of 16 units, strided separable convolutions instead of max-pooling, BN after every "
        "depthwise convolution) with depthwise-separable ASPP branches and decoder convolutions ('SC' in Tables 3 "
        "and 5); low-level features from the second separable convolution of the entry unit that strides to 1/8 "
        "(stride 4, 256 channels), where the released code reads them. backbone='xception71' is the deeper trunk of "
        "its Cityscapes results; backbone='resnet' the Sec. 4.1 model (ResNet-101, plain convolutions, low-level "
        "features from the end of stage 1). All: 48-channel low-level reduction (Table 1's best), two 3x3 "
        "256-channel decoder convolutions (Table 2's best); the released code's dropout after the ASPP projection "
        "is not applied. 3D (an extension): the same layers with 3D (depthwise) convolutions."
    ),
)
class DeepLabV3Plus(SegmentationNet):
    """DeepLab v3+: DeepLab v3 encoder and a decoder with low-level features.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        backbone: ``"xception65"`` (the paper's best PASCAL VOC model), ``"xception71"`` (its deeper Cityscapes
            trunk) or ``"resnet"`` (its ResNet-101 experiments).
        depth: ResNet depth, for ``backbone="resnet"`` only (101).
        output_stride: 16 (the paper's training setting) or 8.
        base_width: ResNet stem width, for ``backbone="resnet"`` only (64).
        width: Xception width multiplier, for the Xception backbones only (1.0).
        middle_units: Xception middle-flow units, for the Xception backbones only (16).
        aspp_channels: channels of ASPP and decoder convolutions (256).
        low_level_channels: channels the stride-4 features are reduced to (48, the paper's best, Table 1).
        rates: ASPP rates; ``None`` for (6, 12, 18) at stride 16, (12, 24, 36) at 8.
        separable: depthwise-separable ASPP and decoder convolutions; ``None`` for the paper's choice
            (Xception: yes; ResNet: no).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of 16.

    Examples::

        >>> net = DeepLabV3Plus(3, 1, 2, width=0.0625, middle_units=2, aspp_channels=16, low_level_channels=8)
        >>> net(torch.zeros(1, 1, 32, 32, 32)).shape
        torch.Size([1, 2, 32, 32, 32])
        >>> net = DeepLabV3Plus(2, 3, 21, backbone="resnet", depth=101)  # the Sec. 4.1 model
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, backbone: str = "xception65",
                 depth: int | None = None, output_stride: int = 16, base_width: int | None = None,
                 width: float | None = None, middle_units: int | None = None, aspp_channels: int = 256,
                 low_level_channels: int = 48, rates: Sequence[int] | None = None,
                 separable: bool | None = None) -> None:
        super().__init__()
        net = "DeepLab v3+"
        check_spatial_dims(spatial_dims, (2, 3), net)
        check_choice(backbone, DEEPLAB_V3_PLUS_BACKBONES, "backbone", net)
        check_choice(output_stride, (8, 16), "output_stride", net)
        check_positive_int(aspp_channels, "aspp_channels", net)
        check_positive_int(low_level_channels, "low_level_channels", net)
        xception = backbone.startswith("xception")
        for option, value, applies in (("depth", depth, not xception), ("base_width", base_width, not xception),
                                       ("width", width, xception), ("middle_units", middle_units, xception)):
            if value is not None and not applies:
                takes = "width, middle_units" if xception else "depth, base_width"
                raise ValueError(f"`{option}`={value!r} does not apply to backbone={backbone!r} for {net}; "
                                 f"it takes {takes}.")
        self.spatial_dims, self.size_divisor, self.backbone = spatial_dims, 16, backbone
        if backbone == "resnet":
            check_choice(101 if depth is None else depth, tuple(RESNET_LAYERS), "depth", net)
            self.encoder = ResNetEncoder(spatial_dims, in_channels, depth=101 if depth is None else depth,
                                         output_stride=output_stride,
                                         base_width=check_positive_int(64 if base_width is None else base_width,
                                                                       "base_width", net))
        else:
            self.encoder = AlignedXceptionEncoder(spatial_dims, in_channels, depth=int(backbone[-2:]),
                                                  output_stride=output_stride, width=1.0 if width is None else width,
                                                  middle_units=16 if middle_units is None else middle_units)
        self.separable = check_bool(xception if separable is None else separable, "separable", net)
        if rates is None:
            rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        enc = self.encoder.out_channels
        self.aspp = ASPP(spatial_dims, enc[-1], aspp_channels, rates=rates, fusion="concat", image_pooling=True,
                         separable=self.separable)
        self.reduce = ConvNormAct(spatial_dims, enc[1], low_level_channels, kernel_size=1)

        def refine(cin: int) -> nn.Module:
            if self.separable:
                return SeparableConv(spatial_dims, cin, aspp_channels, 3)
            return ConvNormAct(spatial_dims, cin, aspp_channels, 3)

        self.decoder = nn.Sequential(refine(aspp_channels + low_level_channels), refine(aspp_channels))
        self.classifier = Conv[Conv.CONV, spatial_dims](aspp_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        features = self.encoder(x)
        low = self.reduce(features[1])  # stride 4: ResNet stage 1, or Xception entry unit 2's second convolution
        high = resize_to(self.aspp(features[-1]), low.shape[2:])
        return resize_to(self.classifier(self.decoder(torch.cat([high, low], dim=1))), x.shape[2:])
