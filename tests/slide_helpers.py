"""Generated whole slides for the tests: H&E-like tissue on glass, written as real pyramidal TIFFs.

``tissue_slide`` draws pink tissue with purple nuclei over bright, slightly noisy glass, the tissue
covering a chosen share of the slide; ``write_slide`` writes it the way scanners do: an Aperio
SVS layout (baseline, thumbnail, reduced levels, with ``MPP``/``AppMag`` in the description), or a
generic tiled TIFF with SubIFD levels and resolution tags, or one with no pixel size at all.
"""

from __future__ import annotations

import numpy as np
import tifffile


def _blur(field: np.ndarray, sigma: float) -> np.ndarray:
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in field.shape], indexing="ij")
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * sum(f ** 2 for f in freqs))
    return np.real(np.fft.ifftn(np.fft.fftn(field) * kernel))


def tissue_slide(shape=(1536, 2048), *, background: float = 0.7, seed: int = 0):
    """``(rgb, tissue)``: a uint8 RGB slide and the boolean tissue it shows (``1 - background`` of it)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    # Tissue: where a smooth field is above its `background` quantile (drawn at 1/8, enlarged).
    coarse = _blur(rng.normal(size=(h // 8, w // 8)), sigma=min(h, w) / 8 / 10)
    coarse = np.kron(coarse, np.ones((8, 8)))[:h, :w]
    tissue = coarse > np.quantile(coarse, background)
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = (236, 234, 240)
    eosin = np.array((222, 140, 186), np.float32) * (0.85 + 0.15 * rng.random((h, w, 1), np.float32))
    rgb[tissue] = eosin[tissue]
    # Haematoxylin nuclei: small dark-purple disks inside the tissue.
    ys, xs = np.nonzero(tissue[::12, ::12])
    pick = rng.random(len(ys)) < 0.5
    for y, x in zip(ys[pick] * 12 + rng.integers(0, 12, pick.sum()), xs[pick] * 12 + rng.integers(0, 12, pick.sum())):
        y0, y1, x0, x1 = max(y - 4, 0), min(y + 5, h), max(x - 4, 0), min(x + 5, w)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disk = ((yy - y) ** 2 + (xx - x) ** 2 <= 16) & tissue[y0:y1, x0:x1]
        rgb[y0:y1, x0:x1][disk] = (92, 58, 140)
    rgb += rng.normal(0, 4, size=rgb.shape).astype(np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8), tissue


def write_slide(path, rgb: np.ndarray, *, kind: str = "svs", mpp: float | None = 0.25,
                downsamples=(1, 4, 16), tile: int = 256):
    """Write ``rgb`` as a pyramidal slide: ``kind`` ``"svs"`` (Aperio layout) or ``"generic"`` (SubIFDs)."""
    h, w = rgb.shape[:2]
    levels = [rgb[::d, ::d] if d > 1 else rgb for d in downsamples]

    def tiles_for(level):
        return (tile, tile) if min(level.shape[:2]) >= tile else (64, 64)

    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        if kind == "svs":
            suffix = f"|AppMag = 40|MPP = {mpp}" if mpp else "|AppMag = 40"
            head = f"Aperio Image Library v12.0.15\r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) JPEG/RGB Q=70"
            tw.write(rgb, tile=(tile, tile), photometric="rgb", compression="zlib", metadata=None,
                     description=head + suffix)
            thumb = rgb[::32, ::32]
            tw.write(thumb, photometric="rgb", metadata=None,
                     description=f"Aperio Image Library v12.0.15\r\n{w}x{h} -> {thumb.shape[1]}x{thumb.shape[0]}")
            for level in levels[1:]:
                tw.write(level, tile=tiles_for(level), photometric="rgb", compression="zlib", metadata=None,
                         description=f"Aperio Image Library v12.0.15\r\n{w}x{h} -> {level.shape[1]}x{level.shape[0]}"
                                     + suffix)
        elif kind == "generic":
            extra = dict(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER") if mpp else {}
            tw.write(rgb, tile=(tile, tile), photometric="rgb", compression="zlib", metadata=None,
                     subifds=len(levels) - 1, **extra)
            for level in levels[1:]:
                tw.write(level, tile=tiles_for(level), photometric="rgb", compression="zlib", metadata=None,
                         subfiletype=1)
        else:
            raise ValueError(f"`kind` must be 'svs' or 'generic', got {kind!r}.")
    return path
