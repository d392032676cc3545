"""Synthetic images with ground truth, generated from a seed (no downloads).

Used by the CLI's demo, the tests and the napari plugin's sample data:

- :func:`nuclei`: fluorescent nuclei, 2D or 3D, with instance labels.
- :func:`satellite`: an RGB aerial scene (fields, roads, buildings, water) with semantic labels
  (:data:`SATELLITE_CLASSES`); :func:`multispectral`: the same landscape as georeferenced 4-band (RGBN)
  or 13-band Sentinel-2-like reflectance in any season (both from :mod:`segarch.satellite`).
- :func:`large_nuclei`: a lazy nuclei image of any size (e.g. 20000×20000) as Dask pyramids,
  each chunk generated on demand from the seed and its position, with its instance labels.
"""

from __future__ import annotations

import numpy as np

from segarch.satellite import SATELLITE_CLASSES, multispectral, satellite

__all__ = ["nuclei", "satellite", "multispectral", "SATELLITE_CLASSES", "large_nuclei", "large_nuclei_block"]



def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    # Blur in Fourier space: exact for a periodic image and needs nothing beyond NumPy.
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in image.shape], indexing="ij", sparse=True)  # broadcast, not copied
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * sum(f ** 2 for f in freqs))
    return np.real(np.fft.ifftn(np.fft.fftn(image) * kernel))


def _along(window: slice, axis: int, ndim: int) -> tuple[slice, ...]:
    """An index that cuts ``window`` from one axis of a sparse meshgrid array (its other axes have size 1)."""
    return tuple(window if k == axis else slice(None) for k in range(ndim))


