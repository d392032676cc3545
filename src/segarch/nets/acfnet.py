"""ACFNet (Zhang et al., ICCV 2019, "ACFNet: Attentional Class Feature Network for Semantic Segmentation",
arXiv:1909.09408) — the zoo's reading of "AC-Net".

A ResNet dilated to output stride 8 and an ASPP (512 channels) give features ``F``; a coarse head
segments them (``P``, supervised in training). The attentional class feature module then
(i) computes each class's *center* — the mean of the (1×1-reduced) features over all positions,
weighted by the coarse probability of that class (Class Center Block), and (ii) gives every position
the mixture of class centers weighted by its own coarse class probabilities (Class Attention Block),
refined by a 1×1 conv-norm-act. The concatenation of ``F`` and this attentional class feature is
classified by an FCN head; logits are up-sampled bilinearly to the input.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from segarch.blocks import ConvNormAct
from segarch.blocks.aspp import ASPP
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_positive_int
from segarch.nets._context import DilatedResNetNet, FCNHead
from segarch.zoo import register

__all__ = ["ACFNet", "AttentionalClassFeature"]


class AttentionalClassFeature(nn.Module):
    """Class Center Block and Class Attention Block of ACFNet (Sec. 3.2–3.3).

    ``forward(features (B, C, *S), coarse (B, K, *S))`` returns the attentional class feature
    ``(B, channels, *S)``; the last class centers ``(B, K, channels)`` are kept in ``centers``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: int) -> None:
        super().__init__()
        self.reduce = ConvNormAct(spatial_dims, in_channels, channels, 1)
        self.out = ConvNormAct(spatial_dims, channels, channels, 1)
        self.centers: torch.Tensor | None = None

    def forward(self, features: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        f = self.reduce(features).flatten(2)  # (B, C', N)
        p = torch.softmax(coarse, dim=1).flatten(2)  # (B, K, N): each position's class probabilities
        # Class centers: probability-weighted means of the features over positions.
        centers = torch.einsum("bkn,bcn->bkc", p, f) / p.sum(-1, keepdim=True).clamp_min(1e-6)
        self.centers = centers.detach()
        # Class attention: each position mixes the centers by its own class probabilities.
        out = torch.einsum("bkn,bkc->bcn", p, centers).reshape(features.shape[0], -1, *features.shape[2:])
        return self.out(out)


@register(
    name="acfnet",
    full_name="ACFNet (Attentional Class Feature Network, ResNet-101)",
    paper="ACFNet: Attentional Class Feature Network for Semantic Segmentation",
    reference="arXiv:1909.09408",
    year=2019,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "depth": 101, "output_stride": 8,
                  "aspp_channels": 512},
    paper_params=76.40,
    paper_params_source=(
        "The paper gives no count; pinned to ours (19 Cityscapes classes): ResNet-101 trunk 42.50M + ASPP at 512 "
        "channels 30.41M + coarse head 0.59M + class-feature module 0.53M + final FCN head 2.36M = 76.40M."
    ),
    test_config={"depth": 18, "base_width": 4, "aspp_channels": 16, "rates": (1, 2, 3)},
    notes=(
        "'AC-Net' read as ACFNet (Zhang et al. 2019) rather than ACNet (Fu et al. 2019, 'Adaptive Context "
        "Network'): the name is shared by several unrelated nets (ACNet for RGB-D attention, asymmetric "
        "convolutions), and ACFNet's blocks (class centers, class attention) are fully specified in its arXiv "
        "paper and build on the zoo's dilated ResNet and ASPP, while ACNet's gating details are not. ASPP without "
        "image pooling, at 512 channels (rates 12/24/36 at stride 8); class centers are probability-weighted "
        "feature means; FCN heads (3x3, dropout 0.1, 1x1) for the coarse and final predictions."
    ),
)
class ACFNet(DilatedResNetNet):
    """ACFNet: dilated ResNet, ASPP, coarse segmentation and attentional class features.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: ResNet depth (101).
        output_stride: 8 (the paper) or 16.
        base_width: ResNet stem width (64).
        aspp_channels: ASPP and class-feature channels (512).
        rates: ASPP rates; ``None`` for (12, 24, 36) at stride 8, (6, 12, 18) at 16.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of ``output_stride``.
    In training mode the coarse segmentation's logits (input size) are kept in ``aux_logits``.

    Examples::

        >>> net = ACFNet(2, 3, 19, depth=18, base_width=8, aspp_channels=16)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101,
                 output_stride: int = 8, base_width: int = 64, aspp_channels: int = 512,
                 rates: Sequence[int] | None = None) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, depth, output_stride, base_width, False, "ACFNet")
        check_positive_int(aspp_channels, "aspp_channels", "ACFNet")
        if rates is None:
            rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
        c = aspp_channels
        self.aspp = ASPP(spatial_dims, self.encoder.out_channels[-1], c, rates=rates, fusion="concat",
                         image_pooling=False)
        self.coarse = FCNHead(spatial_dims, c, max(c // 4, 1), out_channels)
        self.acf = AttentionalClassFeature(spatial_dims, c, c)
        self.classifier = FCNHead(spatial_dims, 2 * c, max(c // 2, 1), out_channels)
        self._coarse: torch.Tensor | None = None

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        f = self.aspp(features[-1])
        coarse = self.coarse(f)
        self._coarse = coarse if self.training else None
        return self.classifier(torch.cat([f, self.acf(f, coarse)], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        self.aux_logits = None if self._coarse is None else resize_to(self._coarse, x.shape[2:])
        return out
