"""Pre-processing kept with each model, as MONAI transform configs.

A model file stores its pre-processing in the ``_target_`` form that ``monai.bundle.ConfigParser``
instantiates, e.g. ``[{"_target_": "ScaleIntensityRangePercentiles", "lower": 1, ...}]``, so any
MONAI array transform (or a user's own, by its import path) can be recorded and re-applied.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

__all__ = ["DEFAULT_PREPROCESSING", "build_preprocessing", "check_preprocessing"]

#: Percentile normalisation of each channel to [0, 1], robust to outliers.
DEFAULT_PREPROCESSING: list[dict[str, Any]] = [
    {
        "_target_": "ScaleIntensityRangePercentiles",
        "lower": 1.0,
        "upper": 99.0,
        "b_min": 0.0,
        "b_max": 1.0,
        "clip": True,
        "channel_wise": True,
    }
]


def check_preprocessing(config: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate a pre-processing config (a JSON-serialisable list of ``{"_target_": ...}`` dicts)."""
    if isinstance(config, dict) or not isinstance(config, (list, tuple)):
        raise ValueError(f"`preprocessing` must be a list of MONAI transform configs, got {type(config).__name__}.")
    for i, item in enumerate(config):
        if not isinstance(item, dict) or "_target_" not in item:
            raise ValueError(f"`preprocessing[{i}]` must be a dict with a '_target_' key, got {item!r}.")
    try:
        json.dumps(list(config))
    except TypeError as err:
        raise ValueError(f"`preprocessing` must be JSON-serialisable: {err}") from None
    return [dict(item) for item in config]


def build_preprocessing(config: Sequence[dict[str, Any]]):
    """Instantiate a config into one callable ``f(array (C, *spatial)) -> float32 array``."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    config = check_preprocessing(config)
    try:
        transforms = ConfigParser({"transforms": config}).get_parsed_content("transforms", instantiate=True)
    except Exception as err:  # MONAI raises many types for a bad target or argument
        raise ValueError(f"`preprocessing` could not be instantiated by MONAI: {err}") from err
    compose = Compose(transforms)

    def apply(array) -> np.ndarray:
        out = compose(np.asarray(array, dtype=np.float32))
        return np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)

    return apply
