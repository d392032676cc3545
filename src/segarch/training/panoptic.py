"""The panoptic task: bottom-up panoptic networks (Panoptic-DeepLab, DeeperLab) learn classes and objects.

``segarch.train("panoptic_deeplab", images, labels, task="panoptic", thing_classes=[1, 2])`` (also the default
for those networks): each training patch's labels become the targets of every head of the network, made after the
crop and augmentation by the decoders' own target makers (:func:`segarch.instances.panoptic.center_offset_targets`,
:func:`segarch.instances.deeperlab.keypoint_targets`), so they always fit what the network sees.

- **Labels**: panoptic ids ``class · label_divisor + instance`` (the COCO/Cityscapes convention; ``label_divisor``
  1000 by default), or a pair ``(class_labels, instance_labels)`` per image (a tuple; a list holds several
  images). ``thing_classes`` are the classes with objects (default: every class but 0); pixels of other classes
  are "stuff" and their instance ids are ignored.
- **Losses** (:func:`panoptic_loss`): the papers'. Panoptic-DeepLab (Sec. 3.4): cross-entropy on classes,
  200 × squared error on the centre heatmap (a Gaussian of ``sigma`` 8 pixels), 0.01 × L1 of the offsets (in
  pixels) over thing pixels. DeeperLab (keypoints as PersonLab, arXiv:1803.08225, Sec. 3.1): cross-entropy on
  classes, binary cross-entropy on the keypoint disks (radius 32), and L1 of the short-, middle- and long-range
  offsets divided by the radius, each averaged over the pixels where it is defined only (the keypoint disks, the
  disk of each edge's start, the object's pixels): averaged over the whole image the zeros elsewhere outweigh
  them and the offsets stay pixels off (then the grouping finds several objects per object).
- **The model records** ``model.panoptic = {"thing_classes": [...], "label_divisor": int}`` (saved in its file)
  so that its outputs are decoded with the classes it was trained on.
- **Validation**: the loss on held-out patches and the Dice of the semantic head per class.

``decoder={"sigma": s}`` (Panoptic-DeepLab) or ``{"radius": r}`` (DeeperLab) change the targets' size; decode with
the same value (``PanopticDeepLabDecoder`` reads centres whatever their width; ``DeeperLabDecoder(radius=r)``).

Examples::

    >>> model = segarch.train("panoptic_deeplab", images, panoptic_ids, task="panoptic", thing_classes=[1],
    ...                       steps=2000, options=zoo.card("panoptic_deeplab").test_config)
    >>> model.panoptic
    {'thing_classes': [1], 'label_divisor': 1000}
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segarch.instances.deeperlab import keypoint_targets
from segarch.instances.panoptic import center_offset_targets
from segarch.models.model import Model
from segarch.nets.deeperlab import keypoint_edges
from segarch.training.data import Source, label_stats, make_items, split_items
from segarch.training.normalisation import PerImagePreprocessing
from segarch.training.sampler import PatchSampler, validation_patches
from segarch.training.semantic import check_patch
from segarch.training.task import TrainingTask, Validation, register_task
from segarch.training.metrics import dice_per_class, mean_foreground_dice
from segarch.zoo import ModelCard

__all__ = ["PanopticTask", "panoptic_targets", "panoptic_loss", "split_panoptic", "panoptic_ids"]

_DEFAULT_BATCH = {2: 4, 3: 1}
_MAX_VAL_PATCHES = {2: 16, 3: 4}
#: The papers' target sizes: Panoptic-DeepLab's centre Gaussian, DeeperLab's (PersonLab's) keypoint disk.
_SIGMA, _RADIUS = 8.0, 32.0
#: Panoptic-DeepLab's loss weights (Sec. 3.4): semantic 1, centre heatmap 200, offsets 0.01.
_CENTER_WEIGHT, _OFFSET_WEIGHT = 200.0, 0.01


def panoptic_ids(classes: np.ndarray, instances: np.ndarray, thing_classes: Sequence[int],
                 label_divisor: int) -> np.ndarray:
    """Panoptic ids ``class · label_divisor + instance`` from a pair of label images (instances of stuff pixels
    dropped). A ``ValueError`` names an instance id that does not fit under ``label_divisor``."""
    classes, instances = np.asarray(classes), np.asarray(instances)
    if classes.shape != instances.shape:
        raise ValueError(f"`labels` pair: class labels {classes.shape} and instance labels {instances.shape} must "
                         f"have the same shape.")
    for name, a in (("class", classes), ("instance", instances)):
        if not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
            raise ValueError(f"`labels` pair: {name} labels must be integers >= 0, got dtype {a.dtype}"
                             + (f", minimum {a.min()}" if np.issubdtype(a.dtype, np.integer) else "") + ".")
    if instances.size and int(instances.max()) >= label_divisor:
        raise ValueError(f"`label_divisor`={label_divisor} is too small for the instance ids (up to "
                         f"{int(instances.max())}): panoptic ids are class * label_divisor + instance, so it must be "
                         f"larger than every instance id.")
    thing = np.isin(classes, list(thing_classes))
    return classes.astype(np.int64) * label_divisor + np.where(thing, instances, 0)


def split_panoptic(ids: np.ndarray, thing_classes: Sequence[int], label_divisor: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, instances)`` of panoptic ids: instances numbered 1..N (each distinct thing id one object),
    0 on stuff."""
    ids = np.asarray(ids).astype(np.int64)
    classes = ids // label_divisor
    thing = np.isin(classes, list(thing_classes)) & (ids % label_divisor > 0)
    instances = np.zeros(ids.shape, np.int64)
    if thing.any():
        _, inverse = np.unique(ids[thing], return_inverse=True)
        instances[thing] = inverse.reshape(-1) + 1
    return classes, instances


