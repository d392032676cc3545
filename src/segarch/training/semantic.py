"""The semantic task: every pixel's class, learned from patches of annotated images.

Patches are read lazily around annotated places (:class:`~segarch.training.sampler.PatchSampler`),
pre-processed with each image's frozen percentiles as ``segarch.predict`` does
(:class:`~segarch.training.normalisation.PerImagePreprocessing`), augmented by MONAI, and validated on
held-out patches (Dice per class) and, at the end, on the whole held-out images through
``segarch.predict``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np
import torch

from segarch.models.model import Model
from segarch.tiling import predict
from segarch.training.config import TrainConfig
from segarch.training.data import Item, Source, label_stats, make_items, pixel_sizes, read_region, split_items
from segarch.training.finetune import with_classes
from segarch.training.metrics import dice_per_class
from segarch.training.normalisation import PerImagePreprocessing
from segarch.training.sampler import PatchSampler, validation_patches
from segarch.training.task import TrainingTask, register_task
from segarch.zoo import ModelCard

__all__ = ["SemanticTask", "check_patch"]

log = logging.getLogger("segarch.training")

_DEFAULT_PATCH = {2: (128, 128), 3: (32, 64, 64)}
_DEFAULT_BATCH = {2: 8, 3: 2}
_MAX_VAL_PATCHES = {2: 32, 3: 8}
_WHOLE_IMAGE_VAL_VOXELS = 2 ** 24  # larger held-out images are validated by patches only


def check_patch(patch, dims: int, divisor: int, items: Sequence[Item]) -> tuple[int, ...]:
    """The training patch per spatial axis: ``patch`` checked against the model's ``divisor``, or (``None``)
    the usual size, or the whole image rounded up to the divisor when it is smaller."""
    if patch is None:
        largest = np.max([it.shape for it in items], axis=0)
        return tuple(int(min(p, -(-int(n) // divisor) * divisor)) for p, n in zip(_DEFAULT_PATCH[dims], largest))
    values = (int(patch),) * dims if np.isscalar(patch) else tuple(int(p) for p in patch)
    if len(values) != dims or min(values) < 1:
        raise ValueError(f"`patch` must be one size or {dims} sizes (positive), got {patch!r}.")
    bad = [p for p in values if p % divisor]
    if bad:
        fixed = tuple(-(-p // divisor) * divisor for p in values)
        raise ValueError(f"`patch` sizes must be multiples of the model's size divisor {divisor}, got {values}; "
                         f"use e.g. {fixed}.")
    return values


@register_task
class SemanticTask(TrainingTask):
    """Semantic segmentation from patches: classes per pixel (2 by default: any label > 0 is foreground)."""

    name = "semantic"
    adapts = True
    architectures = ("semantic",)
    example = "patch"

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.val_items: list[Item] = []
        self.preprocess: PerImagePreprocessing | None = None
        self.fresh = False

    def check_config(self) -> None:
        if self.config.jitter is not None:
            raise ValueError("`jitter` applies to interactive (extreme-point) models only.")
        if self.config.decoder is not None:
            raise ValueError("`decoder` applies to instance models only: pass task='instance' to train one.")

    def new_model(self, card: ModelCard, spatial_dims: int, channels: int) -> Model:
        self.fresh = True  # a new model has 2 classes unless told otherwise
        return Model.from_zoo(card.name, spatial_dims=spatial_dims, in_channels=channels,
                              out_channels=self.config.num_classes or 2, **dict(self.config.options or {}))

    def prepare(self, model: Model, sources: Sequence[Source], rng: np.random.Generator) -> Model:
        cfg = self.config
        _, high = label_stats(sources)
        n_classes = int(cfg.num_classes or (2 if self.fresh else model.out_channels))
        if n_classes > 2 and high >= n_classes:
            raise ValueError(f"`labels` hold class {high}, but the model has {n_classes} classes "
                             f"(0..{n_classes - 1}); pass `num_classes={high + 1}` (or 2 to train foreground vs "
                             f"background).")
        model = with_classes(model, n_classes, cfg.class_names)
        if cfg.pixel_size is not None:  # recorded with the model (the median over the images)
            model.pixel_size = [float(v) for v in np.median(pixel_sizes(cfg.pixel_size, sources), axis=0)]
        dims = model.spatial_dims
        items = make_items(sources)
        patch = check_patch(cfg.patch, dims, model.size_divisor, items)
        train_items, self.val_items = split_items(items, cfg.val_fraction, patch, rng)
        # Percentiles frozen per image, as predict() freezes them: a region's own would stretch background noise.
        self.preprocess = PerImagePreprocessing(model.preprocessing, sources, [2 * p for p in patch])
        self.sampler = PatchSampler(train_items, patch, self.preprocess, n_classes, cfg.augment, seed=cfg.seed)
        self.validation_regions = validation_patches(self.val_items, patch, self.preprocess, n_classes,
                                                     _MAX_VAL_PATCHES[dims], seed=cfg.seed)
        self.input_size = patch
        self.batch_size = int(cfg.batch_size or _DEFAULT_BATCH[dims])
        self.class_names = list(model.class_names)
        self.data_summary = (f"{len(train_items)} training item(s), {len(self.validation_regions)} validation "
                             f"patch(es)")
        return model

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.sampler.batch(batch_size)

    def final_validation(self, model: Model, trained: bool) -> tuple[dict[str, Any], str]:
        whole = self._whole_image_dice(model) if self.val_items and trained else None
        sentence = "" if whole is None else ("Whole held-out images: " + ", ".join(
            f"{n} {d:.3f}" for n, d in zip(model.class_names[1:], whole[1:])) + ".")
        return {"whole_image_dice": whole}, sentence

    def _whole_image_dice(self, model: Model) -> list[float] | None:
        """Dice per class of the whole held-out images (or strips), predicted through the tiling engine.

        A held-out strip is pre-processed with its whole image's frozen percentiles (as training and a
        prediction of the whole image see it), then predicted without further pre-processing.
        """
        items = self.val_items
        total = sum(float(np.prod(it.shape)) for it in items)
        if total > _WHOLE_IMAGE_VAL_VOXELS:
            log.info("held-out images hold %.0f voxels: validated by patches only", total)
            return None
        n_classes = len(model.class_names)
        plain = dataclasses.replace(model, preprocessing=[])
        preds, targets, masks = [], [], []
        for it in items:
            region = read_region(it, [b.start for b in it.bounds], it.shape, preprocess=self.preprocess,
                                 num_classes=n_classes)
            tile = tuple(min(p, -(-s // model.size_divisor) * model.size_divisor)
                         for p, s in zip(self.input_size, it.shape))
            pred = predict(plain, region.image, axes=plain.axes, tile=tile, batch_size=self.batch_size, device="cpu",
                           output="labels")
            preds.append(np.asarray(pred).reshape(-1))
            targets.append(region.target.reshape(-1))
            masks.append(region.mask.reshape(-1))
        return dice_per_class(np.concatenate(preds), np.concatenate(targets), np.concatenate(masks),
                              num_classes=n_classes)
