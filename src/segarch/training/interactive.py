"""The extreme-point task: DEXTR models learn from instance labels, one example per labelled object.

DEXTR is trained on objects, not on image patches (Maninis et al. 2018, Sec. 3): each object's extreme
points, jittered as a user's clicks would be, give the crop and the heat map; the target is the object's
mask in the resized crop (:mod:`segarch.training.objects`). The held-out objects are validated by the
Dice of their crops during training and, at the end, by the IoU of
:func:`segarch.prompts.segment_from_points` from their exact extreme points at full resolution.

Also here: :func:`fine_tune` (:func:`segarch.train` with an extreme-point model's defaults) and
:func:`training_pairs` (a fixed set of examples, to inspect).

Examples::

    >>> model = segarch.pretrained.load("dextr_light.objects2d")
    >>> tuned = fine_tune(model, [image], [instance_labels], steps=200)   # your objects, jittered points
    >>> tuned.validation["object_iou"]                                    # held-out objects, full resolution
    >>> inputs, targets = training_pairs(images, instance_labels, spatial_dims=2)
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import torch

from segarch.models.model import Model
from segarch.prompts.recipe import DEFAULTS, PromptSettings
from segarch.prompts.segment import resolve_prompt_model, settings_for
from segarch.training.corrections import simulate_corrections
from segarch.training.data import Source, as_sources
from segarch.training.finetune import with_classes
from segarch.training.loop import train
from segarch.training.objects import (
    ObjectCrop, ObjectSampler, object_crops, object_iou, object_validation, split_objects,
)
from segarch.training.task import TrainingTask, register_task
from segarch.zoo import ModelCard

__all__ = ["ExtremePointTask", "fine_tune", "training_pairs", "with_corrections"]

_DEFAULT_OBJECT_BATCH = {2: 16, 3: 8}
_MAX_VAL_OBJECTS = 256
_CLASSES = ["background", "object"]


@register_task
class ExtremePointTask(TrainingTask):
    """Extreme-point (interactive, DEXTR) models: the image's channels + a heat map in, background/object out."""

    name = "interactive"
    architectures = ("interactive",)
    example = "object crop"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.sampler: ObjectSampler | None = None
        self.val_objects: list[ObjectCrop] = []
        self.network: torch.nn.Module | None = None  # the network in training: it simulates corrections
        self.settings: PromptSettings | None = None
        self.rng = np.random.default_rng(config.seed)

    def check_config(self) -> None:
        cfg = self.config
        if cfg.mask is not None:
            raise ValueError("`mask` applies to semantic models only: an extreme-point model trains on every "
                             "labelled object, and nothing else.")
        if cfg.num_classes not in (None, 2):
            raise ValueError(f"`num_classes` of an extreme-point model is 2 (background, object), "
                             f"got {cfg.num_classes!r}.")
        if cfg.decoder is not None or cfg.pixel_size is not None:
            name = "decoder" if cfg.decoder is not None else "pixel_size"
            raise ValueError(f"`{name}` does not apply to extreme-point models (each object's crop is resized to "
                             f"the model's input).")
        if not isinstance(cfg.augment, str) or cfg.augment not in ("default", "none"):
            raise ValueError(f"`augment` of an extreme-point model must be 'default' (flips, rotations) or 'none', "
                             f"got {cfg.augment!r}.")

    def image_channels(self, model: Model) -> int:
        # The last input channels are the heat map (and, with corrections, the clicks' maps and previous mask).
        return model.in_channels - settings_for(model).guidance_channels

    def new_model(self, card: ModelCard, spatial_dims: int, channels: int) -> Model:
        return Model.from_zoo(card.name, spatial_dims=spatial_dims, in_channels=channels + 1, out_channels=2,
                              class_names=list(_CLASSES), **dict(self.config.options or {}))

    def prepare(self, model: Model, sources: Sequence[Source], rng: np.random.Generator) -> Model:
        cfg = self.config
        model = with_classes(model, 2, cfg.class_names or list(_CLASSES))
        settings = settings_for(model)
        size = (settings.size,) * model.spatial_dims
        if cfg.patch is not None and tuple(np.broadcast_to(np.asarray(cfg.patch), (model.spatial_dims,))) != size:
            raise ValueError(f"`patch` of an extreme-point model is its input size {size} (each object's crop is "
                             f"resized to it), got {cfg.patch!r}; leave it unset.")
        model.prompt = dataclasses.asdict(settings)  # saved with the model: inference crops the same way
        self.settings = settings
        self.network = model.network if settings.corrections else None
        objects = object_crops(sources, settings, jitter=cfg.jitter)
        train_objects, val_objects = split_objects(objects, cfg.val_fraction, rng)
        self.sampler = ObjectSampler(train_objects, settings, jitter=cfg.jitter, augment=cfg.augment == "default",
                                     seed=cfg.seed)
        self.val_objects = val_objects[:_MAX_VAL_OBJECTS]
        self.validation_regions = object_validation(self.val_objects, settings, jitter=cfg.jitter, seed=cfg.seed)
        self.input_size = size
        self.batch_size = int(cfg.batch_size or _DEFAULT_OBJECT_BATCH[model.spatial_dims])
        self.class_names = list(model.class_names)
        self.data_summary = f"{len(self.sampler.objects)} training object(s), {len(self.validation_regions)} held out"
        return model

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, m = self.sampler.batch(batch_size)
        if self.network is not None:
            x = simulate_corrections(self.network, x, y, self.rng, self.settings)
        return x, y, m

    def final_validation(self, model: Model, trained: bool) -> tuple[dict[str, Any], str]:
        iou = object_iou(model, self.val_objects) if self.val_objects and trained else None
        values = {"whole_image_dice": None, "object_iou": iou,
                  "objects": len(self.sampler.objects) + len(self.val_objects),
                  "held_out_objects": len(self.val_objects)}
        sentence = "" if iou is None else (f"Held-out objects ({len(self.val_objects)}), segmented from their exact "
                                           f"extreme points: mean IoU {iou:.3f}.")
        return values, sentence


