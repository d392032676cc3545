"""The model training starts from, the task that trains it, and the data sources it reads.

``model_or_name`` may be a :class:`segarch.Model` (copied), a shipped model's name (fine-tuned), a model
file, or a zoo architecture name (a new network, sized for the data by the task).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from segarch import pretrained, zoo
from segarch.model import Model
from segarch.model_file import load_model
from segarch.training.config import TrainConfig
from segarch.training.data import Source, as_sources
from segarch.training.task import TrainingTask, task_for

__all__ = ["starting_model", "is_model_file"]


def is_model_file(value: Any) -> bool:
    """Whether ``value`` names a model file (a path-like, a path with a separator or a model file suffix, or a file)."""
    if isinstance(value, os.PathLike):
        return True
    return isinstance(value, str) and (os.sep in value or "/" in value or value.endswith(
        (".safetensors", ".pt", ".pth", ".ckpt", ".bin")) or os.path.isfile(value))


def starting_model(model_or_name: Any, images: Any, labels: Any, config: TrainConfig
                   ) -> tuple[Model, list[Source], bool, TrainingTask]:
    """``(model, sources, fresh, task)``: the model to train (a copy, never the caller's object), the data it
    reads, whether it is a new network, and its training task (constructed with ``config``)."""
    if isinstance(model_or_name, Model):
        model = copy.deepcopy(model_or_name)
    elif isinstance(model_or_name, str) and model_or_name in pretrained.names() and (
            config.options is None or model_or_name not in zoo.names()):
        # A name that is both (``dextr_light``) is the shipped model, unless `options` asks for a new network.
        model = pretrained.load(model_or_name)  # fine-tune a shipped model
    elif is_model_file(model_or_name):
        model = load_model(model_or_name)
    elif isinstance(model_or_name, str):
        return _new_model(zoo.card(model_or_name), images, labels, config)  # raises with close names if unknown
    else:
        raise ValueError(f"`model` must be a zoo architecture name, a model file or a segarch.Model, "
                         f"got {type(model_or_name).__name__}.")
    if config.options:
        raise ValueError("`options` applies to a zoo architecture name only; a model file or Model keeps its own.")
    task = task_for(config.task, model.card, model)(config)
    sources = as_sources(images, labels, axes=config.axes, mask=config.mask, spatial_dims=model.spatial_dims,
                         in_channels=task.image_channels(model))
    return model, sources, False, task


def _new_model(card, images, labels, config: TrainConfig) -> tuple[Model, list[Source], bool, TrainingTask]:
    task = task_for(config.task, card, None)(config)
    sources = as_sources(images, labels, axes=config.axes, mask=config.mask, spatial_dims=None, in_channels=None)
    dims = sources[0].spatial_dims
    if dims not in card.spatial_dims:
        if 2 not in card.spatial_dims:
            raise ValueError(f"{card.name!r} builds in {card.spatial_dims}D only, the data is {dims}D.")
        dims = 2  # a 2D-only architecture trains on the Z-slices of volumes
        sources = as_sources(images, labels, axes=config.axes, mask=config.mask, spatial_dims=2, in_channels=None)
    channels = int(sources[0].image.shape[sources[0].n_stack])
    return task.new_model(card, dims, channels), sources, True, task
