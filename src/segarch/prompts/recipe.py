"""The DEXTR input recipe, shared by inference and training: crop box, resizing, heat map, normalisation.

Maninis et al. 2018 (arXiv:1711.09081, Sec. 3): the object's bounding box from its extreme points is
relaxed by a margin, the crop resized to a fixed size (512×512 there), and a channel of 2D Gaussians
(σ = 10 px at 512) centred on the points is appended to the image channels. The margin here is relative
to the points' largest extent (the paper's fixed 50 px suits PASCAL's object sizes, not a microscope's),
and σ is a fraction of the network's input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PromptSettings", "DEFAULTS", "crop_box", "heat_map", "normalise", "resize", "prompt_input",
           "points_to_crop", "correction_channels"]


@dataclass(frozen=True)
class PromptSettings:
    """How a crop is made from the points (training and inference must agree).

    Attributes:
        size: the network's input size per spatial axis (the crop is resized to it).
        margin: the points' box is enlarged on every side by ``margin`` × its largest extent ...
        min_margin: ... and by at least this many pixels.
        sigma: the heat map's Gaussian σ as a fraction of ``size`` (10/512 in the paper).
        corrections: the network also takes corrective clicks and the object's previous mask (Sofiiuk et al.
            2021, arXiv:2102.06583): three more input channels after the extreme points' heat map, the
            positive clicks' heat map, the negative clicks' and the previous mask (all zero before any correction).
    """

    size: int = 64
    margin: float = 0.15
    min_margin: int = 4
    sigma: float = 0.04
    corrections: bool = False

    @property
    def guidance_channels(self) -> int:
        """Input channels after the image's: the extreme points' heat map, then (with ``corrections``) the
        positive and negative clicks' heat maps and the previous mask."""
        return 4 if self.corrections else 1


#: Defaults per model kind: the light model at 64² (32³ in 3D; a 2-core CPU answers a click in tens of
#: milliseconds), the paper's network at 512² (128³ in 3D). At 32³ the heat map's σ is 0.08 × 32 = 2.6
#: voxels: at 0.04 (1.3 voxels) a 600-step trial reached a mean IoU of 0.75, at 0.08 0.77.
DEFAULTS = {"dextr_light": {2: PromptSettings(64), 3: PromptSettings(32, sigma=0.08)},
            "dextr": {2: PromptSettings(512, sigma=10 / 512), 3: PromptSettings(128, sigma=10 / 512)}}


def crop_box(points: np.ndarray, spatial_shape: Sequence[int], settings: PromptSettings
             ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The crop ``(start, stop)`` (pixels, stop exclusive) around ``points``, relaxed and clipped to the image."""
    pts = np.rint(np.asarray(points, dtype=np.float64))
    low, high = pts.min(axis=0), pts.max(axis=0)
    pad = max(float(settings.min_margin), settings.margin * float((high - low).max()))
    start = np.maximum(np.floor(low - pad), 0).astype(int)
    stop = np.minimum(np.ceil(high + pad) + 1, np.asarray(spatial_shape)).astype(int)
    return tuple(int(v) for v in start), tuple(int(v) for v in stop)


def points_to_crop(points: np.ndarray, start: Sequence[int], crop_shape: Sequence[int], size: int) -> np.ndarray:
    """Map image pixel coordinates into the resized crop's pixel coordinates (pixel centres aligned)."""
    scale = np.asarray(size, dtype=np.float64) / np.asarray(crop_shape, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) - np.asarray(start) + 0.5) * scale - 0.5


def heat_map(points: np.ndarray, size: int, spatial_dims: int, sigma: float) -> torch.Tensor:
    """``(size,)*dims`` map, the maximum over points of ``exp(-d²/2σ²)`` (σ in pixels): 1 at each point.

    Written in closed form (the points fall between pixels after resizing), where MONAI's
    ``extreme_points_to_image`` filters an image of integer point positions.
    """
    out = torch.zeros((size,) * spatial_dims)
    if len(points) == 0:  # e.g. no corrective click of one kind yet
        return out
    grids = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * spatial_dims, indexing="ij")
    for p in np.asarray(points, dtype=np.float32):
        d2 = sum((g - float(c)) ** 2 for g, c in zip(grids, p))
        out = torch.maximum(out, torch.exp(-d2 / (2 * sigma * sigma)))
    return out


def normalise(crop: np.ndarray) -> np.ndarray:
    """Per channel, the crop's 1st–99th percentiles to [0, 1] (clipped): ``(C, *spatial)`` float32."""
    crop = np.asarray(crop, dtype=np.float32)
    flat = crop.reshape(crop.shape[0], -1)
    lo, hi = np.percentile(flat, [1, 99], axis=1)
    scale = np.where(hi - lo > 1e-6, hi - lo, 1.0)
    out = (crop - lo.reshape((-1,) + (1,) * (crop.ndim - 1))) / scale.reshape((-1,) + (1,) * (crop.ndim - 1))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def resize(x: torch.Tensor, size: Sequence[int], *, nearest: bool = False) -> torch.Tensor:
    """Resize ``(B, C, *spatial)`` to ``size``: (bi/tri)linear, or nearest for masks."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    if nearest:
        return F.interpolate(x, size=size, mode="nearest")
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def correction_channels(positive, negative, previous, crop_shape: Sequence[int], settings: PromptSettings
                        ) -> torch.Tensor:
    """The correction channels ``(1, 3, *size)``: heat maps of the ``positive`` and ``negative`` clicks
    (``(N, dims)`` in the crop's pixel coordinates before resizing; ``None`` or empty: none) and the
    ``previous`` mask over the crop (``None``: empty), resized to the network's input."""
    dims = len(crop_shape)
    sigma = settings.sigma * settings.size
    maps = []
    for clicks in (positive, negative):
        clicks = np.zeros((0, dims)) if clicks is None else np.asarray(clicks, np.float64).reshape(-1, dims)
        maps.append(heat_map(points_to_crop(clicks, (0,) * dims, crop_shape, settings.size), settings.size, dims,
                             sigma))
    if previous is None:
        mask = torch.zeros((settings.size,) * dims)
    else:
        mask = resize(torch.from_numpy(np.asarray(previous, np.float32))[None, None], (settings.size,) * dims)[0, 0]
    return torch.stack(maps + [mask])[None]


def prompt_input(crop: np.ndarray, points_in_crop: np.ndarray, settings: PromptSettings, *, positive=None,
                 negative=None, previous=None) -> torch.Tensor:
    """The network's input ``(1, C + guidance, *size)``: the normalised, resized crop ``(C, *spatial)``, the
    extreme points' heat map and, for a model with ``settings.corrections``, the correction channels
    (:func:`correction_channels`; zero without clicks and previous mask).

    ``points_in_crop`` (and the clicks) are in the crop's pixel coordinates (before resizing); ``previous``
    is the object's mask over the crop.
    """
    dims = crop.ndim - 1
    image = torch.from_numpy(normalise(crop))[None]
    image = resize(image, (settings.size,) * dims)
    pts = points_to_crop(points_in_crop, (0,) * dims, crop.shape[1:], settings.size)
    heat = heat_map(pts, settings.size, dims, settings.sigma * settings.size)
    parts = [image, heat[None, None]]
    if settings.corrections:
        parts.append(correction_channels(positive, negative, previous, crop.shape[1:], settings))
    return torch.cat(parts, dim=1)
