"""Fine-tuning: keep a trained network's weights while changing its number of classes.

The head is the set of tensors whose shapes depend on ``out_channels``; it is found for any zoo
architecture by building the network twice on the ``meta`` device (no memory, no compute) with
different class counts and comparing the state dicts, as :mod:`segarch.model_file` does to read
a class count off a state dict.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from segarch import zoo
from segarch.models.model import Model

__all__ = ["head_keys", "with_classes"]


def head_keys(model: Model) -> set[str]:
    """Names of the state-dict tensors whose shapes depend on the number of classes."""
    with torch.device("meta"):
        one, two = (zoo.create(model.arch, spatial_dims=model.spatial_dims, in_channels=model.in_channels,
                               out_channels=n, **model.options).state_dict() for n in (1, 2))
    return {k for k, v in one.items() if k in two and tuple(v.shape) != tuple(two[k].shape)}


def with_classes(model: Model, num_classes: int, class_names: Sequence[str] | None = None) -> Model:
    """A copy of ``model`` with ``num_classes`` outputs: every tensor kept except the re-initialised head.

    With the same class count the copy keeps all weights (only ``class_names`` may change).
    """
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be at least 2 (background and one class), got {num_classes}.")
    names = list(class_names) if class_names is not None else None
    if num_classes == model.out_channels:
        new = copy.deepcopy(model)
        if names is not None:
            new.class_names = names
            new.__post_init__()
        return new
    if names is None:
        old = list(model.class_names)
        names = old[:num_classes] + [f"class {i}" for i in range(len(old), num_classes)]
    new = Model.from_zoo(model.arch, spatial_dims=model.spatial_dims, in_channels=model.in_channels,
                         out_channels=num_classes, class_names=names, **model.options)
    head = head_keys(model)
    kept = {k: v for k, v in model.network.state_dict().items() if k not in head}
    missing, unexpected = new.network.load_state_dict(kept, strict=False)
    if set(missing) != head or unexpected:  # any other mismatch means the head was not what we thought
        raise ValueError(f"Cannot change the classes of {model.arch!r}: tensors {sorted(set(missing) ^ head)[:5]} "
                         f"{unexpected[:5]} do not match the new network.")
    new.axes, new.pixel_size = model.axes, model.pixel_size
    new.preprocessing = copy.deepcopy(model.preprocessing)
    new.description = model.description
    new.trained = False
    return new
