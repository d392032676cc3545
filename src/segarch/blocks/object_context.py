"""Object-contextual representations (Yuan et al., ECCV 2020, "Object-Contextual Representations for
Semantic Segmentation", arXiv:1909.11065, Sec. 3.2–3.3), for 2D and 3D feature maps.

Three steps: soft object regions (a ``K``-class coarse segmentation) → object region representations
(each region's features, averaged with its softmax-over-space weights) → pixel-region relations (each
pixel's softmax attention over the ``K`` regions), whose weighted region representations form the
object-contextual representation that is fused with the pixel's own.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.blocks.conv import ConvNormAct

__all__ = ["SpatialGather", "ObjectContext", "OCRHead"]


class SpatialGather(nn.Module):
    """Object region representations: ``f_k = Σ_i softmax_i(m_ki) x_i`` for each soft region ``k``.

    ``forward(features (B, C, *S), regions (B, K, *S))`` returns ``(B, C, K)``.
    """

    def forward(self, features: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(regions.flatten(2), dim=-1)  # (B, K, N): softmax over positions
        return torch.einsum("bkn,bcn->bck", weights, features.flatten(2))


class ObjectContext(nn.Module):
    """Pixel-region relation and the augmented representation.

    Queries from the pixels and keys from the region representations pass through two 1×1
    conv-norm-acts (``key_channels``); values through one; the relation is the softmax over regions
    of ``q·k / sqrt(key_channels)``; the context (values weighted by it) is projected back to
    ``in_channels`` and concatenated with the pixel features, and a 1×1 conv-norm-act (with dropout)
    fuses them to ``out_channels``.

    Args:
        spatial_dims: 2 or 3 (the feature maps'; region representations use 1D convolutions).
        in_channels: pixel and region representation channels (512 for ResNet-101).
        key_channels: query/key/value channels (256).
        out_channels: output channels (512).
        dropout: dropout after the fusion (0.05 in the authors' code).
    """

    def __init__(self, spatial_dims: int, in_channels: int, key_channels: int, out_channels: int,
                 dropout: float = 0.05) -> None:
        super().__init__()
        self.key_channels = key_channels
        self.pixel_query = nn.Sequential(ConvNormAct(spatial_dims, in_channels, key_channels, 1),
                                         ConvNormAct(spatial_dims, key_channels, key_channels, 1))
        # Region representations are (B, C, K): 1D convolutions over the K regions.
        self.region_key = nn.Sequential(ConvNormAct(1, in_channels, key_channels, 1),
                                        ConvNormAct(1, key_channels, key_channels, 1))
        self.region_value = ConvNormAct(1, in_channels, key_channels, 1)
        self.up = ConvNormAct(spatial_dims, key_channels, in_channels, 1)
        self.fuse = ConvNormAct(spatial_dims, 2 * in_channels, out_channels, 1, dropout=dropout)
        self.relation: torch.Tensor | None = None  # the last (B, N, K) pixel-region relation, detached

    def forward(self, pixels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        q = self.pixel_query(pixels).flatten(2)  # (B, C', N)
        k = self.region_key(regions)  # (B, C', K)
        v = self.region_value(regions)
        relation = torch.softmax(torch.einsum("bcn,bck->bnk", q, k) * self.key_channels ** -0.5, dim=-1)
        self.relation = relation.detach()
        context = torch.einsum("bnk,bck->bcn", relation, v).reshape(pixels.shape[0], -1, *pixels.shape[2:])
        return self.fuse(torch.cat([self.up(context), pixels], dim=1))


class OCRHead(nn.Module):
    """The OCR head of the HRNet and HRFormer segmentation models, on features already at one grid.

    Soft object regions come from an auxiliary classifier (a 1×1 conv-norm-act keeping the width, as HRNetV2 +
    OCR, or a 3×3 conv-norm-act to ``ocr_channels``, as HRFormer + OCR, then a 1×1 convolution to the classes);
    the pixel representation is a 3×3 conv-norm-act to ``ocr_channels``; object region representations, the
    pixel-region relation and the fused representation follow (:class:`SpatialGather`, :class:`ObjectContext`),
    then a 1×1 classifier. The convolutions before batch norm keep their biases, as in the authors' code.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the features (720 for HRNetV2-W48's concatenated branches).
        out_channels: classes (= soft object regions).
        ocr_channels: pixel and object representation channels (512).
        key_channels: pixel-region relation channels (256).
        aux: ``"1x1"`` (HRNetV2 + OCR) or ``"3x3"`` (HRFormer + OCR) soft-region classifier.
        dropout: dropout after the fusion (0.05).

    ``forward(features)`` returns ``(logits, soft-region logits)`` at the features' grid.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, ocr_channels: int = 512,
                 key_channels: int = 256, aux: str = "1x1", dropout: float = 0.05) -> None:
        super().__init__()
        if aux not in ("1x1", "3x3"):
            raise ValueError(f"`aux` must be '1x1' or '3x3' for the OCR head, got {aux!r}.")
        d, conv = spatial_dims, Conv[Conv.CONV, spatial_dims]
        aux_channels = in_channels if aux == "1x1" else ocr_channels
        self.soft_regions = nn.Sequential(
            ConvNormAct(d, in_channels, aux_channels, 1 if aux == "1x1" else 3, bias=True),
            conv(aux_channels, out_channels, 1),
        )
        self.pixels = ConvNormAct(d, in_channels, ocr_channels, 3, bias=True)
        self.gather = SpatialGather()
        self.ocr = ObjectContext(d, ocr_channels, key_channels, ocr_channels, dropout=dropout)
        self.classifier = conv(ocr_channels, out_channels, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        regions = self.soft_regions(features)
        pixels = self.pixels(features)
        return self.classifier(self.ocr(pixels, self.gather(pixels, regions))), regions
