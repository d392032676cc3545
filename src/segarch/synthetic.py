"""Procedural fluorescence images with ground truth, with the variety real data has (no downloads).

:func:`nuclei` draws, per image, its own imaging conditions (object size, density, shape
irregularity, how many objects touch, brightness and texture of each object, background level,
gradient and haze, blur, photon and read noise), so a model trained on many such images meets a
wide range of conditions. 2D and 3D alike; everything follows from the seed.

``hard=True`` draws the conditions instance segmentation meets in real data: crowded, many touching
and overlapping nuclei of widely varied size, shape and brightness, debris that is not a nucleus,
uneven illumination (a gradient and patchy shading), stronger blur and noise, and in 3D anisotropic
voxels (Z spacing 1-3× the XY pixel, a PSF longer along Z). :func:`nuclei_sample` returns the voxel
size with the image; the default (``hard=False``) images are unchanged for a given seed.

Used to train and test the models that ship with segarch (:mod:`segarch.pretrained`) and by the
training tests. :func:`segarch.samples.nuclei` remains the simpler, fixed-condition demo image.

Examples::

    >>> image, labels = nuclei((128, 128), seed=1)          # float32 image, uint16 instance labels
    >>> images, labels = dataset(8, (32, 64, 64), seed=0)   # 8 volumes with their labels
    >>> sample = nuclei_sample((24, 96, 96), seed=3, hard=True)
    >>> sample.spacing                                      # (Z, Y, X) voxel size, XY pixel = 1
    (2.31..., 1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Conditions", "Sample", "nuclei", "nuclei_sample", "dataset", "samples", "random_conditions",
           "smooth_noise", "blur", "random_rotation"]


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
        overlap: the share of a new object's area that may lie on objects already placed (beyond the
            0.1 that touching allows); its fluorescence adds there and the label stays the first object's.
        debris: density of unlabelled debris (bright specks and faint irregular blobs); 1 is about one
            speck per 400 pixels (XY) of image.
        shading: amplitude of a smooth multiplicative illumination field (uneven, patchy lighting).
        z_spacing: 3D only: the voxel's Z size in XY pixels (anisotropic voxels; objects are round in
            physical space, so they span fewer, thicker slices).
        axial_blur: 3D only: the PSF's Z sigma over its XY sigma, in physical units (microscopes blur
            more along Z).
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
    overlap: float = 0.0
    debris: float = 0.0
    shading: float = 0.0
    z_spacing: float = 1.0
    axial_blur: float = 1.0

    @property
    def spacing(self) -> tuple[float, ...]:
        """The 3D voxel size ``(Z, Y, X)`` in XY pixels (use ``spacing[-dims:]`` for 2D)."""
        return (float(self.z_spacing), 1.0, 1.0)


@dataclass(frozen=True)
class Sample:
    """One generated image with its truth.

    Attributes:
        image: float32 image, ``(Y, X)`` or ``(Z, Y, X)``.
        labels: uint16 instance labels of the same shape (0 background, 1..N the nuclei).
        spacing: the pixel/voxel size per axis in XY pixels, e.g. ``(2.0, 1.0, 1.0)``: Z slices twice
            as far apart as XY pixels. Pass it on as a model's ``pixel_size`` or a decoder's ``spacing``.
        conditions: the imaging conditions it was drawn with.
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...]
    conditions: Conditions


def random_conditions(rng: np.random.Generator, spatial_dims: int = 2, *, hard: bool = False) -> Conditions:
    """Draw imaging conditions spanning sparse to crowded, bright to dim, sharp to blurred.

    ``hard=True`` draws from the harder range instance segmentation must handle: crowded, touching
    and overlapping nuclei of more varied size, debris, patchy illumination, and in 3D anisotropic
    voxels (Z spacing 1-3) with a longer axial PSF.
    """
    if hard:
        return _hard_conditions(rng, spatial_dims)
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


def _hard_conditions(rng: np.random.Generator, spatial_dims: int) -> Conditions:
    low = rng.uniform(3.0, 8.0) if spatial_dims == 2 else rng.uniform(3.0, 5.5)
    bright_low = rng.uniform(0.15, 0.6)
    return Conditions(
        radius=(low, low * rng.uniform(1.3, 2.5)),
        coverage=rng.uniform(0.3, 0.55) if spatial_dims == 2 else rng.uniform(0.2, 0.4),
        irregularity=rng.uniform(0.0, 0.35),
        touching=rng.uniform(0.4, 0.9),
        brightness=(bright_low, min(1.0, bright_low + rng.uniform(0.2, 0.7))),
        texture=rng.uniform(0.0, 0.4),
        background=rng.uniform(0.0, 0.3),
        gradient=rng.uniform(0.0, 0.4),
        haze=rng.uniform(0.0, 0.35),
        blur=rng.uniform(0.5, 2.5) if spatial_dims == 2 else rng.uniform(0.5, 1.5),
        photons=float(np.exp(rng.uniform(np.log(10.0), np.log(1000.0)))),
        read_noise=rng.uniform(0.0, 0.08),
        gain=float(np.exp(rng.uniform(np.log(50.0), np.log(20000.0)))),
        overlap=rng.uniform(0.0, 0.3),
        debris=rng.uniform(0.0, 1.0),
        shading=rng.uniform(0.0, 0.5),
        z_spacing=rng.uniform(1.0, 3.0) if spatial_dims == 3 else 1.0,
        axial_blur=rng.uniform(1.5, 3.0) if spatial_dims == 3 else 1.0,
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], scale) -> np.ndarray:
    """Zero-mean, unit-std random field with features of about ``scale`` pixels (one, or one per axis)."""
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij", sparse=True)
    kernel = _gaussian_kernel(freqs, scale)
    field = np.real(np.fft.ifftn(np.fft.fftn(rng.standard_normal(shape)) * kernel))
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


