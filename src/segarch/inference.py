"""``segarch.predict``: one entry point for every output of a model.

Labels and probabilities come from the tiling engine (:func:`segarch.tiling.predict`); instances need a
second pass, block-wise decoding, which :mod:`segarch.instances` owns on top of the engine. This module sits
above both so the engine never imports the instance package (imports only go down).
"""

from __future__ import annotations

import os
from typing import Any

from segarch.tiling import predict as predict_tiles

__all__ = ["predict"]


def predict(model: Any, image: Any, *, output: str = "labels", pixel_size: Any = None,
            instance_options: dict[str, Any] | None = None, **options: Any):
    if isinstance(model, (str, os.PathLike)):  # a shipped model's name or a model file, as the CLI takes them
        from segarch.models import resolve

        model = resolve(model, trained=True)
    if output == "panoptic":  # panoptic networks: heads (or per-tile fusions) tiled, objects grouped block by block
        from segarch.instances.panoptic_predict import panoptic_architecture, predict_panoptic

        if panoptic_architecture(model) is None:
            raise ValueError(_panoptic_refusal(model))
        return predict_panoptic(model, image, pixel_size=pixel_size, **options, **(instance_options or {}))
    if output == "instances":  # two passes (network, then block-wise decoding): segarch.instances owns them
        from segarch.instances.predict import predict_instances

        return predict_instances(model, image, pixel_size=pixel_size, **options, **(instance_options or {}))
    if instance_options is not None:
        raise ValueError(f"`instance_options` applies to `output`='instances' or 'panoptic' only, got "
                         f"`output`={output!r}.")
    return predict_tiles(model, image, output=output, pixel_size=pixel_size, **options)


def _panoptic_refusal(model: Any) -> str:
    """Why ``output='panoptic'`` is refused, for this ``model``: an instance-only model has no classes of stuff,
    a semantic one no objects."""
    from segarch import zoo

    network = getattr(model, "network", model)
    arch = getattr(model, "arch", None) or next(
        (c.name for c in zoo.cards() if c.builder is type(network)), type(network).__name__)
    task = zoo.card(arch).task if arch in zoo.names() else None
    from segarch.instances.panoptic_predict import PANOPTIC_DECODERS

    offered = ", ".join(repr(n) for n in sorted(PANOPTIC_DECODERS))
    start = f"`output`='panoptic' is offered for the panoptic networks ({offered}) only"
    if task == "panoptic":
        return f"{start}: `model` is {arch!r}, a panoptic architecture segarch.predict cannot tile yet."
    if task == "instance" or getattr(network, "is_detector", False) or _has_instance_decoder(model):
        return (f"{start}, and `model` ({arch!r}) is an instance-only model: it separates objects but predicts no "
                f"classes of stuff, so it has no panoptic output; use `output`='instances' (one id per object), or "
                f"a panoptic network (segarch.zoo.names('panoptic'): {', '.join(zoo.names('panoptic'))}).")
    return (f"{start}; `model` ({arch!r}) predicts classes per pixel: use `output`='labels', or 'instances' for an "
            f"instance model, or a panoptic network (segarch.zoo.names('panoptic'): "
            f"{', '.join(zoo.names('panoptic'))}).")


def _has_instance_decoder(model: Any) -> bool:
    """Whether ``output='instances'`` finds a decoder for ``model`` (its stored settings or its class names)."""
    from segarch.instances.predict import decoder_for

    try:
        decoder_for(model)
    except ValueError:
        return False
    return True


predict.__doc__ = (predict_tiles.__doc__ or "").replace("\n    Returns:", """
        instance_options: ``output="instances"``: ``decoder``, ``block``, ``halo``, ``min_size``, ``table``,
            ``return_report`` (see :func:`segarch.instances.predict_instances`). ``output="panoptic"`` (a
            Panoptic-DeepLab, DeeperLab or EfficientPS model: semantic classes and instance ids, a
            :class:`~segarch.instances.panoptic_predict.PanopticLabels`): ``thing_classes``, ``label_divisor``,
            ``decoder_options``, ``block``, ``halo``, ``min_size``, ``table``, ``return_report`` (see
            :func:`segarch.instances.panoptic_predict.predict_panoptic`).

    Returns:""", 1)
