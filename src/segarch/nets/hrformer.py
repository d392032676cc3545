"""HRFormer (Yuan et al., NeurIPS 2021, arXiv:2110.09408): HRNet's layout with local-window transformer blocks.

The stem, the bottleneck stage 1, the transitions and the multi-resolution fusions are HRNet's
(:mod:`segarch.blocks.hr_fusion`, :class:`segarch.backbones.hrnet.HighResolutionEncoder`), except
that the fusion's strided steps are depth-wise separable (3×3 depth-wise + 1×1, as in the official
code); the residual blocks of stages 2–4 become transformer blocks:

- local-window multi-head self-attention (non-overlapping 7×7 windows, a relative position
  bias; :class:`segarch.blocks.window_attention.WindowAttention`) after a LayerNorm, residual;
- a feed-forward net with a 3×3 depth-wise convolution between its two 1×1 convolutions (each
  followed by BN and GELU), which exchanges information across the windows, after a LayerNorm, residual.

Stage 1 has 2 bottlenecks; stages 2, 3, 4 have 1, 4, 2 modules of 2 blocks per branch. HRFormer-S
has widths (32, 64, 128, 256) and heads (1, 2, 4, 8); HRFormer-B (78, 156, 312, 624) and (2, 4, 8, 16).
The paper's segmentation networks put the OCR head (Yuan et al. 2020, arXiv:1909.11065) on the four branches
up-sampled to stride 4 and concatenated (:class:`~segarch.blocks.object_context.OCRHead`, with a 3×3 soft-region
classifier as in the authors' HRFormer + OCR code); HRNetV2's light head (``head="v2"``) and the
high-resolution branch alone (``head="v1"``, the pose networks' reading) are options.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones.hrnet import HighResolutionEncoder
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.object_context import OCRHead
from segarch.blocks.resize import resize_to
from segarch.blocks.window_attention import WindowAttention
from segarch.layers.checks import check_choice, check_features, check_positive_int
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["HRFormerBlock", "HRFormer", "HRFORMER_VARIANTS", "HRFORMER_HEADS"]

HRFORMER_VARIANTS = {"small": (32, (1, 2, 4, 8)), "base": (78, (2, 4, 8, 16))}
_LAYOUT = (2, ((1, 2), (4, 2), (2, 2)))
_TINY_LAYOUT = (1, ((1, 1), (1, 1), (1, 1)))  # not from the paper: for fast tests
HRFORMER_HEADS = ("ocr", "v2", "v1")


class HRFormerBlock(nn.Module):
    """Local-window attention and a depth-wise-convolution FFN, each pre-normed and residual, on ``(B, C, *S)`` maps.

    Args:
        spatial_dims: 2 or 3.
        channels: width.
        heads: attention heads.
        window: window edge (7).
        mlp_ratio: FFN widening (4).
    """

    def __init__(self, spatial_dims: int, channels: int, heads: int, window: int = 7, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        d, hidden = spatial_dims, int(channels * mlp_ratio)
        self.norm1 = nn.LayerNorm(channels)
        self.attn = WindowAttention(d, channels, heads, window)
        self.norm2 = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(
            ConvNormAct(d, channels, hidden, 1, act="gelu", bias=True),
            ConvNormAct(d, hidden, hidden, 3, groups=hidden, act="gelu", bias=True),  # crosses window borders
            ConvNormAct(d, hidden, channels, 1, act="gelu", bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.movedim(1, -1)
        t = t + self.attn(self.norm1(t))
        return t.movedim(-1, 1) + self.ffn(self.norm2(t).movedim(-1, 1))


class HRFormer(SegmentationNet):
    """HRFormer with the OCR segmentation head of the paper (or a lighter one).

    Args:
        spatial_dims: 2 or 3 (3D: cubic windows).
        in_channels: input channels.
        out_channels: classes.
        variant: ``"small"`` (HRFormer-S) or ``"base"`` (HRFormer-B); sets widths and heads.
        width: overrides the variant's C (widths C, 2C, 4C, 8C).
        heads: overrides the variant's heads per branch.
        window: attention window edge (7).
        stem_width: stem channels (64).
        head: ``"ocr"`` (the paper's segmentation head on all branches concatenated, the default), ``"v2"``
            (HRNetV2's 1×1 head on them) or ``"v1"`` (high-resolution branch only, as the pose networks read it).
        ocr_channels: OCR pixel and object representation channels (512), for ``head="ocr"``.
        key_channels: OCR pixel-region relation channels (256), for ``head="ocr"``.
        tiny: one block and module per stage, for fast tests only.

    ``forward(x)``: sizes multiples of 32 → logits ``(B, out_channels, *spatial)``; with the OCR head, in training
    mode the soft object regions' logits (at the input's size) are kept in ``aux_logits``.
    """

    size_divisor = 32

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, variant: str = "small",
                 width: int | None = None, heads: Sequence[int] | None = None, window: int = 7, stem_width: int = 64,
                 head: str = "ocr", ocr_channels: int = 512, key_channels: int = 256, tiny: bool = False) -> None:
        super().__init__()
        check_choice(variant, tuple(HRFORMER_VARIANTS), "variant", "HRFormer")
        check_choice(head, HRFORMER_HEADS, "head", "HRFormer")
        base_width, base_heads = HRFORMER_VARIANTS[variant]
        width = base_width if width is None else width
        heads = check_features(base_heads if heads is None else heads, 4, "HRFormer", "heads")
        self.spatial_dims = spatial_dims
        self.head_kind = head

        def make_block(branch: int, channels: int) -> nn.Module:
            return HRFormerBlock(spatial_dims, channels, heads[branch], window)

        self.encoder = HighResolutionEncoder(spatial_dims, in_channels, width=width, stem_width=stem_width,
                                             make_block=make_block, last_out_branches=1 if head == "v1" else None,
                                             stage_layout=_TINY_LAYOUT if tiny else _LAYOUT, separable_fusion=True,
                                             net="HRFormer")
        c = self.encoder.out_channels[0] if head == "v1" else sum(self.encoder.out_channels)
        if head == "ocr":
            self.head = OCRHead(spatial_dims, c, out_channels,
                                check_positive_int(ocr_channels, "ocr_channels", "HRFormer"),
                                check_positive_int(key_channels, "key_channels", "HRFormer"), aux="3x3")
        else:
            self.head = nn.Sequential(ConvNormAct(spatial_dims, c, c, 1),
                                      Conv[Conv.CONV, spatial_dims](c, out_channels, 1))
        self.aux_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        xs = self.encoder(x)
        size = xs[0].shape[2:]
        h = xs[0] if self.head_kind == "v1" else torch.cat([resize_to(f, size) for f in xs], dim=1)
        if self.head_kind != "ocr":
            return resize_to(self.head(h), x.shape[2:])
        logits, regions = self.head(h)
        self.aux_logits = resize_to(regions, x.shape[2:]) if self.training else None
        return resize_to(logits, x.shape[2:])


_PAPER = "HRFormer: High-Resolution Transformer for Dense Prediction"
_TEST = {"width": 4, "heads": (1, 1, 2, 2), "window": 4, "stem_width": 8, "tiny": True}


def _register(variant: str, params: float, pose: float, name: str, full: str) -> None:
    @register(
        name=name, full_name=f"{full} + OCR", paper=_PAPER, reference="arXiv:2110.09408", year=2021, task="semantic",
        spatial_dims=(2, 3), size_divisor=32,
        paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "variant": variant, "head": "ocr"},
        paper_params=params,
        paper_params_source=(f"Yuan et al. 2021 (arXiv:2110.09408), semantic segmentation comparison (Cityscapes, "
                             f"19 classes): {full} + OCR, {params}M. Cross-check with the pose table: the backbone "
                             f"with a 1×1 layer to 17 keypoint maps on the high-resolution branch (head='v1', "
                             f"out_channels=17) is {pose}M in the paper; this implementation counts it within 1%."),
        test_config=_TEST,
        notes=("Segmentation head: OCR as in the authors' HRFormer + OCR code (branches concatenated at stride 4; soft "
               "regions from a 3×3 conv-norm-act to 512 and a 1×1 classifier; 3×3 pixel representation to 512; OCR "
               "module with key 256; classifier); head='v2' is HRNetV2's lighter head, head='v1' the high-resolution "
               "branch alone. Fusion down-sampling is depth-wise separable, as in the official code (the paper does "
               "not say). Windows are non-overlapping and unshifted (the FFN's depth-wise 3×3 convolution links "
               "them); maps are padded to window multiples. 3D (an extension): cubic windows, 3D depth-wise "
               "convolutions."),
    )
    def build(spatial_dims: int, in_channels: int, out_channels: int, variant: str = variant, width: int | None = None,
              heads: Sequence[int] | None = None, window: int = 7, stem_width: int = 64, head: str = "ocr",
              ocr_channels: int = 512, key_channels: int = 256, tiny: bool = False) -> HRFormer:
        return HRFormer(spatial_dims, in_channels, out_channels, variant=variant, width=width, heads=heads,
                        window=window, stem_width=stem_width, head=head, ocr_channels=ocr_channels,
                        key_channels=key_channels, tiny=tiny)


_register("small", 13.5, 7.8, "hrformer_small", "HRFormer-S")
_register("base", 56.2, 43.2, "hrformer_base", "HRFormer-B")
