"""The SPADE generator (Park et al., CVPR 2019, arXiv:1903.07291): label map → image. Not a segmenter.

It runs the other way round from every other net in the zoo: given a one-hot label map it
synthesises an image, e.g. to make training images for a segmenter from label maps. The label
map, resized to 1/32 of the output, goes through a 3×3 convolution to 16·nf channels; then
seven SPADE residual blocks (16nf, 16nf, 16nf, 8nf, 4nf, 2nf, nf; :mod:`segarch.blocks.spade`)
with five nearest-neighbour ×2 up-samplings between them bring it back to the input
resolution, where a 3×3 convolution and tanh give the image. Every block's normalisation is
modulated by the label map, resized to its resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.blocks.spade import SPADE_NORMS, SPADEResBlock
from segarch.layers.checks import check_choice, check_positive_int, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["SPADEGenerator"]


@register(
    name="spade",
    full_name="SPADE generator (label-to-image; not a segmenter)",
    paper="Semantic Image Synthesis with Spatially-Adaptive Normalization",
    reference="arXiv:1903.07291",
    year=2019,
    task="generator",
    spatial_dims=(2, 3),
    size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 151, "out_channels": 3, "base_width": 64},
    paper_params=96.5,
    paper_params_source=("Park et al. 2019 (arXiv:1903.07291): the SPADE generator's parameter count, 96.5M. The label "
                         "width is not stated with it; 151 label channels (ADE20K: 150 classes + don't-care, no "
                         "instance map, the authors' ADE20K setting) reproduce it (96.49M); COCO-Stuff's 184 would "
                         "give 97.5M."),
    test_config={"base_width": 2, "hidden": 8},
    test_lr=1e-2,
    notes=("A GENERATOR, not a segmenter: in_channels = label classes, out_channels = image channels; it synthesises "
           "images from label maps (e.g. training data), so its task is 'generator': model lists (the catalogue, the "
           "napari docks) never offer it for segmenting or training a segmenter. Its contract (B, in, *spatial) → "
           "(B, out, *spatial) is a dense net's, so the zoo's shared tests hold it as any other. Input: the label map "
           "down-sampled to 1/32 (the paper's no-encoder variant); the VAE style encoder and noise input are left out, "
           "since its linear layer ties the net to one image size. 3D (trilinear-free: nearest up-sampling, 3D "
           "convolutions) is an extension."),
)
class SPADEGenerator(SegmentationNet):
    """SPADE generator: ``forward(labels_onehot) -> image``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: label-map channels (number of classes, plus an instance-edge map if used).
        out_channels: image channels (3 for RGB).
        base_width: nf; the widths are 16nf → nf (64 in the paper).
        hidden: SPADE hidden width (128 in the paper).
        norm: SPADE's parameter-free normalisation, ``"batch"`` (the paper) or ``"instance"``.
        spectral_norm: spectral normalisation of the convolutions (the paper: yes).
        final_act: ``"tanh"`` (the paper; images in [-1, 1]) or ``None`` (raw values).

    ``forward(labels)``: ``labels`` ``(B, in_channels, *spatial)`` (one-hot or soft), sizes multiples
    of 32 → image ``(B, out_channels, *spatial)``.

    Examples::

        >>> gen = SPADEGenerator(2, in_channels=5, out_channels=1, base_width=8, hidden=16)
        >>> labels = torch.nn.functional.one_hot(torch.randint(0, 5, (1, 64, 64)), 5).permute(0, 3, 1, 2).float()
        >>> gen(labels).shape
        torch.Size([1, 1, 64, 64])
    """

    size_divisor = 32

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, base_width: int = 64,
                 hidden: int = 128, norm: str = "batch", spectral_norm: bool = True,
                 final_act: str | None = "tanh") -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "SPADE")
        check_choice(norm, SPADE_NORMS, "norm", "SPADE")
        check_choice(final_act, ("tanh", None), "final_act", "SPADE")
        for name, value in (("base_width", base_width), ("hidden", hidden)):
            check_positive_int(value, name, "SPADE")
        self.spatial_dims = spatial_dims
        conv = Conv[Conv.CONV, spatial_dims]
        nf = base_width
        self.fc = conv(in_channels, 16 * nf, 3, padding=1)
        widths = [16 * nf, 16 * nf, 16 * nf, 16 * nf, 8 * nf, 4 * nf, 2 * nf, nf]

        def block(i: int) -> SPADEResBlock:
            return SPADEResBlock(spatial_dims, widths[i], widths[i + 1], in_channels, hidden, norm, spectral_norm)

        self.head_0, self.middle_0, self.middle_1 = block(0), block(1), block(2)
        self.ups = nn.ModuleList(block(i) for i in range(3, 7))
        self.conv_img = conv(nf, out_channels, 3, padding=1)
        self.final_act = final_act

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(labels)
        x = self.fc(F.interpolate(labels, size=[s // 32 for s in labels.shape[2:]], mode="nearest"))
        x = self.head_0(x, labels)
        x = self.middle_0(_up(x), labels)  # the paper's "normal" layout: 5 up-samplings in all
        x = self.middle_1(x, labels)
        for block in self.ups:
            x = block(_up(x), labels)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.tanh(x) if self.final_act == "tanh" else x


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")
