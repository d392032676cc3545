"""Sample data: generated images with their ground truth, reproducible from a seed."""

from __future__ import annotations

from segarch.samples import nuclei

__all__ = ["nuclei_2d", "nuclei_3d"]


def nuclei_2d(seed: int = 0):
    """A 512×512 fluorescent-nuclei-like image and its instance labels."""
    image, labels = nuclei((512, 512), seed=seed)
    return [(image, {"name": "nuclei 2D"}, "image"), (labels, {"name": "nuclei 2D ground truth"}, "labels")]


def nuclei_3d(seed: int = 0):
    """A 64×128×128 nuclei stack and its instance labels."""
    image, labels = nuclei((64, 128, 128), seed=seed)
    return [(image, {"name": "nuclei 3D"}, "image"), (labels, {"name": "nuclei 3D ground truth"}, "labels")]
