"""DeeperLab's keypoint targets and its grouping: objects from keypoint heatmaps and offsets, fused with classes.

DeeperLab (Yang et al. 2019, arXiv:1902.05093, Sec. 3.3) represents each object ("thing") by keypoints, the
corners of its bounding box and its centre of mass, as PersonLab (Papandreou et al. 2018, arXiv:1803.08225) does
for people. A network (:class:`segarch.nets.deeperlab.DeeperLab`) predicts, for each keypoint type, a heatmap (the
pixels within ``radius`` of a keypoint), short-range offsets (from those pixels to the keypoint), middle-range
offsets (from near one keypoint to another keypoint of the same object) and long-range offsets (from every
pixel of an object to each of its keypoints). :func:`keypoint_targets` makes them from instance labels (to
train on); :class:`DeeperLabDecoder` turns predictions back into objects. Unlike Panoptic-DeepLab's grouping
(one centre per object, each pixel joins the centre its offset points nearest to), objects are assembled from
several keypoints:

1. **keypoint recovery** (Hough voting, PersonLab's Eq. 1): every pixel casts a vote, weighted by its heatmap
   probability, at the position its short-range offset points to (spread bilinearly over the nearest pixels),
   for each keypoint type; the votes are divided by the disk's area (πR², 4/3·πR³ in 3D) and summed around each
   position with Gaussian weights (σ = ``nms_radius`` / 2, the kernel of PersonLab's expected-OKS keypoint
   score), so a score is the share of a whole disk's heatmap mass landing near a position (about 1 for a
   keypoint whose disk lies in the image, however the votes scatter by a pixel or two). The local maxima of the
   scores (a max-pooling of ``nms_kernel``) above ``threshold`` are the candidate keypoints;
2. **grouping**: the strongest unused candidate (of any type) starts an object; the middle-range offsets lead
   from it to the centre and from the centre to each corner, each landing refined by the short-range offsets
   (the object's keypoint of that type). A start within ``nms_radius`` of the same-type keypoint of an object
   already found is a duplicate and is skipped (PersonLab's non-maximum suppression). Each object is scored as
   PersonLab scores a person: the mean over its keypoints of the score there, a keypoint already claimed
   by a stronger object (within ``nms_radius`` of its same-type keypoint) counting 0; objects scoring below
   ``min_score`` are dropped (a start on a stray vote, or a duplicate whose keypoints are all taken);
3. **pixel assignment**: every "thing" pixel's long-range offsets say where its object's keypoints are; it joins
   the object whose keypoints are closest on average (if within ``max_distance``);
4. **fusion** (as Panoptic-DeepLab's, :func:`segarch.instances.panoptic.fuse_panoptic`): each object takes the
   majority semantic class of its pixels; other pixels keep theirs as stuff.

Works in 2D and 3D (Z, Y, X; 9 keypoints in 3D). Examples::

    >>> labels = np.zeros((32, 32), int); labels[4:10, 4:10] = 1; labels[20:28, 18:26] = 2
    >>> outputs = keypoint_targets(labels, radius=3)
    >>> outputs["semantic"] = np.stack([labels == 0, labels > 0]).astype(np.float32)
    >>> int(DeeperLabDecoder(radius=3)(outputs).instances.max())
    2
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from segarch.instances.panoptic import PanopticResult, check_instance_labels, fuse_panoptic, head_tensor
from segarch.nets.deeperlab import keypoint_count, keypoint_edges

__all__ = ["keypoint_targets", "object_keypoints", "DeeperLabDecoder", "DEEPERLAB_HEADS"]

#: The heads the decoder reads, as :class:`segarch.nets.deeperlab.DeeperLab` names them.
DEEPERLAB_HEADS = ("semantic", "keypoints", "short_offset", "middle_offset", "long_offset")


def object_keypoints(labels) -> tuple[np.ndarray, np.ndarray]:
    """The keypoints of each object in ``labels`` (2D or 3D, 0 = background): ``(ids, points)`` with ``points``
    ``(N, K, d)`` float64, keypoint 0 the centre of mass, then the bounding box's ``2^d`` corners (first and last
    pixel along each axis; corner ``c``'s bit ``i`` picks the last along axis ``d - 1 - i``)."""
    labels = check_instance_labels(labels)
    d = labels.ndim
    ids = np.unique(labels)
    ids = ids[ids > 0]
    points = np.zeros((len(ids), keypoint_count(d), d))
    if not len(ids):
        return ids, points
    points[:, 0] = np.asarray(ndimage.center_of_mass(np.ones(labels.shape), labels, ids)).reshape(len(ids), d)
    boxes = ndimage.find_objects(labels)
    for n, i in enumerate(ids):
        box = boxes[i - 1]
        for c in range(2 ** d):
            points[n, c + 1] = [box[a].stop - 1 if (c >> (d - 1 - a)) & 1 else box[a].start for a in range(d)]
    return ids, points


