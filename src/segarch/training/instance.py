"""The instance task: a zoo network learns what an instance decoder needs, from instance label images.

``segarch.train("unet", images, instance_labels, task="instance", pixel_size=(2, 1, 1))`` trains any
semantic zoo architecture to predict a decoder's class map (:mod:`segarch.instances`): by default
background plus 4 classes of each object's normalised distance to its edge, decoded by a seeded
watershed. What this task does on top of the semantic one:

- **Targets from the labels, in physical units.** Each image's class map is made once from its whole
  instance labels (an object's distances are normalised by its own centre, which a patch may not
  show), with that image's pixel size: a Z step of 2 µm counts twice an XY pixel of 1 µm. The patches,
  crops and augmentation then move the image and its class map together: flips and 90° turns in the
  Y–X plane (and elastic deformation, nearest-neighbour for the classes) keep them consistent because
  the distance to an edge does not change when the object is turned. Turns mix Y and X, so images
  whose Y and X pixel sizes differ are refused with the default augmentation.
- **Validation by objects.** Every validation runs the network over the whole held-out images through
  ``segarch.predict`` (tiles, blending, as a user gets it), decodes them with the real decoder at a
  range of seed thresholds and matches the objects with the truth: the score is the F1 at IoU 0.5
  (``segarch.instances.match``) at the best threshold, with the mean AP (IoU 0.5–0.9) beside it.
- **The decoder is saved with the model.** ``model.instance`` holds the decoder's settings with the seed
  threshold tuned on the held-out images; the model file stores them as plain data (checked on load),
  so ``segarch.instances.predict_instances(model, image)`` decodes as validated. ``model.pixel_size`` is
  the images' pixel size (the median over them).

A model trained here is claimed by this task when it is trained again, so fine-tuning needs no ``task=``.

Examples::

    >>> from segarch.synthetic import samples
    >>> data = samples(32, (192, 192), seed=1, hard=True)
    >>> model = segarch.train("unet", [s.image for s in data], [s.labels for s in data], task="instance",
    ...                       options={"features": (16, 32, 64, 128), "norm": "batch"}, steps=2000)
    >>> model.instance                      # {'decoder': 'distance', 'bins': 4, 'seed_threshold': 0.65, ...}
    >>> model.validation["object_f1"], model.validation["mean_ap"]
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np
import torch

from segarch.arrays import compute_here
from segarch.instances import get_decoder, match_many
from segarch.instances.predict import decoder_for
from segarch.models.model import Model
from segarch.tiling import predict
from segarch.training.data import (
    Item, Source, label_stats, make_items, pixel_sizes, read_region, split_items,
)
from segarch.training.finetune import with_classes
from segarch.training.normalisation import PerImagePreprocessing
from segarch.training.sampler import PatchSampler, validation_patches
from segarch.training.semantic import check_patch
from segarch.training.task import TrainingTask, Validation, register_task
from segarch.zoo import ModelCard

__all__ = ["InstanceTask", "is_instance_model", "target_source"]

log = logging.getLogger("segarch.training")

_DEFAULT_PATCH = {2: (128, 128), 3: (32, 64, 64)}
_DEFAULT_BATCH = {2: 8, 3: 2}
_MAX_VAL_PATCHES = {2: 32, 3: 8}
#: Held-out images up to this many voxels in all are validated whole, larger ones by patches.
_WHOLE_IMAGE_VAL_VOXELS = 2 ** 22
#: Label images up to this many voxels get their targets made in memory; larger (lazy) ones block by block.
_EAGER_TARGET_VOXELS = 2 ** 26
#: Context around each block when targets are made block by block: objects up to this size are exact.
_TARGET_MARGIN = 64
#: Seed thresholds tried at each validation, and more finely for the saved model (expected distance
#: for ``distance``, interior probability for ``boundary``).
_SEEDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
_FINE_SEEDS = tuple(round(0.25 + 0.05 * i, 2) for i in range(14))   # 0.25 ... 0.9


def is_instance_model(model: Model | None) -> bool:
    """Whether ``model`` is an instance model: it carries decoder settings, or its classes spell a decoder's."""
    if model is None:
        return False
    if getattr(model, "instance", None):
        return True
    try:
        decoder_for(model)
    except ValueError:
        return False
    return True