def _head_kinds(net: torch.nn.Module) -> set[str]:
    return {h.name for h in getattr(net, "heads", ())}


def panoptic_targets(net: torch.nn.Module, classes: torch.Tensor, instances: torch.Tensor, *,
                     sigma: float = _SIGMA, radius: float = _RADIUS) -> dict[str, torch.Tensor]:
    """The targets of every head of a bottom-up panoptic ``net`` for a batch of class and instance labels
    ``(B, *S)``, made by the decoders' target makers, and ``"things"`` ``(B, *S)`` (1 on object pixels)."""
    heads = _head_kinds(net)
    targets = {"semantic": classes.long(), "things": (instances > 0).float()}
    labels = [lab.cpu().numpy() for lab in instances]
    if "center" in heads:
        made = [center_offset_targets(lab, sigma=sigma) for lab in labels]
        targets["center"] = torch.from_numpy(np.stack([c for c, _ in made]))
        targets["offset"] = torch.from_numpy(np.stack([o for _, o in made]))
    if "keypoints" in heads:
        made = [keypoint_targets(lab, radius=radius) for lab in labels]
        targets.update({k: torch.from_numpy(np.stack([m[k] for m in made])) for k in made[0]})
    return {k: v.to(classes.device) for k, v in targets.items()}


def _masked_l1(prediction: torch.Tensor, target: torch.Tensor, where: torch.Tensor, d: int) -> torch.Tensor:
    """Mean absolute error of ``(B, N·d, *S)`` offsets over the pixels ``where`` ``(B, N or 1, *S)`` holds."""
    error = (prediction - target).abs().unflatten(1, (-1, d))
    weight = where[:, :, None].expand_as(error)
    return (error * weight).sum() / weight.sum().clamp(min=1)


def panoptic_loss(outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                  radius: float = _RADIUS) -> torch.Tensor:
    """The training loss of a bottom-up panoptic network's ``outputs`` against :func:`panoptic_targets` (see the
    module's docstring for its terms and weights)."""
    loss = F.cross_entropy(outputs["semantic"], targets["semantic"])
    things = targets["things"][:, None]
    if "center" in outputs:
        loss = loss + _CENTER_WEIGHT * F.mse_loss(outputs["center"], targets["center"])
        d = outputs["offset"].shape[1]
        loss = loss + _OFFSET_WEIGHT * d * _masked_l1(outputs["offset"], targets["offset"], things, d)
    if "keypoints" in outputs:
        d = outputs["keypoints"].ndim - 2
        disks = targets["keypoints"]
        starts = disks[:, [a for a, _ in keypoint_edges(d)]]  # the middle offsets live in their start's disk
        loss = loss + F.binary_cross_entropy_with_logits(outputs["keypoints"], disks)
        for name, where in (("short_offset", disks), ("middle_offset", starts), ("long_offset", things)):
            loss = loss + _masked_l1(outputs[name], targets[name], where, d) / radius
    return loss


