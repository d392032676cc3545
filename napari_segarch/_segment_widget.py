"""The Segment dock widget: pick an image layer and a model, click Segment.

Thin: it collects parameters and runs :func:`segarch.predict` in a napari worker thread; progress
reaches the GUI through a Qt signal, the result becomes a layer, errors become notifications.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
    QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from napari_segarch._session import SESSION
from segarch.tiling.runner import available_devices

if TYPE_CHECKING:
    import napari

__all__ = ["SegmentWidget"]

_LAZY_OUTPUT_PIXELS = 64 * 2 ** 20  # larger results go to a Zarr store shown while it fills
_REFRESH_SECONDS = 1.0
_FILE = ("file", "")


class _Signals(QObject):
    progress = Signal(int, int)


def model_choices() -> list[tuple[str, tuple[str, str]]]:
    """(label, (kind, name)) for every model the widget offers: shipped, this session's, a file, the zoo."""
    from segarch import pretrained, zoo

    choices = [(f"{n} (shipped, trained)", ("shipped", n)) for n in pretrained.names(task="semantic")]
    choices += [(f"{n} (trained in this session)", ("session", n)) for n in SESSION.names()
                if SESSION.get(n).card.task != "interactive"]
    choices.append(("Model file…", _FILE))
    choices += [(f"{n} (architecture, untrained)", ("zoo", n)) for n in zoo.names() if zoo.card(n).task != "backbone"]
    return choices


def resolve_choice(kind: str, name: str, *, path: str = "", arch: str = "", in_channels: int = 1):
    """The :class:`segarch.Model` behind a choice of :func:`model_choices`."""
    import segarch
    from segarch.model_file import resolve_model

    if kind == "session":
        return SESSION.get(name)
    if kind == "shipped":
        return resolve_model(name)
    if kind == "file":
        if not path:
            raise ValueError("Choose a model file (.safetensors, or .pt/.pth with its architecture).")
        return resolve_model(path, arch=arch or None)
    return segarch.Model.from_zoo(name, in_channels=in_channels)


def _segment(model_key, model_kwargs, data, params: dict[str, Any], progress, cancel):
    """The worker's job (runs off the GUI thread)."""
    # Imported here so the GUI thread does not pay for first imports when it shows the result.
    import dask.array  # noqa: F401
    import napari._vispy.layers.labels  # noqa: F401
    import napari.layers.labels.labels  # noqa: F401

    import segarch

    model = resolve_choice(*model_key, **model_kwargs)
    started = time.perf_counter()
    try:
        result = segarch.predict(model, data, progress=progress, cancel=cancel, **params)
    except segarch.PredictionCancelled as err:
        return model, err.output, False, time.perf_counter() - started
    return model, result, True, time.perf_counter() - started


