"""The model training starts from, the task that trains it, and the data sources it reads.

``model_or_name`` may be a :class:`segarch.Model` (copied) or a reference the model catalogue resolves
(:mod:`segarch.models.catalog`): a zoo architecture (a new network, sized for the data by the task),
shipped weights (``"unet.nuclei2d"``, fine-tuned), a session model or a model file.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from segarch import zoo
from segarch.models import catalog, pretrained
from segarch.models.model import Model
from segarch.training.config import TrainConfig
from segarch.training.data import Source, as_sources
from segarch.training.task import TrainingTask, task_for

__all__ = ["starting_model"]


def starting_model(model_or_name: Any, images: Any, labels: Any, config: TrainConfig
                   ) -> tuple[Model, list[Source], bool, TrainingTask]:
    """``(model, sources, fresh, task)``: the model to train (a copy, never the caller's object), the data it
    reads, whether it is a new network, and its training task (constructed with ``config``)."""
    if isinstance(model_or_name, Model):
        model = copy.deepcopy(model_or_name)
    elif isinstance(model_or_name, (str, catalog.ModelRef)) or catalog.is_model_file(model_or_name):
        ref = catalog.parse(model_or_name)
        if ref.kind == "zoo":
            _warn_if_it_meant_the_shipped_model(ref.name, config)
            return _new_model(zoo.card(ref.name), images, labels, config)
        model = catalog.resolve(ref)
        if ref.kind == "session":
            model = copy.deepcopy(model)  # the session keeps its own
    else:
        raise ValueError(f"`model` must be a zoo architecture name, shipped weights' name, a model file or a "
                         f"segarch.Model, got {type(model_or_name).__name__}.")
    if config.options:
        raise ValueError("`options` applies to a zoo architecture name only; a model file or Model keeps its own.")
    task = task_for(config.task, model.card, model)(config)
    labels = task.read_labels(labels)
    sources = as_sources(images, labels, axes=config.axes, mask=config.mask, spatial_dims=model.spatial_dims,
                         in_channels=task.image_channels(model))
    return model, sources, False, task


def _warn_if_it_meant_the_shipped_model(name: str, config: TrainConfig) -> None:
    # ``train("dextr_light")`` fine-tuned the shipped model before shipped weights were named ARCH.TAG.
    if config.options is None and pretrained.FORMER_NAMES.get(name) in pretrained.names():
        warnings.warn(f"`model`={name!r} names the architecture: a new network is trained. To fine-tune the shipped "
                      f"model (what this name meant before shipped weights were named ARCH.TAG), pass "
                      f"{pretrained.FORMER_NAMES[name]!r}; "
                      "pass `options` (even {}) to silence this.", FutureWarning, stacklevel=5)


def _new_model(card, images, labels, config: TrainConfig) -> tuple[Model, list[Source], bool, TrainingTask]:
    task = task_for(config.task, card, None)(config)
    labels = task.read_labels(labels)
    sources = as_sources(images, labels, axes=config.axes, mask=config.mask, spatial_dims=None, in_channels=None)
    dims = sources[0].spatial_dims
    if dims not in card.spatial_dims:
        if 2 not in card.spatial_dims:
            raise ValueError(f"{card.name!r} builds in {card.spatial_dims}D only, the data is {dims}D.")
        dims = 2  # a 2D-only architecture trains on the Z-slices of volumes
        sources = as_sources(images, labels, axes=config.axes, mask=config.mask, spatial_dims=2, in_channels=None)
    channels = int(sources[0].image.shape[sources[0].n_stack])
    return task.new_model(card, dims, channels), sources, True, task
