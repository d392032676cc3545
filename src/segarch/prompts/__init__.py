"""Extreme-point prompts (DEXTR, Maninis et al. 2018, arXiv:1711.09081): click an object's extreme points,
get its mask, in 2D (4 points) and 3D (6 points).

Examples::

    >>> from segarch import prompts, pretrained
    >>> model = pretrained.load("dextr_light")
    >>> mask = prompts.segment_from_points(model, image, prompts.extreme_points(true_mask))
    >>> crop_mask, offset = prompts.segment_from_points(model, huge_dask_image, points, return_crop=True)

Modules: :mod:`~segarch.prompts.points` (extreme points, point checks), :mod:`~segarch.prompts.recipe`
(crop, resizing, heat map), :mod:`~segarch.prompts.segment` (:func:`segment_from_points`),
:mod:`~segarch.prompts.data` (training pairs from instance labels), :mod:`~segarch.prompts.training`
(:func:`fine_tune` on your instance labels), :mod:`~segarch.prompts.synthetic` (generated scenes of varied
objects), :mod:`~segarch.prompts.evaluate` (IoU and latency on fresh objects).
"""

from segarch.prompts.data import training_pairs
from segarch.prompts.points import check_points, extreme_points, needed_points
from segarch.prompts.recipe import DEFAULTS, PromptSettings
from segarch.prompts.segment import segment_from_points
from segarch.prompts.synthetic import object_scene
from segarch.prompts.training import fine_tune

__all__ = ["extreme_points", "check_points", "needed_points", "segment_from_points", "training_pairs", "fine_tune",
           "object_scene", "PromptSettings", "DEFAULTS"]
