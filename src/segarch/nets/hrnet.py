"""HRNetV1 and HRNetV2 for semantic segmentation (Wang et al., TPAMI 2020, arXiv:1908.07919).

The HRNet encoder (:class:`segarch.backbones.hrnet.HighResolutionEncoder`) keeps four parallel
branches at strides 4–32 and fuses them repeatedly. The two heads differ in what they read:

- **V1** reads only the high-resolution branch (the last fusion produces only that branch);
- **V2** up-samples the four branches to stride 4 and concatenates them (C + 2C + 4C + 8C
  channels), mixes them with a 1×1 convolution + BN + ReLU and classifies with a 1×1 convolution.

Both predict at stride 4 and up-sample the logits linearly to the input size.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones.hrnet import HighResolutionEncoder
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_choice
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["HRNetSeg", "HRNET_HEADS"]

HRNET_HEADS = ("v1", "v2")


class HRNetSeg(SegmentationNet):
    """HRNet with a V1 (high-resolution branch only) or V2 (all branches concatenated) head.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes.
        width: C, the high-resolution branch width (48 for HRNetV2-W48, 18 for W18-Small).
        stages: ``"full"`` (W48) or ``"small"`` (W18-Small-v2) block and module counts (``"tiny"``: tests only).
        head: ``"v1"`` or ``"v2"``.
        stem_width: stem channels (64 in the paper; smaller for tests).

    ``forward(x)``: ``(B, in_channels, *spatial)`` with sizes multiples of 32 → logits
    ``(B, out_channels, *spatial)``. ``features(x)`` returns the four branch outputs.

    Examples::

        >>> net = HRNetSeg(2, 3, 19, width=18, stages="small")
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    size_divisor = 32

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, width: int = 48,
                 stages: str = "full", head: str = "v2", stem_width: int = 64) -> None:
        super().__init__()
        check_choice(head, HRNET_HEADS, "head", "HRNet")
        self.spatial_dims = spatial_dims
        self.head_kind = head
        self.encoder = HighResolutionEncoder(spatial_dims, in_channels, width=width, stages=stages,
                                             stem_width=stem_width, last_out_branches=1 if head == "v1" else None)
        c = sum(self.encoder.out_channels) if head == "v2" else self.encoder.out_channels[0]
        self.head = nn.Sequential(
            ConvNormAct(spatial_dims, c, c, 1),
            Conv[Conv.CONV, spatial_dims](c, out_channels, kernel_size=1),
        )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def head_input(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """What the head reads: branch 0 (V1) or all branches at stride 4, concatenated (V2)."""
        if self.head_kind == "v1":
            return xs[0]
        size = xs[0].shape[2:]
        return torch.cat([resize_to(x, size) for x in xs], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        return resize_to(self.head(self.head_input(self.encoder(x))), x.shape[2:])


_PAPER = "Deep High-Resolution Representation Learning for Visual Recognition"
_TEST = {"width": 4, "stages": "tiny", "stem_width": 8}


@register(
    name="hrnet_v2", full_name="HRNetV2-W48", paper=_PAPER, reference="arXiv:1908.07919", year=2020,
    task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "width": 48, "stages": "full"},
    paper_params=65.9,
    paper_params_source="Wang et al. 2020 (arXiv:1908.07919), Cityscapes tables: HRNetV2-W48, 65.9M (19 classes).",
    test_config=_TEST,
    notes=("Head as in the paper's segmentation code: concatenation at stride 4, 1×1 conv + BN + ReLU, 1×1 classifier, "
           "linear up-sampling ×4. 3D builds the same net with 3D convolutions (an extension). "
           "`width=18, stages='small'` is HRNetV2-W18-Small-v2 (registered as hrnet_v2_w18_small)."),
)
def hrnet_v2(spatial_dims: int, in_channels: int, out_channels: int, width: int = 48, stages: str = "full",
             stem_width: int = 64) -> HRNetSeg:
    return HRNetSeg(spatial_dims, in_channels, out_channels, width=width, stages=stages, head="v2",
                    stem_width=stem_width)


@register(
    name="hrnet_v2_w18_small", full_name="HRNetV2-W18-Small-v2", paper=_PAPER, reference="arXiv:1908.07919", year=2020,
    task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19},
    paper_params=3.9,
    paper_params_source=("Wang et al. 2020 (arXiv:1908.07919), Cityscapes val table (small models): "
                         "HRNetV2-W18-Small-v2, 3.9M."),
    test_config=_TEST,
    notes=("The small HRNetV2: C = 18, 2 stage-1 bottlenecks, stages 2–4 with 1, 3, 2 modules of 2 blocks per branch "
           "(the public W18-Small-v2 layout; the paper's text names it but tabulates only its size)."),
)
def hrnet_v2_w18_small(spatial_dims: int, in_channels: int, out_channels: int, width: int = 18, stages: str = "small",
                       stem_width: int = 64) -> HRNetSeg:
    return HRNetSeg(spatial_dims, in_channels, out_channels, width=width, stages=stages, head="v2",
                    stem_width=stem_width)


@register(
    name="hrnet_v1", full_name="HRNetV1-W48 (high-resolution head)", paper=_PAPER, reference="arXiv:1908.07919",
    year=2020,
    task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "width": 48, "stages": "full"},
    paper_params=63.6,
    paper_params_source=("Pinned: the paper compares HRNetV1 with HRNetV2 for segmentation (its representation "
                         "ablation) but gives no V1 count; 63.6M is this implementation at W48, 19 classes (V2's 65.9M "
                         "less the last fusion's three coarse outputs and the wider head)."),
    test_config=_TEST,
    notes=("V1 as the paper defines it: only the high-resolution branch is output (the last module fuses into branch 0 "
           "only), then the same 1×1 conv + BN + ReLU and classifier as V2, on C channels."),
)
def hrnet_v1(spatial_dims: int, in_channels: int, out_channels: int, width: int = 48, stages: str = "full",
             stem_width: int = 64) -> HRNetSeg:
    return HRNetSeg(spatial_dims, in_channels, out_channels, width=width, stages=stages, head="v1",
                    stem_width=stem_width)
