"""Generated scenes of varied objects for training and testing extreme-point models (2D and 3D).

Shapes: smooth blobs, star-convex cells, polygons with sharp corners, elongated (bent) rods; objects
are often placed touching a neighbour. Imaging: per-object brightness (brighter or darker than the
background), object and background textures, an illumination gradient, blur, Poisson-like and Gaussian
noise. Every scene comes from a seed.
"""

from __future__ import annotations

import numpy as np

from segarch.synthetic import blur, random_rotation, smooth_noise

__all__ = ["object_scene", "anisotropic_scene", "SHAPES"]

SHAPES = ("blob", "star", "polygon", "rod")


def _star_radius(rng: np.random.Generator, angle: np.ndarray, rough: float) -> np.ndarray:
    # A few random harmonics: cell-like outlines, star-convex around the centre.
    r = np.ones_like(angle)
    for k in range(2, 7):
        r += rough * rng.normal(0, 1.0 / k) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    return np.clip(r, 0.35, None)


def _polygon_radius(rng: np.random.Generator, angle: np.ndarray) -> np.ndarray:
    # A star-shaped polygon: vertices at sorted random angles; the ray at ``angle`` meets the edge between
    # its two neighbouring vertices at r = r1 r2 sin(t2 - t1) / (r1 sin(a - t1) + r2 sin(t2 - a)).
    n = int(rng.integers(3, 9))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    while np.diff(np.r_[t, t[0] + 2 * np.pi]).max() > 0.9 * np.pi:  # keep the centre inside
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.6, 1.0, n)
    a = np.mod(angle - t[0], 2 * np.pi)
    tt = np.r_[t - t[0], 2 * np.pi]
    rr = np.r_[r, r[0]]
    i = np.clip(np.searchsorted(tt, a, side="right") - 1, 0, n - 1)
    t1, t2, r1, r2 = tt[i], tt[i + 1], rr[i], rr[i + 1]
    return r1 * r2 * np.sin(t2 - t1) / (r1 * np.sin(a - t1) + r2 * np.sin(t2 - a) + 1e-9)


def _shape(rng: np.random.Generator, kind: str, dims: int, size: float) -> np.ndarray:
    """A boolean object of about ``size`` pixels across, in its own tight box."""
    half = int(np.ceil(size * 0.75)) + 2
    grid = np.stack(np.meshgrid(*[np.arange(-half, half + 1, dtype=np.float32)] * dims, indexing="ij"), -1)
    local = grid @ random_rotation(rng, dims).T
    radius = size / 2
    if kind == "rod":
        # A capsule of half-length L and radius w along the first rotated axis, bent by a parabola.
        length, width = radius * rng.uniform(0.6, 0.95), radius * rng.uniform(0.12, 0.3)
        u = local[..., -1]
        v = local[..., :-1].copy()
        v[..., 0] -= rng.uniform(-0.4, 0.4) * (u ** 2) / max(length, 1)
        along = np.clip(u, -length, length)
        inside = (u - along) ** 2 + (v ** 2).sum(-1) <= width ** 2
    else:
        axes = radius * rng.uniform(0.6, 1.0, dims)
        axes[-1] = radius
        scaled = local / axes
        dist = np.sqrt((scaled ** 2).sum(-1))
        if kind == "blob":
            bump = smooth_noise(rng, dist.shape, scale=max(1.0, radius / 3))
            inside = dist <= 1 + 0.12 * bump
        elif dims == 2:
            angle = np.arctan2(scaled[..., 0], scaled[..., 1])
            bound = _star_radius(rng, angle, 0.5) if kind == "star" else _polygon_radius(rng, angle)
            inside = dist <= bound
        else:
            # 3D: a star-convex or faceted outline from the direction's angles.
            az = np.arctan2(scaled[..., 1], scaled[..., 2])
            el = np.arccos(np.clip(scaled[..., 0] / np.maximum(dist, 1e-6), -1, 1))
            if kind == "star":
                bound = _star_radius(rng, az, 0.4) * _star_radius(rng, 2 * el, 0.3)
            else:
                bound = _polygon_radius(rng, az) * np.clip(_polygon_radius(rng, 2 * el), 0.6, None)
            inside = dist <= bound
    if not inside.any():
        inside[(half,) * dims] = True
    box = tuple(slice(int(w.min()), int(w.max()) + 1) for w in np.nonzero(inside))
    return inside[box]