def keypoint_targets(labels, radius: float = 32.0) -> dict[str, np.ndarray]:
    """DeeperLab's training targets for instance ``labels`` (2D or 3D, 0 = background).

    Args:
        labels: integer instance ids, ``(Y, X)`` or ``(Z, Y, X)``.
        radius: the disk (ball) around each keypoint where its heatmap is 1 and short- and middle-range offsets
            are defined, in pixels (the paper: 32).

    Returns:
        ``{"keypoints": (K, *S), "short_offset": (K·d, *S), "middle_offset": (2(K-1)·d, *S),
        "long_offset": (K·d, *S)}``, float32, in the layout of :class:`segarch.nets.deeperlab.DeeperLab`'s heads:
        heatmaps of 1 within ``radius`` of each keypoint; short: keypoint minus position within the disk (the
        nearest keypoint of that type where disks overlap); middle: the edge's end keypoint minus position within
        the disk of its start keypoint; long: each of the object's keypoints minus position on the object's
        pixels. 0 elsewhere.
    """
    labels = check_instance_labels(labels)
    if not isinstance(radius, (int, float)) or isinstance(radius, bool) or not radius > 0:
        raise ValueError(f"`radius` must be a positive number of pixels, got {radius!r}.")
    d, shape = labels.ndim, labels.shape
    k, edges = keypoint_count(d), keypoint_edges(d)
    heat = np.zeros((k, *shape), np.float32)
    short = np.zeros((k, d, *shape), np.float32)
    middle = np.zeros((len(edges), d, *shape), np.float32)
    long = np.zeros((k, d, *shape), np.float32)
    ids, points = object_keypoints(labels)
    grid = np.indices(shape, dtype=np.float64)
    nearest = np.full((k, *shape), np.inf)
    for n, i in enumerate(ids):
        inside = labels == i
        for t in range(k):
            long[t][:, inside] = (points[n, t][:, None] - grid[:, inside]).astype(np.float32)
            to_point = points[n, t].reshape(d, *[1] * d) - grid
            distance = np.sqrt((to_point ** 2).sum(0))
            disk = distance <= radius
            closer = disk & (distance < nearest[t])
            nearest[t][closer] = distance[closer]
            heat[t][disk] = 1
            short[t][:, closer] = to_point[:, closer]
        for e, (a, b) in enumerate(edges):
            disk = np.sqrt(((points[n, a].reshape(d, *[1] * d) - grid) ** 2).sum(0)) <= radius
            middle[e][:, disk] = (points[n, b].reshape(d, *[1] * d) - grid)[:, disk]
    return {"keypoints": heat, "short_offset": short.reshape(k * d, *shape),
            "middle_offset": middle.reshape(len(edges) * d, *shape), "long_offset": long.reshape(k * d, *shape)}


