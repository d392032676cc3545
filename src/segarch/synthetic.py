"""Procedural fluorescence images with ground truth, with the variety real data has (no downloads).

:func:`nuclei` draws, per image, its own imaging conditions (object size, density, shape
irregularity, how many objects touch, brightness and texture of each object, background level,
gradient and haze, blur, photon and read noise), so a model trained on many such images meets a
wide range of conditions. 2D and 3D alike; everything follows from the seed.

Used to train and test the models that ship with segarch (:mod:`segarch.pretrained`) and by the
training tests. :func:`segarch.samples.nuclei` remains the simpler, fixed-condition demo image.

Examples::

    >>> image, labels = nuclei((128, 128), seed=1)          # float32 image, uint16 instance labels
    >>> images, labels = dataset(8, (32, 64, 64), seed=0)   # 8 volumes with their labels
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Conditions", "nuclei", "dataset", "random_conditions", "smooth_noise", "blur", "random_rotation"]


@dataclass(frozen=True)
class Conditions:
    """Imaging conditions of one generated image (drawn by :func:`random_conditions`).

    Attributes:
        radius: range of object semi-axes, in pixels.
        coverage: fraction of the image the objects aim to cover.
        irregularity: amplitude of the boundary perturbation (0: perfect ellipses).
        touching: fraction of objects placed against an existing one.
        brightness: range of per-object mean intensity (relative to 1).
        texture: amplitude of the multiplicative texture inside objects.
        background: constant background level.
        gradient: amplitude of a linear illumination gradient.
        haze: amplitude of smooth out-of-focus background structure.
        blur: Gaussian blur sigma in pixels (the optics).
        photons: expected photons at intensity 1 (Poisson noise: fewer photons, noisier).
        read_noise: standard deviation of additive Gaussian noise (relative to 1).
        gain: overall scale of the stored values (cameras differ).
    """

    radius: tuple[float, float] = (5.0, 12.0)
    coverage: float = 0.3
    irregularity: float = 0.1
    touching: float = 0.3
    brightness: tuple[float, float] = (0.4, 1.0)
    texture: float = 0.15
    background: float = 0.1
    gradient: float = 0.1
    haze: float = 0.1
    blur: float = 1.0
    photons: float = 200.0
    read_noise: float = 0.02
    gain: float = 1000.0


def random_conditions(rng: np.random.Generator, spatial_dims: int = 2) -> Conditions:
    """Draw imaging conditions spanning sparse to crowded, bright to dim, sharp to blurred."""
    low = rng.uniform(3.0, 7.0) if spatial_dims == 2 else rng.uniform(3.0, 5.0)
    high = low * rng.uniform(1.3, 2.2)
    bright_low = rng.uniform(0.2, 0.7)
    return Conditions(
        radius=(low, high),
        coverage=rng.uniform(0.1, 0.45) if spatial_dims == 2 else rng.uniform(0.08, 0.3),
        irregularity=rng.uniform(0.0, 0.25),
        touching=rng.uniform(0.0, 0.6),
        brightness=(bright_low, min(1.0, bright_low + rng.uniform(0.1, 0.6))),
        texture=rng.uniform(0.0, 0.35),
        background=rng.uniform(0.0, 0.3),
        gradient=rng.uniform(0.0, 0.3),
        haze=rng.uniform(0.0, 0.25),
        blur=rng.uniform(0.5, 2.0),
        photons=float(np.exp(rng.uniform(np.log(15.0), np.log(1000.0)))),
        read_noise=rng.uniform(0.0, 0.06),
        gain=float(np.exp(rng.uniform(np.log(50.0), np.log(20000.0)))),
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Zero-mean, unit-std random field with features of about ``scale`` pixels (Fourier filtering)."""
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij", sparse=True)
    kernel = np.exp(-2 * (np.pi * scale) ** 2 * sum(f ** 2 for f in freqs))
    field = np.real(np.fft.ifftn(np.fft.fftn(rng.standard_normal(shape)) * kernel))
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in image.shape], indexing="ij", sparse=True)
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * sum(f ** 2 for f in freqs))
    return np.real(np.fft.ifftn(np.fft.fftn(image) * kernel))


def _rotation(rng: np.random.Generator, spatial_dims: int) -> np.ndarray:
    if spatial_dims == 2:
        a = rng.uniform(0, np.pi)
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))  # a uniformly random orthogonal matrix
    return q * np.sign(np.diag(r))


