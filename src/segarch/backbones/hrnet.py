"""HRNet (Wang et al., TPAMI 2020, arXiv:1908.07919) as a 2D/3D multi-resolution encoder.

A stem of two strided 3×3 convolutions (stride 4, 64 channels), stage 1 of bottleneck blocks
(64 wide, 256 out) on one branch, then stages 2, 3 and 4 with 2, 3 and 4 parallel branches of
widths C, 2C, 4C, 8C at strides 4, 8, 16, 32. Each stage repeats a module of per-branch residual
blocks followed by a fusion across all resolutions (:mod:`segarch.blocks.hr_fusion`). The
``"full"`` layout (HRNet-W18/W32/W48) has 4 bottlenecks in stage 1 and 1, 4, 3 modules of 4
blocks per branch in stages 2–4; ``"small"`` is HRNetV2-W18-Small-v2 (2 bottlenecks; 1, 3, 2
modules of 2 blocks). ``"tiny"`` (one block and module per stage) is for fast tests only.

Built by name, the backbone is the paper's ImageNet classifier (HRNet-W18-C / W48-C): every
branch goes through a bottleneck to 128, 256, 512, 1024 channels, the branches are merged from
fine to coarse by strided 3×3 convolutions, widened to 2048 by a 1×1 convolution, pooled and
classified.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from segarch.backbones.base import Encoder
from segarch.backbones.resnet import BasicBlock, Bottleneck
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.hr_fusion import HRModule, HRTransition
from segarch.layers.batch_statistics import ExplainsBatchStatistics
from segarch.layers.checks import check_choice, check_positive_int, check_spatial_dims
from segarch.zoo import register

__all__ = ["HighResolutionEncoder", "HRNetClassifier", "HRNET_STAGES"]

# stage-1 bottlenecks, then (modules, blocks per branch) for stages 2, 3, 4
HRNET_STAGES = {
    "full": (4, ((1, 4), (4, 4), (3, 4))),
    "small": (2, ((1, 2), (3, 2), (2, 2))),
    "tiny": (1, ((1, 1), (1, 1), (1, 1))),  # not from the paper: one block per stage, for fast tests and demos
}


class HighResolutionEncoder(Encoder):
    """HRNet's four parallel branches at strides 4, 8, 16, 32 and widths C, 2C, 4C, 8C.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        width: C, the width of the high-resolution branch (18, 32, 48 in the paper).
        stages: ``"full"`` (HRNet-W*) or ``"small"`` (HRNetV2-W18-Small-v2) block and module counts.
        stem_width: channels of the stem and width of the stage-1 bottlenecks (64 in the paper).
        make_block: ``make_block(branch, channels)`` builds the blocks of stages 2–4; residual basic
            blocks by default (HRFormer passes transformer blocks).
        last_out_branches: output branches of the very last fusion; 1 keeps only the high-resolution
            one (HRNetV1), ``None`` all four.
        stage_layout: overrides ``stages`` with ``(stage1_blocks, ((modules, blocks), ×3))``.
        separable_fusion: depth-wise separable strided convolutions in the fusions (HRFormer's choice).

    ``forward(x)`` returns the four branch outputs, finest first.
    """

    def __init__(self, spatial_dims: int, in_channels: int, width: int = 48, stages: str = "full",
                 stem_width: int = 64, make_block: Callable[[int, int], nn.Module] | None = None,
                 last_out_branches: int | None = None, stage_layout=None, separable_fusion: bool = False,
                 net: str = "HRNet") -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), net)
        check_positive_int(width, "width", net)
        check_positive_int(stem_width, "stem_width", net)
        if stage_layout is None:
            check_choice(stages, tuple(HRNET_STAGES), "stages", net)
            stage_layout = HRNET_STAGES[stages]
        stage1_blocks, later = stage_layout
        self.spatial_dims = spatial_dims
        if make_block is None:
            def make_block(branch: int, channels: int) -> nn.Module:
                return BasicBlock(spatial_dims, channels, channels)

        self.stem = nn.Sequential(
            ConvNormAct(spatial_dims, in_channels, stem_width, 3, stride=2),
            ConvNormAct(spatial_dims, stem_width, stem_width, 3, stride=2),
        )
        layer1, c = [], stem_width
        for _ in range(stage1_blocks):
            layer1.append(Bottleneck(spatial_dims, c, stem_width))
            c = stem_width * Bottleneck.expansion
        self.layer1 = nn.Sequential(*layer1)

        previous = (c,)
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        for s, (modules, blocks) in enumerate(later):
            channels = tuple(width * 2 ** i for i in range(s + 2))
            self.transitions.append(HRTransition(spatial_dims, previous, channels))
            stage = []
            for m in range(modules):
                last = s == len(later) - 1 and m == modules - 1
                stage.append(HRModule(spatial_dims, channels, blocks, make_block,
                                      out_branches=last_out_branches if last else None,
                                      separable_fusion=separable_fusion))
            self.stages.append(nn.ModuleList(stage))
            previous = channels
        self.out_channels = previous
        self.reductions = tuple(4 * 2 ** i for i in range(len(previous)))
        self.branch_counts = tuple(len(t.branches) for t in self.transitions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        xs = [self.layer1(self.stem(x))]
        for transition, stage in zip(self.transitions, self.stages):
            xs = transition(xs)
            for module in stage:
                xs = module(xs)
        return xs


class HRNetClassifier(ExplainsBatchStatistics):
    """HRNet's ImageNet classifier: the encoder and its multi-resolution classification head.

    Args:
        encoder: a :class:`HighResolutionEncoder`.
        classes: number of classes.
        head_width: width of the first head bottleneck (32 in the paper; branch ``i`` gets
            ``head_width * 2**i``, expanded ×4).
    """

    def __init__(self, encoder: HighResolutionEncoder, classes: int, head_width: int = 32) -> None:
        super().__init__()
        d = encoder.spatial_dims
        self.encoder = encoder
        self.spatial_dims = d
        self.size_divisor = encoder.size_divisor
        widths = [head_width * 2 ** i for i in range(len(encoder.out_channels))]
        self.increase = nn.ModuleList(Bottleneck(d, c, w) for c, w in zip(encoder.out_channels, widths))
        self.downsample = nn.ModuleList(
            ConvNormAct(d, 4 * widths[i], 4 * widths[i + 1], 3, stride=2, bias=True) for i in range(len(widths) - 1)
        )
        final = 2048 * head_width // 32
        self.final = ConvNormAct(d, 4 * widths[-1], final, 1, bias=True)
        self.fc = nn.Linear(final, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.encoder(x)
        y = self.increase[0](xs[0])
        for i, down in enumerate(self.downsample):
            y = self.increase[i + 1](xs[i + 1]) + down(y)
        return self.fc(self.final(y).flatten(2).mean(-1))


def _register_classifier(width: int, params: float) -> None:
    @register(
        name=f"hrnet_w{width}", full_name=f"HRNet-W{width}-C",
        paper="Deep High-Resolution Representation Learning for Visual Recognition",
        reference="arXiv:1908.07919", year=2020, task="backbone", spatial_dims=(2, 3), size_divisor=32,
        paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1000, "width": width},
        paper_params=params,
        paper_params_source=f"Wang et al. 2020 (arXiv:1908.07919), ImageNet classification table: HRNet-W{width}-C, "
                            f"{params}M.",
        test_config={"width": 4, "stages": "tiny", "stem_width": 8, "head_width": 2},
        notes=("Built by name: the ImageNet classifier (out_channels = classes). Segmentation nets use "
               "HighResolutionEncoder. Fusion up-samples linearly (the segmentation code's choice; the "
               "classification code uses nearest, which has no parameters either way)."),
    )
    def build(spatial_dims: int, in_channels: int, out_channels: int, width: int = width, stages: str = "full",
              stem_width: int = 64, head_width: int = 32):
        encoder = HighResolutionEncoder(spatial_dims, in_channels, width=width, stages=stages, stem_width=stem_width)
        return HRNetClassifier(encoder, out_channels, head_width=check_positive_int(head_width, "head_width", "HRNet"))


for _width, _params in ((18, 21.3), (48, 77.5)):
    _register_classifier(_width, _params)
