"""Training tasks: what a model learns from, how its examples are drawn, and what validates it.

The training loop (:mod:`segarch.training.loop`) is one for every kind of model: it resolves the model to
start from, steps the optimiser, validates every ``val_every`` steps, keeps the best weights, writes
checkpoints and the log, and yields :class:`~segarch.training.loop.TrainEvent` objects. Everything that
differs between kinds of training lives in a :class:`TrainingTask`:

- :class:`segarch.training.semantic.SemanticTask` (``"semantic"``): every pixel's class, from patches;
- :class:`segarch.training.interactive.ExtremePointTask` (``"interactive"``): DEXTR models, from one
  example per labelled object, with jittered extreme points.

A task is chosen by name (``segarch.train(..., task="semantic")``) or, by default, by the model
(:func:`task_for`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np
import torch

from segarch import zoo
from segarch.training.config import TrainConfig
from segarch.training.losses import SegmentationLoss
from segarch.training.metrics import dice_per_class, mean_foreground_dice

if TYPE_CHECKING:
    from segarch.models.model import Model
    from segarch.training.data import Region, Source
    from segarch.zoo import ModelCard

__all__ = ["TrainingTask", "Validation", "register_task", "task_for", "task_names", "trainable_tasks"]


@dataclass(frozen=True)
class Validation:
    """One validation of the held-out examples.

    Attributes:
        loss: the task's loss on them.
        per_class: the task's metric per class, background first (NaN where a class is absent).
        score: the one number that picks the best weights (higher is better), e.g. the mean foreground Dice.
    """

    loss: float
    per_class: list[float]
    score: float


class TrainingTask(ABC):
    """One kind of training, for the loop to run. A new task (instance segmentation, say) is a new module
    with a subclass registered by :func:`register_task`; the loop does not change.

    What a task implements:

    - ``name`` (what ``task=`` says) and ``architectures`` (the zoo tasks, :data:`segarch.zoo.TASKS`, of the
      networks it trains); :meth:`claims` when it is the default for a model (by default: when the network's
      zoo task is in ``architectures``);
    - :meth:`check_config`: reject the options that do not apply to it (called on construction);
    - :meth:`new_model`: a fresh zoo network for it (e.g. 3 classes background/interior/boundary) and
      :meth:`image_channels` (the channels of the image a model reads, e.g. ``in_channels - 1`` when a
      heat map is added);
    - :meth:`prepare`: read the sources, split off held-out data, build the sampler, and set
      ``input_size`` (the example's spatial size), ``batch_size`` and ``class_names``; it returns the model
      with the task's head (and anything it must save with it, such as a crop recipe);
    - :meth:`batch`: ``(inputs, targets, masks)`` tensors for one step; targets are whatever :meth:`loss`
      reads (class maps here, or e.g. distance maps), transformed with the inputs by any augmentation;
    - :meth:`loss` (default: ``config.loss`` on class maps, :class:`~segarch.training.losses.SegmentationLoss`)
      and :meth:`validate` (default: the loss and Dice per class on ``self.validation_regions``; a task
      with another metric, such as F1 at IoU 0.5 on instances, overrides it and sets ``metric``);
    - :meth:`final_validation`: the measures on whole held-out data at the end (added to
      ``model.validation``) and a sentence for the model's description.

    Attributes set by :meth:`prepare`: ``input_size``, ``batch_size``, ``class_names`` (the metric's classes),
    ``validation_regions`` (for the default :meth:`validate`) and ``data_summary`` (a line for the log).
    """

    #: The name ``task=`` takes.
    name: ClassVar[str]
    #: The zoo tasks (:data:`segarch.zoo.TASKS`) of the networks it trains.
    architectures: ClassVar[tuple[str, ...]]
    #: Other names ``task=`` may give it, for its architectures (a detector trained with ``task="instance"``).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: The validation metric, as the log and the messages name it; ``metric_key`` prefixes its CSV columns.
    metric: ClassVar[str] = "Dice"
    metric_key: ClassVar[str] = "dice"
    #: What one training example is called in the model's description ("patch", "object crop").
    example: ClassVar[str] = "patch"
    #: Whether ``adapt_to`` (unlabelled target images, :mod:`segarch.training.adaptation`) applies: the task's
    #: inputs are image patches alone, as target images are.
    adapts: ClassVar[bool] = False
    #: Whether ``thing_classes`` and ``label_divisor`` (panoptic labels, :mod:`segarch.training.panoptic`) apply.
    panoptic_labels: ClassVar[bool] = False

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.input_size: tuple[int, ...] = ()
        self.batch_size: int = 1
        self.class_names: list[str] = []
        self.validation_regions: Sequence[Region] = []
        self.data_summary = ""
        if not self.panoptic_labels:
            for option in ("thing_classes", "label_divisor"):
                if getattr(config, option) is not None:
                    raise ValueError(f"`{option}` applies to panoptic training (task='panoptic') only, not to "
                                     f"{self.name!r} training; leave it unset.")
        self.check_config()

    @classmethod
    def claims(cls, card: ModelCard, model: Model | None) -> bool:
        """Whether this task trains ``model`` (a network of zoo card ``card``; ``None`` for a new one) when no
        ``task`` is named. Tasks are asked in reverse order of registration: a later, more specific task
        (one that trains U-Nets on instance targets, say) claims only the models it made."""
        return card.task in cls.architectures

    def check_config(self) -> None:
        """Raise a ``ValueError`` for an option of ``self.config`` that does not apply to this task."""

    def read_labels(self, labels: Any) -> Any:
        """``labels`` as given to ``segarch.train``, in the form the task's sources read (default: as they are;
        the panoptic task turns ``(class_labels, instance_labels)`` pairs into panoptic ids)."""
        return labels

    def image_channels(self, model: Model) -> int:
        """The channels of the image ``model`` reads (its input channels, unless the task adds some)."""
        return model.in_channels

    @abstractmethod
    def new_model(self, card: ModelCard, spatial_dims: int, channels: int) -> Model:
        """A fresh, untrained network of architecture ``card`` for images of ``channels`` channels, built
        with ``self.config.options``."""

    @abstractmethod
    def prepare(self, model: Model, sources: Sequence[Source], rng: np.random.Generator) -> Model:
        """Get the data ready (split, sampler, held-out examples) and return the model to train: a copy of
        ``model`` with the task's head and classes."""

    @abstractmethod
    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step's ``(inputs (B, C, *size), targets, masks (B, 1, *size))``: masks are 1 where a pixel counts."""

    def forward(self, net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        """What the network makes of a batch, for :meth:`loss` (default: ``net(x)``; a detector also reads the
        targets)."""
        return net(x)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The training loss (default: ``config.loss`` on class targets ``(B, 1, *size)``, masked)."""
        if getattr(self, "_criterion", None) is None:
            self._criterion = SegmentationLoss(self.config.loss, len(self.class_names))
        return self._criterion(logits, target, mask)

    @property
    def validation_size(self) -> int:
        """How many held-out examples each validation reads (0: no validation)."""
        return len(self.validation_regions)

    def validation_batches(self, device: torch.device):
        """``self.validation_regions`` as batches on ``device``: ``(count, images, targets, masks)``, the targets and
        masks with a channel axis (call it under ``torch.inference_mode()``)."""
        regions = self.validation_regions
        for i in range(0, len(regions), self.batch_size):
            chunk = regions[i: i + self.batch_size]
            x = torch.from_numpy(np.stack([r.image for r in chunk])).to(device)
            y = torch.from_numpy(np.stack([r.target for r in chunk]))[:, None].to(device)
            m = torch.from_numpy(np.stack([r.mask for r in chunk]))[:, None].float().to(device)
            yield len(chunk), x, y, m

    def validate(self, net: torch.nn.Module, device: torch.device) -> Validation:
        """The loss and the Dice per class (of the arg-max class map) on ``self.validation_regions``."""
        regions = self.validation_regions
        losses, preds = [], []
        with torch.inference_mode():
            for count, x, y, m in self.validation_batches(device):
                logits = net(x)
                losses.append(float(self.loss(logits, y, m)) * count)
                preds.append(logits.argmax(1).cpu().numpy())
        pred = np.concatenate([p.reshape(-1) for p in preds])
        target = np.concatenate([r.target.reshape(-1) for r in regions])
        keep = np.concatenate([r.mask.reshape(-1) for r in regions])
        dice = dice_per_class(pred, target, keep, num_classes=len(self.class_names))
        return Validation(sum(losses) / len(regions), dice, mean_foreground_dice(dice))

    def final_validation(self, model: Model, trained: bool) -> tuple[dict[str, Any], str]:
        """Measures of the trained ``model`` on whole held-out data (``trained``: any step was taken), for
        ``model.validation``, and a sentence for its description (may be empty)."""
        return {}, ""


_TASKS: dict[str, type[TrainingTask]] = {}


def register_task(cls: type[TrainingTask]) -> type[TrainingTask]:
    """Class decorator: make ``cls`` a training task, named ``cls.name``."""
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise RuntimeError(f"training task {cls.name!r} is registered twice")
    _TASKS[cls.name] = cls
    return cls


def task_names() -> list[str]:
    """The registered training tasks' names, in order of registration."""
    return list(_TASKS)


def trainable_tasks() -> tuple[str, ...]:
    """The zoo tasks whose networks train here (e.g. ``("semantic", "interactive")``)."""
    found: list[str] = []
    for cls in _TASKS.values():
        found += [t for t in cls.architectures if t not in found]
    return tuple(found)


def task_for(name: str | None, card: ModelCard, model: Model | None = None) -> type[TrainingTask]:
    """The task that trains ``model`` (zoo card ``card``; ``None`` for a new network): the one named, or the
    last registered one that :meth:`~TrainingTask.claims` it.

    Raises:
        ValueError: an unknown task name, or a network no task trains.
    """
    if name is not None:
        if name not in _TASKS:
            raise ValueError(f"`task` must be one of {tuple(_TASKS)} or None, got {name!r}.")
        cls = _TASKS[name]
        alias = [t for t in _TASKS.values() if name in t.aliases and card.task in t.architectures]
        if card.task not in cls.architectures and alias:
            return alias[0]
        if card.task not in cls.architectures:
            raise ValueError(f"`task`={name!r} trains {' or '.join(cls.architectures)} architectures, not "
                             f"{card.name!r} ({card.task}).")
        return cls
    for cls in reversed(list(_TASKS.values())):
        if cls.claims(card, model):
            return cls
    kinds = " and ".join(trainable_tasks())
    if model is not None:
        raise ValueError(f"`model` is a {card.task} model ({model.arch!r}); training supports {kinds} models.")
    names = [n for task in trainable_tasks() for n in zoo.names(task=task)]
    raise ValueError(f"`model` {card.name!r} is a {card.task} architecture; training supports {kinds} "
                     f"architectures: {', '.join(names)}.")
