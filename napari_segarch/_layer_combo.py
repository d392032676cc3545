"""A combo box of a viewer's layers that follows the layer list: added, removed, moved and renamed layers.

The widgets pick their image and labels layers with it. The choice is kept by layer, not by name, so
renaming the chosen layer keeps it chosen under its new name (as magicgui's layer choices do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from qtpy.QtWidgets import QComboBox

if TYPE_CHECKING:
    import napari

__all__ = ["LayerCombo"]


class LayerCombo(QComboBox):
    """The layers of ``kinds`` (napari layer classes) in ``viewer``, then the ``extra`` texts (e.g. "New
    labels layer"). ``layer()`` is the chosen layer (``None`` for an extra item or an empty list)."""

    def __init__(self, viewer: "napari.viewer.Viewer", kinds: tuple[type, ...], *, extra: Sequence[str] = (),
                 prefer_extra: bool = False, accept: Callable[[Any], bool] | None = None) -> None:
        super().__init__()
        self.viewer = viewer
        self.kinds = kinds
        self.extra = list(extra)
        self.prefer_extra = prefer_extra  # with nothing chosen yet, choose the first extra item, not a layer
        self.accept = accept
        self._named: list[Any] = []  # layers whose name events we follow
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh)
        self.refresh()

    def layer(self):
        data = self.currentData()
        return data if data is not None and data in self.viewer.layers else None

    def set_layer(self, layer) -> None:
        """Choose ``layer`` (``None``: the first extra item)."""
        index = self.findText(self.extra[0]) if layer is None and self.extra else self._index_of(layer)
        if index >= 0:
            self.setCurrentIndex(index)

    def _index_of(self, layer) -> int:
        for i in range(self.count()):
            if self.itemData(i) is layer:
                return i
        return -1

    def refresh(self, *_: Any) -> None:
        """List the viewer's layers again, keeping the choice (by layer) where it still exists."""
        try:
            self._refresh()
        except RuntimeError:  # "wrapped C/C++ object ... has been deleted": the dock is gone, the viewer is not
            self.disconnect_viewer()

    def _refresh(self) -> None:
        chosen, chosen_text = self.currentData(), self.currentText()
        layers = [layer for layer in self.viewer.layers if isinstance(layer, self.kinds)
                  and (self.accept is None or self.accept(layer))]
        for layer in self._named:
            if layer not in layers:
                layer.events.name.disconnect(self._on_rename)
        for layer in layers:
            if layer not in self._named:
                layer.events.name.connect(self._on_rename)
        self._named = layers
        self.blockSignals(True)
        self.clear()
        for layer in layers:
            self.addItem(layer.name, layer)
        for text in self.extra:
            self.addItem(text, None)
        index = self._index_of(chosen) if chosen is not None else self.findText(chosen_text) if chosen_text else -1
        if index < 0:
            index = self.findText(self.extra[0]) if self.prefer_extra and self.extra else 0
        self.setCurrentIndex(index)
        self.blockSignals(False)
        if self.currentData() is not chosen or (chosen is None and self.currentText() != chosen_text):
            self.currentIndexChanged.emit(self.currentIndex())

    def _on_rename(self, event=None) -> None:
        try:
            for i in range(self.count()):
                layer = self.itemData(i)
                if layer is not None and self.itemText(i) != layer.name:
                    self.setItemText(i, layer.name)
        except RuntimeError:
            self.disconnect_viewer()

    def disconnect_viewer(self) -> None:
        """Stop following the viewer (the widget is closing)."""
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.disconnect(self.refresh)
        for layer in self._named:
            layer.events.name.disconnect(self._on_rename)
        self._named = []
