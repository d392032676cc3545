"""Models that ship trained with segarch (no downloads): ``names()``, ``card(name)``, ``load(name)``.

Each model is a model file ``weights/NAME.safetensors`` with its card ``weights/NAME.json``, both
written by ``scripts/train_pretrained.py`` (the nuclei models) or ``scripts/train_dextr_light.py``
(the extreme-point models), reproducible from a seed on the CPU. The card says what the model was
trained on, how, and its Dice or IoU measured on fresh generated images.

Examples::

    >>> from segarch import pretrained
    >>> pretrained.names()
    ['dextr_light', 'dextr_light3d', 'nuclei2d', 'nuclei3d']
    >>> pretrained.names(task="semantic")
    ['nuclei2d', 'nuclei3d']
    >>> model = pretrained.load("nuclei2d")
    >>> labels = segarch.predict(model, image)
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

__all__ = ["names", "card", "load", "path", "WEIGHTS"]

WEIGHTS = Path(__file__).resolve().parent / "weights"


def names(task: str | None = None) -> list[str]:
    """The shipped models (those with both weights and a card), sorted; only those whose architecture's
    task is ``task`` (``"semantic"``, ``"interactive"``, ...) when given."""
    if not WEIGHTS.is_dir():
        return []
    found = sorted(p.name[: -len(".safetensors")] for p in WEIGHTS.glob("*.safetensors")
                   if (WEIGHTS / (p.name[: -len(".safetensors")] + ".json")).is_file())
    if task is None:
        return found
    from segarch import zoo

    return [n for n in found if zoo.card(card(n)["arch"]).task == task]


def _check(name: str) -> str:
    available = names()
    if not isinstance(name, str) or name not in available:
        close = difflib.get_close_matches(str(name), available, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"`name` {name!r} is not a shipped model.{hint} Available: {', '.join(available) or 'none'}.")
    return name


def path(name: str) -> Path:
    """The model file of ``name``."""
    return WEIGHTS / f"{_check(name)}.safetensors"


def card(name: str) -> dict[str, Any]:
    """The card of ``name``: title, architecture, parameters, data, training settings and measured Dice."""
    return json.loads((WEIGHTS / f"{_check(name)}.json").read_text())


def load(name: str):
    """The shipped model ``name`` as a :class:`segarch.Model` (CPU, eval mode)."""
    from segarch.model_file import load_model

    model = load_model(path(name))
    model.name = name  # provenance names the shipped model, not only its architecture
    return model