def object_scene(shape=(160, 160), *, seed: int = 0, count: tuple[int, int] = (3, 8),
                 size: tuple[float, float] = (10, 70), touching: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """A generated image with varied objects and their instance labels, 2D or 3D.

    Args:
        shape: ``(Y, X)`` or ``(Z, Y, X)``.
        seed: the scene's random seed.
        count: least and most objects placed.
        size: least and most object sizes (pixels across).
        touching: the share of objects placed against an earlier one.

    Returns:
        ``(image, labels)``: float32 image and uint16 instance labels (0 is background; later objects
        never cover earlier ones, and every object keeps most of its pixels).
    """
    shape = tuple(int(s) for s in shape)
    dims = len(shape)
    if dims not in (2, 3) or min(shape) < 16:
        raise ValueError(f"`shape` must be 2 or 3 sizes of at least 16, got {shape!r}.")
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    signal = np.zeros(shape, np.float32)
    background = rng.uniform(0.1, 0.6)
    texture = smooth_noise(rng, shape, scale=rng.uniform(1, 4))
    n_objects = int(rng.integers(count[0], count[1] + 1))
    boxes: list[tuple[np.ndarray, np.ndarray]] = []
    placed = 0
    for _ in range(6 * n_objects):
        if placed >= n_objects:
            break
        obj = _shape(rng, SHAPES[rng.integers(len(SHAPES))], dims, rng.uniform(*size) * (0.6 if dims == 3 else 1))
        ext = np.asarray(obj.shape)
        if np.any(ext >= np.asarray(shape)):
            continue
        if boxes and rng.random() < touching:
            lo_o, hi_o = boxes[rng.integers(len(boxes))]
            centre = (lo_o + hi_o) / 2 + rng.normal(0, 1, dims) * (hi_o - lo_o + ext) / 3
            start = np.clip(np.round(centre - ext / 2), 0, np.asarray(shape) - ext).astype(int)
        else:
            start = np.array([rng.integers(0, n - e + 1) for n, e in zip(shape, ext)])
        box = tuple(slice(s, s + e) for s, e in zip(start, ext))
        free = obj & (labels[box] == 0)
        if free.sum() < 0.8 * obj.sum() or free.sum() < 6:
            continue
        placed += 1
        labels[box][free] = placed
        # Mostly brighter than the background, sometimes darker; neighbours may look alike.
        contrast = rng.uniform(0.25, 0.9) * (1 if rng.random() < 0.75 else -0.8)
        inner = 1 + rng.uniform(0, 0.4) * texture[box][free]
        signal[box][free] = contrast * inner
        boxes.append((start.astype(float), (start + ext).astype(float)))
    coords = np.meshgrid(*[np.linspace(-0.5, 0.5, n) for n in shape], indexing="ij", sparse=True)
    direction = rng.standard_normal(dims)
    gradient = rng.uniform(0, 0.3) * sum(d * g for d, g in zip(direction / np.linalg.norm(direction), coords))
    clutter = rng.uniform(0, 0.12) * smooth_noise(rng, shape, scale=rng.uniform(2, 10))
    image = blur(background + signal + gradient + clutter, rng.uniform(0, 1.5))
    image = np.clip(image, 0, None)
    photons = rng.uniform(30, 300)
    image = rng.poisson(image * photons) / photons + rng.normal(0, rng.uniform(0.01, 0.06), shape)
    return (image * rng.uniform(50, 2000)).astype(np.float32), labels


def anisotropic_stack(slices: int = 30, spacing: int = 3, shape=(96, 96), *, seed: int = 0,
                      size: tuple[float, float] = (24, 80), count: tuple[int, int] = (3, 7)):
    """A generated stack of ``slices`` thick slices, each ``spacing`` times thicker than a pixel is wide.

    An isotropic scene (:func:`object_scene`) of ``slices × spacing`` planes is imaged with thick optical
    sections: each slice is the mean of ``spacing`` consecutive planes, its labels those of the middle plane.

    Returns:
        ``(image, labels)``: float32 ``(slices, *shape)`` and uint16 instance labels (an object's id is the same
        on every slice it crosses; objects missing from every middle plane are dropped).
    """
    if not isinstance(spacing, (int, np.integer)) or spacing < 1:
        raise ValueError(f"`spacing` must be a positive integer (z spacing in pixels), got {spacing!r}.")
    if not isinstance(slices, (int, np.integer)) or slices < 2:
        raise ValueError(f"`slices` must be an integer of at least 2, got {slices!r}.")
    planes = int(slices) * int(spacing)
    image, labels = object_scene((planes,) + tuple(shape), seed=seed, count=count,
                                 size=(size[0] / 0.6, size[1] / 0.6))  # object_scene takes 0.6 of it in 3D
    image = image.reshape(int(slices), int(spacing), *image.shape[1:]).mean(axis=1)
    labels = labels[int(spacing) // 2::int(spacing)][: int(slices)]
    return image.astype(np.float32), np.ascontiguousarray(labels)
def anisotropic_scene(shape=(16, 64, 64), *, z_spacing: int = 3, seed: int = 0, **options
                      ) -> tuple[np.ndarray, np.ndarray]:
    """A generated volume with thick slices: :func:`object_scene` at ``(Z × z_spacing, Y, X)`` (isotropic), each
    run of ``z_spacing`` planes averaged into one slice (a thick optical section) and labelled by its middle plane.

    Args:
        shape: ``(Z, Y, X)`` of the result; its voxels are ``z_spacing`` times as deep as wide.
        z_spacing: the Z spacing over the Y/X spacing (a whole number, 1 = isotropic).
        seed, options: as in :func:`object_scene`.

    Returns:
        ``(image, labels)`` as :func:`object_scene` (an object that falls between slices may be missing).
    """
    z_spacing = int(z_spacing)
    if z_spacing < 1 or len(shape) != 3:
        raise ValueError(f"`z_spacing` must be a whole number >= 1 and `shape` 3 sizes, got {z_spacing!r}, {shape!r}.")
    depth = int(shape[0])
    image, labels = object_scene((depth * z_spacing,) + tuple(shape[1:]), seed=seed, **options)
    image = image.reshape((depth, z_spacing) + image.shape[1:]).mean(axis=1)
    return image.astype(np.float32), np.ascontiguousarray(labels[z_spacing // 2::z_spacing])
