"""OCRNet on a dilated ResNet (Yuan et al., ECCV 2020, "Object-Contextual Representations for Semantic
Segmentation", arXiv:1909.11065).

A ResNet dilated to output stride 8. Soft object regions come from a coarse segmentation head on stage
3 (3×3 conv-norm-act to 512, dropout, 1×1 to the classes), supervised in training; the pixel
representation is a 3×3 conv-norm-act of stage 4 to 512 channels. Object region representations,
pixel-region relations and the augmented representation follow (:mod:`segarch.blocks.object_context`),
then a 1×1 classifier; logits are up-sampled bilinearly to the input.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv

from segarch.blocks import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.blocks.object_context import ObjectContext, SpatialGather
from segarch.layers.checks import check_positive_int
from segarch.nets._context import DilatedResNetNet, FCNHead
from segarch.zoo import register

__all__ = ["OCRNet"]


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
        "Cross-check: the paper's Table 3 gives 10.5M for the OCR head (3x3 conv and OCR module; ours 10.62M)."
    ),
    test_config={"depth": 18, "base_width": 4, "ocr_channels": 16, "key_channels": 8},
    notes=(
        "ResNet variant only (HRNetV2-W48 + OCR is another zoo entry). Soft object regions from stage 3 as in the "
        "authors' ResNet code (3x3 512, dropout 0.1, 1x1); the relation uses softmax over regions with the "
        "1/sqrt(256) scale; dropout 0.05 after the fusion."
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
