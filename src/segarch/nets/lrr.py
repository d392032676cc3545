"""LRR, Laplacian pyramid reconstruction and refinement (Ghiasi and Fowlkes, ECCV 2016, arXiv:1605.02264).

VGG-16 (with fc6/fc7 as convolutions) predicts, at each of four levels — fc7 (1/32), conv5_3 (1/16),
conv4_3 (1/8), conv3_3 (1/4) — a set of coefficients with a 5×5 convolution (``num_basis`` per
class); a class-wise transposed convolution with learned 8×8 basis functions reconstructs each
class's scores 4× finer (Sec. 3). Going down the pyramid, the coarser prediction is up-sampled ×2
and the finer level adds its reconstruction as a Laplacian residual, gated by a boundary mask
computed from the coarser prediction: max-pooling of the class probabilities minus min-pooling
(a 9×9 dilation minus erosion), near zero inside confident regions (Sec. 4, Fig. 3). LRR-4x, the
paper's full model, ends at conv3_3's level, i.e. at the input's resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones import VGGEncoder
from segarch.backbones.vgg import fc_as_convolutions
from segarch.blocks.bilinear_deconv import linear_kernel
from segarch.blocks.resize import interp_mode
from segarch.layers.checks import check_choice, check_positive_int, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["LRR", "boundary_mask"]


def boundary_mask(logits: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Per class, the max minus the min of the softmax probability over a ``window`` neighbourhood.

    Near 0 where a class's probability is flat (inside a region), up to 1 across a boundary.
    """
    prob = logits.softmax(dim=1)
    pool = F.max_pool2d if prob.ndim == 4 else F.max_pool3d
    return pool(prob, window, 1, window // 2) + pool(-prob, window, 1, window // 2)


class _Reconstruction(nn.Module):
    """Coefficients (5×5 conv to ``classes × basis`` maps) → class-wise 4× transposed conv with the bases."""

    def __init__(self, spatial_dims: int, in_channels: int, classes: int, num_basis: int, kernel: int) -> None:
        super().__init__()
        self.coefficients = Conv[Conv.CONV, spatial_dims](in_channels, classes * num_basis, kernel, padding=kernel // 2)
        # Each class has its own ``num_basis`` 8×8 filters (groups = classes); stride 4 and padding 2 give 4×.
        self.bases = Conv[Conv.CONVTRANS, spatial_dims](classes * num_basis, classes, 8, stride=4, padding=2,
                                                       groups=classes, bias=False)
        if self.bases.weight.device.type != "meta":
            # The paper starts the bases from PCA of ground-truth patches; without data, start the first
            # basis of each class at linear interpolation and the others small.
            with torch.no_grad():
                nn.init.normal_(self.bases.weight, std=0.01)
                self.bases.weight[::num_basis, 0] = linear_kernel(8, spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bases(self.coefficients(x))


@register(
    name="lrr", full_name="LRR-4x (VGG-16)",
    paper="Laplacian Pyramid Reconstruction and Refinement for Semantic Segmentation", reference="arXiv:1605.02264",
    year=2016, task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 21},
    paper_params=162.5,
    paper_params_source="Pinned: we found no count in the paper; 162.5M follows from its Sec. 3-4 and the authors' "
                        "code (VGG-16 with fc6/fc7 as convolutions 134.3M, 5×5 coefficient convolutions to 21×10 "
                        "maps on fc7/conv5_3/conv4_3/conv3_3 28.2M, 8×8 bases) for PASCAL VOC (21 classes, RGB).",
    test_config={"width_scale": 0.125, "fc_channels": 32, "fc_kernel": 3, "num_basis": 2, "coefficient_kernel": 3,
                 "dropout": 0.0, "norm": "batch"},
    notes="The paper's LRR-4x for inference: the dilation/erosion training objectives at the 1/32 level and the "
          "per-level losses are training devices and are not built (the per-level predictions are exposed in "
          "`level_predictions`). The bases start at linear interpolation (the paper: PCA of label patches). "
          "fc6 uses 'same' padding as in our FCN. test_config uses VGG-16-BN and narrow widths so a few steps train "
          "from scratch.",
)
class LRR(SegmentationNet):
    """LRR-4x on VGG-16 for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        width_scale: multiplies VGG-16's convolution widths (1 for the paper).
        fc_channels: channels of fc6/fc7 as convolutions (4096).
        fc_kernel: kernel of fc6 as a convolution (7).
        num_basis: basis functions per class (10 in the paper).
        coefficient_kernel: kernel of the coefficient convolutions (5 in the authors' code).
        dropout: dropout after fc6 and fc7 (0.5).
        norm: ``None`` (the paper's VGG-16) or ``"batch"`` (VGG-16-BN).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.
    The last forward's per-level predictions (coarsest first, strides 8, 4, 2, 1) are kept in
    ``level_predictions`` (the paper supervises each one).

    Examples::

        >>> net = LRR(2, 3, 21)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 21, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, width_scale: float = 1.0,
                 fc_channels: int = 4096, fc_kernel: int = 7, num_basis: int = 10, coefficient_kernel: int = 5,
                 dropout: float = 0.5, norm: str | None = None) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "LRR")
        check_choice(norm, (None, "batch"), "norm", "LRR")
        for arg, value in (("fc_channels", fc_channels), ("num_basis", num_basis)):
            check_positive_int(value, arg, "LRR")
        for arg, value in (("fc_kernel", fc_kernel), ("coefficient_kernel", coefficient_kernel)):
            if not isinstance(value, int) or value < 1 or value % 2 == 0:
                raise ValueError(f"`{arg}` must be a positive odd integer for LRR, got {value!r}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1) for LRR, got {dropout!r}.")
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.encoder = VGGEncoder(spatial_dims, in_channels, width_scale=width_scale, norm=norm)
        c3, c4, c5 = self.encoder.out_channels[2:]
        self.fc = fc_as_convolutions(spatial_dims, c5, fc_channels, fc_kernel, dropout)
        # Levels, coarsest first: fc7 (1/32), conv5_3 (1/16), conv4_3 (1/8), conv3_3 (1/4).
        self.levels = nn.ModuleList(
            _Reconstruction(spatial_dims, c, out_channels, num_basis, coefficient_kernel)
            for c in (fc_channels, c5, c4, c3)
        )
        self._mode = interp_mode(spatial_dims)
        self.level_predictions: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        convs = []  # conv3_3, conv4_3, conv5_3 before their pooling
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if i >= 2:
                convs.append(x)
            x = self.encoder.pool(x)
        features = (self.fc(x), convs[2], convs[1], convs[0])
        y = self.levels[0](features[0])
        predictions = [y]
        for level, feature in zip(self.levels[1:], features[1:]):
            up = F.interpolate(y, scale_factor=2, mode=self._mode, align_corners=False)
            y = up + boundary_mask(up) * level(feature)
            predictions.append(y)
        self.level_predictions = [p.detach() for p in predictions]
        return y
