"""TransUNet (Chen et al. 2021, arXiv:2102.04306).

A hybrid encoder — a ResNet-50 trunk with three stages of 3, 4 and 9 bottleneck units (stride 16),
whose 1/16 feature map is embedded token by token (1×1 patches) into a 12-layer ViT-B — and a cascaded
upsampler: a 3×3 convolution from the tokens, then four blocks of ×2 bilinear up-sampling, concatenation
with the trunk's 1/8, 1/4 and 1/2 features and two 3×3 convolutions, and a 3×3 segmentation head
(Sec. 3, Fig. 1; the configuration of the authors' R50-ViT-B/16 model).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv, Pool

from segarch.backbones.base import stem_pool_stages
from segarch.backbones.resnet import Bottleneck
from segarch.blocks import ConvNormAct
from segarch.blocks.resize import interp_mode
from segarch.blocks.vit import ViTEncoder
from segarch.layers.checks import check_features, check_positive_int, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["TransUNet", "HybridTrunk"]


class HybridTrunk(nn.Module):
    """ResNet-50's stem and its first stages with ``blocks`` bottleneck units each (ViT's R50 hybrid: 3, 4, 9).

    ``forward(x)`` returns ``[stem (1/2), stage 1 (1/4), ..., last stage]``; the last stage is at stride
    ``2 ** (len(blocks) + 1)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, blocks: Sequence[int] = (3, 4, 9),
                 base_width: int = 64) -> None:
        super().__init__()
        self.stem = ConvNormAct(spatial_dims, in_channels, base_width, 7, stride=2)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1)
        stages, channels, out_channels = [], base_width, [base_width]
        for i, n in enumerate(blocks):
            width = base_width * 2 ** i
            units = []
            for b in range(n):
                units.append(Bottleneck(spatial_dims, channels, width, stride=2 if (i and b == 0) else 1))
                channels = width * Bottleneck.expansion
            stages.append(nn.Sequential(*units))
            out_channels.append(channels)
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(out_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return stem_pool_stages(x, self.stem, self.pool, self.stages)


@register(
    name="transunet", full_name="TransUNet (R50-ViT-B/16)",
    paper="TransUNet: Transformers Make Strong Encoders for Medical Image Segmentation", reference="arXiv:2102.04306",
    year=2021, task="semantic", spatial_dims=(2, 3), size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 9, "img_size": 224},
    paper_params=105.3,
    paper_params_source="The paper gives no count; 105.3M is the size later comparisons quote for the authors' "
                        "R50-ViT-B/16 TransUNet (224² inputs, 9 Synapse classes; the released model takes a CT slice "
                        "repeated to 3 channels). Ours is built from Sec. 3 and the released configuration.",
    test_config={"img_size": 32, "base_width": 4, "trunk_blocks": (1, 1, 1), "hidden_size": 16, "num_layers": 1,
                 "num_heads": 2, "mlp_dim": 32, "head_channels": 16, "decoder_channels": (16, 8, 8, 4)},
    test_lr=3e-3,
    notes="3D: the trunk and upsampler are 3D and the ViT runs on the 3D token grid; the learned position "
          "embeddings live on the (img_size/16)^dims grid and are resampled (bi/trilinearly) to any other grid, "
          "so inputs of any multiple-of-16 size work in 2D and 3D. The trunk uses batch norm where the authors' "
          "BiT ResNet uses group norm with weight-standardised convolutions (same parameter count); max-pooling "
          "pads by one so every stride halves exactly. The ViT is the shared segarch.blocks.vit encoder, which has "
          "no dropout (ViT-B's is 0.1).",
)
class TransUNet(SegmentationNet):
    """TransUNet (R50-ViT-B/16 hybrid encoder, cascaded upsampler) for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        img_size: the training image size the position embeddings are learned for (224 in the paper: a 14×14
            token grid); other sizes resample them.
        base_width: width of the ResNet stem (64).
        trunk_blocks: bottleneck units of the trunk's three stages (3, 4, 9).
        hidden_size: ViT token width (768).
        num_layers: ViT layers (12).
        num_heads: attention heads (12).
        mlp_dim: ViT MLP width (3072).
        head_channels: channels of the 3×3 convolution that turns tokens back into a map (512).
        decoder_channels: channels of the four upsampler blocks ((256, 128, 64, 16)).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 16.

    Examples::

        >>> net = TransUNet(2, 1, 9)
        >>> net(torch.zeros(1, 1, 224, 224)).shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, img_size: int = 224,
                 base_width: int = 64,
                 trunk_blocks: Sequence[int] = (3, 4, 9), hidden_size: int = 768, num_layers: int = 12,
                 num_heads: int = 12, mlp_dim: int = 3072, head_channels: int = 512,
                 decoder_channels: Sequence[int] = (256, 128, 64, 16)) -> None:
        super().__init__()
        name = "TransUNet"
        check_spatial_dims(spatial_dims, (2, 3), name)
        blocks = check_features(trunk_blocks, 3, name, "trunk_blocks")
        dec = check_features(decoder_channels, 4, name, "decoder_channels")
        for arg, value in (("img_size", img_size), ("base_width", base_width), ("hidden_size", hidden_size),
                           ("num_layers", num_layers), ("num_heads", num_heads), ("mlp_dim", mlp_dim),
                           ("head_channels", head_channels)):
            check_positive_int(value, arg, name)
        if img_size % 16:
            raise ValueError(f"`img_size` must be a multiple of 16 for {name}, got {img_size!r}.")
        if hidden_size % num_heads:
            raise ValueError(f"`num_heads` must divide `hidden_size` for {name}, got {num_heads!r} and "
                             f"{hidden_size!r}.")
        self.spatial_dims, self.size_divisor = spatial_dims, 16
        conv = Conv[Conv.CONV, spatial_dims]
        self.trunk = HybridTrunk(spatial_dims, in_channels, blocks, base_width)
        c = self.trunk.out_channels  # 64 (1/2), 256 (1/4), 512 (1/8), 1024 (1/16)
        # ViT-B on the 1/16 map with 1×1 patches ("R50-ViT-B/16"); its position embeddings live on the
        # img_size/16 grid and are resampled to other grids.
        self.transformer = ViTEncoder(spatial_dims, c[3], embed_dim=hidden_size, depth=num_layers, heads=num_heads,
                                      patch_size=1, img_size=img_size // 16, mlp_ratio=mlp_dim / hidden_size)
        self.conv_more = ConvNormAct(spatial_dims, hidden_size, head_channels, 3)
        ins = (head_channels,) + dec[:3]
        skips = (c[2], c[1], c[0], 0)
        self.decoder = nn.ModuleList(
            nn.Sequential(ConvNormAct(spatial_dims, i + s, o, 3), ConvNormAct(spatial_dims, o, o, 3))
            for i, s, o in zip(ins, skips, dec)
        )
        self.head = conv(dec[3], out_channels, 3, padding=1)
        self._mode = interp_mode(spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        features = self.trunk(x)
        y = self.conv_more(self.transformer(features[3])[-1])
        skips = (features[2], features[1], features[0], None)
        for block, skip in zip(self.decoder, skips):
            y = F.interpolate(y, scale_factor=2, mode=self._mode, align_corners=False)
            y = block(y if skip is None else torch.cat([y, skip], dim=1))
        return self.head(y)
