"""Models: the :class:`Model`, model files, the weights that ship trained, and the catalogue that says which
model a user meant.

- :mod:`~segarch.models.model`: :class:`Model` (a network with its classes, axes and pre-processing) and
  :func:`as_model` (a bare ``torch.nn.Module`` wrapped at the door);
- :mod:`~segarch.models.files`: :func:`save_model`, :func:`load_model`, :func:`read_metadata` and the
  checks a model file must pass (:func:`check_metadata`: a model file never runs code);
- :mod:`~segarch.models.pretrained` (also ``segarch.pretrained``): the shipped weights, ``ARCH.TAG``;
- :mod:`~segarch.models.session`: this session's models (the napari Train dock adds them);
- :mod:`~segarch.models.bioimageio`: bioimage.io model packages read as Models (ONNX or state-dict weights);
- :mod:`~segarch.models.catalog`: :func:`parse`, :func:`resolve`, :func:`choices`, :func:`describe`: every
  reference (a zoo architecture, shipped weights, a session model, a model file) resolved in one place.

Examples::

    >>> from segarch import models
    >>> model = models.resolve("unet.nuclei2d")              # shipped weights of U-Net
    >>> fresh = models.resolve("unet", in_channels=3)         # a new network
    >>> [ref.label for ref in models.choices(task="semantic", kinds=("shipped",))]
    ['unet.nuclei2d (shipped, trained)', 'unet.nuclei3d (shipped, trained)']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what static tools see; at run time the names load lazily (below)
    from segarch.models import pretrained
    from segarch.models.catalog import KINDS, ModelInfo, ModelRef, choices, describe, is_model_file, parse, resolve
    from segarch.models.files import FORMAT, FORMAT_VERSION, check_metadata, load_model, read_metadata, save_model
    from segarch.models.model import Model, as_model
    from segarch.models.session import SESSION, SessionModels

__all__ = ["Model", "as_model", "save_model", "load_model", "read_metadata", "check_metadata", "FORMAT",
           "FORMAT_VERSION", "pretrained", "SESSION", "SessionModels", "KINDS", "ModelRef", "ModelInfo", "parse",
           "resolve", "choices", "describe", "is_model_file"]

# Lazy, as the ``segarch`` facade: the session store and the shipped models' names load without torch (the
# napari docks start fast); the Model and the catalogue import torch and the zoo on first use.
_HOME = {"Model": "model", "as_model": "model", "pretrained": None, "SESSION": "session", "SessionModels": "session",
         **{name: "files" for name in ("save_model", "load_model", "read_metadata", "check_metadata", "FORMAT",
                                       "FORMAT_VERSION")},
         **{name: "catalog" for name in ("KINDS", "ModelRef", "ModelInfo", "parse", "resolve", "choices", "describe",
                                         "is_model_file")}}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'segarch.models' has no attribute {name!r}")
    if _HOME[name] is None:
        return importlib.import_module(f"segarch.models.{name}")
    return getattr(importlib.import_module(f"segarch.models.{_HOME[name]}"), name)


def __dir__():
    return sorted(list(globals()) + list(_HOME))