class SegmentWidget(QWidget):
    """Segment an image layer of any size with a shipped, trained, file or zoo model."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText("path to .safetensors / .pt")
        self.browse_button = QPushButton("…")
        self.arch_edit = QLineEdit()
        self.arch_edit.setPlaceholderText("architecture of a .pt state dict, e.g. unet")
        self.axes_edit = QLineEdit()
        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSpecialValueText("auto")
        self.overlap_spin = QDoubleSpinBox()
        self.overlap_spin.setRange(0.0, 0.9)
        self.overlap_spin.setSingleStep(0.05)
        self.overlap_spin.setValue(0.25)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setValue(4)
        self.output_combo = QComboBox()
        self.output_combo.addItems(["labels", "probabilities"])
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("optional .zarr store for huge results")
        self.segment_button = QPushButton("Segment")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.status = QLabel()
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Model", self.model_combo)
        row = QHBoxLayout()
        row.addWidget(self.file_edit)
        row.addWidget(self.browse_button)
        form.addRow("Model file", row)
        form.addRow("Architecture", self.arch_edit)
        form.addRow("Axes", self.axes_edit)
        form.addRow("Device", self.device_combo)
        form.addRow("Tile", self.tile_spin)
        form.addRow("Overlap", self.overlap_spin)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Output", self.output_combo)
        form.addRow("Output store", self.out_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch()

        self._signals = _Signals()
        self._signals.progress.connect(self._on_progress)
        self._cancel: threading.Event | None = None
        self.worker = None
        self._live_layer = None
        self._live_path: str | None = None
        self._last_refresh = 0.0
        self._napari_progress = None
        self._models: dict[tuple[str, str], Any] = {}

        self.segment_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.browse_button.clicked.connect(self._browse)
        self.image_combo.currentIndexChanged.connect(self._suggest_axes)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        SESSION.changed.connect(self._refresh_models)
        self._refresh_layers()
        self._refresh_models()

    # --- choices -----------------------------------------------------------------------------------------

    def image_layer(self):
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def model_key(self) -> tuple[str, str]:
        return self.model_combo.currentData() or _FILE

    def select_model(self, kind: str, name: str = "") -> None:
        for i in range(self.model_combo.count()):
            if self.model_combo.itemData(i) == (kind, name):
                self.model_combo.setCurrentIndex(i)
                return
        raise ValueError(f"No model choice {(kind, name)!r} in the Segment widget.")

    def _disconnect(self) -> None:
        # This widget's Qt object is gone (dock or viewer closed) but the viewer's events and the session
        # store outlive it: stop listening.
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self._refresh_layers)
        SESSION.changed.disconnect(self._refresh_models)

    def _refresh_layers(self, *_):
        try:
            self._fill_layers()
        except RuntimeError:  # "wrapped C/C++ object ... has been deleted"
            self._disconnect()

    def _refresh_models(self, *_):
        try:
            self._fill_models()
        except RuntimeError:
            self._disconnect()

    def _fill_layers(self):
        import napari

        current = self.image_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        self._suggest_axes()

    def _fill_models(self):
        current = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for label, key in model_choices():
            self.model_combo.addItem(label, key)
        keys = [self.model_combo.itemData(i) for i in range(self.model_combo.count())]
        self.model_combo.setCurrentIndex(keys.index(current) if current in keys else 0)
        self.model_combo.blockSignals(False)
        self._on_model_changed()

    def _on_model_changed(self, *_):
        kind, _name = self.model_key()
        is_file = kind == "file"
        for w in (self.file_edit, self.browse_button, self.arch_edit):
            w.setEnabled(is_file)
        self.status.setStyleSheet("")
        if kind == "zoo":
            self.status.setStyleSheet("color: #e0a030")
            self.status.setText("This architecture is untrained: its output is meaningless until it is trained. "
                                "Train it on your annotations with the Train widget or `segarch train`.")
        else:
            self.status.setText("")
        self._suggest_axes()

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "Model file", "", "Models (*.safetensors *.pt *.pth *.ckpt)")
        if path:
            self.file_edit.setText(path)

    def _model_for_axes(self):
        key = self.model_key()
        if key[0] in ("file", "zoo"):
            return None
        if key not in self._models:
            try:
                self._models[key] = resolve_choice(*key)
            except Exception:  # the run itself reports a bad model
                return None
        return self._models[key]

    def _suggest_axes(self, *_):
        layer = self.image_layer()
        if layer is None:
            return
        self.axes_edit.setText(suggest_axes(layer, self._model_for_axes()))

    # --- running -----------------------------------------------------------------------------------------

    def run(self):
        """Start segmenting the chosen layer (returns at once; the work runs in a thread)."""
        from napari.qt.threading import create_worker

        layer = self.image_layer()
        if layer is None:
            _notify_error("Choose an image layer to segment.")
            return
        data = layer.data[0] if layer.multiscale else layer.data  # level 0 of a pyramid
        params = {
            "axes": self.axes_edit.text().strip() or None,
            "tile": self.tile_spin.value() or None,
            "overlap": self.overlap_spin.value(),
            "batch_size": self.batch_spin.value(),
            "device": self.device_combo.currentText(),
            "output": self.output_combo.currentText(),
        }
        out = self.out_edit.text().strip()
        n_pixels = int(np.prod(data.shape))
        if not out and (n_pixels > _LAZY_OUTPUT_PIXELS or not isinstance(data, np.ndarray)):
            out = str(Path(tempfile.mkdtemp(prefix="segarch-")) / f"{layer.name}.zarr")
        if out:
            params["out"] = out
            params["overwrite"] = True
        self._live_path = out or None
        self._live_layer = None
        self._live_filled = False
        self._layer = layer
        self._axes = params["axes"]
        if self._live_path and params["output"] == "labels":
            # Add the result layer now (adding a layer is napari's own cost, paid before the work starts);
            # it shows zeros until the store exists, then the store as it fills.
            import dask.array as da

            axes = self._axes or suggest_axes(layer, self._model_for_axes())
            shape = tuple(n for a, n in zip(axes, data.shape) if a != "C") if len(axes) == data.ndim else None
            if shape is not None:
                # A view of the store that shows zeros until the engine has written there: the layer never
                # swaps its data (a swap re-reads the image on the GUI thread), it is only refreshed.
                self._live_layer = self._add_result(_lazy_pyramid(_store_view(self._live_path, shape)), None,
                                                    live=True)
                self._live_filled = True
        self._cancel = threading.Event()
        kwargs = {"path": self.file_edit.text().strip(), "arch": self.arch_edit.text().strip(),
                  "in_channels": 3 if getattr(layer, "rgb", False) else 1}
        self.worker = create_worker(_segment, self.model_key(), kwargs, data, params, self._signals.progress.emit,
                                    self._cancel, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_finished)
        self.segment_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setValue(0)
        self.status.setText(f"Segmenting {layer.name}…")
        self.worker.start()

    def closeEvent(self, event):  # noqa: N802 - Qt's name
        self.cancel()  # a closing dock must not leave a worker writing into a dead viewer
        super().closeEvent(event)

    def cancel(self):
        """Stop the run within one batch; what was finished is kept."""
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("Cancelling…")

    def _on_progress(self, done: int, total: int):
        from napari.utils import progress

        if self._napari_progress is None:
            self._napari_progress = progress(total=total, desc=f"Segment {self._layer.name}")
        self._napari_progress.total = total
        self._napari_progress.n = done
        self._napari_progress.refresh()
        self.progress_bar.setMaximum(max(total, 1))
        self.progress_bar.setValue(done)
        if self._live_path and not self._live_filled and self.output_combo.currentText() == "labels":
            import zarr

            self._live_filled = True
            levels = _lazy_pyramid(zarr.open_group(self._live_path, mode="r")["0"])
            if self._live_layer is None:
                self._live_layer = self._add_result(levels, None, live=True)
            else:
                self._live_layer.data = levels
        elif self._live_layer is not None and time.perf_counter() - self._last_refresh > _REFRESH_SECONDS:
            self._last_refresh = time.perf_counter()
            self._live_layer.refresh()

    def _on_returned(self, value):
        model, result, complete, seconds = value
        if self._live_layer is not None:
            self._live_layer.refresh()
            _set_classes(self._live_layer, model.class_names)
            layer = self._live_layer
        else:
            layer = self._add_result(result, model)
        state = "done" if complete else "cancelled (finished blocks kept)"
        self.status.setStyleSheet("")
        self.status.setText(f"{layer.name}: {state} in {seconds:.1f} s.")
        if complete:
            self.progress_bar.setValue(self.progress_bar.maximum())

    def _on_errored(self, err: Exception):
        _notify_error(str(err))
        self.status.setText(f"Error: {err}")

    def _on_finished(self):
        self.segment_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self._napari_progress is not None:
            self._napari_progress.close()
            self._napari_progress = None
        self._cancel = None

    def _add_result(self, data, model, live: bool = False):
        layer = self._layer
        name = f"{layer.name} segmentation"
        axes = self._axes or suggest_axes(layer, model)
        layer_axes = axes.replace("C", "") if getattr(layer, "rgb", False) else axes
        scale = dict(zip(layer_axes, layer.scale))
        translate = dict(zip(layer_axes, layer.translate))
        if self.output_combo.currentText() == "probabilities" and not live:
            # segarch.predict puts the classes after the looped axes: one napari layer per class.
            spatial = "ZYX"[-model.spatial_dims:]
            loop = "".join(a for a in axes if a not in spatial and a != "C")
            kept = loop + "".join(a for a in axes if a in spatial)
            layers = self.viewer.add_image(
                data, channel_axis=len(loop), name=[f"{name}: {c}" for c in model.class_names], colormap="magma",
                scale=[scale.get(a, 1.0) for a in kept], translate=[translate.get(a, 0.0) for a in kept])
            return layers[0]
        out_axes = axes.replace("C", "")
        labels = self.viewer.add_labels(data, name=name, scale=[scale.get(a, 1.0) for a in out_axes],
                                        translate=[translate.get(a, 0.0) for a in out_axes])
        if model is not None:
            _set_classes(labels, model.class_names)
        return labels


def _store_view(path: str, shape: tuple[int, ...], chunk: int = 512):
    """A lazy ``uint32`` array of the labels the engine writes to the Zarr store at ``path`` (level ``0``):
    each block is read from the store when napari shows it, zeros where (or while) nothing is there."""
    import dask.array as da

    opened: dict[str, Any] = {}

    def read(block_info=None):
        where = block_info[None]["array-location"]
        if "array" not in opened:
            import zarr

            try:
                opened["array"] = zarr.open_group(path, mode="r")["0"]
            except Exception:  # not created yet: the engine is still starting
                return np.zeros([b - a for a, b in where], np.uint32)
        return np.asarray(opened["array"][tuple(slice(a, b) for a, b in where)], dtype=np.uint32)

    return da.map_blocks(read, dtype=np.uint32, chunks=tuple(_chunks(n, chunk) for n in shape))


def _chunks(size: int, chunk: int) -> tuple[int, ...]:
    return (chunk,) * (size // chunk) + ((size % chunk,) if size % chunk else ())


def _lazy_pyramid(array, smallest: int = 512) -> list:
    """Strided views of a Zarr output (or a Dask array), so napari reads only what the screen shows."""
    import dask.array as da

    level = array if isinstance(array, da.Array) else da.from_zarr(array)
    levels = [level]
    step = 2
    while max(level.shape[-2:]) // step >= smallest // 2 and max(level.shape[-2:]) > smallest:
        levels.append(level[(..., slice(None, None, step), slice(None, None, step))])
        if max(levels[-1].shape[-2:]) <= smallest:
            break
        step *= 2
    return levels if len(levels) > 1 else level


def _set_classes(layer, class_names) -> None:
    import pandas as pd

    layer.features = pd.DataFrame({"index": np.arange(len(class_names)), "class": list(class_names)})


def suggest_axes(layer, model=None) -> str:
    """Axes for ``layer``'s data: RGB, the reader's metadata, or what the model makes unambiguous."""
    from segarch.tiling.axes import resolve_axes

    data = layer.data[0] if layer.multiscale else layer.data
    shape = tuple(data.shape)
    if getattr(layer, "rgb", False):
        return "ZYX"[-(len(shape) - 1):] + "C"
    meta = layer.metadata.get("axes") if isinstance(layer.metadata, dict) else None
    if isinstance(meta, str) and len(meta) == len(shape):
        return meta
    dims, channels = (model.spatial_dims, model.in_channels) if model is not None else (2, 1)
    try:
        return resolve_axes(shape, None, dims, channels).axes
    except ValueError:
        return "TCZYX"[-len(shape):] if len(shape) <= 5 else ""


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)