def nuclei(shape: tuple[int, ...] = (256, 256), *, count: int | None = None, radius: tuple[float, float] = (6, 14),
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fluorescent-nuclei-like image and its instance labels, 2D or 3D.

    Args:
        shape: image shape, 2 or 3 sizes (``(Y, X)`` or ``(Z, Y, X)``).
        count: number of nuclei (default: about 35% area coverage).
        radius: range of ellipsoid semi-axes, in pixels.
        seed: random seed; the same seed gives the same image.

    Returns:
        ``(image, labels)``: a float32 image with blur, background and noise, and uint16 instance labels
        (0 background; overlapping nuclei: the later one wins).
    """
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"`shape` must be 2 or 3 positive sizes, got {shape!r}.")
    rng = np.random.default_rng(seed)
    mean_r = float(np.mean(radius))
    if count is None:
        volume = np.pi * mean_r ** 2 if len(shape) == 2 else 4 / 3 * np.pi * mean_r ** 3
        count = max(1, int(0.35 * np.prod(shape) / volume))
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij", sparse=True)
    labels = np.zeros(shape, np.uint16)
    signal = np.zeros(shape, np.float32)
    for label in range(1, count + 1):
        centre = [rng.uniform(0, n) for n in shape]
        axes = rng.uniform(*radius, size=len(shape))
        # Only the nucleus's bounding box (one pixel of margin) is tested: the same pixels pass as over the
        # whole grid, and drawing the image costs O(pixels) instead of O(nuclei x pixels).
        box = tuple(slice(max(0, int(np.floor(c - a)) - 1), min(n, int(np.ceil(c + a)) + 2))
                    for c, a, n in zip(centre, axes, shape))
        # Lo-fi random orientation: in 2D rotate, in 3D scale per axis only.
        inside = sum(((g[_along(box[i], i, len(shape))] - c) / a) ** 2
                     for i, (g, c, a) in enumerate(zip(grid, centre, axes))) <= 1.0
        labels[box][inside] = label
        signal[box][inside] = rng.uniform(0.5, 1.0)
    image = _gaussian_blur(signal, sigma=1.5)
    yy = np.linspace(0, 1, shape[-2])[:, None]
    image += 0.1 + 0.1 * yy  # uneven illumination
    image += rng.normal(0, 0.05, size=shape)
    return (image * 1000).astype(np.float32), labels


# ---------------------------------------------------------------------------------------- large lazy image

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a counter-based hash, so any pixel or cell gets its numbers directly."""
    x = (np.asarray(x, np.uint64) + _GOLDEN).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(seed: int, salt: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    key = _mix(np.array([(seed & 0xFFFFFFFF) * 1000003 + salt], np.uint64))
    h = _mix(_mix(key ^ a.astype(np.uint64)) ^ b.astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


_CELL = 32  # one nucleus (or none) per 32×32 cell; radius < 16 keeps each nucleus within a 2×2 cell window


def large_nuclei_block(y0: int, x0: int, shape: tuple[int, int], *, step: int = 1, seed: int = 0,
                       image_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render a window of the large nuclei image: any position, any pyramid step, no state.

    Pixel ``(i, j)`` of the window samples the level-0 point ``((y0 + i) * step + (step - 1) / 2, ...)``,
    so every pyramid level shows the same nuclei. Each 32×32 cell holds at most one nucleus whose
    position, shape and brightness come from a hash of (seed, cell), and noise from a hash of the
    pixel, so windows computed separately agree exactly and show no seams.

    Returns:
        ``(image, labels)``: uint16 intensities and uint32 instance labels (cell number + 1).
    """
    h, w = int(shape[0]), int(shape[1])
    width = (image_shape[1] if image_shape else 2 ** 31) // _CELL + 1
    ys = (np.arange(y0, y0 + h) * step + (step - 1) / 2.0)
    xs = (np.arange(x0, x0 + w) * step + (step - 1) / 2.0)
    base_y = np.floor((ys - _CELL / 2) / _CELL).astype(np.int64)
    base_x = np.floor((xs - _CELL / 2) / _CELL).astype(np.int64)
    # Cell parameters on the grid of cells this window can see.
    cy = np.arange(base_y.min(), base_y.max() + 2)[:, None]
    cx = np.arange(base_x.min(), base_x.max() + 2)[None, :]
    gy, gx = np.broadcast_arrays(cy + (1 << 20), cx + (1 << 20))  # shift so negative cells hash cleanly

    def u(salt):
        return _uniform(seed, salt, gy, gx)

    present = (u(1) < 0.8) & (cy >= 0) & (cx >= 0)
    centre_y, centre_x = ((cy + u(2)) * _CELL).astype(np.float32), ((cx + u(3)) * _CELL).astype(np.float32)
    inv_a, inv_b = (1.0 / (6.0 + 9.0 * u(4))).astype(np.float32), (1.0 / (6.0 + 9.0 * u(5))).astype(np.float32)
    theta = np.pi * u(6)  # semi-axes 6-15 px: < 16, so a nucleus stays within its 2×2 cell window
    cos, sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
    bright = np.where(present, 450.0 + 550.0 * u(7), 0.0).astype(np.float32)
    ident = np.where(present, cy * width + cx + 1, 0).astype(np.uint32)

    image = np.zeros((h, w), np.float32)
    labels = np.zeros((h, w), np.uint32)
    Y, X = ys.astype(np.float32)[:, None], xs.astype(np.float32)[None, :]
    for dy in (0, 1):
        rows = (base_y - cy[0, 0] + dy)[:, None]
        for dx in (0, 1):
            cols = (base_x - cx[0, 0] + dx)[None, :]
            ty, tx = Y - centre_y[rows, cols], X - centre_x[rows, cols]
            c, s = cos[rows, cols], sin[rows, cols]
            r = np.sqrt(((ty * c + tx * s) * inv_a[rows, cols]) ** 2 + ((tx * c - ty * s) * inv_b[rows, cols]) ** 2)
            # A soft edge and a slightly dimmer rim, like a blurred nucleus.
            profile = np.clip((1.15 - r) * (1 / 0.3), 0, 1) * (1 - 0.25 * np.minimum(r, 1.15) ** 2)
            np.maximum(image, bright[rows, cols] * profile, out=image)
            ids = ident[rows, cols]
            # Where nuclei overlap the higher label wins, whichever window computes the pixel.
            labels = np.where((r <= 1.0) & (ids > labels), ids, labels)
    total_x = image_shape[1] if image_shape else 20000
    illumination = np.float32(110.0) + np.float32(50.0 / max(total_x, 1)) * X
    py = np.broadcast_to(np.round(Y).astype(np.int64), (h, w))
    px = np.broadcast_to(np.round(X).astype(np.int64), (h, w))
    noise = ((_uniform(seed, 11, py, px) + _uniform(seed, 12, py, px) - 1.0) * 70.0).astype(np.float32)
    out = np.clip(image + illumination + noise, 0, 65535).astype(np.uint16)
    return out, labels


def large_nuclei(shape: tuple[int, int] = (20000, 20000), *, chunks: int = 512, seed: int = 0,
                 levels: int | None = None):
    """A large nuclei image and its labels as lazy Dask pyramids, generated chunk by chunk on demand.

    Nothing is computed until a chunk is asked for; each chunk costs a few tens of milliseconds,
    whatever the image size, and any chunk of any level can be computed alone.

    Args:
        shape: ``(Y, X)`` of level 0.
        chunks: chunk size (pixels, square).
        seed: random seed; the same seed gives the same image.
        levels: pyramid levels (default: halve until the image fits in 1024 pixels).

    Returns:
        ``(image_levels, labels_levels)``: lists of Dask arrays (uint16 and uint32), level 0 first.
    """
    import dask.array as da

    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"`shape` must be two positive sizes, got {shape!r}.")
    if not isinstance(chunks, (int, np.integer)) or chunks < 16:
        raise ValueError(f"`chunks` must be an integer of at least 16, got {chunks!r}.")
    if levels is None:
        levels = 1
        while max(shape) // 2 ** (levels - 1) > 1024 and min(shape) // 2 ** levels >= 1:
            levels += 1
    image_levels, label_levels = [], []
    for k in range(levels):
        step = 2 ** k
        level_shape = (max(1, shape[0] // step), max(1, shape[1] // step))
        level_chunks = tuple(tuple(min(chunks, n - i) for i in range(0, n, chunks)) for n in level_shape)

        def render(block_info=None, which=0, step=step):
            loc = block_info[None]["array-location"]
            (y0, y1), (x0, x1) = loc
            return large_nuclei_block(y0, x0, (y1 - y0, x1 - x0), step=step, seed=seed, image_shape=shape)[which]

        image_levels.append(da.map_blocks(render, chunks=level_chunks, dtype=np.uint16, which=0,
                                          meta=np.empty((0, 0), np.uint16),
                                          name=f"large-nuclei-image-{seed}-{shape}-{k}"))
        label_levels.append(da.map_blocks(render, chunks=level_chunks, dtype=np.uint32, which=1,
                                          meta=np.empty((0, 0), np.uint32),
                                          name=f"large-nuclei-labels-{seed}-{shape}-{k}"))
    return image_levels, label_levels
