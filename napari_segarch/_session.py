"""Models trained (or loaded) in this napari session, shared between the plugin's widgets.

The Train widget adds what it trains; the Segment widget lists the segmentation models among them
beside the shipped models, model files and zoo architectures, the Extreme points widget the
extreme-point ones. ``changed`` fires when the set changes, so open widgets refresh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psygnal import Signal

if TYPE_CHECKING:
    import segarch

__all__ = ["SessionModels", "SESSION", "GENERATORS"]

#: Zoo architectures that are not segmenters (SPADE synthesises images from label maps): never offered by
#: the Segment and Train widgets. The zoo files SPADE under task "semantic" for want of a generator task.
GENERATORS = frozenset({"spade"})


class SessionModels:
    """A name → :class:`segarch.Model` store with a ``changed`` signal."""

    changed = Signal()

    def __init__(self) -> None:
        self._models: dict[str, "segarch.Model"] = {}

    def add(self, name: str, model: "segarch.Model") -> str:
        """Store ``model`` under ``name`` (made unique with a suffix); returns the name used."""
        unique, n = name, 2
        while unique in self._models:
            unique, n = f"{name} ({n})", n + 1
        self._models[unique] = model
        self.changed.emit()
        return unique

    def get(self, name: str) -> "segarch.Model":
        return self._models[name]

    def names(self, task: str | None = None) -> list[str]:
        """The stored names, or those of models of one task (``"semantic"``, ``"interactive"``, ...)."""
        return [n for n, m in self._models.items() if task is None or m.card.task == task]

    def clear(self) -> None:
        self._models.clear()
        self.changed.emit()


SESSION = SessionModels()
