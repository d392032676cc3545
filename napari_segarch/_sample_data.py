"""Sample data: generated images with their ground truth, reproducible from a seed (no downloads).

Each sample is an image layer followed by its ground-truth labels layer.
"""

from __future__ import annotations

from segarch.samples import SATELLITE_CLASSES, large_nuclei, nuclei, satellite

__all__ = ["nuclei_2d", "nuclei_3d", "satellite_scene", "large_lazy_nuclei", "SATELLITE_COLORS"]

#: Display colours of the satellite classes (background transparent).
SATELLITE_COLORS = {0: "transparent", 1: "#e6c84a", 2: "#9a9a9a", 3: "#d9402b", 4: "#2f6bd6", None: "magenta"}


def nuclei_2d(seed: int = 0):
    """A 512×512 fluorescent-nuclei-like image and its instance labels."""
    image, labels = nuclei((512, 512), seed=seed)
    return [(image, {"name": "nuclei 2D"}, "image"), (labels, {"name": "nuclei 2D ground truth"}, "labels")]


def nuclei_3d(seed: int = 0):
    """A 64×128×128 nuclei stack and its instance labels."""
    image, labels = nuclei((64, 128, 128), seed=seed)
    return [(image, {"name": "nuclei 3D"}, "image"), (labels, {"name": "nuclei 3D ground truth"}, "labels")]


def satellite_scene(seed: int = 0):
    """A 512×512 RGB aerial scene (fields, roads, buildings, water) and its semantic labels.

    The labels layer carries the class names as features, shown on hover.
    """
    image, labels = satellite((512, 512), seed=seed)
    features = {"index": list(range(len(SATELLITE_CLASSES))), "class": list(SATELLITE_CLASSES)}
    return [
        (image, {"name": "satellite scene", "rgb": True}, "image"),
        (labels, {"name": "satellite ground truth", "features": features, "colormap": dict(SATELLITE_COLORS),
                  "opacity": 0.5}, "labels"),
    ]


def large_lazy_nuclei(seed: int = 0, shape: tuple[int, int] = (20000, 20000)):
    """A 20000×20000 nuclei image and its labels as lazy Dask pyramids: chunks are generated when shown."""
    image_levels, label_levels = large_nuclei(shape, seed=seed)
    return [
        # Contrast limits given, so napari computes nothing to guess them.
        (image_levels, {"name": "large lazy nuclei", "multiscale": True, "contrast_limits": (0, 1300)}, "image"),
        (label_levels, {"name": "large lazy nuclei ground truth", "multiscale": True}, "labels"),
    ]