def target_source(source: Source, decoder, spacing: Sequence[float]) -> Source:
    """``source`` with its instance labels replaced by ``decoder``'s class map (uint8), made per stack index.

    Labels that fit in memory are converted at once, from the whole image; larger lazy labels block by
    block with :data:`_TARGET_MARGIN` pixels of context (objects smaller than it come out exact).
    """
    labels = source.labels
    n = source.n_stack

    def convert(block: np.ndarray) -> np.ndarray:
        out = np.zeros(block.shape, np.uint8)
        for index in np.ndindex(*block.shape[:n]):
            if block[index].any():
                out[index] = decoder.targets(block[index], spacing)
        return out

    if isinstance(labels, np.ndarray) or int(np.prod(labels.shape)) <= _EAGER_TARGET_VOXELS:
        targets = convert(np.asarray(compute_here(labels)))
    else:
        # Dask merges chunks smaller than the margin with their neighbours, so every block gets the full context.
        depth = {i: (0 if i < n else _TARGET_MARGIN) for i in range(labels.ndim)}
        targets = labels.map_overlap(convert, depth=depth, boundary="none", dtype=np.uint8)
    return dataclasses.replace(source, labels=targets)


@register_task
class InstanceTask(TrainingTask):
    """Instance segmentation: a semantic network learns a decoder's class map from instance labels."""

    name = "instance"
    adapts = True
    architectures = ("semantic",)
    metric, metric_key = "F1@0.5", "objects"
    example = "image"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.decoder = None
        self.model: Model | None = None
        self.val_items: list[Item] = []
        self.truth: dict[int, Source] = {}
        self.preprocess: PerImagePreprocessing | None = None

    @classmethod
    def claims(cls, card: ModelCard, model: Model | None) -> bool:
        return card.task in cls.architectures and is_instance_model(model)

    def check_config(self) -> None:
        cfg = self.config
        if cfg.jitter is not None:
            raise ValueError("`jitter` applies to interactive (extreme-point) models only.")
        if cfg.decoder is not None:
            get_decoder(cfg.decoder)  # a ValueError naming `decoder` (or its option) before any data is read

    def _decoder(self, model: Model | None):
        """The decoder named by ``decoder``, else the model's own, else the default (distance, 4 bins)."""
        if self.config.decoder is not None:
            return get_decoder(self.config.decoder)
        if model is not None and is_instance_model(model):
            return decoder_for(model)
        return get_decoder("distance")

    def _check_classes(self, decoder) -> None:
        cfg = self.config
        if cfg.num_classes is not None and cfg.num_classes != decoder.channels:
            raise ValueError(f"`num_classes` of an instance model is its decoder's ({decoder.name!r}: "
                             f"{decoder.channels} classes, {list(decoder.class_names)}), got {cfg.num_classes!r}; "
                             f"leave it unset.")
        if cfg.class_names is not None and list(cfg.class_names) != list(decoder.class_names):
            raise ValueError(f"`class_names` of an instance model are its decoder's targets "
                             f"{list(decoder.class_names)}, got {list(cfg.class_names)!r}; leave them unset.")

    def new_model(self, card: ModelCard, spatial_dims: int, channels: int) -> Model:
        decoder = self._decoder(None)
        self._check_classes(decoder)
        return Model.from_zoo(card.name, spatial_dims=spatial_dims, in_channels=channels,
                              out_channels=decoder.channels, class_names=list(decoder.class_names),
                              **dict(self.config.options or {}))

    def prepare(self, model: Model, sources: Sequence[Source], rng: np.random.Generator) -> Model:
        cfg = self.config
        decoder = self._decoder(model)
        self._check_classes(decoder)
        _, high = label_stats(sources)  # refuses negative labels, naming them
        if high == 0:
            raise ValueError("`labels` hold no objects (every label is 0): an instance model learns from labelled "
                             "objects, 1..N in each image (0 is background).")
        dims = model.spatial_dims
        spacing = pixel_sizes(cfg.pixel_size, sources, fallback=model.pixel_size)
        anisotropic = [s for s in spacing if not np.isclose(s[-1], s[-2], rtol=0.01)]
        if anisotropic and isinstance(cfg.augment, str) and cfg.augment == "default":
            raise ValueError(f"`pixel_size` {anisotropic[0]} differs between Y and X, and the default `augment` turns "
                             f"the Y–X plane by 90° (which would swap them): pass augment='none' or a list of "
                             f"transforms without turns.")
        model = with_classes(model, decoder.channels, list(decoder.class_names))
        model.instance = decoder.settings()
        model.pixel_size = [float(v) for v in np.median(np.asarray(spacing), axis=0)]
        self.decoder = decoder
        self.spacing_range = (np.min(spacing, axis=0), np.max(spacing, axis=0))

        targets = [target_source(s, decoder, size) for s, size in zip(sources, spacing)]
        self.truth = {id(t): s for t, s in zip(targets, sources)}
        items = make_items(targets)
        patch = check_patch(cfg.patch, dims, model.size_divisor, items)
        train_items, self.val_items = split_items(items, cfg.val_fraction, patch, rng)
        channels = decoder.channels
        self.preprocess = PerImagePreprocessing(model.preprocessing, targets, [2 * p for p in patch])
        self.sampler = PatchSampler(train_items, patch, self.preprocess, channels, cfg.augment, seed=cfg.seed)
        self.validation_regions = validation_patches(self.val_items, patch, self.preprocess, channels,
                                                     _MAX_VAL_PATCHES[dims], seed=cfg.seed)
        self.input_size = patch
        self.batch_size = int(cfg.batch_size or _DEFAULT_BATCH[dims])
        self.class_names = ["background", "f1@0.5", "mean_ap"]  # the metric's columns (F1 and mean AP of objects)
        self.data_summary = (f"{len(train_items)} training image(s), {len(self.val_items)} held out; targets of the "
                             f"{decoder.name!r} decoder ({channels} classes)")
        self.model = model
        return model

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.sampler.batch(batch_size)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_criterion", None) is None:
            from segarch.training.losses import SegmentationLoss

            self._criterion = SegmentationLoss(self.config.loss, self.decoder.channels)
        return self._criterion(logits, target, mask)

    # ------------------------------------------------------------------------------------------ validation

    @property
    def validation_size(self) -> int:
        return len(self.val_items)

    def validate(self, net: torch.nn.Module, device: torch.device) -> Validation:
        """The loss on held-out patches, and F1@0.5 and mean AP of the held-out objects, decoded at the best of
        a few seed thresholds (which the model then carries, so a checkpoint decodes as it was validated)."""
        loss = self._patch_loss(net, device) if self.validation_regions else float("nan")
        truths, probabilities = self._held_out_probabilities(net, device)
        threshold, scores = self._tune(truths, probabilities, _SEEDS)
        self.model.instance = get_decoder(self.decoder, seed_threshold=threshold).settings()
        return Validation(loss, [float("nan"), scores.f1(0.5), scores.mean_ap], scores.f1(0.5))

    def _patch_loss(self, net: torch.nn.Module, device: torch.device) -> float:
        total = 0.0
        with torch.inference_mode():
            for count, x, y, m in self.validation_batches(device):
                total += float(self.loss(net(x), y, m)) * count
        return total / len(self.validation_regions)

    def _held_out_probabilities(self, net: torch.nn.Module, device: torch.device
                                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The held-out images' instance labels and the network's class probabilities over them, through
        ``segarch.predict`` (whole images; held-out patches when they are too large), both outside the
        annotated pixels set to 0."""
        channels = self.decoder.channels
        whole = sum(float(np.prod(it.shape)) for it in self.val_items) <= _WHOLE_IMAGE_VAL_VOXELS
        if whole:
            regions = [(it, read_region(it, [b.start for b in it.bounds], it.shape, preprocess=self.preprocess,
                                        num_classes=channels)) for it in self.val_items]
        else:
            regions = [(self._item_of(r), r) for r in self.validation_regions]
        plain = dataclasses.replace(self.model, network=net, preprocessing=[])
        divisor = self.model.size_divisor
        truths, probabilities = [], []
        for item, region in regions:
            shape = region.image.shape[1:]
            tile = tuple(min(2 * p, -(-s // divisor) * divisor) for p, s in zip(self.input_size, shape))
            p = np.asarray(predict(plain, region.image, axes=plain.axes, tile=tile, batch_size=self.batch_size,
                                   device=str(device), output="probabilities"))
            box = tuple(slice(o, min(o + s, b.stop)) for o, s, b in zip(region.origin, shape, item.bounds))
            truth = np.asarray(compute_here(self.truth[id(item.source)].labels[item.index + box]))
            truth = np.pad(truth, [(0, s - t) for s, t in zip(shape, truth.shape)])  # a padded patch
            background = np.zeros_like(p)
            background[0] = 1.0
            truths.append(np.where(region.mask, truth, 0))
            probabilities.append(np.where(region.mask[None], p, background))
        return truths, probabilities

    def _item_of(self, region) -> Item:
        """The held-out item a validation patch was read from (the one whose bounds hold its origin)."""
        for item in self.val_items:
            if all(b.start <= o < b.stop for b, o in zip(item.bounds, region.origin)):
                return item
        raise AssertionError("a validation patch outside the held-out images")

    def _tune(self, truths, probabilities, seeds) -> tuple[float, Any]:
        """The seed threshold with the best F1@0.5 (ties: the better mean AP, then the middle one) and its scores."""
        best = None
        for threshold in seeds:
            decoder = get_decoder(self.decoder, seed_threshold=threshold)
            scores = match_many(truths, [decoder.decode(p) for p in probabilities])
            key = (round(scores.f1(0.5), 6), round(scores.mean_ap, 6), -abs(threshold - 0.55))
            if best is None or key > best[0]:
                best = (key, threshold, scores)
        return best[1], best[2]

    def final_validation(self, model: Model, trained: bool) -> tuple[dict[str, Any], str]:
        """Tune the seed threshold finely on the held-out images and measure the objects with it."""
        if not (trained and self.val_items):
            model.instance = self.decoder.settings()
            return {"object_f1": None, "mean_ap": None, "instance": dict(model.instance)}, ""
        self.model = model
        truths, probabilities = self._held_out_probabilities(model.network.eval(), torch.device("cpu"))
        threshold, scores = self._tune(truths, probabilities, _FINE_SEEDS)
        model.instance = get_decoder(self.decoder, seed_threshold=threshold).settings()
        summary = scores.summary()
        values = {"object_f1": summary["f1@0.5"], "mean_ap": summary["mean_ap"], "objects": summary,
                  "instance": dict(model.instance)}
        low, high = self.spacing_range
        size = "×".join(f"{v:g}" for v in model.pixel_size)
        spread = "" if np.allclose(low, high) else (" (from " + "×".join(f"{v:.3g}" for v in low) + " to "
                                                   + "×".join(f"{v:.3g}" for v in high) + ")")
        sentence = (f"Pixel size {size}{spread}. Held-out objects ({summary['n_true']}), decoded by the "
                    f"{self.decoder.name!r} decoder at seed threshold {threshold:g} (tuned on them): F1@0.5 "
                    f"{summary['f1@0.5']:.3f} (precision {summary['precision@0.5']:.3f}, recall "
                    f"{summary['recall@0.5']:.3f}), mean AP {summary['mean_ap']:.3f}.")
        return values, sentence

