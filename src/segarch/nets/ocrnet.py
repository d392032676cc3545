"""OCRNet (Yuan et al., ECCV 2020, "Object-Contextual Representations for Semantic Segmentation",
arXiv:1909.11065) on a dilated ResNet (``ocrnet``) and on HRNetV2-W48 (``hrnet_ocr``, the paper's main model).

A ResNet dilated to output stride 8. Soft object regions come from a coarse segmentation head on stage
3 (3×3 conv-norm-act to 512, dropout, 1×1 to the classes), supervised in training; the pixel
representation is a 3×3 conv-norm-act of stage 4 to 512 channels. Object region representations,
pixel-region relations and the augmented representation follow (:mod:`segarch.blocks.object_context`),
then a 1×1 classifier; logits are up-sampled bilinearly to the input.

On HRNetV2-W48 (:class:`HRNetOCR`) the four branches are up-sampled to stride 4 and concatenated (720
channels), and the soft object regions come from a 1×1 conv-norm-act (720) and a 1×1 classifier on them, as in
the authors' HRNet-OCR code (:class:`~segarch.blocks.object_context.OCRHead`).
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv

from segarch.backbones.hrnet import HighResolutionEncoder
from segarch.blocks import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.blocks.object_context import ObjectContext, OCRHead, SpatialGather
from segarch.layers.checks import check_positive_int
from segarch.nets._base import SegmentationNet
from segarch.nets._context import DilatedResNetNet, FCNHead
from segarch.zoo import register

__all__ = ["OCRNet", "HRNetOCR"]


@register(
    name="ocrnet",
    full_name="OCRNet (dilated ResNet-101)",
    paper="Object-Contextual Representations for Semantic Segmentation",
    reference="arXiv:1909.11065",
    year=2020,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "depth": 101, "output_stride": 8,
                  "ocr_channels": 512, "key_channels": 256},
    paper_params=57.86,
    paper_params_source=(
        "The paper gives no total for the ResNet-101 model; pinned to ours (19 Cityscapes classes): trunk 42.50M + "
        "soft-region head 4.73M + 3x3 pixel representation 9.44M + OCR module 1.18M + classifier = 57.86M. "
        "Cross-check: the paper's complexity table gives 10.5M for the OCR head (3x3 conv and OCR module; ours "
        "10.62M)."
    ),
    test_config={"depth": 18, "base_width": 4, "ocr_channels": 16, "key_channels": 8},
    notes=(
        "ResNet variant (HRNetV2-W48 + OCR, the paper's main model, is `hrnet_ocr`). Soft object regions from "
        "stage 3 as in the authors' ResNet code (3x3 512, dropout 0.1, 1x1); the relation uses softmax over regions "
        "with the 1/sqrt(256) scale; dropout 0.05 after the fusion."
    ),
)
class OCRNet(DilatedResNetNet):
    """OCRNet: dilated ResNet with object-contextual representations.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes = soft object regions).
        depth: ResNet depth (101).
        output_stride: 8 (the paper) or 16.
        base_width: ResNet stem width (64).
        ocr_channels: pixel and object representation channels (512).
        key_channels: pixel-region relation channels (256).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of ``output_stride``.
    In training mode the soft object regions' logits (at the input's size) are kept in ``aux_logits``
    for the paper's auxiliary loss (weight 0.4).

    Examples::

        >>> net = OCRNet(3, 1, 2, depth=18, base_width=8, ocr_channels=16, key_channels=8)
        >>> net(torch.zeros(1, 1, 16, 32, 32)).shape
        torch.Size([1, 2, 16, 32, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101,
                 output_stride: int = 8, base_width: int = 64, ocr_channels: int = 512,
                 key_channels: int = 256) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, depth, output_stride, base_width, False, "OCRNet")
        check_positive_int(ocr_channels, "ocr_channels", "OCRNet")
        check_positive_int(key_channels, "key_channels", "OCRNet")
        enc = self.encoder.out_channels
        self.soft_regions = FCNHead(spatial_dims, enc[3], ocr_channels, out_channels, dropout=0.1)
        self.pixels = ConvNormAct(spatial_dims, enc[4], ocr_channels, 3)
        self.gather = SpatialGather()
        self.ocr = ObjectContext(spatial_dims, ocr_channels, key_channels, ocr_channels)
        self.classifier = Conv[Conv.CONV, spatial_dims](ocr_channels, out_channels, 1)

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        regions = self.soft_regions(features[3])
        if self.training:
            self._regions = regions
        pixels = self.pixels(features[4])
        return self.classifier(self.ocr(pixels, self.gather(pixels, regions)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._regions = None
        out = super().forward(x)
        self.aux_logits = None if self._regions is None else resize_to(self._regions, x.shape[2:])
        return out


@register(
    name="hrnet_ocr",
    full_name="HRNetV2-W48 + OCR",
    paper="Object-Contextual Representations for Semantic Segmentation",
    reference="arXiv:1909.11065",
    year=2020,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "width": 48, "stages": "full",
                  "ocr_channels": 512, "key_channels": 256},
    paper_params=70.3,
    paper_params_source=(
        "Yuan et al. 2021 (HRFormer, arXiv:2110.09408, by the OCRNet authors), semantic segmentation comparison: "
        "HRNetV2-W48 + OCR, 70.3M (Cityscapes, 19 classes); the OCRNet paper tabulates the OCR head alone (10.5M "
        "with its 3x3 convolution on ResNet-101's 2048 channels). Ours: HRNetV2-W48 encoder 65.33M + soft-region "
        "head 0.53M + 3x3 pixel representation 720->512 3.32M + OCR module 1.18M + classifier = 70.37M."
    ),
    test_config={"width": 8, "stages": "tiny", "stem_width": 8, "ocr_channels": 16, "key_channels": 8},
    notes=(
        "Layer sizes of the authors' HRNet-OCR code: branches up-sampled to stride 4 and concatenated (720 channels), "
        "soft regions from a 1x1 conv-norm-act (720) and a 1x1 classifier, a 3x3 conv-norm-act to 512 (with bias), "
        "the OCR module (key 256, dropout 0.05) and a 1x1 classifier; logits up-sampled bilinearly ×4. In training the "
        "soft regions' logits are kept in `aux_logits` (the paper's auxiliary loss, weight 0.4). 3D (an extension): "
        "the same layers with 3D convolutions."
    ),
)
class HRNetOCR(SegmentationNet):
    """HRNetV2 with the OCR head: the OCRNet paper's main model.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes (= soft object regions).
        width: C, HRNet's high-resolution width (48).
        stages: ``"full"`` (HRNetV2-W48's block counts) or ``"small"`` (W18-Small-v2's); ``"tiny"``: tests only.
        stem_width: stem channels (64).
        ocr_channels: pixel and object representation channels (512).
        key_channels: pixel-region relation channels (256).

    ``forward(x)``: sizes multiples of 32 → logits ``(B, out_channels, *spatial)``; in training mode the soft
    object regions' logits (at the input's size) are kept in ``aux_logits``.

    Examples::

        >>> net = HRNetOCR(2, 3, 19, width=18, stages="small")
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    size_divisor = 32

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, width: int = 48, stages: str = "full",
                 stem_width: int = 64, ocr_channels: int = 512, key_channels: int = 256) -> None:
        super().__init__()
        check_positive_int(ocr_channels, "ocr_channels", "HRNet + OCR")
        check_positive_int(key_channels, "key_channels", "HRNet + OCR")
        self.spatial_dims = spatial_dims
        self.encoder = HighResolutionEncoder(spatial_dims, in_channels, width=width, stages=stages,
                                             stem_width=stem_width, net="HRNet + OCR")
        self.head = OCRHead(spatial_dims, sum(self.encoder.out_channels), out_channels, ocr_channels, key_channels,
                            aux="1x1")
        self.aux_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        xs = self.encoder(x)
        size = xs[0].shape[2:]
        logits, regions = self.head(torch.cat([resize_to(f, size) for f in xs], dim=1))
        self.aux_logits = resize_to(regions, x.shape[2:]) if self.training else None
        return resize_to(logits, x.shape[2:])
