"""Panoptic-DeepLab (Cheng et al., CVPR 2020, "Panoptic-DeepLab: A Simple, Strong, and Fast Baseline for Bottom-Up
Panoptic Segmentation", arXiv:1911.10194).

One encoder (Xception-71 in the paper's main results, at output stride 16) and two branches that do not share
weights after it (Sec. 3.1, Fig. 2):

- **dual ASPP**: each branch has its own ASPP (256 channels; rates 6, 12, 18 and image pooling);
- **dual decoder**: each branch up-samples twice, 1/16 → 1/8 → 1/4, concatenating the encoder's 1/8 and 1/4
  features after a 1×1 projection (semantic: 64 and 32 channels; instance: 32 and 16) and fusing with a single
  5×5 depthwise-separable convolution (semantic: 256 channels; instance: 128);
- **heads**: the semantic head (a 5×5 depthwise-separable convolution, 256, and a 1×1 classifier), and the
  instance branch's two heads, each a 5×5 depthwise-separable convolution (32) and a 1×1 convolution: the
  object-centre heatmap (1 channel) and the offset of every pixel to its object's centre (one channel per axis).

Outputs are predicted at 1/4 and up-sampled to the input; offsets are scaled to input pixels. The grouping
(centre non-maximum suppression by max-pooling, voting by offsets, fusion with the semantic map) is
:class:`segarch.instances.panoptic.PanopticDeepLabDecoder`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.backbones import ResNetEncoder
from segarch.backbones.aligned_xception import AlignedXceptionEncoder
from segarch.backbones.resnet import RESNET_LAYERS
from segarch.blocks import ConvNormAct
from segarch.blocks.aspp import ASPP
from segarch.blocks.resize import resize_to
from segarch.blocks.separable import SeparableConv
from segarch.layers.checks import check_bool, check_choice, check_positive_int, check_spatial_dims
from segarch.nets._heads import Head, MultiHeadNet
from segarch.zoo import register

__all__ = ["PanopticDeepLab", "PanopticDecoder", "PANOPTIC_DEEPLAB_BACKBONES"]

PANOPTIC_DEEPLAB_BACKBONES = ("xception71", "xception65", "resnet")


class PanopticDecoder(nn.Module):
    """One branch of Panoptic-DeepLab: ASPP, then two up-sampling stages fusing projected low-level features.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the encoder's last features (1/16).
        low_channels: channels of the encoder's 1/8 and 1/4 features.
        aspp_channels: ASPP channels (256).
        project_channels: channels the 1/8 and 1/4 features are projected to.
        channels: the decoder's width (semantic 256, instance 128).
        rates: ASPP rates.
        separable_aspp: depthwise-separable ASPP branches.
    """

    def __init__(self, spatial_dims: int, in_channels: int, low_channels: Sequence[int], aspp_channels: int,
                 project_channels: Sequence[int], channels: int, rates: Sequence[int], separable_aspp: bool) -> None:
        super().__init__()
        d = spatial_dims
        self.aspp = ASPP(d, in_channels, aspp_channels, rates=rates, fusion="concat", image_pooling=True,
                         separable=separable_aspp)
        self.project = nn.ModuleList(ConvNormAct(d, c, p, 1) for c, p in zip(low_channels, project_channels))
        fuse, previous = [], aspp_channels
        for p in project_channels:
            fuse.append(SeparableConv(d, previous + p, channels, 5))
            previous = channels
        self.fuse = nn.ModuleList(fuse)

    def forward(self, x: torch.Tensor, lows: Sequence[torch.Tensor]) -> torch.Tensor:
        y = self.aspp(x)
        for low, project, fuse in zip(lows, self.project, self.fuse):
            low = project(low)
            y = fuse(torch.cat([resize_to(y, low.shape[2:]), low], dim=1))
        return y


def _head(spatial_dims: int, in_channels: int, mid_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(SeparableConv(spatial_dims, in_channels, mid_channels, 5),
                         Conv[Conv.CONV, spatial_dims](mid_channels, out_channels, 1))


@register(
    name="panoptic_deeplab",
    full_name="Panoptic-DeepLab (Xception-71)",
    paper="Panoptic-DeepLab: A Simple, Strong, and Fast Baseline for Bottom-Up Panoptic Segmentation",
    reference="arXiv:1911.10194",
    year=2020,
    task="panoptic",
    spatial_dims=(2, 3),
    size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "backbone": "xception71"},
    paper_params=46.72,
    paper_params_source=(
        "Cheng et al. 2020 (arXiv:1911.10194), Cityscapes comparison (Params, M-Adds): Panoptic-DeepLab with "
        "Xception-71, 46.72M (19 classes). Ours: Xception-71 trunk 40.29M (the layer sizes of DeepLab's released "
        "xception_71, which reproduce Auto-DeepLab's 43.48M for DeepLab v3+) + semantic ASPP and decoder 3.22M + "
        "instance ASPP and decoder 3.10M + heads 0.09M = 46.70M, with depthwise-separable ASPP branches (plain "
        "ones would make it 71.73M)."
    ),
    test_config={"width": 0.0625, "middle_units": 1, "aspp_channels": 16, "semantic_channels": 16,
                 "instance_channels": 8, "semantic_projections": (8, 4), "instance_projections": (4, 4),
                 "head_channels": 8, "rates": (1, 2, 3)},
    notes=(
        "Layer sizes of Sec. 3.1 and the authors' reference configuration: dual ASPP (256, rates 6/12/18, image "
        "pooling, depthwise-separable branches with Xception), dual decoder (1/8 and 1/4 features projected to "
        "64/32 (semantic) and 32/16 (instance), one 5x5 depthwise-separable fusion per stage, 256 and 128 wide), "
        "semantic head 5x5 sep 256 + 1x1, centre and offset heads 5x5 sep 32 + 1x1. Xception's 1/8 and 1/4 "
        "features are read where DeepLab v3+ reads its low-level features (the unit striding to 1/8 and its inner "
        "1/4 map); with backbone='resnet' (ResNet-50, as the paper's R-50 results) stages 2 and 1. Offsets come at "
        "the input's size in input pixels. Group the outputs into objects with "
        "segarch.instances.panoptic.PanopticDeepLabDecoder. 3D (an extension): 3D centres and 3-channel offsets."
    ),
)
class PanopticDeepLab(MultiHeadNet):
    """Panoptic-DeepLab: semantic logits, an object-centre heatmap and centre offsets from one encoder.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: semantic classes (stuff and things).
        backbone: ``"xception71"`` (the paper's main model), ``"xception65"`` or ``"resnet"`` (ResNet, e.g. the
            paper's ResNet-50 results).
        depth: ResNet depth, for ``backbone="resnet"`` only (50).
        width: Xception width multiplier, for the Xception backbones only (1.0).
        middle_units: Xception middle-flow units, for the Xception backbones only (16).
        aspp_channels: channels of both ASPPs (256).
        semantic_channels: the semantic decoder's and head's width (256).
        instance_channels: the instance decoder's width (128).
        semantic_projections: channels the 1/8 and 1/4 features are projected to, semantic branch ((64, 32)).
        instance_projections: the same for the instance branch ((32, 16)).
        head_channels: width of the centre and offset heads (32).
        rates: ASPP rates ((6, 12, 18) at output stride 16).
        separable_aspp: depthwise-separable ASPP branches; ``None`` for the paper's choice with Xception (yes) and
            plain 3×3 atrous convolutions with ResNet.

    ``forward(x)``: sizes multiples of 16 → ``{"semantic": (B, out_channels, *S), "center": (B, 1, *S),
    "offset": (B, spatial_dims, *S)}`` at the input's size ``S``; ``offset[:, i]`` is the displacement along
    axis ``i`` (Z, Y, X order), in pixels, from each pixel to its object's centre.

    Examples::

        >>> net = PanopticDeepLab(2, 3, 19)
        >>> {k: tuple(v.shape) for k, v in net(torch.zeros(1, 3, 64, 64)).items()}
        {'semantic': (1, 19, 64, 64), 'center': (1, 1, 64, 64), 'offset': (1, 2, 64, 64)}
    """

    size_divisor = 16

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, backbone: str = "xception71",
                 depth: int | None = None, width: float | None = None, middle_units: int | None = None,
                 aspp_channels: int = 256, semantic_channels: int = 256, instance_channels: int = 128,
                 semantic_projections: Sequence[int] = (64, 32), instance_projections: Sequence[int] = (32, 16),
                 head_channels: int = 32, rates: Sequence[int] = (6, 12, 18),
                 separable_aspp: bool | None = None) -> None:
        super().__init__()
        net = "Panoptic-DeepLab"
        check_spatial_dims(spatial_dims, (2, 3), net)
        check_choice(backbone, PANOPTIC_DEEPLAB_BACKBONES, "backbone", net)
        xception = backbone.startswith("xception")
        for option, value, applies in (("depth", depth, not xception), ("width", width, xception),
                                       ("middle_units", middle_units, xception)):
            if value is not None and not applies:
                takes = "width, middle_units" if xception else "depth"
                raise ValueError(f"`{option}`={value!r} does not apply to backbone={backbone!r} for {net}; "
                                 f"it takes {takes}.")
        for option, value in (("aspp_channels", aspp_channels), ("semantic_channels", semantic_channels),
                              ("instance_channels", instance_channels), ("head_channels", head_channels)):
            check_positive_int(value, option, net)
        projections = {}
        for option, value in (("semantic_projections", semantic_projections),
                              ("instance_projections", instance_projections)):
            try:
                ok = len(value) == 2 and all(isinstance(v, int) and v >= 1 for v in value)
            except TypeError:
                ok = False
            if not ok:
                raise ValueError(f"`{option}` must be 2 positive integers (for the 1/8 and 1/4 features) for {net}, "
                                 f"got {value!r}.")
            projections[option] = tuple(value)
        separable_aspp = check_bool(xception if separable_aspp is None else separable_aspp, "separable_aspp", net)
        d = self.spatial_dims = spatial_dims
        if xception:
            self.encoder = AlignedXceptionEncoder(d, in_channels, depth=int(backbone[-2:]), output_stride=16,
                                                  width=1.0 if width is None else width,
                                                  middle_units=16 if middle_units is None else middle_units)
            low_index = (2, 1)  # the unit that strides to 1/8, and the 1/4 map inside it
        else:
            check_choice(50 if depth is None else depth, tuple(RESNET_LAYERS), "depth", net)
            self.encoder = ResNetEncoder(d, in_channels, depth=50 if depth is None else depth, output_stride=16)
            low_index = (2, 1)  # stages 2 (1/8) and 1 (1/4)
        self._low_index = low_index
        enc = self.encoder.out_channels
        lows = [enc[i] for i in low_index]
        self.semantic_decoder = PanopticDecoder(d, enc[-1], lows, aspp_channels, projections["semantic_projections"],
                                                semantic_channels, rates, separable_aspp)
        self.instance_decoder = PanopticDecoder(d, enc[-1], lows, aspp_channels, projections["instance_projections"],
                                                instance_channels, rates, separable_aspp)
        self.semantic_head = _head(d, semantic_channels, semantic_channels, out_channels)
        self.center_head = _head(d, instance_channels, head_channels, 1)
        self.offset_head = _head(d, instance_channels, head_channels, d)
        self.heads = (
            Head("semantic", "semantic", out_channels, description="class logits (stuff and things)"),
            Head("center", "center", 1, description="object-centre heatmap (regressed to 2D/3D Gaussians)"),
            Head("offset", "offset", d, description="displacement to the object's centre, pixels, one per axis"),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input_shape(x)
        features = self.encoder(x)
        lows = [features[i] for i in self._low_index]
        semantic = self.semantic_decoder(features[-1], lows)
        instance = self.instance_decoder(features[-1], lows)
        size = x.shape[2:]
        # Offsets are predicted on the 1/4 grid, in that grid's pixels: up-sampled, they are scaled to the input's.
        scale = torch.tensor([s / o for s, o in zip(size, instance.shape[2:])], dtype=x.dtype, device=x.device)
        offset = resize_to(self.offset_head(instance), size) * scale.view(1, -1, *[1] * self.spatial_dims)
        return {"semantic": resize_to(self.semantic_head(semantic), size),
                "center": resize_to(self.center_head(instance), size),
                "offset": offset}
