"""Validation Dice per class with MONAI's ``compute_dice``, over annotated pixels only."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["dice_per_class", "mean_foreground_dice"]


def dice_per_class(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, mask=None, *,
                   num_classes: int) -> list[float]:
    """Dice of each class (background first) between class maps, pooled over all pixels given.

    ``pred`` and ``target`` are integer class maps of one shape (any number of images stacked);
    pixels where ``mask`` is false are left out. A class absent from both gives NaN.
    """
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    pred = torch.as_tensor(np.asarray(pred)).long().reshape(1, 1, -1)
    target = torch.as_tensor(np.asarray(target)).long().reshape(1, 1, -1)
    if pred.shape != target.shape:
        raise ValueError(f"`pred` and `target` must have one shape, got {tuple(pred.shape)} and {tuple(target.shape)}.")
    if mask is not None:
        keep = torch.as_tensor(np.asarray(mask)).reshape(-1).bool()
        pred, target = pred[..., keep], target[..., keep]
    if pred.numel() == 0:
        return [math.nan] * num_classes
    dice = compute_dice(one_hot(pred, num_classes, dim=1), one_hot(target, num_classes, dim=1),
                        include_background=True, ignore_empty=True)
    return [float(v) for v in dice[0]]


def mean_foreground_dice(dice: Sequence[float]) -> float:
    """Mean Dice over the foreground classes (all but the first), ignoring NaN; NaN if none is defined."""
    values = [d for d in list(dice)[1:] if not math.isnan(d)]
    return float(np.mean(values)) if values else math.nan
