"""EfficientPS's panoptic fusion (Mohan & Valada 2021, arXiv:2004.02307, Sec. 3.5): one image's detections and
semantic logits → a :class:`~segarch.instances.panoptic.PanopticResult`.

1. **confidence**: detections scoring at most ``confidence`` (0.5) are dropped;
2. **overlap**: the rest, highest score first, each binarised (mask probability > 0.5); one whose mask lies more
   than ``overlap`` (0.5) on the masks kept before it is dropped;
3. **adaptive fusion**: for each kept object, its mask logits pasted into the image (``MLA``, 0 outside its box)
   and the semantic logits of its class inside its box (``MLB``, 0 outside) are fused as
   ``FL = (σ(MLA) + σ(MLB)) ⊙ (MLA + MLB)``: where both heads agree the logit grows, where they disagree it shrinks;
4. **intermediate prediction**: the stuff classes' semantic logits and every object's ``FL`` are stacked and the
   argmax taken: a pixel belongs to an object or to "stuff";
5. **stuff**: every pixel not given to an object takes the semantic head's argmax class if that class is stuff,
   ``void`` if it is a thing; stuff regions (per class) smaller than ``stuff_area`` (the paper: 2048 pixels on
   Cityscapes) become ``void``.

Outside its box an object's fused logit is −∞ here: the paper's zero padding gives it ``FL = 0`` there, so it
would win every pixel where all stuff logits are negative (an untrained or a two-class network's background).

Examples::

    >>> net = zoo.create("efficientps", in_channels=1, out_channels=2).eval()
    >>> outputs = net(torch.zeros(1, 1, 256, 256))[0]
    >>> result = EfficientPSFusion()(outputs)   # a PanopticResult: semantic, instances, panoptic, centers, classes
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from segarch.instances.panoptic import PanopticResult, head_tensor

__all__ = ["EfficientPSFusion", "fused_logits", "FusionAsChannels"]


def fused_logits(mask_logits: torch.Tensor, semantic_logits: torch.Tensor) -> torch.Tensor:
    """EfficientPS's adaptive fusion of an object's mask logits ``MLA`` and its class's semantic logits ``MLB``
    (same shapes): ``(σ(MLA) + σ(MLB)) ⊙ (MLA + MLB)``."""
    return (torch.sigmoid(mask_logits) + torch.sigmoid(semantic_logits)) * (mask_logits + semantic_logits)


def _box_region(box: torch.Tensor, shape: Sequence[int]) -> tuple[slice, ...]:
    d = len(shape)
    lo = [max(0, int(np.floor(float(box[a])))) for a in range(d)]
    hi = [min(shape[a], int(np.ceil(float(box[d + a])))) for a in range(d)]
    return tuple(slice(a, max(a, b)) for a, b in zip(lo, hi))


class EfficientPSFusion:
    """EfficientPS's panoptic fusion (see the module's docstring).

    Args:
        thing_classes: the semantic classes that are objects; ``None``: every class but 0.
        confidence: detections need a score above this (0.5).
        overlap: a mask lying more than this share on higher-scoring kept masks is dropped (0.5).
        mask_threshold: the mask probability above which a pixel is the object's, for the overlap rule (0.5).
        stuff_area: stuff regions with fewer pixels become ``void`` (the paper: 2048 on Cityscapes; 0: keep all).
        void: the class of unassigned pixels.
        label_divisor: ``panoptic = class · label_divisor + instance id``.

    Call it with one image's outputs of :class:`~segarch.nets.efficientps.EfficientPS` in eval mode: a mapping
    with ``"semantic"`` ``(K, *S)`` logits, ``"boxes"`` ``(N, 2d)``, ``"scores"`` ``(N,)``, ``"labels"`` ``(N,)``
    semantic classes and ``"mask_logits"`` ``(N, *S)`` (pasted, 0 outside each box); get a
    :class:`~segarch.instances.panoptic.PanopticResult` (objects numbered 1..M by descending score; ``centers``:
    each object's centre of mass).
    """

    def __init__(self, thing_classes: Sequence[int] | None = None, confidence: float = 0.5, overlap: float = 0.5,
                 mask_threshold: float = 0.5, stuff_area: int = 0, void: int = -1, label_divisor: int = 1000) -> None:
        for name, value in (("confidence", confidence), ("overlap", overlap), ("mask_threshold", mask_threshold)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}.")
        for name, value, least in (("stuff_area", stuff_area, 0), ("label_divisor", label_divisor, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}.")
        self.thing_classes = None if thing_classes is None else tuple(int(c) for c in thing_classes)
        self.confidence, self.overlap, self.mask_threshold = float(confidence), float(overlap), float(mask_threshold)
        self.stuff_area, self.void, self.label_divisor = stuff_area, int(void), label_divisor

    def _inputs(self, outputs: Mapping):
        needed = ("semantic", "boxes", "scores", "labels", "mask_logits")
        missing = [k for k in needed if k not in outputs]
        if missing:
            raise ValueError(f"`outputs` needs {', '.join(repr(k) for k in needed)} (EfficientPS's eval output for "
                             f"one image); missing {missing} (got {sorted(outputs)}).")
        semantic, boxes, scores, mask_logits = (head_tensor(outputs[k], k)
                                                for k in ("semantic", "boxes", "scores", "mask_logits"))
        labels = torch.as_tensor(outputs["labels"]).detach().long().cpu()
        d = semantic.ndim - 1
        if d not in (2, 3):
            raise ValueError(f"`outputs['semantic']` must be (K, *S) with 2 or 3 spatial axes (one image), got "
                             f"shape {tuple(semantic.shape)}.")
        n, spatial = len(scores), tuple(semantic.shape[1:])
        if tuple(mask_logits.shape) != (n, *spatial) or tuple(boxes.shape) != (n, 2 * d) or len(labels) != n:
            raise ValueError(f"`outputs` must hold one box (2d values), label and mask logits {spatial} per score "
                             f"({n}); got boxes {tuple(boxes.shape)}, labels {tuple(labels.shape)}, mask_logits "
                             f"{tuple(mask_logits.shape)}.")
        return semantic, boxes, scores, labels, mask_logits

    def __call__(self, outputs: Mapping) -> PanopticResult:
        semantic, boxes, scores, labels, mask_logits = self._inputs(outputs)
        classes_count, spatial = semantic.shape[0], tuple(semantic.shape[1:])
        things = (tuple(range(1, classes_count)) if self.thing_classes is None else self.thing_classes)
        if any(not 0 <= c < classes_count for c in things):
            raise ValueError(f"`thing_classes` must be classes of the semantic logits (0..{classes_count - 1}), "
                             f"got {things}.")
        stuff = [c for c in range(classes_count) if c not in things]
        if len(labels) and not bool(torch.isin(labels, torch.tensor(things)).all()):
            raise ValueError(f"`outputs['labels']` must be thing classes {things}, got {labels.tolist()}.")
        # 1-2: confidence, then overlap among the binarised masks, highest score first
        occupied = torch.zeros(spatial, dtype=torch.bool)
        kept = []
        for i in torch.argsort(scores, descending=True, stable=True).tolist():
            if scores[i] <= self.confidence:
                break
            mask = torch.sigmoid(mask_logits[i]) > self.mask_threshold
            area = int(mask.sum())
            if area == 0 or int((mask & occupied).sum()) > self.overlap * area:
                continue
            occupied |= mask
            kept.append(i)
        # 3-4: fused logits of the objects (−∞ outside each box) against the stuff classes' logits
        stack = [semantic[stuff]] if stuff else []
        for i in kept:
            region = _box_region(boxes[i], spatial)
            fused = torch.full(spatial, -torch.inf)
            fused[region] = fused_logits(mask_logits[i][region], semantic[int(labels[i])][region])
            stack.append(fused[None])
        instances = torch.zeros(spatial, dtype=torch.long)  # object k + 1, 0: stuff
        if stack:
            best, winner = torch.cat(stack).max(0)
            winner = winner - len(stuff)
            instances = torch.where((winner >= 0) & torch.isfinite(best), winner + 1, 0)
        # 5: stuff from the semantic head; objects numbered 1..M by score, those that won no pixel dropped
        semantic_class = semantic.argmax(0)
        out = torch.where(torch.isin(semantic_class, torch.tensor(things)), self.void, semantic_class)
        remap = torch.zeros(len(kept) + 1, dtype=torch.long)
        object_classes, centers = [], []
        for k, i in enumerate(kept, start=1):
            pixels = instances == k
            if pixels.any():
                remap[k] = len(object_classes) + 1
                object_classes.append(int(labels[i]))
                centers.append(pixels.nonzero().float().mean(0).round().long())
                out[pixels] = int(labels[i])
        instances = remap[instances]
        out = out.numpy().astype(np.int64)
        instances = instances.numpy().astype(np.int64)
        if self.stuff_area:
            for cls in stuff:
                region = (out == cls) & (instances == 0)
                if 0 < region.sum() < self.stuff_area:
                    out[region] = self.void
        panoptic = np.where(out == self.void, self.void, out * self.label_divisor + instances).astype(np.int64)
        d = len(spatial)
        return PanopticResult(semantic=out, instances=instances, panoptic=panoptic,
                              centers=(torch.stack(centers).numpy() if centers else np.zeros((0, d))).astype(np.int64),
                              classes=np.asarray(object_classes, np.int64))


class FusionAsChannels(torch.nn.Module):
    """EfficientPS seen as a dense network, so that the tiled engine runs it for ``output="panoptic"``.

    Per tile, the network's detections and semantic logits are fused (:class:`EfficientPSFusion`) and returned as
    log-probabilities ``(B, K + 3, *S)``: the fused class of each pixel one-hot over the ``K`` semantic classes
    (void, a thing pixel no object claimed, counts as class 0), then the objects as the 'boundary' decoder's classes
    (background, interior, boundary: :func:`segarch.instances.targets.boundary_classes`), which
    :func:`segarch.instances.panoptic_predict.predict_panoptic` groups block by block like any instance model's.

    Args:
        network: a zoo ``efficientps``, trained.
        **fusion: :class:`EfficientPSFusion`'s options (``thing_classes`` is the network's).
    """

    def __init__(self, network: torch.nn.Module, **fusion) -> None:
        super().__init__()
        if not hasattr(network, "thing_classes") or not getattr(network, "is_detector", False):
            raise ValueError(f"`network` must be a zoo EfficientPS, got {type(network).__name__}.")
        self.network = network
        self.fusion = EfficientPSFusion(thing_classes=network.thing_classes, **fusion)
        self.classes = int(network.semantic_classes)
        self.spatial_dims, self.size_divisor = network.spatial_dims, network.size_divisor

    def channel_names(self) -> list[str]:
        return [f"semantic {i}" for i in range(self.classes)] + ["objects background", "objects interior",
                                                                 "objects boundary"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from segarch.instances.targets import boundary_classes

        self.network.eval()
        # float32 even under the engine's autocast (its default on CUDA), as DetectionsAsClasses: box regression, NMS
        # and the fusion's thresholds are not meant for bfloat16
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            found = self.network(x.float())
        out = []
        for outputs in found:
            result = self.fusion(outputs)
            semantic = np.where(result.semantic == self.fusion.void, 0, result.semantic)
            one_hot = np.eye(self.classes + 3, dtype=np.float32)[np.concatenate(
                [semantic[None], self.classes + boundary_classes(result.instances)[None]])].sum(0)
            out.append(np.log(np.moveaxis(one_hot, -1, 0) * (1 - 6e-3) + 1e-3))
        return torch.from_numpy(np.stack(out)).to(x)
