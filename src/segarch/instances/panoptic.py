"""Panoptic-DeepLab's targets and its grouping: objects from a centre heatmap, offsets and semantic classes.

Panoptic-DeepLab (Cheng et al. 2020, arXiv:1911.10194, Sec. 3.2–3.3) represents each object ("thing") by its
centre of mass: a network predicts a heatmap of centres and, for every pixel, the displacement to its object's
centre. :func:`center_offset_targets` makes both from instance labels (to train on); :class:`PanopticDeepLabDecoder`
turns predictions back into objects:

1. **centre selection**: a keypoint-style non-maximum suppression, a max-pooling of the heatmap (kernel 7) whose
   unchanged positions above a threshold (0.1) are the centres, the ``top_k`` (200) highest kept;
2. **grouping**: every "thing" pixel moves by its offset and joins the closest centre;
3. **fusion**: each object takes the majority semantic class of its pixels; other pixels keep their semantic
   class as "stuff" (instance id 0), regions of a stuff class smaller than ``stuff_area`` become void.

Works in 2D and 3D (Z, Y, X). Examples::

    >>> labels = np.zeros((32, 32), int); labels[4:10, 4:10] = 1; labels[20:28, 18:26] = 2
    >>> center, offset = center_offset_targets(labels, sigma=2)
    >>> semantic = np.stack([labels == 0, labels > 0]).astype(np.float32)
    >>> result = PanopticDeepLabDecoder()({"semantic": semantic, "center": center, "offset": offset})
    >>> int(result.instances.max())
    2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = ["center_offset_targets", "PanopticDeepLabDecoder", "PanopticResult", "find_centers", "fuse_panoptic",
           "check_instance_labels", "head_tensor"]


def check_instance_labels(labels) -> np.ndarray:
    """``labels`` as an array of 2D or 3D integer instance ids (0: background); a ``ValueError`` otherwise."""
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`labels` must be a 2D or 3D array of integer instance ids, got shape {labels.shape} "
                         f"and dtype {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise ValueError(f"`labels` must hold ids >= 0 (0: background), got minimum {labels.min()}.")
    return labels


def center_offset_targets(labels, sigma: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Panoptic-DeepLab's training targets for instance ``labels`` (2D or 3D, 0 = background).

    Args:
        labels: integer instance ids, ``(Y, X)`` or ``(Z, Y, X)``.
        sigma: the standard deviation of each centre's Gaussian, in pixels (the paper: 8).

    Returns:
        ``center`` ``(1, *S)`` float32: a Gaussian of peak 1 at each object's centre of mass (the maximum where
        two overlap), and ``offset`` ``(d, *S)`` float32: for each object pixel, its object's centre minus its
        position, per axis (Z, Y, X order), in pixels; 0 on background.
    """
    labels = check_instance_labels(labels)
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not sigma > 0:
        raise ValueError(f"`sigma` must be a positive number of pixels, got {sigma!r}.")
    ids = np.unique(labels)
    ids = ids[ids > 0]
    center = np.zeros(labels.shape, np.float32)
    offset = np.zeros((labels.ndim, *labels.shape), np.float32)
    if not len(ids):
        return center[None], offset
    centres = np.asarray(ndimage.center_of_mass(np.ones(labels.shape), labels, ids), np.float64).reshape(len(ids), -1)
    lookup = np.zeros((int(labels.max()) + 1, labels.ndim))
    lookup[ids] = centres
    grid = np.indices(labels.shape, dtype=np.float64)
    inside = labels > 0
    for axis in range(labels.ndim):
        offset[axis][inside] = (lookup[labels[inside], axis] - grid[axis][inside]).astype(np.float32)
    radius = int(np.ceil(3 * sigma))
    for c in centres:  # a Gaussian within 3 sigma of each centre: quick for many objects on large images
        lo = [max(0, int(np.floor(v)) - radius) for v in c]
        hi = [min(s, int(np.ceil(v)) + radius + 1) for v, s in zip(c, labels.shape)]
        window = tuple(slice(a, b) for a, b in zip(lo, hi))
        squared = sum((g[window] - v) ** 2 for g, v in zip(grid, c))
        np.maximum(center[window], np.exp(-squared / (2 * sigma ** 2)).astype(np.float32), out=center[window])
    return center[None], offset


