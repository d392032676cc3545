"""Patch sampling and augmentation as MONAI dictionary transforms, 2D and 3D alike.

Each region read by :func:`segarch.training.data.read_region` becomes a dict ``{"image", "label",
"mask", "fg", "bg"}``; :func:`build_augmentation` returns the chain applied to it:

- ``RandCropByPosNegLabeld``: patches centred on an annotated foreground or background pixel
  with equal odds (the indices come from the annotation mask, so unannotated pixels are never
  picked as background);
- geometry: ``RandFlipd`` on every spatial axis, ``RandRotate90d`` in the Y–X plane (Z often has
  another pixel size), ``Rand2DElasticd`` / ``Rand3DElasticd`` with rotation and scaling;
- intensity: ``RandScaleIntensityd``, ``RandShiftIntensityd``, ``RandAdjustContrastd``,
  ``RandGaussianNoised``, ``RandGaussianSmoothd``.

Labels and mask follow every geometric transform with nearest-neighbour interpolation.
``augment`` may also be ``"none"`` (crops only) or a list of MONAI transform configs
(``{"_target_": "RandGaussianNoised", "keys": ["image"], ...}``) applied after the crop.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["AUGMENTATIONS", "build_augmentation", "region_to_dict"]

AUGMENTATIONS = ("default", "none")


def region_to_dict(region) -> dict[str, Any]:
    """A region as the dict the transforms expect, with foreground/background indices inside the mask."""
    mask = region.mask.reshape(-1)
    target = region.target.reshape(-1)
    return {
        "image": region.image,
        "label": region.target[None].astype(np.float32),
        "mask": region.mask[None].astype(np.float32),
        "fg": np.flatnonzero(mask & (target > 0)),
        "bg": np.flatnonzero(mask & (target == 0)),
    }


def build_augmentation(spatial_dims: int, patch: Sequence[int], augment: Any = "default", *,
                       samples_per_region: int = 2):
    """The MONAI ``Compose`` turning a region dict into a list of ``samples_per_region`` patch dicts."""
    from monai.transforms import (
        Compose, Identityd, OneOf, Rand2DElasticd, Rand3DElasticd, RandAdjustContrastd, RandCropByPosNegLabeld,
        RandFlipd, RandGaussianNoised, RandGaussianSmoothd, RandRotate90d, RandScaleIntensityd, RandShiftIntensityd,
    )

    keys = ["image", "label", "mask"]
    crop = RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=list(patch), pos=1.0, neg=1.0,
                                  num_samples=samples_per_region, fg_indices_key="fg", bg_indices_key="bg")
    bad = f"`augment` must be one of {AUGMENTATIONS} or a list of MONAI transform configs, got {augment!r}."
    if isinstance(augment, str) and augment not in AUGMENTATIONS:
        raise ValueError(bad)
    if augment is None or augment is False or augment == "none":
        return Compose([crop])
    if isinstance(augment, (list, tuple)):
        from monai.bundle import ConfigParser

        try:
            extra = ConfigParser({"t": list(augment)}).get_parsed_content("t", instantiate=True)
        except Exception as err:
            raise ValueError(f"`augment` could not be instantiated by MONAI: {err}") from err
        return Compose([crop, *extra])
    if augment is not True and augment != "default":
        raise ValueError(bad)
    nearest = ["bilinear", "nearest", "nearest"]
    geometry: list = [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    geometry.append(RandRotate90d(keys=keys, prob=0.5, spatial_axes=(spatial_dims - 2, spatial_dims - 1)))
    # The elastic transforms resample even when their dice says "skip": OneOf keeps the skip free.
    if spatial_dims == 2:
        elastic, p_elastic = Rand2DElasticd(
            keys=keys, prob=1.0, spacing=max(8, min(patch) // 4), magnitude_range=(1.0, 3.0),
            rotate_range=math.pi, scale_range=(0.15, 0.15), mode=nearest, padding_mode="reflection"), 0.25
    else:
        elastic, p_elastic = Rand3DElasticd(
            keys=keys, prob=1.0, sigma_range=(4.0, 6.0), magnitude_range=(20.0, 60.0),
            rotate_range=(math.pi, 0.0, 0.0), scale_range=(0.1, 0.1, 0.1), mode=nearest,
            padding_mode="reflection"), 0.15
    # rotate_range[0] turns the Y–X plane (about Z): Z keeps its own pixel size.
    geometry.append(OneOf([elastic, Identityd(keys=keys)], weights=[p_elastic, 1.0 - p_elastic]))
    intensity = [
        RandScaleIntensityd(keys="image", factors=0.3, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), prob=0.3),
        RandGaussianNoised(keys="image", std=0.05, prob=0.3),
        RandGaussianSmoothd(keys="image", sigma_x=(0.5, 1.5), sigma_y=(0.5, 1.5), sigma_z=(0.5, 1.5), prob=0.2),
    ]
    return Compose([crop, *geometry, *intensity])
