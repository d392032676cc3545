"""The detection task: Mask R-CNN and its family learn boxes, classes and masks from instance label images.

``segarch.train("mask_rcnn", images, instance_labels, task="instance", options=...)`` (also the default for a
detector, and so the CLI's ``segarch train`` and the Train widget): each training patch's instance labels become
the detector's targets (:func:`segarch.instances.detections.detection_targets`: per object a box, class 1 and a
mask), made after the crop and augmentation, so boxes always fit what the network sees. The loss is the sum of the
detector's own losses (RPN objectness and boxes, classes, boxes, masks). Validation paints each held-out patch's
detections into labels (:func:`~segarch.instances.detections.labels_from_detections`) and matches them with the
truth: F1 at IoU 0.5, mean AP beside it. The trained model then predicts instances with
``segarch.predict(model, image, output="instances")`` (tiles' detections stitched across seams).

Examples::

    >>> from segarch.synthetic import samples
    >>> data = samples(16, (128, 128), seed=1)
    >>> model = segarch.train("mask_rcnn", [s.image for s in data], [s.labels for s in data], task="instance",
    ...                       steps=500, options=zoo.card("mask_rcnn").test_config)
    >>> found = segarch.predict(model, data[0].image, output="instances")
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from segarch.instances import match_many
from segarch.instances.detections import detection_targets, labels_from_detections
from segarch.models.model import Model
from segarch.training.data import Source, label_stats, make_items, split_items
from segarch.training.normalisation import PerImagePreprocessing
from segarch.training.sampler import PatchSampler, validation_patches
from segarch.training.semantic import check_patch
from segarch.training.task import TrainingTask, Validation, register_task
from segarch.zoo import ModelCard

__all__ = ["DetectionTask"]

_DEFAULT_BATCH = {2: 4, 3: 1}
_MAX_VAL_PATCHES = {2: 16, 3: 4}


def _instance_labels(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels).astype(np.int64)  # the instance ids themselves: targets are made per patch


@register_task
class DetectionTask(TrainingTask):
    """Detectors (zoo task 'instance': Mask R-CNN): boxes, classes and masks from instance labels."""

    name = "detection"
    #: ``task="instance"`` names it too for a detector: users ask for instances, whatever the architecture.
    aliases = ("instance",)
    #: EfficientPS (task 'panoptic') is a detector too: its things from the objects, its stuff the background
    architectures = ("instance", "panoptic")
    metric, metric_key = "F1@0.5", "objects"

    def check_config(self) -> None:
        cfg = self.config
        for option in ("jitter", "decoder", "adapt_to"):
            if getattr(cfg, option, None) is not None:
                raise ValueError(f"`{option}` does not apply to a detector (Mask R-CNN); leave it unset.")
        if cfg.num_classes not in (None, 2):
            raise ValueError(f"`num_classes` of a detector trained on instance labels is 2 (background, object), "
                             f"got {cfg.num_classes!r}.")

    @classmethod
    def claims(cls, card: ModelCard, model: Model | None) -> bool:
        return card.task in cls.architectures and getattr(card.builder, "is_detector", False)

    def new_model(self, card: ModelCard, spatial_dims: int, channels: int) -> Model:
        return Model.from_zoo(card.name, spatial_dims=spatial_dims, in_channels=channels, out_channels=2,
                              class_names=["background", "object"], **dict(self.config.options or {}))

    def prepare(self, model: Model, sources: Sequence[Source], rng: np.random.Generator) -> Model:
        cfg = self.config
        _, high = label_stats(sources)
        if high == 0:
            raise ValueError("`labels` hold no objects (every label is 0): a detector learns from labelled objects, "
                             "1..N in each image (0 is background).")
        dims = model.spatial_dims
        items = make_items(list(sources))
        patch = check_patch(cfg.patch, dims, model.size_divisor, items)
        train_items, val_items = split_items(items, cfg.val_fraction, patch, rng)
        self.preprocess = PerImagePreprocessing(model.preprocessing, list(sources), [2 * p for p in patch])
        self.sampler = PatchSampler(train_items, patch, self.preprocess, 2, cfg.augment, seed=cfg.seed,
                                    targets=_instance_labels)
        self.validation_regions = validation_patches(val_items, patch, self.preprocess, 2, _MAX_VAL_PATCHES[dims],
                                                     seed=cfg.seed, targets=_instance_labels)
        self.input_size = patch
        self.batch_size = int(cfg.batch_size or _DEFAULT_BATCH[dims])
        self.class_names = ["background", "f1@0.5", "mean_ap"]  # the metric's columns
        self.data_summary = (f"{len(train_items)} training image(s), {len(val_items)} held out; boxes, classes and "
                             f"masks made from each patch's objects")
        return model

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.sampler.batch(batch_size)

    def forward(self, net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        """The detector's losses on a batch: each patch's objects (outside the annotated pixels: background)."""
        labels = (target * (mask > 0)).cpu().numpy()[:, 0]
        targets = [{k: v.to(x.device) for k, v in detection_targets(_relabel(labels[i])).items()}
                   for i in range(len(labels))]
        return net(x, targets)

    def loss(self, losses: dict[str, torch.Tensor], target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return sum(losses.values())

    def _scores(self, net: torch.nn.Module, device: torch.device):
        found, truths = [], []
        with torch.inference_mode():
            for region in self.validation_regions:
                detections = net(torch.from_numpy(region.image)[None].to(device))[0]
                found.append(np.where(region.mask, labels_from_detections(detections), 0))
                truths.append(np.where(region.mask, region.target, 0))
        return match_many(truths, found)

    def validate(self, net: torch.nn.Module, device: torch.device) -> Validation:
        """F1@0.5 and mean AP of the held-out patches' objects (the loss: NaN, a detector in eval mode detects)."""
        scores = self._scores(net, device)
        return Validation(float("nan"), [float("nan"), scores.f1(0.5), scores.mean_ap], scores.f1(0.5))

    def final_validation(self, model: Model, trained: bool) -> tuple[dict[str, Any], str]:
        if not (trained and self.validation_regions):
            return {"object_f1": None, "mean_ap": None}, ""
        summary = self._scores(model.network.eval(), torch.device("cpu")).summary()
        sentence = (f"Held-out objects ({summary['n_true']}) in {len(self.validation_regions)} patch(es): F1@0.5 "
                    f"{summary['f1@0.5']:.3f}, mean AP {summary['mean_ap']:.3f}.")
        return {"object_f1": summary["f1@0.5"], "mean_ap": summary["mean_ap"], "objects": summary}, sentence


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Object ids 1…n (a crop keeps some objects of an image): the order of :func:`detection_targets`."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        ids, inverse = np.concatenate([[0], ids]), inverse + 1
    return inverse.reshape(labels.shape)
