"""segarch: segmentation architectures, model files and tiled inference, with no GUI.

Public API::

    segarch.zoo.names(), segarch.zoo.card(name), segarch.zoo.create(name, ...)
    segarch.Model, segarch.save_model(model, path), segarch.load_model(path)
    segarch.models.resolve("unet.nuclei2d"), segarch.models.choices(task="semantic")   # the model catalogue
    segarch.pretrained.load("unet.nuclei2d")   # the models that ship trained
    segarch.predict(model, image, ...)   # tiled inference over images of any size
    segarch.train("unet", images, labels, ...)

Attributes load lazily so ``import segarch`` stays cheap (the CLI and napari start fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what static tools and IDEs follow; at run time the names load lazily (below)
    from segarch import instances, io, models, prompts, zoo
    from segarch.models import pretrained
    from segarch.models.files import load_model, save_model
    from segarch.models.model import Model
    from segarch.inference import predict
    from segarch.tiling import PredictionCancelled
    from segarch.training.loop import train

__version__ = "0.1.0"
__all__ = ["Model", "save_model", "load_model", "models", "zoo", "pretrained", "io", "prompts", "instances", "train",
           "predict", "PredictionCancelled", "__version__"]

_LAZY = {
    "Model": ("segarch.models.model", "Model"),
    "save_model": ("segarch.models.files", "save_model"),
    "load_model": ("segarch.models.files", "load_model"),
    "models": ("segarch.models", None),
    "zoo": ("segarch.zoo", None),
    "pretrained": ("segarch.models.pretrained", None),
    "io": ("segarch.io", None),
    "prompts": ("segarch.prompts", None),
    "instances": ("segarch.instances", None),
    "train": ("segarch.training.loop", "train"),
    "predict": ("segarch.inference", "predict"),
    "PredictionCancelled": ("segarch.tiling", "PredictionCancelled"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'segarch' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    return getattr(value, attr) if attr else value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
