"""STDC-Seg (Fan et al., CVPR 2021, "Rethinking BiSeNet For Real-time Semantic Segmentation", arXiv:2104.13188),
sometimes called "BiSeNet V3", and its STDC backbones.

The short-term dense concatenate (STDC) module (Fig. 3) chains four blocks whose widths halve
(``N/2, N/4, N/8, N/8``: the first a 1×1 convolution, the others 3×3) and concatenates all their
outputs, so the module's width is ``N`` and its receptive field grows block by block. In a stride-2
module the second block strides and the first block's output is average-pooled before the
concatenation. STDC1/STDC2 (Table 1): two stride-2 3×3 convolutions (32, 64), then stages of
(2, 2, 2) / (4, 5, 3) modules at 1/8 (256), 1/16 (512) and 1/32 (1024). STDC-Seg keeps BiSeNet's
context path (ARMs on 1/16 and 1/32, a global-pooled tail) and fuses it with the backbone's own 1/8
stage (which replaces BiSeNet's spatial path) in an FFM. The detail guidance head trains the 1/8
stage and is not part of the inference network.
"""

from __future__ import annotations

import torch
from torch import nn

from segarch.backbones.base import Encoder
from segarch.blocks.bisenet_fusion import FeatureFusion
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.padded_pool import PaddedAvgPool
from segarch.blocks.resize import resize_to
from segarch.layers.batch_statistics import POOLED, ExplainsBatchStatistics
from segarch.layers.checks import check_choice, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.nets.bisenet import ContextPath, SegHead
from segarch.zoo import register

__all__ = ["STDCModule", "STDCEncoder", "STDCSeg", "STDC_LAYERS"]

STDC_LAYERS = {"stdc1": (2, 2, 2), "stdc2": (4, 5, 3)}


