"""Pick the pyramid level that matches a physical pixel size (µm for slides, map units for rasters).

A model trained at 0.5 µm/px should see tissue at 0.5 µm/px whatever the scanner's native
resolution: :func:`pick_level` chooses the level of an :class:`~segarch.io.Image` whose pixel
size is nearest the one asked for (on a log scale: 1 µm is as far from 0.5 as 0.25 is) and says
how much of the way is left, as a zoom to apply to that level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from segarch.io.image import Image

__all__ = ["LevelChoice", "pick_level", "pixel_size_of"]


@dataclass(frozen=True)
class LevelChoice:
    """The level to read and what is left to do.

    Attributes:
        level: index into ``image.levels``.
        pixel_size: ``(y, x)`` size of one pixel of that level, in the image's units.
        zoom: ``(y, x)`` factor to resize the level by to reach the requested size (``0.5``: halve it,
            ``1.0``: use as is, ``2.0``: enlarge twice).
        exact: the level already has the requested size (within ``tolerance``), no resampling needed.
    """

    level: int
    pixel_size: tuple[float, float]
    zoom: tuple[float, float]
    exact: bool


def pixel_size_of(image: Image, *, pixel_size: float | Sequence[float] | None = None) -> tuple[float, float]:
    """``(y, x)`` physical size of a level-0 pixel: ``pixel_size`` if given, else the image's own.

    Raises:
        ValueError: neither the file nor ``pixel_size`` says the pixel size (names the file and the parameter).
    """
    if pixel_size is not None:
        values = (pixel_size, pixel_size) if isinstance(pixel_size, (int, float)) else tuple(pixel_size)
        if len(values) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"`pixel_size` must be a positive number or two of them (y, x), got {pixel_size!r}.")
        return float(values[0]), float(values[1])
    known = "Y" in image.units and "X" in image.units
    if image.geo is not None:
        return image.geo.pixel_size
    if not known:
        raise ValueError(f"{image.path or image.name!r} has no pixel size in its metadata; pass `pixel_size=` (the "
                         "size of a level-0 pixel, e.g. pixel_size=0.25 for 0.25 µm per pixel).")
    return image.scale[image.axes.index("Y")], image.scale[image.axes.index("X")]


def pick_level(image: Image, target: float | Sequence[float], *, pixel_size: float | Sequence[float] | None = None,
               prefer: str = "nearest", tolerance: float = 0.01) -> LevelChoice:
    """The level of ``image`` whose pixel size is nearest ``target``, and the zoom that remains.

    Args:
        image: an opened image (a whole slide, a raster with overviews, an OME pyramid).
        target: the wanted pixel size (one number, or ``(y, x)``), in the image's units: µm for slides,
            map units (metres for UTM) for rasters.
        pixel_size: level 0's pixel size, for a file that does not record it (or records it wrongly).
        prefer: ``"nearest"`` (log scale; ties go to the finer level) or ``"finer"`` (the coarsest level that
            is still at least as fine as ``target``, so the level is only ever shrunk, never enlarged).
        tolerance: relative difference under which a level counts as exactly the target size.

    Examples::

        >>> slide = segarch.io.open_image("biopsy.svs")       # levels at 0.25, 1.0, 4.0 µm/px
        >>> pick_level(slide, 0.5)
        LevelChoice(level=0, pixel_size=(0.25, 0.25), zoom=(0.5, 0.5), exact=False)
    """
    if prefer not in ("nearest", "finer"):
        raise ValueError(f"`prefer` must be 'nearest' or 'finer', got {prefer!r}.")
    want = (target, target) if isinstance(target, (int, float)) else tuple(target)
    if len(want) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in want):
        raise ValueError(f"`target` must be a positive pixel size or two of them (y, x), got {target!r}.")
    y0, x0 = pixel_size_of(image, pixel_size=pixel_size)
    iy, ix = image.axes.index("Y"), image.axes.index("X")
    base = image.level_scales[0]
    sizes = [(y0 * s[iy] / base[iy], x0 * s[ix] / base[ix]) for s in image.level_scales]

    def distance(size):  # mean log distance over Y and X
        return (abs(math.log(size[0] / want[0])) + abs(math.log(size[1] / want[1]))) / 2

    candidates = list(range(len(sizes)))
    if prefer == "finer":
        fine = [i for i in candidates if all(s <= w * (1 + tolerance) for s, w in zip(sizes[i], want))]
        candidates = fine or [0]
    # Ties go to the finer level: shrinking loses nothing that enlarging would have to invent.
    level = min(candidates, key=lambda i: (round(distance(sizes[i]), 9), sum(sizes[i])))
    size = sizes[level]
    zoom = (size[0] / want[0], size[1] / want[1])
    exact = all(abs(z - 1) <= tolerance for z in zoom)
    return LevelChoice(level=level, pixel_size=size, zoom=(1.0, 1.0) if exact else zoom, exact=exact)
