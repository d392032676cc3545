"""BiSeNet (Yu et al., ECCV 2018, "BiSeNet: Bilateral Segmentation Network for Real-time Semantic
Segmentation", arXiv:1808.00897).

Two paths (Fig. 2): a spatial path of three stride-2 convolutions keeps 1/8 of the resolution and
its detail; a context path (Xception39 or ResNet-18) down-samples fast, adds a global-average-pooled
tail, and refines its 1/32 and 1/16 stages with attention refinement modules (ARM), up-sampling
coarse to fine to 1/8. A feature fusion module (FFM) merges the two paths; a 3×3 convolution and a
1×1 classifier follow, up-sampled ×8.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones.resnet import ResNetEncoder
from segarch.backbones.xception import Xception39Encoder
from segarch.blocks.bisenet_fusion import AttentionRefinement, FeatureFusion, global_pool
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.pooled_conv import PooledConvNormAct
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_choice, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["BiSeNet", "ContextPath", "SegHead"]

BISENET_BACKBONES = ("xception39", "resnet18")


class SegHead(nn.Sequential):
    """A 3×3 conv-BN-ReLU and a 1×1 classifier (BiSeNet's and STDC-Seg's output head)."""

    def __init__(self, spatial_dims: int, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.add_module("conv", ConvNormAct(spatial_dims, in_channels, mid_channels, 3))
        self.add_module("classifier", Conv[Conv.CONV, spatial_dims](mid_channels, out_channels, 1))


class ContextPath(nn.Module):
    """Global context plus ARM-refined 1/32 and 1/16 stages, merged coarse to fine into 1/8 features.

    Args:
        spatial_dims: 2 or 3.
        channels16: channels of the backbone's 1/16 stage.
        channels32: channels of the backbone's 1/32 stage.
        out_channels: the context path's width (128).

    ``forward(f16, f32, size8)`` returns the context features on the 1/8 grid ``size8``.
    """

    def __init__(self, spatial_dims: int, channels16: int, channels32: int, out_channels: int = 128) -> None:
        super().__init__()
        self.global_context = PooledConvNormAct(spatial_dims, channels32, out_channels)
        self.arm32 = AttentionRefinement(spatial_dims, channels32, out_channels)
        self.arm16 = AttentionRefinement(spatial_dims, channels16, out_channels)
        self.refine32 = ConvNormAct(spatial_dims, out_channels, out_channels, 3)
        self.refine16 = ConvNormAct(spatial_dims, out_channels, out_channels, 3)

    def forward(self, f16: torch.Tensor, f32: torch.Tensor, size8) -> torch.Tensor:
        tail = self.global_context(global_pool(f32))  # broadcast over the 1/32 grid
        x = self.refine32(resize_to(self.arm32(f32) + tail, f16.shape[2:]))
        return self.refine16(resize_to(self.arm16(f16) + x, size8))


_SIZE = ("Pinned (derived): the paper prints no parameter count. Table 6's 'Params' column gives {} for BiSeNet-{}, "
         "but that is the model's size (float32 weights in MiB, not millions of parameters; TorchSeg issue #30): "
         "{} MiB / 4 B = {}M parameters.")


@register(
    name="bisenet", full_name="BiSeNet",
    paper="BiSeNet: Bilateral Segmentation Network for Real-time Semantic Segmentation",
    reference="arXiv:1808.00897", year=2018, task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "backbone": "xception39"},
    paper_params=1.54,
    paper_params_source=_SIZE.format("5.8M", "Xception39", "5.8", "1.52") +
                        " The authors' released Xception39 model has 1.54M parameters (the figure pinned here; this "
                        "implementation counts 1.55M). ResNet-18 (backbone='resnet18'): 49.0 MiB → 12.8M; this "
                        "implementation counts 12.9M.",
    test_config={"width": 0.125, "blocks": (1, 2, 1)},
    test_lr=2e-2,
    notes="Layer widths follow the authors' released model (spatial path 7×7/3×3/3×3 stride 2 then 1×1 to 128; context "
          "width 128; FFM without channel reduction; head 3×3 to 64). The two auxiliary heads used only for the "
          "training loss are not built (they do not affect the output).",
)
class BiSeNet(SegmentationNet):
    """BiSeNet for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        backbone: the context path's backbone, ``"xception39"`` or ``"resnet18"``.
        width: multiplies every width (backbone, spatial and context paths); 1.0 in the paper.
        blocks: Xception39's blocks per stage (``(4, 8, 4)``); fewer only for quick tests.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = BiSeNet(2, 3, 19)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, backbone: str = "xception39",
                 width: float = 1.0, blocks=(4, 8, 4)) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "BiSeNet")
        check_choice(backbone, BISENET_BACKBONES, "backbone", "BiSeNet")
        if not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"`width` must be a positive number for BiSeNet, got {width!r}.")
        d = spatial_dims

        def w(c: int) -> int:
            return max(2, int(round(c * width)))

        self.spatial_dims, self.size_divisor = spatial_dims, 32
        # Spatial path: 7×7 then two 3×3 stride-2 convolutions and a 1×1 to 128 channels (the authors' model).
        self.spatial_path = nn.Sequential(
            ConvNormAct(d, in_channels, w(64), 7, stride=2), ConvNormAct(d, w(64), w(64), 3, stride=2),
            ConvNormAct(d, w(64), w(64), 3, stride=2), ConvNormAct(d, w(64), w(128), 1),
        )
        if backbone == "xception39":
            self.backbone = Xception39Encoder(d, in_channels, stem=w(8), widths=(w(16), w(32), w(64)), blocks=blocks)
        else:
            self.backbone = ResNetEncoder(d, in_channels, depth=18, base_width=w(64))
        c16, c32 = self.backbone.out_channels[-2:]
        self.context_path = ContextPath(d, c16, c32, w(128))
        self.ffm = FeatureFusion(d, 2 * w(128), 2 * w(128), reduction=1)
        self.head = SegHead(d, 2 * w(128), w(64), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        spatial = self.spatial_path(x)
        f16, f32 = self.backbone(x)[-2:]
        context = self.context_path(f16, f32, spatial.shape[2:])
        return resize_to(self.head(self.ffm(spatial, context)), x.shape[2:])