def fine_tune(model, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *, steps: int = 200,
              batch_size: int | None = None, lr: float = 1e-3, jitter: float | None = None, seed: int = 0,
              out: str | None = None, progress: Callable[[Any], Any] | None = None) -> Model:
    """Fine-tune an extreme-point model on instance labels (each object becomes an example with jittered points).

    Args:
        model: an interactive :class:`segarch.Model` (e.g. ``pretrained.load("dextr_light.objects2d")``), a
            model file or shipped weights' name; it is copied, not changed.
        images: images ``(*spatial)`` or ``(C, *spatial)`` (arrays, TIFF/Zarr paths, as :func:`segarch.train`).
        labels: their instance labels (0 = background, one id per object).
        steps, batch_size, lr, jitter, seed, out, progress: as in :func:`segarch.train`.

    Returns:
        The fine-tuned copy; ``model.validation["object_iou"]`` is the held-out objects' mean IoU.
    """
    model = resolve_prompt_model(model)
    if model.task != "interactive":
        raise ValueError(f"`model` must be an extreme-point (interactive) model, got a {model.task} "
                         f"{model.arch!r}; use segarch.train for it.")
    return train(model, images, labels, steps=steps, batch_size=batch_size, lr=lr, jitter=jitter, seed=seed,
                 out=out, progress=progress)


def with_corrections(model) -> Model:
    """A copy of an extreme-point model that also takes corrective clicks and the previous mask (three more input
    channels, see :class:`segarch.prompts.PromptSettings`), to fine-tune with :func:`segarch.train`, which then
    simulates the clicks (:mod:`segarch.training.corrections`).

    The new channels' weights in the first convolution start at zero, so before any training the copy answers
    exactly as ``model`` does, and with 0 corrections it keeps doing so as far as training allows.
    """
    model = copy.deepcopy(resolve_prompt_model(model))
    settings = settings_for(model)
    if settings.corrections:
        return model
    for parent in model.network.modules():
        for name, child in parent.named_children():
            if isinstance(child, (torch.nn.Conv2d, torch.nn.Conv3d)) and child.in_channels == model.in_channels:
                wider = type(child)(child.in_channels + 3, child.out_channels, child.kernel_size, child.stride,
                                    child.padding, child.dilation, child.groups, child.bias is not None,
                                    child.padding_mode)
                with torch.no_grad():
                    wider.weight.zero_()
                    wider.weight[:, :child.in_channels] = child.weight
                    if child.bias is not None:
                        wider.bias.copy_(child.bias)
                setattr(parent, name, wider.to(child.weight.device, child.weight.dtype))
                model.in_channels += 3
                model.prompt = dataclasses.asdict(dataclasses.replace(settings, corrections=True))
                return model
    raise ValueError(f"`model` {model.arch!r}: no first convolution taking its {model.in_channels} input channels "
                     "was found to widen.")


def training_pairs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *, spatial_dims: int = 2,
                   settings: PromptSettings | None = None, jitter: float | None = None, min_pixels: int = 12,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One example per object of every image, as :func:`segarch.train` draws them (with fixed jitter).

    Args:
        images: images ``(*spatial)`` or ``(C, *spatial)``.
        labels: instance labels of each image (0 = background).
        spatial_dims: 2 or 3.
        settings: the crop recipe (default: the light model's).
        jitter: how far (pixels) each extreme point may move; default 2% of the object's largest extent,
            at least 1 pixel (the paper jitters its 512-pixel crops by about 5 pixels).
        min_pixels: smaller objects are skipped.
        seed: random seed of the jitter.

    Returns:
        ``(inputs, targets)``: float32 ``(N, C + 1, *size)`` and uint8 ``(N, *size)``.
    """
    settings = settings or DEFAULTS["dextr_light"][spatial_dims]
    sources = as_sources(list(images), list(labels), axes=None, mask=None, spatial_dims=spatial_dims,
                         in_channels=None)
    objects = object_crops(sources, settings, jitter=jitter, min_pixels=min_pixels)
    regions = object_validation(objects, settings, jitter=jitter, seed=seed)
    return np.stack([r.image for r in regions]), np.stack([r.target for r in regions]).astype(np.uint8)
