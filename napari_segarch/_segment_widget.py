"""The Segment dock widget: pick an image layer and a model, click Segment.

Thin: it collects parameters and runs :func:`segarch.predict` in a napari worker thread; progress
reaches the GUI through a Qt signal, the result becomes a layer, errors become one notification
carrying the engine's message.

A large or lazy image is segmented into a Zarr store (the "Output store", or a temporary one) and
shown while it fills: the result layer reads the store's levels directly (``segarch.tiling.pyramid``:
no Dask, so napari's block cache never shows blocks from before they were written), coarse levels
included, so the overview never reads all of level 0. An existing store is replaced only after the
user confirms; a store left by Cancel or a crash offers Resume.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
import time
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
    QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from napari_segarch._layer_combo import LayerCombo
from napari_segarch._threads import wait_at_quit
from segarch.destinations import store_state  # noqa: F401 - also offered here, as before
from segarch.models.session import SESSION

if TYPE_CHECKING:
    import napari

__all__ = ["SegmentWidget", "model_choices", "resolve_choice", "suggest_axes", "store_state"]

log = logging.getLogger("napari_segarch")

_LAZY_OUTPUT_PIXELS = 64 * 2 ** 20  # larger results go to a Zarr store shown while it fills
_REFRESH_SECONDS = 1.0
# napari's opportunistic Dask cache keeps the chunks of every lazy layer viewed, up to a quarter of the
# machine's memory by default: while a run streams an image larger than memory, it is capped at this size
# (several screenfuls) and given back its size when the run ends.
_VIEW_CACHE_DURING_RUN = 128 * 2 ** 20
_FILE = "file:"  # the model catalogue's reference of a file still to be chosen
_LOADING = "loading models…"
# Distinct colours for probability layers (additive blending: overlapping classes mix, none hides another).
_CLASS_COLORMAPS = ("magenta", "green", "cyan", "yellow", "red", "blue", "bop orange", "bop purple")


class _Signals(QObject):
    progress = Signal(int, int)


def model_choices() -> list[tuple[str, str]]:
    """(label, reference) of every model the dock offers, from the model catalogue (:func:`segarch.models.choices`):
    shipped, this session's, a file, the zoo's semantic architectures. A reference is the catalogue's text,
    e.g. ``"shipped:unet.nuclei2d"``."""
    from segarch.models import choices

    # Shipped instance models whose cards name their task "instance" are offered too (their 'instances' output).
    return [(ref.label, str(ref)) for ref in choices(task="semantic")] + \
        [(ref.label, str(ref)) for ref in choices(task="instance", kinds=("shipped",))]


def _model_infos(choices) -> dict[str, tuple[int, int]]:
    """(spatial dims, input channels) of the choices known without loading weights (all but files)."""
    from segarch.models import describe

    infos = {}
    for _, key in choices:
        info = describe(key)
        if info is not None:
            infos[key] = (info.spatial_dims, info.in_channels)
    return infos


def _load_choices():
    """The loader's job (off the GUI thread: importing torch and the zoo takes seconds)."""
    from segarch.devices import available_devices
    from segarch.runtimes import RUNTIMES

    choices = model_choices()
    return choices, _model_infos(choices), available_devices(), RUNTIMES


def resolve_choice(reference: str, *, path: str = "", arch: str = "", in_channels: int = 1):
    """The :class:`segarch.Model` behind a choice of :func:`model_choices` (``path``/``arch``: the file chosen for
    ``"file:"``; ``in_channels``: how a zoo architecture is built)."""
    from segarch.models import catalog

    ref = catalog.parse(reference)
    if ref.kind == "file":
        return catalog.resolve(catalog.ModelRef("file", path or ref.name), arch=arch or None)
    if ref.kind == "zoo":
        return catalog.resolve(ref, in_channels=in_channels)
    return catalog.resolve(ref)


def _kind(reference: str) -> str:
    return reference.partition(":")[0]


def select_reference(kind: str, name: str | None = None) -> str:
    """A dock's key from ``select_model``'s arguments: ``(kind, name)``, or any text the catalogue reads."""
    from segarch.models import catalog

    if name is not None or kind in catalog.KINDS:
        return str(catalog.ModelRef(kind, name or ""))
    return str(catalog.parse(kind))


