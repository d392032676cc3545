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
    if output == "instances":  # two passes (network, then block-wise decoding): segarch.instances owns them
        from segarch.instances.predict import predict_instances

        return predict_instances(model, image, pixel_size=pixel_size, **options, **(instance_options or {}))
    if instance_options is not None:
        raise ValueError(f"`instance_options` applies to `output`='instances' only, got `output`={output!r}.")
    return predict_tiles(model, image, output=output, pixel_size=pixel_size, **options)


predict.__doc__ = (predict_tiles.__doc__ or "").replace("\n    Returns:", """
        instance_options: ``output="instances"``: ``decoder``, ``block``, ``halo``, ``min_size``, ``table``,
            ``return_report`` (see :func:`segarch.instances.predict_instances`).

    Returns:""", 1)
