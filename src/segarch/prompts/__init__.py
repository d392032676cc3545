"""Extreme-point prompts (DEXTR, Maninis et al. 2018, arXiv:1711.09081): click an object's extreme points,
get its mask, in 2D (4 points) and 3D (6 points). Inference only: training extreme-point models is
:func:`segarch.train` (:mod:`segarch.training.interactive`).

Examples::

    >>> from segarch import prompts, pretrained
    >>> model = pretrained.load("dextr_light.objects2d")
    >>> mask = prompts.segment_from_points(model, image, prompts.extreme_points(true_mask))
    >>> crop_mask, offset = prompts.segment_from_points(model, huge_dask_image, points, return_crop=True)
    >>> mask = prompts.segment_from_points(model, image, points, positive=[[30, 41]], previous=mask)  # a correction

Modules: :mod:`~segarch.prompts.points` (extreme points, point checks), :mod:`~segarch.prompts.recipe`
(crop, resizing, heat map), :mod:`~segarch.prompts.segment` (:func:`segment_from_points`),
:mod:`~segarch.prompts.voxels` (crops resampled to the model's training voxel size),
:mod:`~segarch.prompts.synthetic` (generated scenes of varied objects, volumes with thick slices),
:mod:`~segarch.prompts.clicks` (where a simulated corrective click goes), :mod:`~segarch.prompts.evaluate`
(IoU, latency and the clicks-to-IoU curve on fresh objects), :mod:`~segarch.prompts.propagation`
(:func:`propagate`: an object carried slice to slice through a stack), :mod:`~segarch.prompts.label_store`
(labels larger than memory in a Zarr store), :mod:`~segarch.prompts.label_levels` (its multiscale levels, kept
with level 0 box by box), :mod:`~segarch.prompts.edges` (does a mask outline an object?).

``prompts.fine_tune`` and ``prompts.training_pairs`` are deprecated aliases of
:func:`segarch.training.fine_tune` and :func:`segarch.training.training_pairs`.
"""

import importlib
import warnings

from segarch.prompts.points import check_points, extreme_points, needed_points
from segarch.prompts.recipe import DEFAULTS, PromptSettings
from segarch.prompts.propagation import PropagatedObject, propagate, propagation_steps
from segarch.prompts.segment import segment_from_points
from segarch.prompts.synthetic import object_scene

__all__ = ["extreme_points", "check_points", "needed_points", "segment_from_points", "object_scene",
           "PromptSettings", "DEFAULTS", "propagate", "propagation_steps", "PropagatedObject"]

#: Names that moved to segarch.training (prompts is inference only): old name → new home.
_MOVED = {"fine_tune": "segarch.training.interactive", "training_pairs": "segarch.training.interactive"}


def __getattr__(name: str):
    # Deprecated aliases, resolved on first use so that importing prompts never imports training.
    if name in _MOVED:
        warnings.warn(f"segarch.prompts.{name} moved to segarch.training.{name}; the alias will be removed in "
                      f"segarch 0.3.", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'segarch.prompts' has no attribute {name!r}")
