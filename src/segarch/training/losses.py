"""Losses for training with partial annotations: MONAI's Dice + CE, plain CE and focal, all masked.

Every loss takes logits ``(B, C, *spatial)``, class targets ``(B, 1, *spatial)`` and a mask
``(B, 1, *spatial)`` of annotated pixels; pixels outside the mask contribute nothing.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LOSSES", "SegmentationLoss"]

LOSSES = ("dice_ce", "dice", "ce", "focal")


class SegmentationLoss(nn.Module):
    """A masked segmentation loss.

    Args:
        name: ``"dice_ce"`` (MONAI ``MaskedDiceLoss`` + cross-entropy, as ``DiceCELoss``), ``"dice"``,
            ``"ce"`` or ``"focal"`` (MONAI ``FocalLoss``, gamma 2).
        num_classes: output channels.
    """

    def __init__(self, name: str = "dice_ce", num_classes: int = 2) -> None:
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"`loss` must be one of {LOSSES}, got {name!r}.")
        from monai.losses import FocalLoss, MaskedDiceLoss

        self.name = name
        self.num_classes = int(num_classes)
        # batch=True: one Dice over the whole batch, so patches without foreground don't blow it up.
        self.dice = MaskedDiceLoss(to_onehot_y=True, softmax=True, include_background=True, batch=True)
        self.focal = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0, reduction="none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = target.long()
        mask = mask.to(logits.dtype)
        weight = mask.sum().clamp_min(1.0)
        loss = logits.new_zeros(())
        if self.name in ("dice_ce", "dice"):
            loss = loss + self.dice(logits, target, mask=mask)
        if self.name in ("dice_ce", "ce"):
            ce = F.cross_entropy(logits, target[:, 0], reduction="none")
            loss = loss + (ce * mask[:, 0]).sum() / weight
        if self.name == "focal":
            per_pixel = self.focal(logits, target).sum(1, keepdim=True)
            loss = loss + (per_pixel * mask).sum() / weight
        return loss