def _gaussian_kernel(freqs: list[np.ndarray], sigma) -> np.ndarray:
    """Fourier transfer function of a Gaussian of ``sigma`` pixels (one for all axes, or one per axis)."""
    if np.ndim(sigma) == 0:  # the original expression, so seeded images stay bit-identical
        return np.exp(-2 * (np.pi * sigma) ** 2 * sum(f ** 2 for f in freqs))
    return np.exp(-2 * np.pi ** 2 * sum((float(s) * f) ** 2 for s, f in zip(sigma, freqs)))


def _blur(image: np.ndarray, sigma) -> np.ndarray:
    """Gaussian blur with ``sigma`` pixels (one, or one per axis), periodic (Fourier)."""
    if not (np.asarray(sigma, float) > 0).any():
        return image
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in image.shape], indexing="ij", sparse=True)
    kernel = _gaussian_kernel(freqs, sigma)
    return np.real(np.fft.ifftn(np.fft.fftn(image) * kernel))


def _rotation(rng: np.random.Generator, spatial_dims: int) -> np.ndarray:
    if spatial_dims == 2:
        a = rng.uniform(0, np.pi)
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))  # a uniformly random orthogonal matrix
    return q * np.sign(np.diag(r))


def nuclei(shape: tuple[int, ...] = (256, 256), *, seed: int = 0, conditions: Conditions | None = None,
           max_objects: int = 2000, hard: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescent-nuclei-like image and its instance labels, 2D or 3D, with random imaging conditions.

    Args:
        shape: ``(Y, X)`` or ``(Z, Y, X)``, in pixels/voxels.
        seed: random seed; the same seed (and conditions) gives the same image.
        conditions: fixed imaging conditions; by default drawn from the seed by :func:`random_conditions`.
        max_objects: upper bound on the number of objects placed.
        hard: draw the conditions from the harder range (see :func:`random_conditions`); the voxel size
            of a 3D image then varies: use :func:`nuclei_sample` to get it.

    Returns:
        ``(image, labels)``: float32 image (blurred, with background, Poisson and read noise, scaled by
        a camera gain) and uint16 instance labels (0 is background; objects touch, and with
        ``conditions.overlap`` overlap, but never hide one another).
    """
    sample = nuclei_sample(shape, seed=seed, conditions=conditions, max_objects=max_objects, hard=hard)
    return sample.image, sample.labels


def nuclei_sample(shape: tuple[int, ...] = (256, 256), *, seed: int = 0, conditions: Conditions | None = None,
                  max_objects: int = 2000, hard: bool = False) -> Sample:
    """Like :func:`nuclei`, returning a :class:`Sample`: image, labels, voxel size and conditions."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 4:
        raise ValueError(f"`shape` must be 2 or 3 sizes of at least 4, got {shape!r}.")
    dims = len(shape)
    rng = np.random.default_rng(seed)
    c = conditions or random_conditions(rng, dims, hard=hard)
    if c.z_spacing <= 0 or c.axial_blur <= 0:
        raise ValueError(f"`conditions.z_spacing` and `conditions.axial_blur` must be positive, got "
                         f"{c.z_spacing!r} and {c.axial_blur!r}.")
    spacing = c.spacing[-dims:]
    isotropic = all(v == 1.0 for v in spacing)
    # Everything geometric is in physical units (XY pixels); per-axis voxel scales only when anisotropic,
    # so isotropic images keep the exact expressions (and pixels) they always had.
    per_axis = (lambda size: size) if isotropic else (lambda size: tuple(size / v for v in spacing))
    extent = float(np.prod(shape)) * float(np.prod(spacing))
    mean_r = float(np.mean(c.radius))
    unit = np.pi * mean_r ** 2 if dims == 2 else 4 / 3 * np.pi * mean_r ** 3
    target = min(max_objects, max(1, int(round(c.coverage * extent / unit))))
    boundary = _smooth_noise(rng, shape, scale=per_axis(max(1.0, mean_r / 2)))  # shared field bending outlines
    texture = _smooth_noise(rng, shape, scale=per_axis(1.0))

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
            centre = np.array([rng.uniform(0, n) * v for n, v in zip(shape, spacing)])
        reach = axes.max() * (1 + c.irregularity) + 1
        lo = [max(0, int(np.floor((p - reach) / v))) for p, v in zip(centre, spacing)]
        hi = [min(n, int(np.ceil((p + reach) / v)) + 1) for p, n, v in zip(centre, shape, spacing)]
        if any(b <= a for a, b in zip(lo, hi)):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grid = np.stack(np.meshgrid(*[np.arange(a, b, dtype=np.float32) * v - p
                                      for a, b, p, v in zip(lo, hi, centre, spacing)], indexing="ij"), axis=-1)
        local = grid @ _rotation(rng, dims).T / axes
        distance = np.sqrt((local ** 2).sum(-1))
        inside = distance <= 1.0 + c.irregularity * boundary[box]
        area = int(inside.sum())
        if area < 3:
            continue
        overlap = int((labels[box][inside] > 0).sum())
        if overlap > (0.1 + c.overlap) * area:  # touching (and overlapping, if asked) is fine, hiding is not
            continue
        shared = inside & (labels[box] > 0)
        inside &= labels[box] == 0
        placed += 1
        labels[box][inside] = placed
        level = rng.uniform(*c.brightness)
        # Brighter rim-to-centre falloff and texture, as chromatin gives.
        profile = level * (1 - 0.3 * np.clip(distance, 0, 1) ** 2) * (1 + c.texture * texture[box])
        signal[box][inside] = np.clip(profile[inside], 0.02, None)
        if c.overlap > 0 and shared.any():  # fluorescence adds where nuclei overlap; the label stays the first's
            signal[box][shared] += np.clip(profile[shared], 0.02, None)
        centres.append((centre, float(axes.mean())))

    # Debris and shading draw from their own stream, so adding them leaves everything above unchanged.
    extra = np.random.default_rng([abs(int(seed)), 1])
    if c.debris > 0:
        signal += _debris(extra, shape, spacing, c, mean_r)
    coords = np.meshgrid(*[np.linspace(-0.5, 0.5, n) for n in shape], indexing="ij", sparse=True)
    direction = rng.standard_normal(dims)
    illumination = 1 + c.gradient * sum(d * g for d, g in zip(direction / np.linalg.norm(direction), coords))
    if c.shading > 0:  # patchy, multiplicative: vignetting and uneven field of view
        patches = _smooth_noise(extra, shape, scale=per_axis(max(shape[-2:]) / 5))
        illumination = illumination * np.clip(1 + c.shading * patches, 0.2, None)
    haze_scale = max(shape) / 8 if isotropic else tuple(max(n * v for n, v in zip(shape, spacing)) / 8 / v
                                                         for v in spacing)
    haze = c.haze * np.clip(_smooth_noise(rng, shape, scale=haze_scale) + 1, 0, None) / 2
    psf = c.blur if isotropic and c.axial_blur == 1.0 else tuple(
        c.blur * (c.axial_blur if dims == 3 and i == 0 else 1.0) / v for i, v in enumerate(spacing))
    optical = _blur(signal + haze, psf) * illumination + c.background
    counts = rng.poisson(np.clip(optical, 0, None) * c.photons) / c.photons
    image = (counts + rng.normal(0, c.read_noise, size=shape)) * c.gain
    return Sample(image.astype(np.float32), labels, tuple(float(v) for v in spacing), c)


def _debris(rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, ...], c: Conditions,
            mean_r: float) -> np.ndarray:
    """Unlabelled structure a segmenter must ignore: bright specks and faint irregular blobs."""
    dims = len(shape)
    extent = float(np.prod(shape)) * float(np.prod(spacing))
    specks = np.zeros(shape, np.float32)
    count = int(rng.poisson(c.debris * extent / (400.0 if dims == 2 else 4000.0)))
    if count:
        where = tuple(rng.integers(0, n, size=count) for n in shape)
        np.add.at(specks, where, rng.uniform(0.3, 1.5, size=count) * c.brightness[1])
        sigma = rng.uniform(0.6, 1.5)
        sigmas = [sigma / v for v in spacing]
        # Scaled so a speck's peak keeps its drawn brightness after the spread.
        specks = _blur(specks, tuple(sigmas)) * float((2 * np.pi) ** (dims / 2) * np.prod(sigmas))
    field = _smooth_noise(rng, shape, scale=tuple(mean_r / v for v in spacing))
    blobs = np.clip(field - 2.0, 0, None) * (c.debris * rng.uniform(0.2, 0.5) * c.brightness[0])
    return (specks + blobs).astype(np.float32)


def dataset(n: int, shape: tuple[int, ...], *, seed: int = 0,
            hard: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` images with labels from :func:`nuclei`, image ``i`` from seed ``seed * 100003 + i``."""
    drawn = samples(n, shape, seed=seed, hard=hard)
    return [s.image for s in drawn], [s.labels for s in drawn]


def samples(n: int, shape: tuple[int, ...], *, seed: int = 0, hard: bool = False) -> list[Sample]:
    """``n`` :class:`Sample` s (image, labels, voxel size), image ``i`` from seed ``seed * 100003 + i``."""
    return [nuclei_sample(shape, seed=seed * 100003 + i, hard=hard) for i in range(int(n))]


# Public names of the helpers other generators share (segarch.prompts.synthetic draws its scenes with them).
smooth_noise = _smooth_noise
blur = _blur
random_rotation = _rotation