def _is_pair(labels: Any) -> bool:
    return isinstance(labels, tuple) and len(labels) == 2 and all(hasattr(a, "shape") for a in labels)


@register_task
class PanopticTask(TrainingTask):
    """Bottom-up panoptic networks (Panoptic-DeepLab, DeeperLab): classes, and objects of the thing classes."""

    name = "panoptic"
    architectures = ("panoptic",)
    panoptic_labels = True
    metric, metric_key = "Dice", "dice"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.label_divisor = int(config.label_divisor or 1000)
        self.thing_classes: list[int] | None = None
        self.sigma, self.radius = _SIGMA, _RADIUS

    @classmethod
    def claims(cls, card: ModelCard, model: Model | None) -> bool:
        return card.task == "panoptic" and not getattr(card.builder, "is_detector", False)

    def check_config(self) -> None:
        cfg = self.config
        for option in ("jitter", "adapt_to", "pixel_size"):
            if getattr(cfg, option, None) is not None:
                raise ValueError(f"`{option}` does not apply to panoptic training; leave it unset.")
        decoder = cfg.decoder
        if decoder is not None and (not isinstance(decoder, Mapping) or set(decoder) - {"sigma", "radius"} or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in decoder.values())):
            raise ValueError(f"`decoder` of panoptic training sets the targets' size: {{'sigma': pixels}} "
                             f"(Panoptic-DeepLab) or {{'radius': pixels}} (DeeperLab), got {decoder!r}.")

    def read_labels(self, labels: Any) -> Any:
        """Pairs ``(class_labels, instance_labels)`` (one tuple, or a list of them) become panoptic ids."""
        things = self.config.thing_classes
        if _is_pair(labels):
            return panoptic_ids(*labels, things if things is not None else _all_but_background(labels[0]),
                                self.label_divisor)
        if isinstance(labels, list) and any(_is_pair(lab) for lab in labels):
            return [panoptic_ids(*lab, things if things is not None else _all_but_background(lab[0]),
                                 self.label_divisor) if _is_pair(lab) else lab for lab in labels]
        return labels

    def _check_card(self, card: ModelCard) -> None:
        if getattr(card.builder, "is_detector", False):
            raise ValueError(f"`task`='panoptic' trains the bottom-up panoptic networks (panoptic_deeplab, deeperlab); "
                             f"{card.name!r} is a detector: train it with task='instance'.")

    def new_model(self, card: ModelCard, spatial_dims: int, channels: int) -> Model:
        self._check_card(card)
        return Model.from_zoo(card.name, spatial_dims=spatial_dims, in_channels=channels,
                              out_channels=self.config.num_classes or 2, **dict(self.config.options or {}))

    def prepare(self, model: Model, sources: Sequence[Source], rng: np.random.Generator) -> Model:
        cfg = self.config
        self._check_card(model.card)
        _, high = label_stats(sources)
        if high == 0:
            raise ValueError("`labels` hold nothing but class 0: panoptic training needs labelled classes and objects.")
        read = high // self.label_divisor  # the highest class the ids spell
        if read == 0:
            raise ValueError(f"`labels` read as panoptic ids (class * label_divisor + instance, `label_divisor`="
                             f"{self.label_divisor}) are all of class 0 (highest id {high}); instance labels 1..N "
                             f"of one class are the pair (labels > 0, labels), or ids 1 * label_divisor + instance.")
        n_classes = int(cfg.num_classes or (max(read + 1, 2) if not model.trained else model.out_channels))
        if read >= n_classes:
            raise ValueError(f"`labels` hold panoptic id {high}, class {read} with `label_divisor`="
                             f"{self.label_divisor}, but the model has {n_classes} classes (0..{n_classes - 1}): "
                             f"check `label_divisor` (ids are class * label_divisor + instance) or pass `num_classes`.")
        recorded = (model.panoptic or {}).get("thing_classes") if model.trained else None  # fine-tuning keeps them
        things = list(cfg.thing_classes if cfg.thing_classes is not None else recorded or range(1, n_classes))
        bad = [c for c in things if not 1 <= int(c) < n_classes]
        if bad:
            raise ValueError(f"`thing_classes` {bad} out of range: the model has {n_classes} classes, so thing "
                             f"classes are 1..{n_classes - 1} (0 is background).")
        self.thing_classes = [int(c) for c in things]
        if model.out_channels != n_classes:
            if model.trained:
                raise ValueError(f"`num_classes`={n_classes}, but {model.arch!r} was trained with "
                                 f"{model.out_channels} classes; a panoptic model keeps its classes.")
            model = Model.from_zoo(model.arch, spatial_dims=model.spatial_dims, in_channels=model.in_channels,
                                   out_channels=n_classes, **model.options)
        if cfg.class_names is not None:
            model.class_names = list(cfg.class_names)
            model.__post_init__()
        model.panoptic = {"thing_classes": self.thing_classes, "label_divisor": self.label_divisor}
        self.sigma = float((cfg.decoder or {}).get("sigma", _SIGMA))
        self.radius = float((cfg.decoder or {}).get("radius", _RADIUS))
        dims = model.spatial_dims
        items = make_items(list(sources))
        patch = check_patch(cfg.patch, dims, model.size_divisor, items)
        train_items, val_items = split_items(items, cfg.val_fraction, patch, rng)
        self.preprocess = PerImagePreprocessing(model.preprocessing, list(sources), [2 * p for p in patch])
        ids = _as_ids  # the panoptic ids themselves: targets are made per patch, after the crop and augmentation
        self.sampler = PatchSampler(train_items, patch, self.preprocess, 2, cfg.augment, seed=cfg.seed, targets=ids)
        self.validation_regions = validation_patches(val_items, patch, self.preprocess, 2, _MAX_VAL_PATCHES[dims],
                                                     seed=cfg.seed, targets=ids)
        self.input_size = patch
        self.batch_size = int(cfg.batch_size or _DEFAULT_BATCH[dims])
        self.class_names = list(model.class_names)
        self.data_summary = (f"{len(train_items)} training image(s), {len(val_items)} held out; thing classes "
                             f"{self.thing_classes}, label divisor {self.label_divisor}")
        return model

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.sampler.batch(batch_size)

    def targets(self, net: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The heads' targets of a batch of panoptic ids ``(B, 1, *S)`` (unannotated pixels: ignored classes)."""
        pairs = [split_panoptic(i, self.thing_classes, self.label_divisor) for i in ids[:, 0].cpu().numpy()]
        classes = torch.from_numpy(np.stack([c for c, _ in pairs])).to(ids.device)
        instances = torch.from_numpy(np.stack([i for _, i in pairs])).to(ids.device)
        annotated = mask[:, 0] > 0
        classes, instances = classes.masked_fill(~annotated, -100), instances.masked_fill(~annotated, 0)
        return panoptic_targets(net, classes, instances, sigma=self.sigma, radius=self.radius)

    def forward(self, net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        return net(x), self.targets(net, target, mask)

    def loss(self, output, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        outputs, targets = output
        return panoptic_loss(outputs, targets, radius=self.radius)

    def validate(self, net: torch.nn.Module, device: torch.device) -> Validation:
        """The loss and the semantic head's Dice per class on the held-out patches."""
        regions = self.validation_regions
        losses, preds = [], []
        with torch.inference_mode():
            for count, x, ids, m in self.validation_batches(device):
                output = self.forward(net, x, ids, m)
                losses.append(float(self.loss(output, ids, m)) * count)
                preds.append(output[0]["semantic"].argmax(1).cpu().numpy())
        pred = np.concatenate([p.reshape(-1) for p in preds])
        classes = np.concatenate([r.target.reshape(-1) // self.label_divisor for r in regions])
        keep = np.concatenate([r.mask.reshape(-1) for r in regions])
        dice = dice_per_class(pred, classes, keep, num_classes=len(self.class_names))
        return Validation(sum(losses) / len(regions), dice, mean_foreground_dice(dice))


def _as_ids(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels).astype(np.int64)


def _all_but_background(classes) -> list[int]:
    return [int(c) for c in np.unique(np.asarray(classes)) if c > 0]