class _RunCancel(threading.Event):
    """The run's cancel event: set by Cancel, by closing the dock or the viewer, or by napari's task
    manager (closing the window asks every worker to quit)."""

    def __init__(self) -> None:
        super().__init__()
        self.worker = None

    def is_set(self) -> bool:
        return super().is_set() or bool(self.worker is not None and self.worker.abort_requested)


def _segment(model_key, model_kwargs, data, params: dict[str, Any], progress, cancel):
    """The worker's job (runs off the GUI thread)."""
    # Imported here so the GUI thread does not pay for first imports when it shows the result.
    import napari._vispy.layers.labels  # noqa: F401
    import napari.layers.labels.labels  # noqa: F401

    import segarch

    from segarch.instances import DecodingCancelled

    model = resolve_choice(model_key, **model_kwargs)
    started = time.perf_counter()
    report = None
    objects = params.get("output") in ("instances", "panoptic")
    if objects:  # the seam report and the per-object table come back too
        params = {**params, "instance_options": {"return_report": True}}
    try:
        result = segarch.predict(model, data, progress=progress, cancel=cancel, **params)
    except segarch.PredictionCancelled as err:
        output = None if objects else err.output  # instances: none until decoded
        return model, output, False, time.perf_counter() - started, (err.blocks_done, err.blocks_total), None
    except DecodingCancelled:
        return model, None, False, time.perf_counter() - started, None, None
    if objects:
        result, report = result
    return model, result, True, time.perf_counter() - started, None, report


def instance_capable(model) -> bool:
    """Whether ``model`` (a :class:`segarch.Model`) can give instances: its classes are a decoder's targets."""
    from segarch.instances.predict import decoder_for

    try:
        decoder_for(model)
    except ValueError:
        return False
    return True


def _alive(slot):
    """Run a Qt slot only while the widget exists: a worker may finish after the dock or viewer closed."""
    @wraps(slot)
    def guarded(self, *args):
        try:
            self.objectName()
        except RuntimeError:  # the C++ object is gone
            return None
        return slot(self, *args)
    return guarded


