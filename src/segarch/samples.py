"""Synthetic images with ground truth, generated from a seed (no downloads).

Used by the CLI's demo, the tests and the napari plugin's sample data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nuclei"]


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    # Blur in Fourier space: exact for a periodic image and needs nothing beyond NumPy.
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in image.shape], indexing="ij")
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * sum(f ** 2 for f in freqs))
    return np.real(np.fft.ifftn(np.fft.fftn(image) * kernel))


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
        # Lo-fi random orientation: in 2D rotate, in 3D scale per axis only.
        inside = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes)) <= 1.0
        labels[inside] = label
        signal[inside] = rng.uniform(0.5, 1.0)
    image = _gaussian_blur(signal, sigma=1.5)
    yy = np.linspace(0, 1, shape[-2])[:, None]
    image += 0.1 + 0.1 * yy  # uneven illumination
    image += rng.normal(0, 0.05, size=shape)
    return (image * 1000).astype(np.float32), labels
