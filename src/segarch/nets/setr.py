"""SETR (Zheng et al., CVPR 2021, arXiv:2012.15840): segmentation as sequence-to-sequence with a ViT.

A ViT-L/16 encoder (24 layers, width 1024, 16 heads; :mod:`segarch.blocks.vit`) turns the image
into a 1/16-resolution token map, and one of three decoders brings it back:

- **Naive**: 1×1 conv + BN + ReLU to 256 channels, 1×1 classifier, ×16 linear up-sampling;
- **PUP** (progressive up-sampling): four (3×3 conv + BN + ReLU, ×2 up-sampling) steps, then the classifier;
- **MLA** (multi-level aggregation): the outputs of layers 6, 12, 18, 24 are each projected (1×1
  conv), aggregated top-down (each stream adds the deeper ones), refined by a 3×3 conv, then two
  3×3 convs to 128 channels and ×4 up-sampling per stream; the four streams are concatenated and
  classified, and the logits up-sampled ×4.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.blocks.conv import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.blocks.vit import ViTEncoder
from segarch.layers.checks import check_choice, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["SETR", "SETR_DECODERS", "SETR_PAPER_PARAMS"]

SETR_DECODERS = ("naive", "pup", "mla")


def _scale(x: torch.Tensor, factor: int) -> torch.Tensor:
    return resize_to(x, [s * factor for s in x.shape[2:]])


_PAPER = "Rethinking Semantic Segmentation from a Sequence-to-Sequence Perspective with Transformers"

#: The paper's counts (Cityscapes comparison table) for each decoder on ViT-L/16, 19 classes.
SETR_PAPER_PARAMS = {"naive": 305.67, "pup": 318.31, "mla": 310.57}


@register(
    name="setr", full_name="SETR-PUP (ViT-L/16; decoder='naive' or 'mla' for the others)",
    paper=_PAPER, reference="arXiv:2012.15840", year=2021, task="semantic", spatial_dims=(2, 3), size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "decoder": "pup"},
    paper_params=SETR_PAPER_PARAMS["pup"],
    paper_params_source=("Zheng et al. 2021 (arXiv:2012.15840), Cityscapes comparison table: SETR-PUP 318.31M "
                         "(SETR-Naive 305.67M, SETR-MLA 310.57M). The PUP figure includes the auxiliary heads used "
                         "only in training, which are not built here: 309.59M (-2.7%); Naive 305.73M and MLA 310.65M "
                         "match."),
    test_config={"embed_dim": 16, "depth": 2, "heads": 2, "img_size": 32, "decoder_channels": 8},
    notes=("'SEIR' in the product's list read as SETR: no segmentation paper is named SEIR, and SETR (SEgmentation "
           "TRansformer) is the transformer segmenter of that list's era whose name it garbles (one letter off; the "
           "Swin-T + UPerNet entry covers the other reading, a Swin-based segmenter). "
           "ViT-L/16 without the class token (dense prediction never reads it; 1024 parameters). The position "
           "embedding is learned on a 48×48 grid (768² crops) and interpolated to other sizes. 3D (an extension): 16³ "
           "patches, an 8×8×8 grid by default (128³). PUP is the registered default: the Naive and MLA decoders "
           "classify at 1/16 and "
           "1/4 resolution and up-sample the logits linearly, which cannot fit the shared tester's 32×32 toy task (two "
           "tokens per axis), so they are options, checked in tests/test_zoo_hr_transformer.py. MLA taps layers 6, 12, "
           "18, 24; projection and refinement at 256 channels, per-stream heads at 128."),
)
class SETR(SegmentationNet):
    """SETR with a ViT encoder and a naive, PUP or MLA decoder, in 2D or 3D.

    Args:
        spatial_dims: 2 or 3 (3D: cubic 16³ patches and a trilinearly interpolated position grid).
        in_channels: input channels.
        out_channels: classes.
        decoder: ``"naive"``, ``"pup"`` or ``"mla"``.
        embed_dim, depth, heads: the ViT (ViT-L: 1024, 24, 16).
        img_size: edge of the input the position embedding is learned at (768 for SETR's
            Cityscapes crops in 2D; 128 by default in 3D); other sizes interpolate it.
        decoder_channels: decoder width (256; MLA's per-stream head uses half).

    ``forward(x)``: sizes multiples of 16 → logits ``(B, out_channels, *spatial)``.
    """

    size_divisor = 16

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, decoder: str = "pup",
                 embed_dim: int = 1024, depth: int = 24, heads: int = 16, img_size: int | None = None,
                 decoder_channels: int = 256) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "SETR")
        check_choice(decoder, SETR_DECODERS, "decoder", "SETR")
        if decoder == "mla" and depth % 4:
            raise ValueError(f"`depth` must be a multiple of 4 for SETR-MLA (it taps 4 evenly spaced layers), "
                             f"got {depth!r}.")
        self.spatial_dims = spatial_dims
        self.decoder_kind = decoder
        img_size = (768 if spatial_dims == 2 else 128) if img_size is None else img_size
        taps = [depth // 4 * (i + 1) - 1 for i in range(4)] if decoder == "mla" else None
        self.encoder = ViTEncoder(spatial_dims, in_channels, embed_dim, depth, heads, 16, img_size, out_indices=taps)
        d, c = spatial_dims, decoder_channels
        conv = Conv[Conv.CONV, d]
        if decoder == "naive":
            self.decoder = ConvNormAct(d, embed_dim, c, 1)
            self.classifier = conv(c, out_channels, 1)
        elif decoder == "pup":
            self.decoder = nn.ModuleList(ConvNormAct(d, embed_dim if i == 0 else c, c, 3) for i in range(4))
            self.classifier = conv(c, out_channels, 1)
        else:
            self.project = nn.ModuleList(ConvNormAct(d, embed_dim, c, 1) for _ in range(4))
            self.refine = nn.ModuleList(ConvNormAct(d, c, c, 3) for _ in range(4))
            self.heads = nn.ModuleList(
                nn.Sequential(ConvNormAct(d, c, c // 2, 3), ConvNormAct(d, c // 2, c // 2, 3)) for _ in range(4)
            )
            self.classifier = conv(4 * (c // 2), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        tokens = self.encoder(x)
        if self.decoder_kind == "naive":
            return _scale(self.classifier(self.decoder(tokens[-1])), 16)
        if self.decoder_kind == "pup":
            h = tokens[-1]
            for step in self.decoder:
                h = _scale(step(h), 2)
            return self.classifier(h)
        streams, running = [], None
        for i in reversed(range(4)):  # top-down: the deepest layer first, each stream adds the deeper ones
            p = self.project[i](tokens[i])
            running = p if running is None else running + p
            streams.append(_scale(self.heads[i](self.refine[i](running)), 4))
        return _scale(self.classifier(torch.cat(streams[::-1], dim=1)), 4)
