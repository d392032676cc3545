"""VoVNet (Lee et al., CVPRW 2019, "An Energy and GPU-Computation Efficient Backbone Network for Real-Time
Object Detection", arXiv:1904.09730) as a 2D/3D encoder.

The one-shot aggregation (OSA) module runs ``layers`` 3×3 convolutions in sequence and concatenates
the input with all their outputs once, at the end, before a 1×1 convolution (instead of
DenseNet's concatenation at every layer). VoVNet-39/57 (Table 1): a stem of three 3×3
convolutions (64, 64, 128; 1/4), then four stages of OSA modules (5 layers each) with 128/160/192/224
channels per layer and 256/512/768/1024 outputs; stages 3–5 start with 3×3 stride-2 max-pooling.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Pool

from segarch.backbones.base import BackboneClassifier, ClassifierHead, Encoder
from segarch.blocks.conv import ConvNormAct
from segarch.layers.checks import check_choice, check_spatial_dims
from segarch.zoo import register

__all__ = ["OSAModule", "VoVNetEncoder", "VOVNET_BLOCKS"]

# OSA modules per stage (stages 2–5), Table 1.
VOVNET_BLOCKS = {39: (1, 1, 2, 2), 57: (1, 1, 4, 3)}
_LAYER_WIDTHS = (128, 160, 192, 224)
_OUT_WIDTHS = (256, 512, 768, 1024)


class OSAModule(nn.Module):
    """One-shot aggregation: ``layers`` chained 3×3 conv-BN-ReLU, all outputs and the input concatenated once, 1×1.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        layer_channels: channels of each 3×3 convolution.
        out_channels: channels of the 1×1 aggregation.
        layers: number of 3×3 convolutions (5).
    """

    def __init__(self, spatial_dims: int, in_channels: int, layer_channels: int, out_channels: int,
                 layers: int = 5) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ConvNormAct(spatial_dims, in_channels if i == 0 else layer_channels, layer_channels, 3)
            for i in range(layers)
        )
        self.aggregate = ConvNormAct(spatial_dims, in_channels + layers * layer_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return self.aggregate(torch.cat(outs, dim=1))


class VoVNetEncoder(Encoder):
    """VoVNet-39/57 features at strides 4 (stage 2), 8, 16, 32.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        depth: 39 or 57.
        width_scale: multiplies every width (1.0 in the paper; smaller for tests).
    """

    def __init__(self, spatial_dims: int, in_channels: int, depth: int = 39, width_scale: float = 1.0) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "VoVNet")
        check_choice(depth, tuple(VOVNET_BLOCKS), "depth", "VoVNet")
        if not isinstance(width_scale, (int, float)) or width_scale <= 0:
            raise ValueError(f"`width_scale` must be a positive number for VoVNet, got {width_scale!r}.")
        d = spatial_dims

        def w(c: int) -> int:
            return max(1, int(round(c * width_scale)))

        self.spatial_dims = spatial_dims
        self.stem = nn.Sequential(ConvNormAct(d, in_channels, w(64), 3, stride=2), ConvNormAct(d, w(64), w(64), 3),
                                  ConvNormAct(d, w(64), w(128), 3, stride=2))
        channels, stages = w(128), []
        for i, n in enumerate(VOVNET_BLOCKS[depth]):
            layers = [Pool[Pool.MAX, d](kernel_size=3, stride=2, padding=1)] if i else []
            for _ in range(n):
                layers.append(OSAModule(d, channels, w(_LAYER_WIDTHS[i]), w(_OUT_WIDTHS[i])))
                channels = w(_OUT_WIDTHS[i])
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(w(c) for c in _OUT_WIDTHS)
        self.reductions = (4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


_PAPER = "An Energy and GPU-Computation Efficient Backbone Network for Real-Time Object Detection"


def _register_vovnet(depth: int, params: float) -> None:
    @register(
        name=f"vovnet{depth}", full_name=f"VoVNet-{depth}", paper=_PAPER, reference="arXiv:1904.09730", year=2019,
        task="backbone", spatial_dims=(2, 3), size_divisor=32,
        paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1000},
        paper_params=params,
        paper_params_source=f"Lee et al. 2019, backbone comparison tables: VoVNet-{depth} {params}M parameters "
                            "(ImageNet classifier: global pooling and a 1000-way linear layer; architecture in Table "
                            "1).",
        test_config={"width_scale": 0.0625},
        notes="Built by name: the ImageNet classifier. Segmentation and detection nets use VoVNetEncoder.",
    )
    def build(spatial_dims: int, in_channels: int, out_channels: int, width_scale: float = 1.0):
        encoder = VoVNetEncoder(spatial_dims, in_channels, depth, width_scale)
        return BackboneClassifier(encoder, ClassifierHead(encoder.out_channels[-1], out_channels))


for _depth, _params in ((39, 22.6), (57, 36.6)):
    _register_vovnet(_depth, _params)