def _sample(offsets: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """The ``(d,)`` offset at the pixel nearest to ``point`` (clipped to the image) of ``offsets`` ``(d, *S)``."""
    index = [int(torch.clamp(torch.round(p), 0, s - 1)) for p, s in zip(point, offsets.shape[1:])]
    return offsets[(slice(None), *index)]


def _outside(point: torch.Tensor, spatial) -> bool:
    """Whether ``point`` lies off the image of size ``spatial`` by more than half a pixel."""
    return any(float(p) < -0.5 or float(p) > s - 0.5 for p, s in zip(point, spatial))


class DeeperLabDecoder:
    """DeeperLab's instance prediction and fusion (see the module's docstring): network outputs → objects, classes.

    Args:
        thing_classes: semantic classes that are countable objects; ``None``: every class but 0 (background).
        radius: the keypoint disk radius the network was trained with, in pixels (the paper: 32).
        nms_radius: a keypoint this close to the same-type keypoint of an object already found is a duplicate
            (``None``: ``radius / 3``, PersonLab's 10 pixels with disks of 32; a whole radius would merge touching
            objects whose corners are near).
        threshold: candidate keypoints need this score (the share of a disk's heatmap mass gathered near a
            position, see the module's docstring; 0.1).
        min_score: objects whose score (the mean score of their unclaimed keypoints, see the module's
            docstring) is below this are dropped (0.2).
        nms_kernel: the max-pooling window of the candidates' selection, in pixels (odd; 7).
        refine_steps: short-range refinements of each landing of the middle offsets (2).
        keypoints_are_logits: whether ``keypoints`` holds logits (a sigmoid makes probabilities) or probabilities;
            ``None``: logits when any value lies outside [0, 1].
        max_distance: a pixel whose long-range keypoints are further than this on average from every object's
            keypoints joins none (``None``: always the closest).
        stuff_area: stuff regions with fewer pixels become ``void`` (0: keep all).
        void: the class of removed stuff.
        label_divisor: ``panoptic = class · label_divisor + instance id``.

    Call it with the outputs of a DeeperLab network for one image, a mapping with the heads of
    :data:`DEEPERLAB_HEADS` (tensors or arrays ``(C, *S)``; a leading batch axis of 1 is accepted; ``semantic`` as
    logits or probabilities, ``keypoints`` as logits or probabilities, see ``keypoints_are_logits``), and get a
    :class:`~segarch.instances.panoptic.PanopticResult` whose ``centers`` are the objects' centre keypoints.
    """

    def __init__(self, thing_classes: Sequence[int] | None = None, radius: float = 32.0,
                 nms_radius: float | None = None, threshold: float = 0.1, min_score: float = 0.2,
                 nms_kernel: int = 7,
                 refine_steps: int = 2, max_distance: float | None = None,
                 keypoints_are_logits: bool | None = None, stuff_area: int = 0, void: int = -1,
                 label_divisor: int = 1000) -> None:
        for name, value in (("radius", radius), ("threshold", threshold)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
        if not isinstance(min_score, (int, float)) or isinstance(min_score, bool) or not min_score >= 0:
            raise ValueError(f"`min_score` must be a number >= 0, got {min_score!r}.")
        if nms_radius is not None and (not isinstance(nms_radius, (int, float)) or isinstance(nms_radius, bool)
                                       or not nms_radius > 0):
            raise ValueError(f"`nms_radius` must be a positive number of pixels or None, got {nms_radius!r}.")
        if max_distance is not None and (not isinstance(max_distance, (int, float)) or isinstance(max_distance, bool)
                                         or not max_distance > 0):
            raise ValueError(f"`max_distance` must be a positive number of pixels or None, got {max_distance!r}.")
        if not isinstance(nms_kernel, int) or isinstance(nms_kernel, bool) or nms_kernel < 1 or nms_kernel % 2 == 0:
            raise ValueError(f"`nms_kernel` must be an odd positive integer, got {nms_kernel!r}.")
        for name, value, low in (("refine_steps", refine_steps, 0), ("stuff_area", stuff_area, 0),
                                 ("label_divisor", label_divisor, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
        self.thing_classes = None if thing_classes is None else tuple(int(c) for c in thing_classes)
        self.radius, self.threshold, self.nms_kernel = float(radius), float(threshold), nms_kernel
        self.min_score = float(min_score)
        self.nms_radius = self.radius / 3 if nms_radius is None else float(nms_radius)
        self.refine_steps, self.max_distance, self.keypoints_are_logits = refine_steps, max_distance, \
            keypoints_are_logits
        self.stuff_area, self.void, self.label_divisor = stuff_area, int(void), label_divisor

    def _inputs(self, outputs: Mapping) -> dict[str, torch.Tensor]:
        missing = [k for k in DEEPERLAB_HEADS if k not in outputs]
        if missing:
            raise ValueError(f"`outputs` needs the heads {', '.join(map(repr, DEEPERLAB_HEADS))}; missing {missing} "
                             f"(got {sorted(outputs)}).")
        t = {k: head_tensor(outputs[k], k) for k in DEEPERLAB_HEADS}
        if t["keypoints"].ndim in (4, 5) and t["keypoints"].shape[0] == 1 and \
                t["keypoints"].shape[1] == keypoint_count(t["keypoints"].ndim - 2):  # a batch of 1
            t = {k: v[0] for k, v in t.items()}
        d = t["keypoints"].ndim - 1
        if d not in (2, 3) or t["keypoints"].shape[0] != keypoint_count(d):
            raise ValueError(f"`outputs['keypoints']` must be (K, *S) for one image with K = 5 (2D) or 9 (3D) "
                             f"keypoints, got shape {tuple(t['keypoints'].shape)}.")
        k, e, spatial = keypoint_count(d), len(keypoint_edges(d)), tuple(t["keypoints"].shape[1:])
        expected = {"semantic": None, "short_offset": k * d, "middle_offset": e * d, "long_offset": k * d}
        for name, channels in expected.items():
            v = t[name]
            if v.ndim != d + 1 or tuple(v.shape[1:]) != spatial or (channels is not None and v.shape[0] != channels):
                want = "K" if channels is None else str(channels)
                raise ValueError(f"`outputs[{name!r}]` must be ({want}, {', '.join(map(str, spatial))}) for "
                                 f"{d}D keypoint outputs, got shape {tuple(v.shape)}.")
        return t

    def _votes(self, heat: torch.Tensor, short: torch.Tensor) -> torch.Tensor:
        """Keypoint scores ``(K, *S)``: each pixel's heatmap probability, spread bilinearly where its short offset
        points (votes landing outside the image are lost), divided by the disk's area (PersonLab's Eq. 1), then
        summed with the Gaussian weights of the expected-OKS score (σ = ``nms_radius`` / 2, peak weight 1)."""
        k, spatial = heat.shape[0], heat.shape[1:]
        d = len(spatial)
        grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in spatial], indexing="ij"))
        votes = torch.zeros(k, int(np.prod(spatial)))
        sizes = torch.tensor(spatial).view(d, *[1] * d)
        disk = np.pi * self.radius ** 2 if d == 2 else 4 / 3 * np.pi * self.radius ** 3
        for t in range(k):
            target = grid + short[t * d:(t + 1) * d]
            low = torch.floor(target)
            fraction = target - low
            for corner in range(2 ** d):  # the 2^d pixels around each landing, weighted bilinearly
                step = torch.tensor([(corner >> a) & 1 for a in range(d)], dtype=torch.float32).view(d, *[1] * d)
                at = (low + step).long()
                weight = torch.prod(torch.where(step > 0, fraction, 1 - fraction), dim=0) * heat[t]
                inside = ((at >= 0) & (at < sizes)).all(0)
                flat = torch.zeros_like(at[0])
                for axis in range(d):
                    flat = flat * spatial[axis] + at[axis].clamp(0, spatial[axis] - 1)
                votes[t].index_add_(0, flat[inside], weight[inside])
        votes = (votes / disk).reshape(k, *spatial).numpy()
        sigma = self.nms_radius / 2
        smoothed = ndimage.gaussian_filter(votes, (0,) + (sigma,) * d, mode="constant", truncate=3.0)
        return torch.from_numpy(smoothed * (2 * np.pi * sigma ** 2) ** (d / 2))

    def _candidates(self, votes: torch.Tensor) -> list[tuple[float, int, torch.Tensor]]:
        d = votes.ndim - 1
        pool = (F.max_pool2d if d == 2 else F.max_pool3d)(votes[None], self.nms_kernel, stride=1,
                                                           padding=self.nms_kernel // 2)[0]
        peaks = ((votes == pool) & (votes > self.threshold)).nonzero()
        found = [(float(votes[tuple(p)]), int(p[0]), p[1:].float()) for p in peaks]
        return sorted(found, key=lambda c: -c[0])

    def _refine(self, point: torch.Tensor, short: torch.Tensor, t: int, d: int) -> torch.Tensor:
        for _ in range(self.refine_steps):
            point = point + _sample(short[t * d:(t + 1) * d], point)
        return point

    def _group(self, candidates, short: torch.Tensor, middle: torch.Tensor, votes: torch.Tensor,
               d: int) -> list[torch.Tensor]:
        """Objects as ``(K, d)`` keypoint positions, from the strongest candidates along the middle offsets, each
        kept if its score (the mean Hough score of its keypoints not claimed by a stronger object) reaches
        ``min_score``."""
        k, edges = keypoint_count(d), keypoint_edges(d)
        # a keypoint's score: the best within a pixel of it (its landing is rounded to a pixel)
        near_peak = (F.max_pool2d if d == 2 else F.max_pool3d)(votes[None], 3, stride=1, padding=1)[0]
        objects: list[torch.Tensor] = []
        for _, t, start in candidates:
            if any(torch.linalg.vector_norm(obj[t] - start) <= self.nms_radius for obj in objects):
                continue  # this keypoint belongs to an object already found
            points = torch.zeros(k, d)
            points[t] = start
            if t != 0:  # corner → centre
                e = edges.index((t, 0))
                points[0] = self._refine(start + _sample(middle[e * d:(e + 1) * d], start), short, 0, d)
            for c in range(1, k):  # centre → each other corner
                if c != t:
                    e = edges.index((0, c))
                    points[c] = self._refine(points[0] + _sample(middle[e * d:(e + 1) * d], points[0]), short, c, d)
            if any(torch.linalg.vector_norm(obj[0] - points[0]) <= self.nms_radius for obj in objects):
                continue  # the same centre reached from another corner
            scores = [0.0 if _outside(points[c], votes.shape[1:]) or any(
                torch.linalg.vector_norm(obj[c] - points[c]) <= self.nms_radius for obj in objects)
                else float(_sample(near_peak[c:c + 1], points[c])[0]) for c in range(k)]
            if sum(scores) / k >= self.min_score:
                objects.append(points)
        return objects

    def __call__(self, outputs: Mapping) -> PanopticResult:
        t = self._inputs(outputs)
        semantic, heat = t["semantic"], t["keypoints"]
        d, spatial = heat.ndim - 1, tuple(heat.shape[1:])
        logits = self.keypoints_are_logits
        if logits is None:  # probabilities lie in [0, 1]; logits of a trained net do not
            logits = bool(heat.min() < 0 or heat.max() > 1)
        heat = torch.sigmoid(heat) if logits else heat
        classes = semantic.argmax(0)
        things = (torch.tensor(self.thing_classes, dtype=torch.int64) if self.thing_classes is not None
                  else torch.arange(1, semantic.shape[0]))
        thing_mask = torch.isin(classes, things)
        votes = self._votes(heat, t["short_offset"])
        objects = self._group(self._candidates(votes), t["short_offset"], t["middle_offset"], votes, d)
        instances = torch.zeros(spatial, dtype=torch.int64)
        if objects and thing_mask.any():
            k = keypoint_count(d)
            grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in spatial],
                                              indexing="ij"))
            long = t["long_offset"].reshape(k, d, *spatial)
            predicted = (grid[None] + long)[:, :, thing_mask]  # (K, d, P): each pixel's view of its keypoints
            # one object at a time: memory stays (K, d, P) however many objects there are
            best = torch.full((predicted.shape[-1],), float("inf"))
            joined = torch.zeros(predicted.shape[-1], dtype=torch.int64)
            for n, keypoints in enumerate(objects):  # (K, d)
                distance = torch.linalg.vector_norm(predicted - keypoints[..., None], dim=1).mean(0)  # (P,)
                closer = distance < best
                best[closer], joined[closer] = distance[closer], n + 1
            if self.max_distance is not None:
                joined[best > self.max_distance] = 0
            instances[thing_mask] = joined
        centers = torch.stack([o[0] for o in objects]).round() if objects else torch.zeros(0, d)
        return fuse_panoptic(classes, instances, centers, things, self.stuff_area, self.void, self.label_divisor)
