"""Pre-processing kept with each model: named MONAI intensity transforms with plain arguments.

A model file stores its pre-processing as data, e.g.
``[{"_target_": "ScaleIntensityRangePercentiles", "lower": 1, "upper": 99, "b_min": 0, "b_max": 1}]``.
Model files are what users download and share, so nothing in them is ever run as code: each step
names one transform of :data:`ALLOWED_TRANSFORMS` (from ``monai.transforms``, by its short name) and
gives only the arguments listed there, as numbers, booleans, short strings from a fixed choice or
lists of numbers. There are no ``$`` expressions, ``@`` references, ``_requires_``/``_mode_`` keys,
``Lambda`` or import paths: :func:`check_preprocessing` refuses them, naming the step, and
:func:`build_preprocessing` looks the class up in ``monai.transforms`` by name and calls it with the
checked arguments (``monai.bundle.ConfigParser`` is never used on a model file).

Applied to images larger than memory, percentile normalisation must be measured once over the whole
image, not per tile or per training patch (each would get its own contrast): :class:`Preprocessor`
holds a model's steps with the percentiles frozen, as ``segarch.predict``, training and
:meth:`segarch.Model.preprocess` apply them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["DEFAULT_PREPROCESSING", "ALLOWED_TRANSFORMS", "build_preprocessing", "check_preprocessing",
           "Preprocessor", "is_percentile_step", "spread_indices"]

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

# Argument kinds: (kind, low, high) for numbers; ("bool",); ("choice", values); ("numbers", low, high, max_len).
_PERCENT = ("number", 0.0, 100.0)
_ANY = ("number", -math.inf, math.inf)
_ANY_OR_NONE = ("number?", -math.inf, math.inf)
_BOOL = ("bool",)
_SIGMA = ("numbers", 0.0, 32.0, 3)          # a kernel of ±4σ: 32 keeps it under 257 pixels per axis
_APPROX = ("choice", ("erf", "sampled", "scalespace"))

#: The transforms a model's pre-processing may use (``monai.transforms.<name>``), each with the
#: arguments it may be given and what values they take. All are intensity transforms that keep the
#: image's shape; arguments that would take arrays, dtypes or callables are left out on purpose.
ALLOWED_TRANSFORMS: dict[str, dict[str, tuple]] = {
    "ScaleIntensityRangePercentiles": {"lower": _PERCENT, "upper": _PERCENT, "b_min": _ANY_OR_NONE,
                                       "b_max": _ANY_OR_NONE, "clip": _BOOL, "relative": _BOOL, "channel_wise": _BOOL},
    "ScaleIntensityRange": {"a_min": _ANY, "a_max": _ANY, "b_min": _ANY_OR_NONE, "b_max": _ANY_OR_NONE, "clip": _BOOL},
    "ScaleIntensity": {"minv": _ANY_OR_NONE, "maxv": _ANY_OR_NONE, "factor": _ANY_OR_NONE, "channel_wise": _BOOL},
    "NormalizeIntensity": {"subtrahend": ("numbers?", -math.inf, math.inf, 16),
                           "divisor": ("numbers?", -math.inf, math.inf, 16), "nonzero": _BOOL, "channel_wise": _BOOL},
    "ThresholdIntensity": {"threshold": _ANY, "above": _BOOL, "cval": _ANY},
    "ClipIntensityPercentiles": {"lower": ("number?", 0.0, 100.0), "upper": ("number?", 0.0, 100.0),
                                 "sharpness_factor": _ANY_OR_NONE, "channel_wise": _BOOL},
    "ShiftIntensity": {"offset": _ANY},
    "StdShiftIntensity": {"factor": _ANY, "nonzero": _BOOL, "channel_wise": _BOOL},
    "AdjustContrast": {"gamma": ("number", 0.0, 100.0), "invert_image": _BOOL, "retain_stats": _BOOL},
    "GaussianSmooth": {"sigma": _SIGMA, "approx": _APPROX},
    "GaussianSharpen": {"sigma1": _SIGMA, "sigma2": _SIGMA, "alpha": _ANY, "approx": _APPROX},
    "MedianSmooth": {"radius": ("numbers", 0, 4, 3)},  # MONAI's median filter grows as (2r+1)^d channels
    "HistogramNormalize": {"num_bins": ("number", 2, 65536), "min": _ANY, "max": _ANY},
}
_MAX_STEPS = 16
_MONAI_PREFIX = "monai.transforms."


def check_preprocessing(config: Sequence[dict[str, Any]], *, where: str = "") -> list[dict[str, Any]]:
    """Validate a pre-processing config; returns a clean copy with short transform names.

    Args:
        config: a list of ``{"_target_": NAME, argument: value, ...}`` dicts, ``NAME`` one of
            :data:`ALLOWED_TRANSFORMS` (``"monai.transforms.NAME"`` is accepted too).
        where: what holds the config (e.g. a model file's path), for the message.

    Raises:
        ValueError: naming the step (``preprocessing[i]``), what is wrong and what is allowed; nothing
            in ``config`` is run or imported.
    """
    origin = f" in {where}" if where else ""
    if isinstance(config, dict) or not isinstance(config, (list, tuple)):
        raise ValueError(f"`preprocessing`{origin} must be a list of transform steps "
                         f"({{'_target_': NAME, ...}}), got {type(config).__name__}.")
    if len(config) > _MAX_STEPS:
        raise ValueError(f"`preprocessing`{origin} has {len(config)} steps; at most {_MAX_STEPS} are allowed.")
    return [_check_step(i, step, origin) for i, step in enumerate(config)]


def _check_step(i: int, step: Any, origin: str) -> dict[str, Any]:
    label = f"`preprocessing[{i}]`{origin}"
    allowed = ", ".join(ALLOWED_TRANSFORMS)
    if not isinstance(step, dict) or "_target_" not in step:
        raise ValueError(f"{label} must be a dict with a '_target_' key naming a transform ({allowed}), "
                         f"got {_short(step)}.")
    target = step["_target_"]
    name = target[len(_MONAI_PREFIX):] if isinstance(target, str) and target.startswith(_MONAI_PREFIX) else target
    if not isinstance(name, str) or name not in ALLOWED_TRANSFORMS:
        raise ValueError(
            f"{label} was refused: '_target_'={_short(target)} is not an allowed transform. A model's pre-processing "
            f"is data, never code: it may name only these MONAI transforms: {allowed}.")
    spec = ALLOWED_TRANSFORMS[name]
    clean: dict[str, Any] = {"_target_": name}
    for key, value in step.items():
        if key == "_target_":
            continue
        if not isinstance(key, str) or key not in spec:
            raise ValueError(f"{label} ({name}) was refused: the argument {_short(key)} is not allowed; "
                             f"{name} takes {', '.join(spec) or 'no arguments'} here.")
        clean[key] = _check_value(value, spec[key], f"{label} ({name}) argument {key!r}")
    return clean


def _check_value(value: Any, kind: tuple, label: str):
    tag = kind[0]
    if tag == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{label} must be true or false, got {_short(value)}.")
        return value
    if tag == "choice":
        if not isinstance(value, str) or value not in kind[1]:
            raise ValueError(f"{label} must be one of {', '.join(kind[1])}, got {_short(value)}.")
        return value
    optional = tag.endswith("?")
    if optional and value is None:
        return None
    if tag.startswith("numbers") and isinstance(value, (list, tuple)):
        if not 1 <= len(value) <= kind[3]:
            raise ValueError(f"{label} must be a number or a list of 1 to {kind[3]} numbers, got {_short(value)}.")
        return [_number(v, kind[1], kind[2], label) for v in value]
    return _number(value, kind[1], kind[2], label)


def _number(value: Any, low: float, high: float, label: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{label} must be a finite number, got {_short(value)}.")
    if not low <= value <= high:
        raise ValueError(f"{label} must be between {low} and {high}, got {value!r}.")
    return value


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def build_preprocessing(config: Sequence[dict[str, Any]]):
    """Turn a (checked) config into one callable ``f(array (C, *spatial)) -> float32 array``."""
    import monai.transforms
    from monai.transforms import Compose

    steps = check_preprocessing(config)
    transforms = []
    for i, step in enumerate(steps):
        arguments = {k: v for k, v in step.items() if k != "_target_"}
        try:
            transforms.append(getattr(monai.transforms, step["_target_"])(**arguments))
        except Exception as err:  # MONAI raises several types for arguments it rejects
            raise ValueError(f"`preprocessing[{i}]` ({step['_target_']}) was rejected by MONAI: {err}") from None
    compose = Compose(transforms)

    def apply(array) -> np.ndarray:
        out = compose(np.asarray(array, dtype=np.float32))
        return np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)

    return apply


_PERCENTILES = "ScaleIntensityRangePercentiles"


def is_percentile_step(step: dict[str, Any]) -> bool:
    """Whether ``step`` is a percentile normalisation (its percentiles are measured over the whole image)."""
    return str(step.get("_target_", "")).rsplit(".", 1)[-1] == _PERCENTILES


def spread_indices(n: int, k: int) -> list[int]:
    """Up to ``k`` indices spread evenly over ``range(n)`` (where to sample an image for its percentiles)."""
    return sorted({int(v) for v in np.linspace(0, n - 1, num=min(n, k)).round()})


@dataclass
class Preprocessor:
    """A model's pre-processing made tile-independent.

    Percentile normalisation computed per tile would give every tile its own contrast (seams), so
    its percentiles are measured once on the whole image (:meth:`calibrate` or :meth:`for_image`) and
    frozen as per-channel ranges; the remaining transforms (pointwise ones) are applied per tile.
    Calling it on ``(C, *spatial)`` returns float32.
    """

    ranges: list[tuple[float, float]] | None = None  # per channel (lo, hi) of the frozen percentiles
    target: tuple[float | None, float | None, bool] = (0.0, 1.0, True)  # b_min, b_max, clip
    rest: list[dict[str, Any]] = field(default_factory=list)
    _compose: Any = field(default=None, repr=False, compare=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x).astype(np.float32, copy=False)
        if self.ranges is not None:
            b_min, b_max, clip = self.target
            lo = np.array([r[0] for r in self.ranges], np.float32).reshape((-1,) + (1,) * (x.ndim - 1))
            hi = np.array([r[1] for r in self.ranges], np.float32).reshape(lo.shape)
            span = (1.0 if b_min is None or b_max is None else b_max - b_min)
            scale = np.where(hi > lo, span / np.maximum(hi - lo, 1e-12), 0.0).astype(np.float32)
            x = (x - lo) * scale + (0.0 if b_min is None or b_max is None else b_min)
            if clip and (b_min is not None or b_max is not None):
                x = np.clip(x, b_min, b_max)
        if self.rest:
            if self._compose is None:
                self._compose = build_preprocessing(self.rest)
            x = self._compose(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_compose"] = None
        return state

    @classmethod
    def calibrate(cls, config: Sequence[dict[str, Any]], sample: np.ndarray) -> "Preprocessor":
        """Freeze the percentile step of ``config`` (when it comes first) on ``sample``: ``(C, ...)`` values
        drawn from the whole image. MONAI's ``ScaleIntensityRangePercentiles`` arguments keep their meaning
        (``channel_wise``, ``relative``, ``clip``, ``b_min``/``b_max``)."""
        ranges, target, rest = None, (0.0, 1.0, True), []
        for step in config:
            if is_percentile_step(step) and ranges is None and not rest:
                lower, upper = float(step.get("lower", 0)), float(step.get("upper", 100))
                if step.get("channel_wise", False):
                    ranges = [tuple(float(v) for v in np.percentile(c, [lower, upper])) for c in sample]
                else:
                    lo, hi = np.percentile(sample, [lower, upper])
                    ranges = [(float(lo), float(hi))] * sample.shape[0]
                b_min, b_max = step.get("b_min", 0.0), step.get("b_max", 1.0)
                if step.get("relative", False) and b_min is not None and b_max is not None:
                    b_min, b_max = ((b_max - b_min) * lower / 100 + b_min, (b_max - b_min) * upper / 100 + b_min)
                target = (None if b_min is None else float(b_min), None if b_max is None else float(b_max),
                          bool(step.get("clip", False)))
            else:
                rest.append(step)
        return cls(ranges, target, rest)

    @classmethod
    def for_image(cls, config: Sequence[dict[str, Any]], sample: Callable[[], np.ndarray]) -> "Preprocessor":
        """``config`` (checked) frozen for one image; ``sample()`` draws its ``(C, n)`` values, called only when
        ``config`` has a percentile step."""
        steps = check_preprocessing(config)
        if not any(is_percentile_step(s) for s in steps):
            return cls(rest=steps)
        return cls.calibrate(steps, sample())