def nuclei(shape: tuple[int, ...] = (256, 256), *, seed: int = 0, conditions: Conditions | None = None,
           max_objects: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescent-nuclei-like image and its instance labels, 2D or 3D, with random imaging conditions.

    Args:
        shape: ``(Y, X)`` or ``(Z, Y, X)``.
        seed: random seed; the same seed (and conditions) gives the same image.
        conditions: fixed imaging conditions; by default drawn from the seed by :func:`random_conditions`.
        max_objects: upper bound on the number of objects placed.

    Returns:
        ``(image, labels)``: float32 image (blurred, with background, Poisson and read noise, scaled by
        a camera gain) and uint16 instance labels (0 is background; objects touch but never hide
        one another).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 4:
        raise ValueError(f"`shape` must be 2 or 3 sizes of at least 4, got {shape!r}.")
    dims = len(shape)
    rng = np.random.default_rng(seed)
    c = conditions or random_conditions(rng, dims)
    mean_r = float(np.mean(c.radius))
    unit = np.pi * mean_r ** 2 if dims == 2 else 4 / 3 * np.pi * mean_r ** 3
    target = min(max_objects, max(1, int(round(c.coverage * np.prod(shape) / unit))))
    boundary = _smooth_noise(rng, shape, scale=max(1.0, mean_r / 2))  # shared field bending every outline
    texture = _smooth_noise(rng, shape, scale=1.0)

    labels = np.zeros(shape, np.uint16)
    signal = np.zeros(shape, np.float32)
    centres: list[tuple[np.ndarray, float]] = []
    placed, attempts = 0, 0
    while placed < target and attempts < 4 * target + 20:
        attempts += 1
        axes = rng.uniform(*c.radius, size=dims)
        if dims == 3:
            axes[0] *= rng.uniform(0.6, 1.0)  # nuclei often flatter along Z
        if centres and rng.random() < c.touching:
            # Against an existing object: touching neighbours are the hard case for segmentation.
            other, other_r = centres[rng.integers(len(centres))]
            direction = rng.standard_normal(dims)
            direction /= np.linalg.norm(direction) + 1e-9
            centre = other + direction * (other_r + axes.mean()) * rng.uniform(0.8, 1.0)
        else:
            centre = np.array([rng.uniform(0, n) for n in shape])
        reach = axes.max() * (1 + c.irregularity) + 1
        lo = [max(0, int(np.floor(p - reach))) for p in centre]
        hi = [min(n, int(np.ceil(p + reach)) + 1) for p, n in zip(centre, shape)]
        if any(h <= l for l, h in zip(lo, hi)):
            continue
        box = tuple(slice(l, h) for l, h in zip(lo, hi))
        grid = np.stack(np.meshgrid(*[np.arange(l, h, dtype=np.float32) - p for l, h, p in zip(lo, hi, centre)],
                                    indexing="ij"), axis=-1)
        local = grid @ _rotation(rng, dims).T / axes
        distance = np.sqrt((local ** 2).sum(-1))
        inside = distance <= 1.0 + c.irregularity * boundary[box]
        area = int(inside.sum())
        if area < 3:
            continue
        overlap = int((labels[box][inside] > 0).sum())
        if overlap > 0.1 * area:  # touching is fine, hiding another object is not
            continue
        inside &= labels[box] == 0
        placed += 1
        labels[box][inside] = placed
        level = rng.uniform(*c.brightness)
        # Brighter rim-to-centre falloff and texture, as chromatin gives.
        profile = level * (1 - 0.3 * np.clip(distance, 0, 1) ** 2) * (1 + c.texture * texture[box])
        signal[box][inside] = np.clip(profile[inside], 0.02, None)
        centres.append((centre, float(axes.mean())))

    coords = np.meshgrid(*[np.linspace(-0.5, 0.5, n) for n in shape], indexing="ij", sparse=True)
    direction = rng.standard_normal(dims)
    illumination = 1 + c.gradient * sum(d * g for d, g in zip(direction / np.linalg.norm(direction), coords))
    haze = c.haze * np.clip(_smooth_noise(rng, shape, scale=max(shape) / 8) + 1, 0, None) / 2
    optical = _blur(signal + haze, c.blur) * illumination + c.background
    counts = rng.poisson(np.clip(optical, 0, None) * c.photons) / c.photons
    image = (counts + rng.normal(0, c.read_noise, size=shape)) * c.gain
    return image.astype(np.float32), labels


def dataset(n: int, shape: tuple[int, ...], *, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` images with labels from :func:`nuclei`, image ``i`` from seed ``seed * 100003 + i``."""
    images, labels = [], []
    for i in range(int(n)):
        image, label = nuclei(shape, seed=seed * 100003 + i)
        images.append(image)
        labels.append(label)
    return images, labels


# Public names of the helpers other generators share (segarch.prompts.synthetic draws its scenes with them).
smooth_noise = _smooth_noise
blur = _blur
random_rotation = _rotation
