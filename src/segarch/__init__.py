"""segarch: segmentation architectures, model files and (soon) tiled inference, with no GUI.

Public API::

    segarch.zoo.names(), segarch.zoo.card(name), segarch.zoo.create(name, ...)
    segarch.Model, segarch.save_model(model, path), segarch.load_model(path)
    segarch.predict(model, image, ...)   # tiled inference over images of any size

Attributes load lazily so ``import segarch`` stays cheap (the CLI and napari start fast).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["Model", "save_model", "load_model", "zoo", "pretrained", "io", "prompts", "instances", "train", "predict", "PredictionCancelled", "__version__"]

_LAZY = {
    "Model": ("segarch.model", "Model"),
    "save_model": ("segarch.model_file", "save_model"),
    "load_model": ("segarch.model_file", "load_model"),
    "zoo": ("segarch.zoo", None),
    "pretrained": ("segarch.pretrained", None),
    "io": ("segarch.io", None),
    "prompts": ("segarch.prompts", None),
    "instances": ("segarch.instances", None),
    "train": ("segarch.training.loop", "train"),
    "predict": ("segarch.tiling", "predict"),
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