class STDCModule(nn.Module):
    """The STDC module with ``blocks`` blocks (4 in the paper) of widths ``N/2, N/4, …, N/2^(k-1), N/2^(k-1)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: ``N``, the width of the concatenation.
        stride: 2 makes the second block strided and average-pools the first block's output.
        blocks: number of blocks.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1,
                 blocks: int = 4) -> None:
        super().__init__()
        widths = [out_channels // 2 ** (i + 1) for i in range(blocks - 1)]
        widths.append(widths[-1])
        if widths[-1] < 1 or sum(widths) != out_channels:
            raise ValueError(f"STDC module: `out_channels` must be divisible by {2 ** (blocks - 1)}, "
                             f"got {out_channels!r}.")
        layers, channels = [], in_channels
        for i, width in enumerate(widths):
            k = 1 if i == 0 else 3
            layers.append(ConvNormAct(spatial_dims, channels, width, k, stride=stride if i == 1 else 1))
            channels = width
        self.blocks = nn.ModuleList(layers)
        self.widths = tuple(widths)
        self.skip = PaddedAvgPool(spatial_dims, 3, 2) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        outs[0] = self.skip(outs[0])
        return torch.cat(outs, dim=1)


class STDCEncoder(Encoder):
    """STDC1/STDC2 features at strides 2, 4, 8, 16, 32.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        variant: ``"stdc1"`` or ``"stdc2"``.
        base: width of the second convolution (64); the stages are ``4·base``, ``8·base``, ``16·base``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, variant: str = "stdc1", base: int = 64) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "STDC")
        check_choice(variant, tuple(STDC_LAYERS), "variant", "STDC")
        if not isinstance(base, int) or base < 8 or base % 8:
            raise ValueError(f"`base` must be a positive multiple of 8 for STDC, got {base!r}.")
        self.spatial_dims = spatial_dims
        d = spatial_dims
        self.stage1 = ConvNormAct(d, in_channels, base // 2, 3, stride=2)
        self.stage2 = ConvNormAct(d, base // 2, base, 3, stride=2)
        stages, channels = [], base
        for i, n in enumerate(STDC_LAYERS[variant]):
            width = base * 4 * 2 ** i
            stages.append(nn.Sequential(*[STDCModule(d, channels if j == 0 else width, width, 2 if j == 0 else 1)
                                          for j in range(n)]))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = (base // 2, base, 4 * base, 8 * base, 16 * base)
        self.reductions = (2, 4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stage1(x)
        features = [x]
        x = self.stage2(x)
        features.append(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class _STDCClassifier(ExplainsBatchStatistics):
    """The ImageNet model of Table 1: 1×1 conv to 1024, global pooling, FC-BN-ReLU 1024, dropout, FC."""

    net_name = "STDC"
    norm_stride = POOLED  # the FC's batch norm sees one vector per image: training needs a batch of 2 or more

    def __init__(self, spatial_dims: int, in_channels: int, classes: int, variant: str, base: int,
                 dropout: float) -> None:
        super().__init__()
        self.encoder = STDCEncoder(spatial_dims, in_channels, variant, base)
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        last = max(1024, 16 * base) if base == 64 else 16 * base
        self.conv_last = ConvNormAct(spatial_dims, 16 * base, last, 1)
        self.fc = nn.Sequential(nn.Linear(last, last, bias=False), nn.BatchNorm1d(last), nn.ReLU(inplace=True),
                                nn.Dropout(dropout), nn.Linear(last, classes, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_last(self.encoder(x)[-1])
        return self.fc(x.flatten(2).mean(-1))


_PAPER = "Rethinking BiSeNet For Real-time Semantic Segmentation"


@register(
    name="stdc_seg", full_name="STDC-Seg (\"BiSeNet V3\")", paper=_PAPER, reference="arXiv:2104.13188", year=2021,
    task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "backbone": "stdc1"},
    paper_params=8.27,
    paper_params_source="No figure in the paper for the segmentation network (it reports FLOPs of the backbones and "
                        "speed): pinned to this implementation's count of STDC1-Seg at 19 classes, 8.27M "
                        "(STDC2-Seg: 12.30M).",
    test_config={"base": 8, "context_channels": 8, "fusion_channels": 8},
    test_lr=2e-2,
    notes="'BiSeNet V3' is not the paper's name: STDC-Seg is the authors' rethinking of BiSeNet. The stride-2 STDC "
          "module strides its second (3×3) block as Fig. 3 draws it. The detail aggregation head and the auxiliary "
          "heads only serve training losses and are not built.",
)
class STDCSeg(SegmentationNet):
    """STDC-Seg for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        backbone: ``"stdc1"`` or ``"stdc2"``.
        base: the backbone's base width (64).
        context_channels: the context path's width (128).
        fusion_channels: the FFM's and head's width (256).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = STDCSeg(2, 3, 19)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, backbone: str = "stdc1", base: int = 64,
                 context_channels: int = 128, fusion_channels: int = 256) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "STDC-Seg")
        check_choice(backbone, tuple(STDC_LAYERS), "backbone", "STDC-Seg")
        d = spatial_dims
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.backbone = STDCEncoder(d, in_channels, backbone, base)
        c8, c16, c32 = self.backbone.out_channels[2:]
        self.context_path = ContextPath(d, c16, c32, context_channels)
        self.ffm = FeatureFusion(d, c8 + context_channels, fusion_channels, reduction=4)
        self.head = SegHead(d, fusion_channels, fusion_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        f8, f16, f32 = self.backbone(x)[2:]
        context = self.context_path(f16, f32, f8.shape[2:])
        return resize_to(self.head(self.ffm(f8, context)), x.shape[2:])


def _register_stdc(variant: str, params: float) -> None:
    @register(
        name=variant, full_name=variant.upper(), paper=_PAPER, reference="arXiv:2104.13188",
        year=2021, task="backbone", spatial_dims=(2, 3), size_divisor=32,
        paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1000},
        paper_params=params,
        paper_params_source=f"Fan et al. 2021, the ImageNet comparison of the STDC networks: {variant.upper()} "
                            f"{params}M parameters.",
        test_config={"base": 8, "dropout": 0.0},
        notes="Built by name: the ImageNet classifier of Table 1 (1×1 conv to 1024, pooling, FC 1024 with BN, dropout, "
              "FC). STDC-Seg uses STDCEncoder.",
    )
    def build(spatial_dims: int, in_channels: int, out_channels: int, base: int = 64, dropout: float = 0.2):
        return _STDCClassifier(spatial_dims, in_channels, out_channels, variant, base, dropout)


for _variant, _params in (("stdc1", 8.44), ("stdc2", 12.5)):
    _register_stdc(_variant, _params)