def find_centers(center: torch.Tensor, threshold: float = 0.1, nms_kernel: int = 7,
                 top_k: int | None = 200) -> torch.Tensor:
    """Object centres in a heatmap ``center`` ``(*S)`` (2D or 3D): positions that are the maximum of their
    ``nms_kernel``-wide neighbourhood and above ``threshold``, the ``top_k`` highest first; ``(K, d)`` indices."""
    heat, d = center, center.ndim
    if d not in (2, 3):
        raise ValueError(f"`center` must be a 2D or 3D heatmap, got shape {tuple(center.shape)}.")
    pool = (F.max_pool2d if d == 2 else F.max_pool3d)(heat[None, None], nms_kernel, stride=1,
                                                        padding=nms_kernel // 2)[0, 0]
    peaks = (heat == pool) & (heat > threshold)
    coords = peaks.nonzero()
    if top_k is not None and len(coords) > top_k:
        scores = heat[tuple(coords.T)]
        coords = coords[scores.topk(top_k).indices]
    else:
        coords = coords[heat[tuple(coords.T)].argsort(descending=True)]
    return coords


@dataclass
class PanopticResult:
    """What :class:`PanopticDeepLabDecoder` returns for one image.

    Attributes:
        semantic: ``(*S)`` int64 class of each pixel (each object's pixels all carry its majority class;
            ``void`` where a stuff region was too small).
        instances: ``(*S)`` int64 object ids 1..N, 0 on stuff.
        panoptic: ``(*S)`` int64 ``class · label_divisor + instance id`` (the Cityscapes/COCO-panoptic encoding).
        centers: ``(N, d)`` int64 the selected centres, object ``i + 1`` at ``centers[i]``.
        classes: ``(N,)`` int64 the class of each object.
    """

    semantic: np.ndarray
    instances: np.ndarray
    panoptic: np.ndarray
    centers: np.ndarray
    classes: np.ndarray


def head_tensor(value, name: str) -> torch.Tensor:
    """A network head's output ``outputs[name]`` (tensor or NumPy array) as a detached float32 CPU tensor."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"`outputs[{name!r}]` must be a tensor or NumPy array, got {type(value).__name__}.")
    return value.detach().float().cpu()


class PanopticDeepLabDecoder:
    """Panoptic-DeepLab's post-processing (see the module's docstring): network outputs → objects and classes.

    Args:
        thing_classes: semantic classes that are countable objects; ``None``: every class but 0 (background).
        threshold: centres need a heatmap value above this (0.1).
        nms_kernel: the max-pooling window of the centre selection, in pixels (7; odd).
        top_k: at most this many centres, the highest (200; ``None``: all).
        stuff_area: stuff regions with fewer pixels become ``void`` (the paper: 2048 on Cityscapes; 0 here: keep
            all).
        void: the class of removed stuff.
        label_divisor: ``panoptic = class · label_divisor + instance id``.

    Call it with the outputs of a Panoptic-DeepLab network for one image: a mapping with ``"semantic"``
    ``(K, *S)`` logits or probabilities, ``"center"`` ``(1, *S)`` and ``"offset"`` ``(d, *S)`` (tensors or
    arrays; a leading batch axis of 1 is accepted), and get a :class:`PanopticResult`.
    """

    def __init__(self, thing_classes: Sequence[int] | None = None, threshold: float = 0.1, nms_kernel: int = 7,
                 top_k: int | None = 200, stuff_area: int = 0, void: int = -1, label_divisor: int = 1000) -> None:
        if not isinstance(nms_kernel, int) or isinstance(nms_kernel, bool) or nms_kernel < 1 or nms_kernel % 2 == 0:
            raise ValueError(f"`nms_kernel` must be an odd positive integer, got {nms_kernel!r}.")
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise ValueError(f"`top_k` must be a positive integer or None, got {top_k!r}.")
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
            raise ValueError(f"`threshold` must be a number, got {threshold!r}.")
        for name, value in (("stuff_area", stuff_area), ("label_divisor", label_divisor)):
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "stuff_area" else 1):
                raise ValueError(f"`{name}` must be an integer >= {0 if name == 'stuff_area' else 1}, got {value!r}.")
        self.thing_classes = None if thing_classes is None else tuple(int(c) for c in thing_classes)
        self.threshold, self.nms_kernel, self.top_k = float(threshold), nms_kernel, top_k
        self.stuff_area, self.void, self.label_divisor = stuff_area, int(void), label_divisor

    def _inputs(self, outputs: Mapping) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        missing = [k for k in ("semantic", "center", "offset") if k not in outputs]
        if missing:
            raise ValueError(f"`outputs` needs the heads 'semantic', 'center' and 'offset'; missing {missing} "
                             f"(got {sorted(outputs)}).")
        semantic, center, offset = (head_tensor(outputs[k], k) for k in ("semantic", "center", "offset"))
        if offset.ndim >= 4 and offset.shape[0] == 1 and offset.shape[1] == offset.ndim - 2:  # a batch of 1
            semantic, center, offset = semantic[0], center[0], offset[0]
        d = offset.ndim - 1
        if d not in (2, 3) or offset.shape[0] != d:
            raise ValueError(f"`outputs['offset']` must be (d, *S) with d = 2 or 3 spatial axes (one image), got "
                             f"shape {tuple(offset.shape)}.")
        spatial = tuple(offset.shape[1:])
        for name, t in (("semantic", semantic), ("center", center)):
            if t.ndim != d + 1 or tuple(t.shape[1:]) != spatial or (name == "center" and t.shape[0] != 1):
                raise ValueError(f"`outputs[{name!r}]` must be ({'K' if name == 'semantic' else 1}, "
                                 f"{', '.join(map(str, spatial))}) like the offsets, got shape {tuple(t.shape)}.")
        return semantic, center, offset

    def __call__(self, outputs: Mapping) -> PanopticResult:
        semantic, center, offset = self._inputs(outputs)
        spatial = tuple(offset.shape[1:])
        classes = semantic.argmax(0)
        things = (torch.tensor(self.thing_classes, dtype=torch.int64) if self.thing_classes is not None
                  else torch.arange(1, semantic.shape[0]))
        thing_mask = torch.isin(classes, things)
        centers = find_centers(center[0], self.threshold, self.nms_kernel, self.top_k)
        instances = torch.zeros(spatial, dtype=torch.int64)
        if len(centers) and thing_mask.any():
            grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in spatial],
                                              indexing="ij"))
            voted = (grid + offset)[:, thing_mask].T  # (P, d): where each thing pixel says its centre is
            nearest = torch.cdist(voted, centers.float()).argmin(1)
            instances[thing_mask] = nearest + 1
        return fuse_panoptic(classes, instances, centers, things, self.stuff_area, self.void, self.label_divisor)


def fuse_panoptic(classes: torch.Tensor, instances: torch.Tensor, centers: torch.Tensor, things: torch.Tensor,
                  stuff_area: int = 0, void: int = -1, label_divisor: int = 1000) -> PanopticResult:
    """The fusion shared by the bottom-up panoptic decoders: objects and semantic classes → a :class:`PanopticResult`.

    ``classes`` ``(*S)``: each pixel's semantic class; ``instances`` ``(*S)``: object ids ``1..N`` (0: none) for
    the ``N`` objects found at ``centers`` ``(N, d)``; ``things``: the classes that are objects. Each object takes
    the majority thing class of its pixels; objects that drew no pixel are dropped and the ids renumbered
    ``1..M``; stuff regions of fewer than ``stuff_area`` pixels become ``void``.
    """
    d = classes.ndim
    semantic_out = classes.clone()
    object_classes = []
    for i in range(len(centers)):  # each object takes its pixels' majority class
        pixels = instances == i + 1
        if pixels.any():
            votes = torch.bincount(classes[pixels][torch.isin(classes[pixels], things)])
            cls = int(votes.argmax())
            semantic_out[pixels] = cls
        else:
            cls = void
        object_classes.append(cls)
    instances_np = instances.numpy()
    # Objects that drew no pixel leave gaps in the ids: renumber 1..N, keeping centres and classes aligned.
    kept = [i for i in range(len(centers)) if object_classes[i] != void]
    remap = np.zeros(len(centers) + 1, np.int64)
    remap[[i + 1 for i in kept]] = np.arange(1, len(kept) + 1)
    instances_np = remap[instances_np]
    semantic_np = semantic_out.numpy().astype(np.int64)
    if stuff_area:
        for cls in np.unique(semantic_np[instances_np == 0]):
            region = (semantic_np == cls) & (instances_np == 0)
            if region.sum() < stuff_area:
                semantic_np[region] = void
    panoptic = np.where(semantic_np == void, void, semantic_np * label_divisor + instances_np).astype(np.int64)
    return PanopticResult(semantic=semantic_np, instances=instances_np, panoptic=panoptic,
                          centers=np.asarray(centers)[kept].astype(np.int64).reshape(-1, d),
                          classes=np.asarray([object_classes[i] for i in kept], np.int64))
