"""The Extreme points dock widget: click an object's extreme points, get its mask in a Labels layer.

Thin: the clicks are collected in a Points layer; on the 4th (6th in 3D) the mask is computed by
:func:`segarch.prompts.segment_from_points` in a napari worker thread, then painted (on the GUI thread)
under the next free label id, never over existing labels unless asked. Ctrl+Z (or "Undo last object")
removes the last object painted.

Corrections: with "clicks" set to "add to object" (positive) or "remove from object" (negative), each click
refines the object painted last (the model takes the clicks and its previous mask); undo takes back one click
(in a Zarr labels store too: the store puts the chunks back). A 3D model that records its training voxel size gets
the image layer's ``scale`` as ``pixel_size`` (thick slices are resampled to its voxels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget,
)

from napari_segarch._layer_combo import LayerCombo
from segarch.models.session import SESSION

if TYPE_CHECKING:
    import napari

__all__ = ["ExtremePointsWidget"]

_NEW_LABELS = "New labels layer"
_POINTS_NAME = "extreme points"
# segarch.prompts.edges.MIN_EDGE (not imported here: importing segarch.prompts loads torch on the GUI thread):
# below this edge ratio along the outline, the clicks are taken for background.
# Takes corrective clicks, and without them is as good as dextr_light.objects2d (its card: 0.9388 against 0.9385)
_DEFAULT_MODEL = "dextr_light.clicks2d"
_CLICK_MODES = ("new object", "add to object (+)", "remove from object (-)")
_MIN_EDGE = 1.3
# Above this many pixels (or for a lazy image) new labels live in a Zarr store on disk, not in memory.
_LARGE_PIXELS = 4096 * 4096
# Above this many pixels per plane (Y×X) that store is multiscale: napari reads a single-level layer's whole plane.
_LEVELS_PIXELS = 4096 * 4096


@dataclass(eq=False)  # compared by identity: undo finds an entry by identity in the history
class _Painted:
    """What one painted object changed, to undo it: the box, the pixels set and their old values."""

    layer: Any
    index: tuple
    where: np.ndarray
    before: np.ndarray
    label: int
    store: Any = None  # a LabelStore (Zarr-backed layer): it undoes the object itself
    edits: int = 1  # the store's edits this object made (one per slice of a propagated object)
    offset: tuple = ()  # a store's object: where ``where`` (the pixels it painted, over its crop) starts
    replaced: "_Painted | None" = None  # a correction replaces the object's previous mask (undo paints it back)


class _PlacedMask:
    """An object's mask over the crop, addressed like a mask over the whole image (``previous`` reads only the crop;
    a full-size mask of a large image is never made)."""

    def __init__(self, crop: np.ndarray, offset, shape) -> None:
        self.crop, self.offset, self.shape = crop, tuple(int(v) for v in offset), tuple(int(v) for v in shape)

    def __getitem__(self, index):
        out = np.zeros(tuple(b.stop - b.start for b in index), bool)
        src = tuple(slice(max(b.start, o), min(b.stop, o + n)) for b, o, n in zip(index, self.offset, self.crop.shape))
        if all(a.stop > a.start for a in src):
            out[tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(src, index))] = \
                self.crop[tuple(slice(a.start - o, a.stop - o) for a, o in zip(src, self.offset))]
        return out


def _click_runtime(model) -> str:
    """What runs a click's network: in 3D on the CPU ``auto`` (OpenVINO took 0.45× torch's time per 3D click in
    benchmarks/prompts.py; the export is made once and cached, torch when nothing faster runs it); in 2D torch
    (a 64² crop: no runtime was faster, and the first click would pay for the export)."""
    on_cpu = all(p.device.type == "cpu" for p in model.network.parameters())
    return "auto" if model.spatial_dims == 3 and on_cpu else "torch"


def _segment(model_spec, data, points, axes, size, margin, corrections=None, pixel_size=None):
    """The worker's job (off the GUI thread): resolve the model once, segment, return the crop and how much
    the object stands out from its surroundings (``corrections``: ``positive``, ``negative``, ``previous``;
    ``pixel_size``: the layer's scale, used when the model records the voxel size it was trained at)."""
    from segarch.prompts.segment import resolve_prompt_model, segment_from_points
    from segarch.prompts.edges import outline_edge
    from segarch.arrays import compute_here

    model = resolve_prompt_model(model_spec)
    started = time.perf_counter()
    voxels = {"pixel_size": pixel_size} if pixel_size is not None and getattr(model, "pixel_size", None) else {}
    crop, offset = segment_from_points(model, data, points, axes=axes, size=size, margin=margin,
                                       return_crop=True, runtime=_click_runtime(model), **(corrections or {}),
                                       **voxels)
    seconds = time.perf_counter() - started
    edge = None
    if crop.any() and not corrections:
        ring = 8
        lo = [max(0, o - ring) for o in offset]
        hi = [min(n, o + c + ring) for o, c, n in zip(offset, crop.shape, data.shape)]
        region = compute_here(data[tuple(slice(a, b) for a, b in zip(lo, hi))]).astype(np.float64)
        mask = np.zeros(region.shape, bool)
        mask[tuple(slice(o - a, o - a + c) for o, a, c in zip(offset, lo, crop.shape))] = crop
        edge = outline_edge(region, mask)
    return model, crop, offset, seconds, edge


def _fine_tune(model_spec, image, labels, regions, steps, cancel):
    """The worker's job: fine-tune on the annotated objects (through segarch.train)."""
    from segarch.training.annotations import fine_tune_on_annotations

    return fine_tune_on_annotations(model_spec, image, labels, regions, steps=steps, cancel=cancel)


def _propagate(model_spec, data, z, crop, offset):
    """The worker's job: yield each slice of the propagated object (a generator: Cancel closes it)."""
    from segarch.prompts.propagation import propagation_steps
    from segarch.prompts.segment import resolve_prompt_model

    yield from propagation_steps(resolve_prompt_model(model_spec), data, int(z), mask=crop, offset=offset)


class ExtremePointsWidget(QWidget):
    """Segment objects by their extreme points (DEXTR) into a Labels layer, 2D, slice by slice or 3D."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self.viewer = napari_viewer
        from napari.layers import Image, Labels

        self.image_combo = LayerCombo(napari_viewer, (Image,))
        # A new layer by default: never paint into ground truth or another result unless the user picks it.
        self.labels_combo = LayerCombo(napari_viewer, (Labels,), extra=[_NEW_LABELS], prefer_extra=True)
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.setToolTip("shipped weights (e.g. dextr_light.objects2d), a model trained in this session "
                                    "(session:NAME) or a model file (.safetensors)")
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["2D (4 points)", "3D (6 points)"])
        self.overwrite_check = QCheckBox("overwrite existing labels")
        self.faint_check = QCheckBox("paint low-contrast objects")
        self.faint_check.setToolTip("Paint even where the outlined object looks like its surroundings (by default "
                                    "that is taken for clicks on background: 'no object found').")
        self.click_combo = QComboBox()
        self.click_combo.addItems(_CLICK_MODES)
        self.click_combo.setToolTip("After an object is painted: one click adds a missed part (positive) or removes "
                                    "a wrong part (negative) of it; undo takes back one click.")
        self.start_button = QPushButton("Start clicking")
        self.undo_button = QPushButton("Undo last object")
        self.propagate_button = QPushButton("Propagate through slices")
        self.propagate_button.setToolTip("Carry the last object (2D mode, on a slice of a stack) to the slices above "
                                         "and below, under the same id, until it ends.")
        self.cancel_button = QPushButton("Cancel")
        self.finetune_button = QPushButton("Fine-tune on my objects")
        self.finetune_button.setToolTip("Fine-tune the model on the objects painted so far (their final masks); the "
                                        "result joins this session's models and is chosen for the next objects.")
        self.cancel_button.setEnabled(False)
        self.status = QLabel("Pick an image, then click an object's left, right, top and bottom points.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("labels", self.labels_combo)
        form.addRow("model", self.model_combo)
        form.addRow("mode", self.mode_combo)
        form.addRow("clicks", self.click_combo)
        form.addRow("", self.overwrite_check)
        form.addRow("", self.faint_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.undo_button)
        stack_buttons = QHBoxLayout()
        stack_buttons.addWidget(self.propagate_button)
        stack_buttons.addWidget(self.cancel_button)
        stack_buttons.addWidget(self.finetune_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addLayout(stack_buttons)
        layout.addWidget(self.status)
        layout.addStretch()

        self.points_layer = None
        self.worker = None
        self.history: list[_Painted] = []
        self.last_error = ""
        self.last_found: bool | None = None  # False after clicks taken for background
        self.last_seconds = None
        self._model = None
        self._loaded_from = None
        self._pending = None
        self._clearing = False
        self.labels_folder = None  # where Zarr labels of lazy or large images go (default: a temporary folder)
        self._stores: dict[int, Any] = {}
        self.last_stops: dict[str, str] = {}
        self.last_object = None  # (labels, slice index, crop, offset, label) of the last 2D object painted
        self.propagation = None  # the running propagation: (labels, store, label, history entry)
        self._cancel_event = None  # set by Cancel: stops fine-tuning within a step
        self.current = None  # the object corrections refine: points, clicks, mask, label
        self._correcting = None

        self._refresh_models()
        self.model_combo.currentTextChanged.connect(self._on_model_changed)
        self._on_model_changed(self.model_combo.currentText())
        self.start_button.clicked.connect(self.start)
        self.undo_button.clicked.connect(self.undo)
        self.propagate_button.clicked.connect(self.propagate)
        self.cancel_button.clicked.connect(self.cancel)
        self.finetune_button.clicked.connect(self.fine_tune)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.mode_combo.currentIndexChanged.connect(self._on_mode_changed)
        SESSION.changed.connect(self._refresh_models)
        self._on_image_changed()

    # --- choices ---------------------------------------------------------------------------------
    def _refresh_models(self) -> None:
        """List the trained extreme-point models (shipped, this session's) from the model catalogue; each item
        shows the reference one would type (``dextr_light.objects2d``, ``session:NAME``)."""
        from segarch.models.catalog import choices  # cards only: no torch on the GUI thread

        try:
            current = self.model_combo.currentText()
        except RuntimeError:  # the dock was closed; the session outlives it
            SESSION.changed.disconnect(self._refresh_models)
            return
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for ref in choices(task="interactive", kinds=("shipped", "session")):
            self.model_combo.addItem(ref.text, str(ref))
        if current or self.model_combo.findText(_DEFAULT_MODEL) >= 0:
            self.model_combo.setCurrentText(current or _DEFAULT_MODEL)
        self.model_combo.blockSignals(False)

    def _model_spec(self) -> str:
        """What the worker resolves (through the model catalogue): a listed model's reference, or the typed text
        (shipped weights' name, ``session:NAME`` or a model file's path)."""
        text = self.model_combo.currentText().strip()
        index = self.model_combo.findText(text)
        return self.model_combo.itemData(index) if index >= 0 else text

    def _on_model_changed(self, name: str) -> None:
        """A listed model sets the mode it was trained for (2D: 4 points, 3D: 6). Typed text is not looked up
        here: only when segmenting, off the GUI thread."""
        from segarch.models.catalog import describe

        if self.model_combo.findText(name.strip()) < 0:
            return
        info = describe(self._model_spec())
        if info is not None:
            self.mode_combo.setCurrentIndex(1 if info.spatial_dims == 3 else 0)

    def _refresh_layers(self, *_) -> None:
        """List the viewer's layers again (they are followed as they are added, removed or renamed)."""
        self.image_combo.refresh()
        self.labels_combo.refresh()

    def _own_labels(self, image):
        """The Labels layer this widget made for ``image`` ("<image> objects"), if it is still there."""
        from napari.layers import Labels

        name = f"{image.name} objects"
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, Labels) and tuple(layer.data.shape) == _spatial_shape(image) else None

    def _on_image_changed(self, *_) -> None:
        image = self.image_layer
        if image is not None:
            self.labels_combo.set_layer(self._own_labels(image))  # its own objects layer, else a new one

    def _on_mode_changed(self, *_) -> None:
        # Clicks of the other mode are not an object of this one: start over with a Points layer that fits.
        if self.points_layer is not None and self.points_layer in self.viewer.layers and len(self.points_layer.data):
            self._clear_points()
        if self.points_layer is not None and self.points_layer in self.viewer.layers:
            self.start()

    @property
    def image_layer(self):
        return self.image_combo.layer()

    @property
    def spatial_dims(self) -> int:
        return 3 if self.mode_combo.currentIndex() == 1 else 2

    def _labels_layer(self, image):
        """The chosen Labels layer, or a new one over the image's pixels (created on the GUI thread)."""
        chosen = self.labels_combo.layer()
        if chosen is not None:
            return chosen
        own = self._own_labels(image)
        if own is not None:
            self.labels_combo.set_layer(own)
            return own
        shape = _spatial_shape(image)
        store = self._new_store(image, shape) if _needs_store(image) else None
        data = np.zeros(shape, np.uint32) if store is None else store.levels if store.multiscale else store.array
        layer = self.viewer.add_labels(data, name=f"{image.name} objects",
                                       multiscale=store is not None and store.multiscale,
                                       scale=image.scale[: len(shape)], translate=image.translate[: len(shape)])
        self.labels_combo.set_layer(layer)
        return layer

    def _new_store(self, image, shape):
        """A new Zarr labels store for a lazy or large image, in ``labels_folder`` (a temporary folder unless set)."""
        import tempfile
        from pathlib import Path

        from segarch.prompts.label_store import LabelStore

        if self.labels_folder is None:
            self.labels_folder = Path(tempfile.mkdtemp(prefix="segarch-labels-"))
        path = Path(self.labels_folder) / f"{image.name} objects.zarr"
        multiscale = len(shape) <= 4 and int(np.prod(shape[-2:])) > _LEVELS_PIXELS
        store = LabelStore.create(path, shape, overwrite=path.exists(), multiscale=multiscale)
        self.status.setText(f"Labels of {image.name!r} are written to {str(path)!r} (on disk, chunked"
                            + (f", {len(store.levels)} levels)." if multiscale else ")."))
        return store

    def label_store(self, labels):
        """The :class:`~segarch.prompts.label_store.LabelStore` of a Zarr-backed or multiscale Labels layer (None
        for an in-memory one): only the painted region is redrawn (a single level: written through the layer; a
        multiscale one: every level kept, then the shown tile's part redrawn)."""
        from functools import partial

        from napari_segarch._labels_redraw import redraw_region
        from segarch.prompts.label_store import LabelStore

        if not labels.multiscale and not type(labels.data).__module__.startswith("zarr"):
            return None
        level0 = labels.data[0] if labels.multiscale else labels.data
        if labels.multiscale and not all(isinstance(level, np.ndarray) or type(level).__module__.startswith("zarr")
                                         for level in labels.data):
            kinds = sorted({type(level).__name__ for level in labels.data})
            raise ValueError(f"The multiscale labels layer {labels.name!r} holds {', '.join(kinds)} levels, which "
                             "cannot be written here: the widget writes into Zarr or NumPy levels.")
        store = self._stores.get(id(labels))
        if store is None or store.array is not level0:
            store = LabelStore(list(labels.data), changed=partial(redraw_region, labels)) if labels.multiscale \
                else LabelStore(labels.data, write=labels.data_setitem)
            self._stores[id(labels)] = store
        return store

    # --- clicking --------------------------------------------------------------------------------
    def start(self) -> None:
        """Create (or reuse) the Points layer for clicks and select it in "add" mode."""
        image = self.image_layer
        if image is None:
            self._error("Choose an image layer first.")
            return
        self._labels_layer(image)
        ndim = image.ndim - (1 if image.rgb else 0)
        if self.spatial_dims == 3 and ndim < 3:
            self._error(f"3D mode needs a 3D image; {image.name!r} has {ndim} spatial axes.")
            return
        if self.points_layer is not None and self.points_layer in self.viewer.layers and (
                self.points_layer.ndim != ndim or tuple(self.points_layer.scale) != tuple(image.scale[:ndim])):
            # Made for another image (or mode): its clicks would have the wrong number of coordinates.
            self.viewer.layers.remove(self.points_layer)
            self.points_layer = None
        if self.points_layer is None or self.points_layer not in self.viewer.layers:
            self.points_layer = self.viewer.add_points(
                np.empty((0, ndim)), name=_POINTS_NAME, ndim=ndim, scale=image.scale[:ndim],
                translate=image.translate[:ndim], size=max(3.0, 0.01 * max(_image_data(image).shape[:ndim])),
                face_color="yellow")
            self.points_layer.events.data.connect(self._on_points)
            self.points_layer.bind_key("Control-Z", lambda _layer: self.undo(), overwrite=True)
        self.viewer.layers.selection.active = self.points_layer
        self.points_layer.mode = "add"
        need = 2 * self.spatial_dims
        self.status.setText(f"Click the object's {need} extreme points in {self.points_layer.name!r}.")

    def _on_points(self, event=None) -> None:
        if self._clearing or self.points_layer is None:
            return
        if event is not None and getattr(event, "action", "added") not in ("added", "removed", "changed"):
            return
        need = 2 * self.spatial_dims
        n = len(self.points_layer.data)
        if n and self.click_combo.currentIndex() > 0:
            click = np.asarray(self.points_layer.data, dtype=float)[-1]
            self._clear_points()
            self.correct(click, positive=self.click_combo.currentIndex() == 1)
            return
        if n < need:
            self.status.setText(f"{n} of {need} points; {need - n} more.")
            return
        points = np.asarray(self.points_layer.data, dtype=float)
        self._clear_points()
        self.segment(points)

    def _clear_points(self) -> None:
        self._clearing = True
        try:
            self.points_layer.data = np.empty((0, self.points_layer.ndim))
        finally:
            self._clearing = False

    def segment(self, points) -> None:
        """Segment the object marked by ``points`` (in the image layer's data coordinates) in a worker."""
        from napari.qt.threading import create_worker

        image = self.image_layer
        if image is None:
            self._error("Choose an image layer first.")
            return
        if self.worker is not None and self.worker.is_running:
            self._error("Still computing the previous object; click again when it is painted.")
            return
        try:
            data, pts, axes, index = self._prepare(image, np.asarray(points, dtype=float))
            from segarch.prompts.points import check_points

            spatial = tuple(s for s, a in zip(data.shape, axes) if a != "C")
            check_points(pts, spatial)
        except ValueError as err:
            self._error(str(err))
            return
        labels = self._labels_layer(image)
        image_shape = _spatial_shape(image)
        if tuple(labels.data.shape) != tuple(image_shape):
            self._error(f"The labels layer {labels.name!r} has shape {tuple(labels.data.shape)}, the image "
                        f"{image.name!r} {tuple(image_shape)}: choose labels over the same pixels, or "
                        f"{_NEW_LABELS!r}.")
            return
        try:
            self.label_store(labels)  # a Zarr store must hold integer ids
        except ValueError as err:
            self._error(f"{err} Choose other labels or {_NEW_LABELS!r}; nothing was written.")
            return
        spec = self._model if self._model is not None and self._loaded_from == self.model_combo.currentText() \
            else self._model_spec()
        if not spec:
            self._error("Choose a model: shipped extreme-point weights (e.g. dextr_light.objects2d), a session "
                        "model or a model file.")
            return
        self._pending = (labels, index)
        self.status.setText("Segmenting…")
        self._correcting = None
        scale = tuple(float(v) for v in image.scale[-self.spatial_dims:])  # thick slices: resampled for the model
        self._last_prompt = (data, pts, axes, index, scale)
        self.worker = create_worker(_segment, spec, data, pts, axes, None, None, None, scale, _ignore_errors=True)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.start()

    def correct(self, click, *, positive: bool) -> None:
        """Refine the object painted last with one corrective click (image layer data coordinates)."""
        from napari.qt.threading import create_worker

        current = self.current
        if current is None or current["painted"] not in self.history:
            self._error("No object to correct yet: click an object's extreme points first (clicks: 'new object').")
            return
        if self.worker is not None and self.worker.is_running:
            self._error("Still computing; click again when the object is painted.")
            return
        click = np.asarray(click, dtype=float)
        lead = len(click) - self.spatial_dims
        if lead and tuple(int(v) for v in np.rint(click[:lead])) != current["index"]:
            self._error(f"The correction lies on slice {tuple(int(v) for v in np.rint(click[:lead]))}, the object on "
                        f"{current['index']}: click on the object's slice.")
            return
        clicks = current["clicks"] + [(click[lead:], bool(positive))]
        positives = [p for p, kind in clicks if kind]
        negatives = [p for p, kind in clicks if not kind]
        corrections = {"positive": positives or None, "negative": negatives or None,
                       "previous": _PlacedMask(current["crop"], current["offset"], current["data"].shape)}
        self._correcting = clicks
        self.status.setText("Correcting…")
        self.worker = create_worker(_segment, self._model, current["data"], current["points"], current["axes"], None,
                                    None, corrections, current["scale"], _ignore_errors=True)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.start()

    def _prepare(self, image, points: np.ndarray):
        """The array to segment, the points in its coordinates, its axes and where its pixels sit in the labels."""
        data = _image_data(image)
        ndim = data.ndim - (1 if image.rgb else 0)
        dims = self.spatial_dims
        if points.ndim != 2 or points.shape[1] != ndim:
            raise ValueError(f"The points have {points.shape[-1]} coordinates, the image {ndim}.")
        lead = ndim - dims
        index: tuple = ()
        if lead > 0:
            # 2D on a slice of a stack (or 3D in a time series): all points must be on one slice.
            first = np.rint(points[:, :lead])
            if np.any(np.ptp(first, axis=0) > 0):
                slices = sorted({tuple(r) for r in first.astype(int).tolist()})
                raise ValueError(f"The {len(points)} points lie on different slices {slices}; "
                                 f"in {dims}D mode click all of them on one slice.")
            index = tuple(int(v) for v in first[0])
        if dims == 3 and np.ptp(np.rint(points[:, lead])) == 0:
            raise ValueError(f"The {len(points)} points all lie on slice {int(np.rint(points[0, lead]))}: in 3D mode "
                             "click the object's top and bottom on the slices where it begins and ends (or use 2D "
                             "mode for one slice).")
        if lead > 0:
            for axis, v in enumerate(index):
                if not 0 <= v < data.shape[axis]:
                    raise ValueError(f"The points' slice {v} lies outside the image's {data.shape[axis]} slices.")
            data = data[index]
        axes = "ZYX"[-dims:]
        if image.rgb:
            data = data.mean(axis=-1)  # grey for a 1-channel model
        return data, points[:, lead:], axes, index

    def _on_returned(self, value) -> None:
        model, crop, offset, seconds, edge = value
        self._model, self._loaded_from = model, self.model_combo.currentText()
        labels, index = self._pending
        self.last_seconds = seconds
        if self._correcting is not None:
            self._repaint(crop, offset, seconds)
            return
        if not crop.any():
            self.last_found = False
            self.status.setText("No object found at these points; try again.")
            return
        if edge is not None and edge < _MIN_EDGE and not self.faint_check.isChecked():
            self.last_found = False
            self.status.setText(f"No object found at these points: the image has no edge where the outline would "
                                f"run (edge ratio {edge:.2f} < {_MIN_EDGE}). Click an object's extreme points, or "
                                "tick 'paint low-contrast objects' to paint it anyway.")
            return
        self.last_found = True
        label = self.paint(labels, crop, tuple(index) + tuple(offset))
        self.last_object = (labels, tuple(index), crop, tuple(offset), label) if label else None
        if not label:
            self.status.setText("The object lies under existing labels; nothing painted (tick 'overwrite' to replace).")
            return
        data, pts, axes, _, scale = self._last_prompt
        takes = bool((getattr(model, "prompt", None) or {}).get("corrections"))
        self.current = {"data": data, "points": pts, "axes": axes, "index": tuple(index), "crop": crop,
                        "offset": tuple(offset), "clicks": [], "painted": self.history[-1], "scale": scale} \
            if takes else None
        self.status.setText(f"Object {label} painted into {labels.name!r} ({int(crop.sum())} pixels, "
                            f"{seconds * 1000:.0f} ms). Click the next object"
                            + (", or correct this one (clicks: add to / remove from object)." if takes else "."))

    def _repaint(self, crop: np.ndarray, offset, seconds: float) -> None:
        """Replace the current object's mask by its corrected one (one undo step)."""
        current = self.current
        old = current["painted"]
        self._restore(old)
        self.history.remove(old)
        label = self.paint(old.layer, crop, current["index"] + tuple(offset), label=old.label)
        if not label:  # nothing left to paint: keep the object as it was
            self._reapply(old)
            self.history.append(old)
            self.status.setText("The corrected mask is empty or under other labels; the object is unchanged.")
            return
        self.history[-1].replaced = old
        current.update(clicks=self._correcting, crop=crop, offset=tuple(offset), painted=self.history[-1])
        positives = sum(kind for _, kind in current["clicks"])
        self.status.setText(f"Object {label} corrected ({positives} positive, "
                            f"{len(current['clicks']) - positives} negative clicks; {int(crop.sum())} pixels, "
                            f"{seconds * 1000:.0f} ms).")

    def _on_errored(self, err: Exception) -> None:
        self._error(str(err))

    # --- propagation through a stack -------------------------------------------------------------------
    def propagate(self) -> None:
        """Carry the last object painted on a slice of a stack to the slices above and below (a worker; each
        slice is painted under the object's id as it comes; Cancel keeps the slices so far)."""
        from napari.qt.threading import create_worker

        image = self.image_layer
        if image is None:
            self._error("Choose an image layer first.")
            return
        ndim = image.ndim - (1 if image.rgb else 0)
        if ndim != 3 or self.spatial_dims != 2:
            self._error(f"Propagation needs a stack (Z, Y, X) in 2D mode; {image.name!r} has {ndim} spatial axes"
                        f"{'' if self.spatial_dims == 2 else ' and the mode is 3D'}.")
            return
        if self.last_object is None or self.last_object[0] not in self.viewer.layers or len(self.last_object[1]) != 1:
            self._error("Paint an object on one slice first (its extreme points in 2D mode), then propagate it.")
            return
        if self.worker is not None and self.worker.is_running:
            self._error("Still computing; propagate when it is done.")
            return
        labels, index, crop, offset, label = self.last_object
        store = self.label_store(labels)
        if store is None:  # an in-memory layer: the same edits and undo, written through the layer
            from segarch.prompts.label_store import LabelStore

            store = LabelStore(labels.data, write=labels.data_setitem)
        data = _image_data(image)
        if image.rgb:
            data = data.mean(axis=-1)
        spec = self._model if self._model is not None and self._loaded_from == self.model_combo.currentText() \
            else self._model_spec()
        entry = _Painted(labels, (), None, None, label, store, edits=0)
        self.history.append(entry)
        self.propagation = (labels, store, label, entry)
        self.status.setText(f"Propagating object {label} from slice {index[0]}…")
        self.worker = create_worker(_propagate, spec, data, index[0], crop, offset, _ignore_errors=True)
        self.worker.yielded.connect(self._on_slice)
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_propagated)
        self.cancel_button.setEnabled(True)
        self.propagate_button.setEnabled(False)
        self.worker.start()

    def _on_slice(self, step) -> None:
        labels, store, label, entry = self.propagation
        if step.kind == "slice" and step.way != "start" and labels in self.viewer.layers:
            if store.paint(step.mask, (step.z,) + tuple(step.start), overwrite=self.overwrite_check.isChecked(),
                           label=label):
                entry.edits += 1
        elif step.kind == "stopped":
            self.last_stops[step.way] = step.reason
        self.status.setText(f"Propagating object {label}: {step.done} of at most {step.total} slices.")

    def _on_propagated(self) -> None:
        labels, store, label, entry = self.propagation
        self.cancel_button.setEnabled(False)
        self.propagate_button.setEnabled(True)
        if not entry.edits and entry in self.history:
            self.history.remove(entry)  # nothing painted: nothing to undo
        stops = "; ".join(f"{way}: {why}" for way, why in self.last_stops.items()) or "stopped"
        self.status.setText(f"Object {label} propagated to {entry.edits} more slice(s) ({stops}).")
        self.last_stops = {}
        self.propagation = None

    # --- fine-tuning on the annotated objects -----------------------------------------------------------
    def annotated_regions(self, labels) -> list[tuple[int, tuple]]:
        """``(label id, box)`` of every object painted into ``labels`` by this widget and not undone."""
        regions, stores = [], []
        for entry in self.history:
            if entry.layer is not labels:
                continue
            if entry.store is None:
                regions.append((entry.label, entry.index))
            elif all(entry.store is not s for s in stores):
                stores.append(entry.store)
                for edit in entry.store.history:  # one per object, or per slice of a propagated one
                    lead = len(edit.box) - 2
                    regions.append((edit.label, tuple(int(b.start) for b in edit.box[:lead]) + edit.box[lead:]))
        return regions

    def fine_tune(self, steps: int = 150) -> None:
        """Fine-tune the model on the objects painted so far (a worker; Cancel keeps the best so far); the result
        is added to this session's models and chosen for the next objects."""
        import threading

        from napari.qt.threading import create_worker

        image = self.image_layer
        labels = self.labels_combo.layer() or (self._own_labels(image) if image is not None else None)
        if image is None or labels is None:
            self._error("Choose the image and the labels its objects were painted into first.")
            return
        regions = self.annotated_regions(labels)
        if len(regions) < 3:
            self._error(f"Fine-tuning needs at least 3 objects painted into {labels.name!r} with this widget; "
                        f"there are {len(regions)}.")
            return
        if image.rgb or self.spatial_dims == 3:
            self._error("Fine-tuning from the widget takes a grey image in 2D mode.")
            return
        if self.worker is not None and self.worker.is_running:
            self._error("Still computing; fine-tune when it is done.")
            return
        spec = self._model if self._model is not None and self._loaded_from == self.model_combo.currentText() \
            else self._model_spec()
        self._cancel_event = threading.Event()
        self.status.setText(f"Fine-tuning on {len(regions)} annotated object(s)…")
        self.worker = create_worker(_fine_tune, spec, _image_data(image), _image_data(labels), regions, steps,
                                    self._cancel_event, _ignore_errors=True)
        self.worker.returned.connect(self._on_fine_tuned)
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(lambda: (self.cancel_button.setEnabled(False),
                                              self.finetune_button.setEnabled(True)))
        self.cancel_button.setEnabled(True)
        self.finetune_button.setEnabled(False)
        self.worker.start()

    def _on_fine_tuned(self, model) -> None:
        name = SESSION.add(f"{model.arch} {model.spatial_dims}D fine-tuned", model)
        self._refresh_models()
        index = self.model_combo.findData(f"session:{name}")
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        self._model, self._loaded_from = model, self.model_combo.currentText()
        score = (model.validation or {}).get("object_iou")
        self.status.setText(f"Fine-tuned: session:{name} is chosen for the next objects"
                            + (f" (held-out annotated objects: IoU {score:.3f})." if score is not None else "."))

    def cancel(self) -> None:
        """Stop the running propagation or fine-tuning; what is done stays (painted slices: Undo removes them;
        fine-tuning: the best model so far)."""
        if self._cancel_event is not None:
            self._cancel_event.set()
        if self.worker is not None and self.worker.is_running and self.propagation is not None:
            self.last_stops.setdefault("up", "stopped by the user")
            self.last_stops.setdefault("down", "stopped by the user")
            self.worker.quit()

    def paint(self, labels, crop: np.ndarray, offset: tuple, label: int | None = None) -> int:
        """Paint ``crop`` (a boolean mask whose origin is ``offset``) under the next free id (or ``label``); return
        the id (0 when every pixel of it is already labelled and overwriting is off)."""
        store = self.label_store(labels)
        if store is not None:
            label = store.paint(crop, offset, overwrite=self.overwrite_check.isChecked(), label=label)
            if label:  # the pixels it painted, over the crop: a correction's undo paints them again
                edit = store.history[-1]
                lead = len(offset) - crop.ndim
                where = np.zeros(crop.shape, bool)
                where[tuple(c - int(o) for c, o in zip(edit.coords[lead:], offset[lead:]))] = True
                self.history.append(_Painted(labels, (), where, None, label, store, offset=tuple(offset)))
            return label
        data = labels.data
        lead = len(offset) - crop.ndim
        index = tuple(int(v) for v in offset[:lead]) + tuple(
            slice(int(o), int(o) + n) for o, n in zip(offset[lead:], crop.shape))
        region = np.asarray(data[index])
        if label is None:
            label = int(max([np.asarray(data).max()] + [p.label for p in self.history if p.layer is labels])) + 1
        where = crop if self.overwrite_check.isChecked() else crop & (region == 0)
        if not where.any():
            return 0
        before = region[where]
        region[where] = label
        data[index] = region
        labels.refresh()
        self.history.append(_Painted(labels, index, where, before, label))
        return label

    def undo(self) -> None:
        """Take back the last correction (the object's mask before it returns) or remove the last painted object
        (restoring what it overwrote)."""
        while self.history:
            last = self.history.pop()
            if last.layer not in self.viewer.layers:
                continue
            self._restore(last)
            if last.replaced is not None:
                self._reapply(last.replaced)
                self.history.append(last.replaced)
                if self.current is not None and self.current["painted"] is last:
                    self.current["painted"] = last.replaced
                    self.current["crop"], self.current["offset"] = self._mask_of(last.replaced)
                    self.current["clicks"] = self.current["clicks"][:-1]
                self.status.setText(f"Took back the last correction of object {last.label}.")
                return
            if self.current is not None and self.current["painted"] is last:
                self.current = None
            self.status.setText(f"Removed object {last.label}.")
            return
        self.status.setText("Nothing to undo.")

    def _mask_of(self, painted: _Painted):
        # The object's mask over the paint's box, and the box's origin in the current image's spatial axes.
        lead = len(self.current["index"])
        mask = np.zeros(painted.where.shape, bool)
        mask[painted.where] = True
        if painted.store is not None:
            return mask, tuple(painted.offset[lead:])
        return mask, tuple(b.start for b in painted.index[lead:])

    @staticmethod
    def _write(painted: _Painted, values) -> None:
        """Set the pixels ``painted`` changed to ``values`` (its old values: undo; its label: paint it again)."""
        region = np.asarray(painted.layer.data[painted.index])
        region[painted.where] = values
        painted.layer.data[painted.index] = region
        painted.layer.refresh()

    def _restore(self, painted: _Painted) -> None:
        if painted.store is not None:  # the store puts back the chunks' previous values (and frees the id)
            for _ in range(painted.edits):
                painted.store.undo()
            return
        self._write(painted, painted.before)

    def _reapply(self, painted: _Painted) -> None:
        if painted.store is not None:  # the same pixels again, a new edit in the store (undone as the object)
            painted.store.paint(painted.where, painted.offset, overwrite=True, label=painted.label)
            return
        self._write(painted, painted.label)

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        self.status.setText(f"Error: {message}")
        show_error(message)

    def closeEvent(self, event):  # noqa: N802 - Qt's name
        self.image_combo.disconnect_viewer()
        self.labels_combo.disconnect_viewer()
        try:
            SESSION.changed.disconnect(self._refresh_models)
        except (TypeError, ValueError, RuntimeError):
            pass
        super().closeEvent(event)


def _needs_store(image) -> bool:
    """Whether new labels for ``image`` go to a Zarr store on disk: a lazy (Dask, Zarr) or multiscale image, or
    one over ``_LARGE_PIXELS`` pixels."""
    data = _image_data(image)
    return image.multiscale or not isinstance(data, np.ndarray) or int(np.prod(_spatial_shape(image))) > _LARGE_PIXELS


def _image_data(layer):
    return layer.data[0] if layer.multiscale else layer.data


def _spatial_shape(layer) -> tuple[int, ...]:
    """The image layer's pixel grid (level 0, without an RGB axis): the shape its labels must have."""
    shape = tuple(_image_data(layer).shape)
    return shape[:-1] if layer.rgb else shape
