"""``TrainConfig``: every option of :func:`segarch.train` and :func:`~segarch.training.train_iter`, checked once.

Both functions take the options as keywords (``segarch.train("unet", images, labels, steps=200)``) or as
one object (``segarch.train("unet", images, labels, TrainConfig(steps=200))``, with keywords overriding
it). What only one kind of training accepts (``jitter`` for extreme-point models, ``mask`` for semantic
ones) is checked by that task (:mod:`segarch.training.task`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from segarch.training.losses import LOSSES

__all__ = ["TrainConfig", "ADAPT_DISCRIMINATORS"]

#: The domain discriminators ``adapt_to`` offers (:mod:`segarch.training.adaptation` builds them).
ADAPT_DISCRIMINATORS = ("per-place", "spatial")


@dataclass(frozen=True, eq=False)
class TrainConfig:
    """How to train: the data's layout, the model's classes, the optimisation, validation and output.

    Args:
        axes: the image's axes, e.g. ``"YX"``, ``"CYX"``, ``"ZYX"``, ``"TYX"`` (default: from the shapes; a
            channel axis is found where image and labels differ).
        mask: which pixels are annotated: ``None`` (slices holding at least one label), ``True`` (all), or
            boolean arrays shaped like the labels (semantic models only).
        num_classes: output classes including background (default: the model's, or 2 for a new model);
            a model with another count gets a new, re-initialised head.
        class_names: one name per class (background first).
        options: architecture options for a new model, e.g. ``{"features": (16, 32, 64, 128)}``.
        patch: training patch size (one or per axis, multiples of the model's size divisor; default
            128×128 in 2D, 32×64×64 in 3D, or the image size when smaller).
        steps: optimisation steps.
        batch_size: patches per step (``None`` or 0: 8 in 2D, 2 in 3D; objects: 16 in 2D, 8 in 3D).
        val_fraction: the share of images (or, for one image, of its width) held out for validation.
        val_every: steps between validations (``None`` or 0: 20 per run, every 10 to 250 steps).
        loss: ``"dice_ce"`` (MONAI Dice + cross-entropy), ``"dice"``, ``"ce"`` or ``"focal"``.
        lr: AdamW's peak learning rate (warm-up over 5% of the steps, then cosine decay).
        weight_decay: AdamW's weight decay.
        augment: ``"default"`` (flips, 90° rotations, elastic, intensity, noise, blur; flips and rotations for
            extreme-point models), ``"none"`` or a list of MONAI transform configs (semantic models).
        jitter: extreme-point models only: how far (pixels) each extreme point may move from the true one,
            drawn afresh each time an object is used (default: 2% of the object's largest extent, at least 1).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        seed: random seed (patches, augmentation, initial weights of a new model).
        out: a ``.safetensors`` path: the best model is saved there at each improvement and at the end,
            with ``NAME.csv`` (the log) and ``NAME.png`` (loss and validation metric) beside it.
        overwrite: replace an existing ``out`` (and its log and plot); without it an existing file is refused
            before training starts (:mod:`segarch.destinations`).
        task: the kind of training (:func:`segarch.training.task.task_names`): ``None`` picks the model's
            own (``"semantic"`` for a semantic network, ``"interactive"`` for an extreme-point one, ``"instance"``
            for an instance model); ``"instance"`` makes a zoo network an instance model (one label per object).
        pixel_size: the images' pixel size per spatial axis (``(Z, Y, X)`` or ``(Y, X)``, any unit), one for all
            images or a list with one per image (default: each file's metadata where it says, else the model's,
            else 1). Recorded with the model as its training pixel size; instance targets are measured with it
            (a Z step twice the XY pixel counts twice).
        decoder: instance models only: what the network learns and how its output becomes objects:
            ``"distance"`` (the default: background + 4 classes of distance to the object's edge), ``"boundary"``,
            settings such as ``{"decoder": "distance", "bins": 6}``, or a decoder of :mod:`segarch.instances`.
        adapt_to: unlabelled images of the kind the model must work on (another microscope, stain or sensor),
            given like ``images`` (an array, a list, a TIFF/Zarr path or a folder) with the same axes and
            channels: the network is aligned to them while it trains on the labelled images (MADAN's
            feature-level adversarial alignment, :mod:`segarch.training.adaptation`). Semantic and instance
            models.
        adapt_weight: the weight of the adversarial alignment loss against the supervised loss (``adapt_to`` only;
            default 0.1, MADAN's ``lambda_g``, with the per-place discriminator, 0.01 with the spatial one).
        adapt_discriminator: ``adapt_to`` only: the domain discriminator that judges the network's class
            probabilities: ``"per-place"`` (MADAN's, 1×1 convolutions: each place on its own) or ``"spatial"``
            (AdaptSegNet's, 4×4 stride-2 convolutions: the layout of the outputs; patches of 32 px or more); default
            (``None``) per-place.
        thing_classes: panoptic models only (``task="panoptic"``): the class indices that have objects (default:
            every class but 0); the others are "stuff".
        label_divisor: panoptic models only: labels are panoptic ids ``class · label_divisor + instance``
            (default 1000, the COCO/Cityscapes convention), or pairs ``(class_labels, instance_labels)``.

    Raises:
        ValueError: an option outside what is allowed (the message names it, its value and what is allowed).

    Examples::

        >>> config = TrainConfig(steps=200, lr=3e-3, out="nuclei.safetensors")
        >>> model = segarch.train("unet", images, labels, config, options={"features": (8, 16, 32, 64)})
    """

    axes: str | None = None
    mask: Any = None
    num_classes: int | None = None
    class_names: Sequence[str] | None = None
    options: Mapping[str, Any] | None = None
    patch: int | Sequence[int] | None = None
    steps: int = 500
    batch_size: int | None = None
    val_fraction: float = 0.1
    val_every: int | None = None
    loss: str = "dice_ce"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    augment: Any = "default"
    jitter: float | None = None
    device: Any = "auto"
    seed: int = 0
    out: str | os.PathLike | None = None
    overwrite: bool = False
    task: str | None = None
    pixel_size: Any = None
    decoder: Any = None
    adapt_to: Any = None
    adapt_weight: float | None = None
    adapt_discriminator: str | None = None
    thing_classes: Sequence[int] | None = None
    label_divisor: int | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {LOSSES}, got {self.loss!r}.")
        if not _is_int(self.steps) or int(self.steps) < 1:
            raise ValueError(f"`steps` must be at least 1, got {self.steps!r}.")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"`lr` must be a positive number, got {self.lr!r}.")
        if (isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float))
                or not self.weight_decay >= 0):
            raise ValueError(f"`weight_decay` must be a number >= 0, got {self.weight_decay!r}.")
        if self.num_classes is not None and (not _is_int(self.num_classes) or int(self.num_classes) < 2):
            raise ValueError(f"`num_classes` must be at least 2 (background and one class), got {self.num_classes!r}.")
        for name in ("batch_size", "val_every"):  # None or 0: the default
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or int(value) < 0):
                raise ValueError(f"`{name}` must be at least 1 (or None for the default), got {value!r}.")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) or not (
                0.0 <= self.val_fraction < 1.0):
            raise ValueError(f"`val_fraction` must be in [0, 1), got {self.val_fraction!r}.")
        if self.jitter is not None and (isinstance(self.jitter, bool) or not isinstance(self.jitter, (int, float))
                                        or self.jitter < 0):
            raise ValueError(f"`jitter` must be a number of pixels >= 0 (or None: 2% of each object's size), "
                             f"got {self.jitter!r}.")
        if not _is_int(self.seed):
            raise ValueError(f"`seed` must be an integer, got {self.seed!r}.")
        if self.options is not None and not isinstance(self.options, Mapping):
            raise ValueError(f"`options` must be a dict of architecture options, got {type(self.options).__name__}.")
        if self.class_names is not None and (isinstance(self.class_names, str)
                                             or not all(isinstance(n, str) for n in self.class_names)):
            raise ValueError(f"`class_names` must be a list of names (background first), got {self.class_names!r}.")
        if self.out is not None and not str(self.out).endswith(".safetensors"):
            raise ValueError(f"`out` must be a '.safetensors' path, got {str(self.out)!r}.")
        if self.task is not None and not isinstance(self.task, str):
            raise ValueError(f"`task` must be a task name or None, got {self.task!r}.")
        if self.pixel_size is not None:
            _check_pixel_size(self.pixel_size)
        if self.thing_classes is not None and (not isinstance(self.thing_classes, (list, tuple)) or not all(
                _is_int(c) and int(c) >= 0 for c in self.thing_classes) or not len(self.thing_classes)):
            raise ValueError(f"`thing_classes` must be a list of class indices (integers >= 0), got "
                             f"{self.thing_classes!r}.")
        if self.label_divisor is not None and (not _is_int(self.label_divisor) or int(self.label_divisor) < 1):
            raise ValueError(f"`label_divisor` must be a positive integer, got {self.label_divisor!r}.")
        if self.adapt_weight is not None and (isinstance(self.adapt_weight, bool)
                                              or not isinstance(self.adapt_weight, (int, float))
                                              or not 0 < self.adapt_weight < math.inf):
            raise ValueError(f"`adapt_weight` must be a positive number, got {self.adapt_weight!r}.")
        if self.adapt_to is None:  # an option of the alignment alone must not be silently dropped
            for name in ("adapt_weight", "adapt_discriminator"):
                if getattr(self, name) is not None:
                    raise ValueError(f"`{name}`={getattr(self, name)!r} applies with `adapt_to` only (unlabelled "
                                     "images of the kind the model must work on); pass `adapt_to` or leave it out.")
        if self.adapt_discriminator is not None and self.adapt_discriminator not in ADAPT_DISCRIMINATORS:
            raise ValueError(f"`adapt_discriminator` must be one of {ADAPT_DISCRIMINATORS}, got "
                             f"{self.adapt_discriminator!r}.")

    @classmethod
    def build(cls, config: TrainConfig | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """``config`` (default: all defaults) with the options in ``overrides`` replacing its own.

        Raises:
            ValueError: an unknown option (the message lists the known ones), or a bad value.
        """
        if config is not None and not isinstance(config, TrainConfig):
            raise ValueError(f"`config` must be a segarch.training.TrainConfig or None, got {type(config).__name__}.")
        overrides = dict(overrides or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            import difflib

            close = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"Unknown training option(s) {', '.join(map(repr, unknown))}.{hint} "
                             f"Allowed: {', '.join(known)}.")
        if config is None:
            return cls(**overrides)
        return dataclasses.replace(config, **overrides) if overrides else config


def _check_pixel_size(value) -> None:
    """``pixel_size``: 2 or 3 positive finite numbers, or a list of such (one per image)."""
    def sizes_ok(v) -> bool:
        return (isinstance(v, (list, tuple)) and len(v) in (2, 3) and all(
            isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and x > 0 for x in v))

    if sizes_ok(value) or (isinstance(value, (list, tuple)) and value and all(sizes_ok(v) for v in value)):
        return
    raise ValueError(f"`pixel_size` must be the pixel size per spatial axis, (Z, Y, X) or (Y, X), every value a "
                     f"positive number, or a list with one of them per image; got {value!r}.")


def _is_int(value) -> bool:
    """A whole number (an int, a NumPy integer or a float such as ``200.0``), not a bool."""
    if isinstance(value, bool):
        return False
    try:
        return int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False