class SegmentWidget(QWidget):
    """Segment an image layer of any size with a shipped, trained, file or zoo model."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        import napari

        super().__init__()
        self.viewer = napari_viewer
        self.image_combo = LayerCombo(napari_viewer, (napari.layers.Image,))
        self.model_combo = QComboBox()
        self.model_combo.addItem(_LOADING, None)
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText("path to .safetensors / .pt / bioimage.io .zip")
        self.browse_button = QPushButton("…")
        self.arch_edit = QLineEdit()
        self.arch_edit.setPlaceholderText("architecture of a .pt state dict, e.g. unet")
        self.axes_edit = QLineEdit()
        self.device_combo = QComboBox()
        self.device_combo.addItem("auto")
        self.runtime_combo = QComboBox()  # segarch.runtimes.RUNTIMES, once loaded; torch is the engine's default
        self.runtime_combo.addItem("torch")
        self.runtime_combo.setToolTip("What runs the network on each tile: torch (eager PyTorch), onnxruntime (the "
                                      "network exported to ONNX once, cached; CPU, often faster), or auto (ONNX "
                                      "Runtime when installed and the network exports, else torch). Same result.")
        self.int8_check = QCheckBox("int8 (if labels agree ≥ 99.5%)")  # segarch.predict's precision="int8"
        self.int8_check.setToolTip("Quantise the exported network on the image's own tiles (onnxruntime, openvino "
                                   "or auto runtime, CPU); used only when its labels agree with fp32's on at least "
                                   "99.5% of them, else fp32 runs (the log says why).")
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
        self.output_combo.addItems(["labels", "probabilities", "instances", "panoptic"])
        self.output_combo.setItemData(2, "one label per object, with a per-object table (instance models)", 3)
        self.output_combo.setItemData(3, "two layers: classes, and objects with their table (Panoptic-DeepLab, "
                                         "DeeperLab, EfficientPS)", 3)
        self.background_check = QCheckBox("show the background class")
        self.background_check.setEnabled(False)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("optional .zarr store (kept); else a temporary one for large images")
        self.segment_button = QPushButton("Segment")
        self.segment_button.setEnabled(False)  # until the models are listed
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.save_button = QPushButton("Save result…")
        self.save_button.setToolTip("Write the result as OME-Zarr or OME-TIFF labels (scale, origin, units and "
                                    "class names kept; it reopens as labels)")
        self.save_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.status = QLabel("Loading the models…")
        self.status.setWordWrap(True)
        self.hint = QLabel()
        self.hint.setWordWrap(True)

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
        form.addRow("Runtime", self.runtime_combo)
        form.addRow("", self.int8_check)
        form.addRow("Tile", self.tile_spin)
        form.addRow("Overlap", self.overlap_spin)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Output", self.output_combo)
        form.addRow("", self.background_check)
        form.addRow("Output store", self.out_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.hint)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch()

        self._signals = _Signals()
        self._signals.progress.connect(self._on_progress)
        self._cancel: _RunCancel | None = None
        self.worker = None
        self.loader = None
        self._infos: dict[str, tuple[int, int]] = {}
        self._choices_loaded = False
        self._live_layer = None
        self.result_layer = None  # the last result shown
        self._live_path: str | None = None
        self._live_dtype = np.dtype(np.uint8)
        self._temporary: dict[str, Any] = {}  # temporary store path → the layer showing it
        self._doomed: set[str] = set()  # temporary stores whose layer was removed while the run wrote them
        self._last_refresh = 0.0
        self._napari_progress = None
        self.last_error = ""

        self.segment_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(self._save_dialog)
        self.browse_button.clicked.connect(self._browse)
        self.image_combo.currentIndexChanged.connect(self._suggest_axes)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.output_combo.currentIndexChanged.connect(self._on_output_changed)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        SESSION.changed.connect(self._refresh_models)
        wait_at_quit(self.cancel)  # napari quitting: stop the run, let the threads end before Qt is torn down
        self._start_loading()

    # --- choices -----------------------------------------------------------------------------------------

    def _start_loading(self) -> None:
        from napari.qt.threading import create_worker

        self.loader = create_worker(_load_choices, _start_thread=False, _ignore_errors=True)
        self.loader.returned.connect(self._on_choices)
        self.loader.errored.connect(self._on_load_error)
        self.loader.start()

    @_alive
    def _on_choices(self, value) -> None:
        choices, infos, devices, runtimes = value
        if not self._choices_loaded:
            self._fill_models(choices, infos)
        for combo, items in ((self.device_combo, devices), (self.runtime_combo, runtimes)):
            current = combo.currentText()
            combo.clear()
            combo.addItems(list(items))
            combo.setCurrentText(current)

    @_alive
    def _on_load_error(self, err) -> None:
        self._error(f"Could not list the models: {_message(err)}")

    def image_layer(self):
        return self.image_combo.layer()

    def model_key(self) -> str:
        """The chosen model's reference (the catalogue's text, e.g. ``"shipped:unet.nuclei2d"``)."""
        return self.model_combo.currentData() or _FILE

    def models_ready(self) -> bool:
        return self._choices_loaded

    def select_model(self, reference: str, name: str | None = None) -> None:
        """Choose a model by reference (``"unet.nuclei2d"``, ``"zoo:unet"``, ``"file"``) or ``(kind, name)`` (a
        script or test may call this before the list has loaded: it lists them now)."""
        if not self._choices_loaded:
            choices = model_choices()
            self._fill_models(choices, _model_infos(choices))
        key = select_reference(reference, name)
        index = self.model_combo.findData(key)
        if index < 0:
            raise ValueError(f"No model choice {key!r} in the Segment widget.")
        self.model_combo.setCurrentIndex(index)

    def _refresh_models(self, *_):
        try:
            if self._choices_loaded:
                choices = model_choices()  # the session's models changed: the catalogue lists them
                session = [c for c in choices if _kind(c[1]) == "session"]
                self._fill_models(choices, {**self._infos, **_model_infos(session)})
        except RuntimeError:  # the dock is gone; the session store outlives it
            SESSION.changed.disconnect(self._refresh_models)

    def _fill_models(self, choices, infos) -> None:
        self._choices, self._infos, self._choices_loaded = list(choices), dict(infos), True
        current = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for label, key in choices:
            self.model_combo.addItem(label, key)
        keys = [self.model_combo.itemData(i) for i in range(self.model_combo.count())]
        self.model_combo.setCurrentIndex(keys.index(current) if current in keys else 0)
        self.model_combo.blockSignals(False)
        self.segment_button.setEnabled(self.worker is None or not self.worker.is_running)
        if self.status.text() == "Loading the models…":
            self.status.setText("")
        self._on_model_changed()

    def _instances_possible(self) -> bool | None:
        """Whether the chosen model gives instances (``None``: not known before a model file is read)."""
        kind, _, name = self.model_key().partition(":")
        if kind == "zoo":
            return False  # an untrained architecture is a semantic network
        if kind == "session" and name in SESSION.names():
            return instance_capable(SESSION.get(name))
        if kind == "shipped":
            from segarch.models import pretrained

            card = pretrained.card(name)
            return bool(card.get("instance")) or pretrained.task_of(card) == "instance" or "instance" in name
        return None

    def _on_model_changed(self, *_):
        kind = _kind(self.model_key())
        possible = self._instances_possible()
        item = self.output_combo.model().item(2)
        if item is not None:
            item.setEnabled(possible is not False)
            if possible is False and self.output_combo.currentText() == "instances":
                self.output_combo.setCurrentIndex(0)
            elif possible and self.output_combo.currentText() == "labels":
                self.output_combo.setCurrentIndex(2)  # an instance model: objects are what it is for
        is_file = kind == "file"
        for w in (self.file_edit, self.browse_button, self.arch_edit):
            w.setEnabled(is_file)
        self.status.setStyleSheet("")
        if kind == "zoo":
            self.status.setStyleSheet("color: #e0a030")
            self.status.setText("This architecture is untrained: its output is meaningless until it is trained. "
                                "Train it on your annotations with the Train widget or `segarch train`.")
        elif self.status.text().startswith("This architecture is untrained"):
            self.status.setText("")
        self._suggest_axes()

    def _on_output_changed(self, *_):
        self.background_check.setEnabled(self.output_combo.currentText() == "probabilities")

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "Model file", "", "Models (*.safetensors *.pt *.pth *.ckpt *.zip)")
        if path:
            self.file_edit.setText(path)

    def _model_info(self) -> tuple[int, int] | None:
        """(spatial dims, input channels) of the chosen model when known without loading it."""
        return self._infos.get(self.model_key())

    def _suggest_axes(self, *_):
        layer = self.image_layer()
        if layer is None:
            self.hint.setText("")
            return
        info = self._model_info()
        axes = suggest_axes(layer, info)
        self.axes_edit.setText(axes)
        self.hint.setText(self._axes_hint(axes, info))

    def _axes_hint(self, axes: str, info) -> str:
        if info is None or info[0] != 2 or "Z" not in axes:
            return ""
        three_d = [key.partition(":")[2] for _, key in self._choices if _kind(key) == "shipped"
                   and self._infos.get(key, (2,))[0] == 3] if self._choices_loaded else []
        where = f" A 3D model exists: {', '.join(three_d)} (shipped)." if three_d else ""
        return f"A 2D model segments this stack slice by slice (Z is looped over).{where}"

    # --- running -----------------------------------------------------------------------------------------

    def run(self):
        """Start segmenting the chosen layer (returns at once; the work runs in a thread)."""
        from napari.qt.threading import create_worker

        layer = self.image_layer()
        if layer is None:
            self._error("Choose an image layer to segment.")
            return
        if self.worker is not None and self.worker.is_running:
            self._error("A segmentation is running; cancel it or wait for it to finish.")
            return
        data = layer.data[0] if layer.multiscale else layer.data  # level 0 of a pyramid
        axes = self.axes_edit.text().strip().upper() or suggest_axes(layer, self._model_info())
        params = {
            "axes": axes or None,
            "tile": self.tile_spin.value() or None,
            "overlap": self.overlap_spin.value(),
            "batch_size": self.batch_spin.value(),
            "device": self.device_combo.currentText(),
            "runtime": self.runtime_combo.currentText(),
            "output": self.output_combo.currentText(),
        }
        if self.int8_check.isChecked():
            params["precision"] = "int8"
        out = self.out_edit.text().strip()
        temporary = False
        self.last_error = ""
        if out:
            choice = self._existing_store_choice(out)
            if choice is None:
                if not self.last_error:
                    self.status.setText("Not started: the output store is kept as it is.")
                return
            if choice == "resume":
                params["resume"] = True
            elif choice == "replace":
                params["overwrite"] = True
        elif int(np.prod(data.shape)) > _LAZY_OUTPUT_PIXELS or not isinstance(data, np.ndarray):
            out, temporary = str(Path(tempfile.mkdtemp(prefix="segarch-")) / f"{_safe(layer.name)}.zarr"), True
        if out:
            params["out"] = out
        self._live_path = out or None
        self._live_layer = None
        self._layer = layer
        self._axes = axes
        self._blocks = None
        self._live_dtype = np.dtype(np.uint32 if params["output"] == "instances" else np.uint8)
        if self._live_path and params["output"] in ("labels", "instances") and len(axes) == data.ndim:
            # Add the result layer now (adding a layer is napari's own cost, paid before the work starts):
            # it reads the store's levels as they are written, zeros until then; it is refreshed, never swapped.
            shape = tuple(n for a, n in zip(axes, data.shape) if a != "C")
            self._live_layer = self._add_live_labels(out, shape, axes.replace("C", ""))
            if temporary:
                self._temporary[out] = self._live_layer
                atexit.register(shutil.rmtree, str(Path(out).parent), True)
        self._cancel = _RunCancel()
        kwargs = {"path": self.file_edit.text().strip(), "arch": self.arch_edit.text().strip(),
                  "in_channels": 3 if getattr(layer, "rgb", False) else 1}
        self.worker = create_worker(_segment, self.model_key(), kwargs, data, params, self._signals.progress.emit,
                                    self._cancel, _start_thread=False, _ignore_errors=True)
        self._cancel.worker = self.worker
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_finished)
        self.segment_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setValue(0)
        self.last_error = ""
        previous = _cap_view_cache()
        # Given back when the worker ends, whether or not this dock still exists then.
        self.worker.finished.connect(lambda: _restore_view_cache(previous))
        where = f" into {out}" + (" (temporary: deleted when its layer is removed or napari quits)" if temporary
                                  else "") if out else ""
        self.status.setStyleSheet("")
        self.status.setText(f"Segmenting {layer.name}{where}…")
        self.worker.start()

    def _existing_store_choice(self, path: str) -> str | None:
        """``"new"`` for a path with nothing there; for a segarch result, ask the user: ``"resume"``,
        ``"replace"`` or ``None`` (keep it, don't run). Anything else: the engine's rules say why it cannot
        be replaced (shown; ``None``). What the engine accepts stays the engine's call."""
        from segarch.destinations import check_output_store

        state = store_state(path)
        if state == "absent":
            return "new"
        if state == "other":
            try:
                check_output_store(path, overwrite=True, resume=False)  # side-effect free: the rules only
            except ValueError as err:
                self._error(_message(err))
                return None
            return "new"
        return ask_about_existing_store(self, path, state)

    def _live_levels(self, path: str, shape: tuple[int, ...], axes: str):
        from segarch.tiling.pyramid import live_levels

        levels = live_levels(path, shape, axes, self._live_dtype)
        # Instances are written block by block at full resolution only (no pyramid): one level.
        return levels[:1] if self.output_combo.currentText() == "instances" else levels

    def _add_live_labels(self, path: str, shape: tuple[int, ...], axes: str):
        levels = self._live_levels(path, shape, axes)
        layer = self._add_result(levels if len(levels) > 1 else levels[0], None, live=True)
        layer.metadata["store"] = path
        return layer

    def closeEvent(self, event):  # noqa: N802 - Qt's name
        self.cancel()  # a closing dock must not leave a worker writing into a dead viewer
        self.image_combo.disconnect_viewer()
        super().closeEvent(event)

    def cancel(self):
        """Stop the run within one batch; what was finished is kept."""
        if self._cancel is not None:
            self._cancel.set()
            try:
                self.status.setText("Cancelling…")
            except RuntimeError:
                pass

    @_alive
    def _on_progress(self, done: int, total: int):
        from napari.utils import progress

        if self._napari_progress is None:
            self._napari_progress = progress(total=total, desc=f"Segment {self._layer.name}")
        self._napari_progress.total = total
        self._napari_progress.n = done
        self._napari_progress.refresh()
        self.progress_bar.setMaximum(max(total, 1))
        self.progress_bar.setValue(done)
        if self._live_layer is not None and time.perf_counter() - self._last_refresh > _REFRESH_SECONDS:
            self._last_refresh = time.perf_counter()
            self._check_live_dtype()
            self._live_layer.refresh()

    def _check_live_dtype(self) -> None:
        # The store's dtype follows the model's class count (uint8 up to 256 classes): rarely wider.
        level = self._live_layer.data[0] if self._live_layer.multiscale else self._live_layer.data
        array = level._open()
        if array is not None and np.dtype(array.dtype) != level.dtype:
            self._live_dtype = np.dtype(array.dtype)
            levels = self._live_levels(level.path, level.shape, self._axes.replace("C", ""))
            self._live_layer.data = levels if len(levels) > 1 else levels[0]

    @_alive
    def _on_returned(self, value):
        model, result, complete, seconds, blocks, report = value
        instances = self.output_combo.currentText() == "instances"
        if self._live_path in self._doomed:
            self.status.setText("Cancelled: its result layer was removed (the temporary store is deleted).")
            return
        if self.output_combo.currentText() == "panoptic" and result is not None:
            layer = self._add_panoptic(result, model)
        elif self._live_layer is not None and self._live_layer in self.viewer.layers:
            self._check_live_dtype()
            self._live_layer.refresh()
            if not instances:
                _set_classes(self._live_layer, model.class_names)
            layer = self._live_layer
        elif result is None:  # instances cancelled before decoding: nothing to show yet
            self.status.setText("Cancelled before the objects were decoded" + (
                f"; the finished part is kept in {self._live_path}: Segment again and choose Resume."
                if self._live_path and self._live_path not in self._temporary else "."))
            return
        elif self._live_path and not isinstance(result, np.ndarray):
            layer = self._add_store_result(model)
        else:
            layer = self._add_result(result, model)
        self.result_layer = layer
        self.save_button.setEnabled(True)
        if complete:
            state = "done"
            self.progress_bar.setValue(self.progress_bar.maximum())
        else:
            kept = f"{blocks[0]} of {blocks[1]} blocks" if blocks else "finished blocks"
            resume = (" Segment again with the same settings and choose Resume to finish it."
                      if self._live_path and self._live_path not in self._temporary else "")
            state = f"cancelled ({kept} kept in {self._live_path}).{resume}" if self._live_path else "cancelled"
        where = ""
        if complete and self._live_path in self._temporary:
            where = (f" It is in a temporary store, {self._live_path}, deleted with the layer or when napari "
                     "quits: Save result… keeps it.")
        elif complete and self._live_path:
            where = f" Written to {self._live_path}."
        objects = ""
        if report is not None:
            _set_features(layer, report.get("measurements"))
            objects = (f" {report['objects']} objects ({report['merged_across_seams']} merged across block seams, "
                       f"{report['touching_border']} touching the border).")
            note = (report.get("pixel_size") or {}).get("note")
            objects += f" Pixel size: {note}." if note else ""
        self.status.setStyleSheet("")
        self.status.setText(f"{layer.name}: {state}" + (f" in {seconds:.1f} s." if complete else "") + objects
                            + where)

    @_alive
    def _on_errored(self, err: Exception):
        log.error("Segment failed", exc_info=err)
        self._error(_message(err))
        if self._live_layer is not None and (self._live_path in self._temporary
                                             or store_state(self._live_path) == "absent"):
            self._remove_layer(self._live_layer)  # nothing was computed into it

    @_alive
    def _on_finished(self):
        for path in list(self._doomed):
            shutil.rmtree(Path(path).parent, ignore_errors=True)
            self._doomed.discard(path)
        self.segment_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self._napari_progress is not None:
            self._napari_progress.close()
            self._napari_progress = None
        self._cancel = None

    def save_result(self, path: str) -> list[str]:
        """Write the last result through the plugin's writer (``.zarr``: OME-Zarr with its pyramid; ``.tif``:
        OME-TIFF), read chunk by chunk. napari's default TIFF writer keeps neither labels nor geometry."""
        from napari import save_layers

        layer = self.result_layer
        if layer is None or layer not in self.viewer.layers:
            raise ValueError("Nothing to save: segment an image first.")
        if Path(path).exists():
            raise ValueError(f"{path!r} already exists: choose a new name (nothing is replaced from here).")
        written = save_layers(path, [layer], plugin="napari-segarch")
        self.status.setText(f"Saved {layer.name} to {path}: it reopens as labels with its scale and classes.")
        return written

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save result", "", "OME-Zarr (*.zarr);;OME-TIFF (*.tif *.tiff)")
        if path:
            try:
                self.save_result(path)
            except (ValueError, OSError) as err:
                self._error(f"Could not save: {_message(err)}")

    def _error(self, message: str) -> None:
        self.last_error = message
        self.status.setStyleSheet("")
        self.status.setText(f"Error: {message}")
        _notify_error(message)

    def _remove_layer(self, layer) -> None:
        if layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def _on_layer_removed(self, event) -> None:
        # A temporary store is only reachable through its layer: when the layer goes, the store goes (after
        # the run writing it has stopped).
        layer = event.value
        for path, shown in list(self._temporary.items()):
            if shown is layer:
                del self._temporary[path]
                if self.worker is not None and self.worker.is_running and path == self._live_path:
                    self._doomed.add(path)
                    self.cancel()
                else:
                    shutil.rmtree(Path(path).parent, ignore_errors=True)

    def _add_panoptic(self, result, model):
        """A panoptic result as two Labels layers: the classes (named), and the instances (returned: they get the
        per-object table, with its class column)."""
        classes = self._add_result(result.classes, model)
        classes.name = f"{self._layer.name} classes"
        instances = self._add_result(result.instances, model)
        instances.name = f"{self._layer.name} instances"
        return instances

    def _add_store_result(self, model):
        """A finished store's result as layers that read its levels (probabilities: one layer per class)."""
        import zarr

        from segarch.tiling.pyramid import live_levels

        array = zarr.open_group(self._live_path, mode="r")["0"]
        levels = live_levels(self._live_path, array.shape, self._output_axes(model), array.dtype)
        return self._add_result(levels if len(levels) > 1 else levels[0], model)

    def _output_axes(self, model) -> str:
        """The result's axes, as the engine states them (:func:`segarch.axes.output_axes`)."""
        from segarch.axes import output_axes

        output = self.output_combo.currentText()
        return output_axes(self._axes, model.spatial_dims, "labels" if output == "instances" else output)

    def _add_result(self, data, model, live: bool = False):
        layer = self._layer
        name = f"{layer.name} segmentation"
        axes = self._axes or suggest_axes(layer, None if model is None else (model.spatial_dims, model.in_channels))
        layer_axes = axes.replace("C", "") if getattr(layer, "rgb", False) else axes
        scale = dict(zip(layer_axes, layer.scale))
        translate = dict(zip(layer_axes, layer.translate))
        units = dict(zip(layer_axes, getattr(layer, "units", ()) or ()))
        if self.output_combo.currentText() == "probabilities" and not live:
            # segarch.predict puts the classes after the looped axes: one napari layer per class, each reading
            # only its own channel. The background's probability covers the image: left out unless asked for.
            out_axes = self._output_axes(model)
            channel, kept = out_axes.index("C"), out_axes.replace("C", "")
            classes = list(model.class_names)
            first = 0 if self.background_check.isChecked() or len(classes) == 1 else 1
            levels = data if isinstance(data, list) else [data]
            added = []
            for i, c in enumerate(classes[first:]):
                level_views = [_Channel(level, channel, first + i) for level in levels]
                added.append(self.viewer.add_image(
                    level_views if len(level_views) > 1 else level_views[0], multiscale=len(level_views) > 1,
                    name=f"{name}: {c}", colormap=_CLASS_COLORMAPS[i % len(_CLASS_COLORMAPS)], blending="additive",
                    contrast_limits=(0.0, 1.0), scale=[scale.get(a, 1.0) for a in kept],
                    translate=[translate.get(a, 0.0) for a in kept], **_units(units, kept)))
            return added[0]
        out_axes = axes.replace("C", "")
        labels = self.viewer.add_labels(data, name=name, scale=[scale.get(a, 1.0) for a in out_axes],
                                        translate=[translate.get(a, 0.0) for a in out_axes],
                                        multiscale=isinstance(data, list) and len(data) > 1,
                                        **_units(units, out_axes))
        if model is not None and self.output_combo.currentText() != "instances":
            _set_classes(labels, model.class_names)
        geo = layer.metadata.get("geo") if isinstance(layer.metadata, dict) else None
        if geo is not None:  # same grid as the source: the writer saves it as a GeoTIFF
            labels.metadata["geo"] = geo
        return labels


def _cap_view_cache() -> int | None:
    """Cap napari's Dask view cache for a run; returns the size to give back (``None``: nothing changed)."""
    from napari.utils import resize_dask_cache

    size = resize_dask_cache().cache.available_bytes
    if size <= _VIEW_CACHE_DURING_RUN:
        return None
    resize_dask_cache(_VIEW_CACHE_DURING_RUN)
    return size


def _restore_view_cache(size: int | None) -> None:
    from napari.utils import resize_dask_cache

    if size and resize_dask_cache().cache.available_bytes == _VIEW_CACHE_DURING_RUN:  # not changed meanwhile
        resize_dask_cache(size)


def ask_about_existing_store(parent, path: str, state: str) -> str | None:
    """Ask what to do with the existing store at ``path``: ``"resume"``, ``"replace"``, or ``None``."""
    box = QMessageBox(parent)
    box.setObjectName("existing store")
    box.setIcon(QMessageBox.Question)
    box.setWindowTitle("Output store exists")
    resume = None
    if state == "incomplete":
        box.setText(f"{path} holds an unfinished segmentation (cancelled or interrupted).")
        box.setInformativeText("Resume finishes it with the same settings (the blocks already written are kept); "
                               "Replace deletes it and starts again.")
        resume = box.addButton("Resume", QMessageBox.AcceptRole)
    else:
        box.setText(f"{path} already holds a finished segmentation.")
        box.setInformativeText("Replace deletes it and writes the new result there.")
    replace = box.addButton("Replace", QMessageBox.DestructiveRole)
    keep = box.addButton("Cancel", QMessageBox.RejectRole)
    box.setDefaultButton(resume or keep)
    box.setEscapeButton(keep)
    box.exec_()
    clicked = box.clickedButton()
    return "resume" if clicked is resume and resume is not None else "replace" if clicked is replace else None


class _Channel:
    """One channel of an array-like (a NumPy array or a store level): indexing reads only that channel."""

    def __init__(self, array, axis: int, index: int) -> None:
        self.array, self.axis, self.index = array, axis, index
        self.shape = tuple(n for i, n in enumerate(array.shape) if i != axis)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        index = list(index) if isinstance(index, tuple) else [index]
        if any(i is Ellipsis for i in index):
            at = index.index(Ellipsis)
            index[at: at + 1] = [slice(None)] * (self.ndim - len(index) + 1)
        index += [slice(None)] * (self.ndim - len(index))
        index.insert(self.axis, self.index)
        return np.asarray(self.array[tuple(index)])

    def __array__(self, dtype=None, copy=None):
        out = self[(slice(None),) * self.ndim]
        return out if dtype is None else out.astype(dtype, copy=False)


def _units(units: dict, axes: str) -> dict:
    if not any(units.get(a) for a in axes):
        return {}
    return {"units": [units.get(a) or "pixel" for a in axes]}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "result"


def _message(err: BaseException) -> str:
    """The engine's message for a ``ValueError`` (it names the parameter and what is allowed); the type
    with it for anything else, never a bare key."""
    if isinstance(err, (ValueError, FileNotFoundError, PermissionError)) and str(err):
        return str(err)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _set_features(layer, table) -> None:
    """The per-object table as the Labels layer's features (napari matches rows to labels by ``index``)."""
    if not table or layer is None or not hasattr(layer, "features"):
        return
    import pandas as pd

    frame = pd.DataFrame({k: np.asarray(v) for k, v in table.items()})
    frame.insert(0, "index", frame["label"].to_numpy())
    layer.features = frame


def _set_classes(layer, class_names) -> None:
    import pandas as pd

    layer.features = pd.DataFrame({"index": np.arange(len(class_names)), "class": list(class_names)})


def suggest_axes(layer, model=None) -> str:
    """Axes for ``layer``'s data: RGB, the reader's metadata, or what the model (a :class:`segarch.Model`
    or its ``(spatial_dims, in_channels)``) makes unambiguous. Single-channel models get stacks (``ZYX``,
    ``TZYX``), never a guessed channel axis."""
    data = layer.data[0] if layer.multiscale else layer.data
    shape = tuple(data.shape)
    if getattr(layer, "rgb", False):
        return "ZYX"[-(len(shape) - 1):] + "C"
    meta = layer.metadata.get("axes") if isinstance(layer.metadata, dict) else None
    if isinstance(meta, str) and len(meta) == len(shape):
        return meta
    from segarch.axes import guess_axes

    if model is None:
        dims, channels = 2, 1
    elif isinstance(model, tuple):
        dims, channels = model
    else:
        dims, channels = model.spatial_dims, model.in_channels
    try:
        return guess_axes(shape, spatial_dims=dims, in_channels=channels)  # the engine's own guess
    except ValueError:
        return ""  # the user types them


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)
