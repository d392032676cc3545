"""Models trained (or loaded) in this session, offered beside the shipped ones, files and the zoo.

The napari plugin's Train dock adds what it trains; the catalogue (:mod:`segarch.models.catalog`) lists and
resolves them as ``session:NAME``, so the Segment and Extreme points docks (and a script in the same
process) pick them like any other model. ``changed`` fires when the set changes, so open docks refresh:
a psygnal signal when psygnal is installed (it comes with napari), else plain callbacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

try:
    from psygnal import Signal
except ImportError:  # the engine installs without napari (and psygnal)
    Signal = None

if TYPE_CHECKING:
    from segarch.models.model import Model

__all__ = ["SessionModels", "SESSION"]


class _Callbacks:
    """``connect``/``disconnect``/``emit``, as a psygnal signal instance offers them."""

    def __init__(self) -> None:
        self._slots: list[Callable] = []

    def connect(self, slot: Callable) -> Callable:
        self._slots.append(slot)
        return slot

    def disconnect(self, slot: Callable | None = None) -> None:
        self._slots = [] if slot is None else [s for s in self._slots if s is not slot]

    def emit(self, *args) -> None:
        for slot in list(self._slots):
            slot(*args)


class SessionModels:
    """A name → :class:`segarch.Model` store with a ``changed`` signal."""

    if Signal is not None:
        changed = Signal()

    def __init__(self) -> None:
        if Signal is None:
            self.changed = _Callbacks()
        self._models: dict[str, "Model"] = {}

    def add(self, name: str, model: "Model") -> str:
        """Store ``model`` under ``name`` (made unique with a suffix); returns the name used."""
        unique, n = name, 2
        while unique in self._models:
            unique, n = f"{name} ({n})", n + 1
        self._models[unique] = model
        self.changed.emit()
        return unique

    def get(self, name: str) -> "Model":
        """The model stored as ``name``.

        Raises:
            ValueError: no such name (the message lists those there are).
        """
        try:
            return self._models[name]
        except KeyError:
            there = ", ".join(map(repr, self._models)) or "none yet"
            raise ValueError(f"No model {name!r} in this session (there: {there}).") from None

    def names(self, task: str | None = None) -> list[str]:
        """The stored names, or those of models of one task (``"semantic"``, ``"interactive"``, ...)."""
        return [n for n, m in self._models.items() if task is None or m.task == task]

    def clear(self) -> None:
        self._models.clear()
        self.changed.emit()


#: This process's models: the napari docks share it.
SESSION = SessionModels()
