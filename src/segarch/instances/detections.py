"""Detectors' objects (Mask R-CNN and its family) to and from instance labels.

:func:`detection_targets` turns instance labels into what a detector trains on (a box, a class and a mask per
object); :func:`labels_from_detections` paints a detector's masks into one label image (highest score first, each
pixel to the first object that claims it), the form every other instance model of segarch produces.

Examples::

    >>> labels = np.zeros((32, 32), int); labels[2:8, 3:9] = 1; labels[20:30, 18:26] = 2
    >>> target = detection_targets(labels)
    >>> target["boxes"].tolist()
    [[2.0, 3.0, 8.0, 9.0], [20.0, 18.0, 30.0, 26.0]]
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from scipy import ndimage

from segarch.instances.panoptic import check_instance_labels

__all__ = ["detection_targets", "labels_from_detections", "DetectionsAsClasses", "as_instance_model"]


def detection_targets(labels, classes=None) -> dict[str, torch.Tensor]:
    """A detector's training target for one image of instance ``labels`` (2D or 3D, 0 = background).

    ``classes``: per pixel class ids (the majority inside each object is its class), or ``None``: every object
    class 1. Returns ``{"boxes": (n, 2d) float32 (starts, stops in pixel-corner coordinates), "labels": (n,)
    int64, "masks": (n, *S) uint8}``, objects in the order of their ids.
    """
    labels = check_instance_labels(labels)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    boxes, masks, kinds = [], [], []
    slices = ndimage.find_objects(labels)
    for i in ids:
        box = slices[i - 1]
        boxes.append([s.start for s in box] + [s.stop for s in box])
        mask = labels == i
        masks.append(mask)
        kinds.append(1 if classes is None else int(np.bincount(np.asarray(classes)[mask]).argmax()))
    d = labels.ndim
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 2 * d),
            "labels": torch.tensor(kinds, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks).astype(np.uint8) if masks
                                      else np.zeros((0, *labels.shape), np.uint8))}


def labels_from_detections(detections: Mapping[str, torch.Tensor], score_threshold: float = 0.5,
                           mask_threshold: float = 0.5, overlap_threshold: float = 0.5,
                           min_size: int = 1) -> np.ndarray:
    """One image's detections (``boxes``, ``scores``, ``masks`` as a detector returns them) as instance labels.

    Detections scoring below ``score_threshold`` are dropped; each remaining mask (probability ≥
    ``mask_threshold``) claims its pixels not claimed by a higher-scoring one, unless more than
    ``overlap_threshold`` of its mask is claimed already (a duplicate of a part of an object: Panoptic FPN's
    fusion rule, Kirillov et al. 2019, arXiv:1901.02446); an object left with fewer than ``min_size`` pixels is
    dropped. Returns int32 labels 1…n (by descending score), 0 background.
    """
    for name, value in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold),
                        ("overlap_threshold", overlap_threshold)):
        if not 0 <= value <= 1:
            raise ValueError(f"`{name}` must be in [0, 1], got {value!r}.")
    missing = [k for k in ("scores", "masks") if k not in detections]
    if missing:
        raise ValueError(f"`detections` needs 'scores' and 'masks' (a detector's output for one image); missing "
                         f"{missing}.")
    # float() first: under autocast (segarch.predict's default on CUDA) they may be bfloat16, which NumPy lacks
    scores = torch.as_tensor(detections["scores"]).detach().float().cpu().numpy()
    masks = torch.as_tensor(detections["masks"]).detach().float().cpu().numpy()
    labels = np.zeros(masks.shape[1:], np.int32)
    next_id = 1
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] < score_threshold:
            break
        mask = masks[i] >= mask_threshold
        claim = mask & (labels == 0)
        if claim.sum() >= min_size and claim.sum() >= (1 - overlap_threshold) * mask.sum():
            labels[claim] = next_id
            next_id += 1
    return labels


class DetectionsAsClasses(torch.nn.Module):
    """A detector seen as a dense network, so that the tiled engine and its seam stitching run it.

    Per tile, the detector's detections become a label image (:func:`labels_from_detections`), then the
    'boundary' decoder's classes (background, interior, boundary: :func:`segarch.instances.targets.boundary_classes`),
    returned as log-probabilities ``(B, 3, *S)``. ``segarch.predict(DetectionsAsClasses(net), image,
    output="instances", decoder="boundary")`` then blends the tiles and merges objects across seams like any
    instance model's output.

    Args:
        detector: a zoo detector (``mask_rcnn``), trained.
        score_threshold, mask_threshold, overlap_threshold: as for :func:`labels_from_detections`.
    """

    #: The 'boundary' decoder's classes, so that ``output="instances"`` finds its decoder without ``decoder=``.
    class_names = ("background", "interior", "boundary")

    def __init__(self, detector: torch.nn.Module, score_threshold: float = 0.5, mask_threshold: float = 0.5,
                 overlap_threshold: float = 0.5) -> None:
        super().__init__()
        if not getattr(detector, "is_detector", False):
            raise ValueError(f"`detector` must be a zoo detector (e.g. zoo.create('mask_rcnn', ...)), got "
                             f"{type(detector).__name__}.")
        self.detector = detector
        self.spatial_dims, self.size_divisor = detector.spatial_dims, detector.size_divisor
        self.thresholds = {"score_threshold": score_threshold, "mask_threshold": mask_threshold,
                           "overlap_threshold": overlap_threshold}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from segarch.instances.targets import boundary_classes

        self.detector.eval()
        # Detection runs in float32 even under the engine's autocast (on by default on CUDA): box regression, NMS
        # and the score and overlap thresholds are not meant for bfloat16's 8-bit mantissa.
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            found = self.detector(x.float())
        out = []
        for detections in found:
            classes = boundary_classes(labels_from_detections(detections, **self.thresholds))
            one_hot = np.moveaxis(np.eye(3, dtype=np.float32)[classes], -1, 0)
            out.append(np.log(one_hot * (1 - 3e-3) + 1e-3))
        return torch.from_numpy(np.stack(out)).to(x)


def as_instance_model(model):
    """A :class:`segarch.Model` holding a detector seen as an instance model: its network wrapped in
    :class:`DetectionsAsClasses`, its classes the 'boundary' decoder's; any other model is returned as it is.
    ``segarch.predict(model, image, output="instances")`` calls this, so a trained detector predicts instances
    like every other instance model (tiles, seams, blocks)."""
    import dataclasses

    from segarch.instances.decode import get_decoder

    if getattr(model, "is_detector", False):  # a bare zoo detector: wrapped the same way, without a Model around it
        return DetectionsAsClasses(model)
    network = getattr(model, "network", None)
    if not getattr(network, "is_detector", False):
        return model
    decoder = get_decoder("boundary")
    return dataclasses.replace(model, network=DetectionsAsClasses(network), out_channels=decoder.channels,
                               class_names=list(decoder.class_names), instance=decoder.settings())
