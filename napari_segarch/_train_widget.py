"""The Train dock widget: pick an image layer and its annotations, an architecture (or a model to
fine-tune), click Train.

Thin: it collects parameters and runs the engine's generator :func:`segarch.training.train_iter` in
a napari ``thread_worker``; each yielded event moves napari's progress bar and the live plot of
loss and validation Dice. Cancel stops within one step and keeps the best model. The trained
model joins the session's models (:mod:`segarch.models.session`), so the Segment widget offers
it, and can be saved to a ``.safetensors`` file.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox,
    QVBoxLayout, QWidget,
)

from napari_segarch._layer_combo import LayerCombo
from napari_segarch._threads import wait_at_quit
from segarch.models.session import SESSION

if TYPE_CHECKING:
    import napari

__all__ = ["TrainWidget", "LossPlot", "model_sources"]

_COLOURS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")

_NO_ADAPTATION = "none (no adaptation)"


def _load_sources():
    """The loader's job (off the GUI thread: the zoo and torch take seconds to import)."""
    from segarch.devices import available_devices

    return model_sources(), available_devices()


def model_sources() -> list[tuple[str, str]]:
    """(label, reference) of what training can start from, from the model catalogue (:func:`segarch.models.choices`):
    shipped and session models to fine-tune, a file, the zoo's trainable architectures (a new network)."""
    from segarch.models import choices
    from segarch.training import TRAINABLE_TASKS  # interactive: extreme-point models learn from instance labels

    return [(ref.label, str(ref)) for ref in choices(task=TRAINABLE_TASKS)]


class LossPlot(QWidget):
    """A small live plot: training loss (smoothed, left axis) and validation Dice per class (0–1)."""

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(150)
        self.clear()

    def clear(self, class_names: list[str] | None = None) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.val_steps: list[int] = []
        self.dice: list[list[float]] = []
        self.class_names = list(class_names or [])
        self.total = 1
        self.update()

    def add_step(self, step: int, loss: float, total: int) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self.total = max(1, total)
        self.update()

    def add_validation(self, step: int, dice: list[float]) -> None:
        self.val_steps.append(step)
        self.dice.append(list(dice))
        self.update()

    def smoothed(self) -> np.ndarray:
        from segarch.training.log import smooth

        return smooth(np.asarray(self.losses, float)) if self.losses else np.zeros(0)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        w, h = self.width(), self.height()
        left, right, top, bottom = 40, 10, 22, 18
        x0, x1, y0, y1 = left, w - right, top, h - bottom
        p.fillRect(self.rect(), QColor("#262930"))
        p.setPen(QPen(QColor("#8a8f98")))
        p.drawRect(x0, y0, x1 - x0, y1 - y0)
        p.drawText(4, y1 + 14, f"step 0 … {self.total}")
        p.drawText(x1 - 40, y0 + 12, "Dice 1")
        p.drawText(x1 - 40, y1 - 4, "0")
        # One legend row above the frame: the loss, then each class's validation Dice.
        legend = [("loss (smoothed)", "#1f77b4")] + [
            (f"Dice {n}", _COLOURS[(c - 1) % len(_COLOURS)]) for c, n in enumerate(self.class_names) if c]
        x = x0
        for text, colour in legend:
            p.setPen(QPen(QColor(colour), 2))
            p.drawLine(x, 11, x + 12, 11)
            p.setPen(QPen(QColor("#d0d4da")))
            p.drawText(x + 16, 15, text)
            x += 24 + p.fontMetrics().horizontalAdvance(text)

        def points(xs, ys, lo, hi):
            span = (hi - lo) or 1.0
            return QPolygonF([QPointF(x0 + (x / self.total) * (x1 - x0), y1 - (y - lo) / span * (y1 - y0))
                              for x, y in zip(xs, ys) if not math.isnan(y)])

        loss = self.smoothed()
        if len(loss):
            hi = float(np.max(loss)) or 1.0
            p.setPen(QPen(QColor("#8a8f98")))
            p.drawText(4, y0 + 12, f"{hi:.2g}")
            p.drawText(4, y1 - 4, "0")
            p.setPen(QPen(QColor("#1f77b4"), 2))
            p.drawPolyline(points(self.steps, loss, 0.0, hi))
        for c in range(1, len(self.class_names)):
            values = [d[c] for d in self.dice]
            p.setPen(QPen(QColor(_COLOURS[(c - 1) % len(_COLOURS)]), 2))
            poly = points(self.val_steps, values, 0.0, 1.0)
            p.drawPolyline(poly)
            for pt in poly:
                p.drawEllipse(pt, 2.5, 2.5)
        p.end()


class TrainWidget(QWidget):
    """Train an architecture, or fine-tune a model, on an image layer and a labels layer of annotations."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        from napari.layers import Image, Labels

        super().__init__()
        self.viewer = napari_viewer
        self.image_combo = LayerCombo(napari_viewer, (Image,))
        self.labels_combo = LayerCombo(napari_viewer, (Labels,))
        self.adapt_combo = LayerCombo(napari_viewer, (Image,), extra=[_NO_ADAPTATION], prefer_extra=True)
        self.adapt_combo.setToolTip("Optional: an unlabelled image of the kind the model must work on (another "
                                    "microscope, stain or sensor); the network is aligned to it while it trains "
                                    "(MADAN's adversarial alignment). Semantic and instance models.")
        self.adapt_discriminator_combo = QComboBox()
        self.adapt_discriminator_combo.addItem("per place (MADAN)", "per-place")
        self.adapt_discriminator_combo.addItem("spatial (AdaptSegNet)", "spatial")
        self.adapt_discriminator_combo.setToolTip("With 'Adapt to': the domain discriminator. Per place judges each "
                                                  "place's class probabilities alone; spatial judges their layout "
                                                  "(merged, speckled, missing regions; patches of 32 px or more).")
        self.model_combo = QComboBox()
        self.model_combo.addItem("loading models…", None)
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText("model file (.safetensors) to fine-tune")
        self.browse_button = QPushButton("…")
        self.size_combo = QComboBox()
        self.size_combo.addItems(["small (fast on a CPU)", "paper widths"])
        self.learn_combo = QComboBox()
        self.learn_combo.addItem("classes (one class per pixel)", "semantic")
        self.learn_combo.addItem("objects (instances: one label per object)", "instance")
        self.learn_combo.setToolTip("Objects: the annotations are instance labels (0 background, 1..N one per "
                                    "object, touching objects with different labels); the model separates "
                                    "touching objects and Segment offers its 'instances' output.")
        self.classes_spin = QSpinBox()
        self.classes_spin.setRange(2, 255)
        self.classes_spin.setToolTip("Classes including background. 2: every label > 0 is foreground "
                                     "(instance labels work as painted).")
        self.patch_spin = QSpinBox()
        self.patch_spin.setRange(0, 1024)
        self.patch_spin.setSingleStep(16)
        self.patch_spin.setSpecialValueText("auto")
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 1_000_000)
        self.steps_spin.setValue(300)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 256)
        self.batch_spin.setSpecialValueText("auto")
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(1e-3)
        self.device_combo = QComboBox()
        self.device_combo.addItem("auto")
        self.train_button = QPushButton("Train")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.save_button = QPushButton("Save model…")
        self.save_button.setEnabled(False)
        self.keep_button = QPushButton("Add to session")
        self.keep_button.setToolTip("Offer this cancelled run's best model in the Segment / Extreme points widgets")
        self.keep_button.setVisible(False)
        self.plot = LossPlot()
        self.status = QLabel("Annotate a labels layer (0 = background), then Train.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Annotations", self.labels_combo)
        form.addRow("Adapt to", self.adapt_combo)
        form.addRow("Discriminator", self.adapt_discriminator_combo)
        form.addRow("Start from", self.model_combo)
        row = QHBoxLayout()
        row.addWidget(self.file_edit)
        row.addWidget(self.browse_button)
        form.addRow("", row)
        form.addRow("Network size", self.size_combo)
        form.addRow("Learn", self.learn_combo)
        form.addRow("Classes", self.classes_spin)
        form.addRow("Patch", self.patch_spin)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Batch", self.batch_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("Device", self.device_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.keep_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.plot, stretch=1)
        layout.addWidget(self.status)

        self.model = None  # the last model trained here
        self.model_name: str | None = None
        self.worker = None
        self.loader = None
        self._sources: list | None = None
        self._cancel: threading.Event | None = None
        self._progress = None
        self._done = None
        self.train_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(self._save_dialog)
        self.keep_button.clicked.connect(self.keep_in_session)
        self.browse_button.clicked.connect(self._browse)
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        self.learn_combo.currentIndexChanged.connect(self._model_changed)
        self.labels_combo.currentIndexChanged.connect(self._labels_changed)
        SESSION.changed.connect(self.refresh_models)
        self._labels_changed()
        wait_at_quit(self.cancel)
        self._start_loading()

    # ------------------------------------------------------------------------------------ choices

    def _start_loading(self) -> None:
        from napari.qt.threading import create_worker

        self.loader = create_worker(_load_sources, _start_thread=False, _ignore_errors=True)
        self.loader.returned.connect(self._on_sources)
        self.loader.errored.connect(lambda err: self._error(f"Could not list the models: {err}"))
        self.loader.start()

    def _on_sources(self, value) -> None:
        try:
            sources, devices = value
            if self._sources is None:
                self._sources = sources
                self._refresh_models()
            current = self.device_combo.currentText()
            self.device_combo.clear()
            self.device_combo.addItems(devices)
            self.device_combo.setCurrentText(current)
        except RuntimeError:  # the dock closed before the list came
            pass

    def models_ready(self) -> bool:
        return self._sources is not None

    def refresh_layers(self, *_: Any) -> None:
        """List the viewer's layers again (they are followed as they are added, removed or renamed)."""
        self.image_combo.refresh()
        self.labels_combo.refresh()
        self.adapt_combo.refresh()

    def refresh_models(self, *_: Any) -> None:
        try:
            if self._sources is not None:
                self._sources = model_sources()
                self._refresh_models()
        except RuntimeError:  # the dock is gone; the session store outlives it
            SESSION.changed.disconnect(self.refresh_models)

    def _refresh_models(self) -> None:
        current = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for label, key in self._sources:
            self.model_combo.addItem(label, key)  # the catalogue's text: one key format in every dock
        index = self.model_combo.findData(current or "zoo:unet")
        self.model_combo.setCurrentIndex(max(0, index))
        self.model_combo.blockSignals(False)
        self.train_button.setEnabled(self.worker is None or not self.worker.is_running)
        self._model_changed()

    def select_model(self, reference: str, name: str | None = None) -> None:
        """Choose the start model by reference (``"zoo:unet"``, ``"unet.nuclei2d"``) or ``(kind, name)`` (a script
        or test may call this before the list has loaded: it lists them now)."""
        from napari_segarch._segment_widget import select_reference

        if self._sources is None:
            self._sources = model_sources()
            self._refresh_models()
        key = select_reference(reference, name)
        index = self.model_combo.findData(key)
        if index < 0:
            raise ValueError(f"No start model {key!r} in the list.")
        self.model_combo.setCurrentIndex(index)

    def _model_key(self) -> tuple[str, str]:
        kind, _, name = (self.model_combo.currentData() or "zoo:").partition(":")
        return kind, name

    def _model_changed(self, *_: Any) -> None:
        kind, _name = self._model_key()
        is_file = kind == "file"
        self.file_edit.setVisible(is_file)
        self.browse_button.setVisible(is_file)
        self.size_combo.setEnabled(kind == "zoo")
        # An extreme-point model learns from each labelled object: 2 classes, its own input size.
        task = self._task()
        interactive = task == "interactive"
        # A new semantic architecture learns classes or objects; a model to fine-tune keeps what it learnt.
        self.learn_combo.setEnabled(kind == "zoo" and not interactive)
        if task == "instance":
            self.learn_combo.setCurrentIndex(1)
        instance = self.learn_combo.currentData() == "instance" and not interactive
        self.classes_spin.setEnabled(not interactive and not instance)
        self.patch_spin.setEnabled(not interactive)
        if instance:
            self.status.setText("Objects: the annotations are instance labels (one label per object); the model "
                                "learns to separate touching objects, validated by object F1.")
        if interactive:
            self.status.setText("Extreme-point model: each object of the annotations (instance labels) becomes an "
                                "example with jittered extreme points.")

    def _task(self) -> str | None:
        """The chosen start model's task (``None`` for a file not yet read)."""
        from segarch.models import describe

        kind, name = self._model_key()
        if kind == "file" or not name or (kind == "session" and name not in SESSION.names()):
            return None
        if kind == "session" and SESSION.get(name).instance:
            return "instance"  # a zoo network trained on a decoder's targets (its architecture's task is semantic)
        return describe(f"{kind}:{name}").task

    def _labels_changed(self, *_: Any) -> None:
        layer = self.labels_combo.layer()
        if layer is None or layer.multiscale:
            return
        data = layer.data
        if isinstance(data, np.ndarray) and data.size <= 2 ** 26:
            top = int(data.max()) if data.size else 0
            # Painted classes (a few values) keep their numbers; many values are instances: foreground.
            self.classes_spin.setValue(top + 1 if 2 <= top <= 8 else 2)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model to fine-tune", "", "Model files (*.safetensors *.pt *.pth)")
        if path:
            self.file_edit.setText(path)


    # ---------------------------------------------------------------------------------- training

    def training_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`segarch.training.train_iter` the widget's settings give."""
        from segarch import zoo

        image, labels = self.image_combo.layer(), self.labels_combo.layer()
        if image is None or labels is None:
            raise ValueError("Choose an image layer and a labels layer holding your annotations.")
        kind, name = self._model_key()
        if kind == "file":
            start = self.file_edit.text().strip()
            if not start:
                raise ValueError("Choose a model file to fine-tune.")
        else:
            start = f"{kind}:{name}"  # resolved by the model catalogue (a session model is copied, not changed)
        data = image.data[0] if image.multiscale else image.data
        label_data = labels.data[0] if labels.multiscale else labels.data
        options = None
        if kind == "zoo":  # small widths for a CPU, or the paper's (`{}`: the architecture's defaults)
            options = dict(zoo.card(name).test_config) if self.size_combo.currentIndex() == 0 else {}
        interactive = self._task() == "interactive"
        instance = self.learn_combo.currentData() == "instance" and not interactive and (
            kind == "zoo" or self._task() == "instance")
        names = None
        if kind == "zoo" and not interactive and not instance:
            n = self.classes_spin.value()
            names = ["background"] + (["foreground"] if n == 2 else [f"class {i}" for i in range(1, n)])
        return {
            "model_or_name": start,
            "class_names": names,
            "images": data,
            "labels": label_data,
            "axes": ("YXC" if getattr(image, "rgb", False) else None),
            "num_classes": None if interactive or instance else self.classes_spin.value(),
            "options": options,
            "patch": None if interactive else (self.patch_spin.value() or None),
            "steps": self.steps_spin.value(),
            "batch_size": self.batch_spin.value() or None,
            "lr": self.lr_spin.value(),
            "device": self.device_combo.currentText(),
            "cancel": threading.Event(),
            **({"task": "instance"} if instance else {}),
            **self._adaptation(image),
        }

    def _adaptation(self, image) -> dict[str, Any]:
        """``adapt_to`` (and ``adapt_discriminator``) for :func:`segarch.training.train_iter`: the chosen unlabelled
        layer's data, if any."""
        target = self.adapt_combo.layer()
        if target is None:
            return {}
        if target is image:
            raise ValueError("'Adapt to' is the training image: choose an unlabelled image of the other kind, or "
                             f"{_NO_ADAPTATION!r}.")
        return {"adapt_to": target.data[0] if target.multiscale else target.data,
                "adapt_discriminator": self.adapt_discriminator_combo.currentData()}

    def start(self) -> None:
        """Start training in a worker thread (returns at once)."""
        from napari.qt.threading import thread_worker
        from napari.utils import progress

        if self._sources is None and self.image_combo.layer() is not None and self.labels_combo.layer() is not None:
            self._sources = model_sources()  # clicked before the list came: list them now
            self._refresh_models()
        try:
            kwargs = self.training_arguments()
        except ValueError as err:
            self._error(str(err))
            return
        self._cancel = kwargs["cancel"]
        self.plot.clear(self._class_names(kwargs))
        self.status.setText(f"Training for {kwargs['steps']} steps…")
        self._progress = progress(total=kwargs["steps"], desc="Training")
        self._done = None
        # ignore_errors: the error is shown once, here; napari would re-raise it on the GUI thread (a second
        # notification, or an abort where no exception hook catches it).
        self.worker = thread_worker(_train_job, start_thread=False, ignore_errors=True)(kwargs)
        self.worker.yielded.connect(self._on_event)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_finished)
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.keep_button.setVisible(False)
        self.worker.start()

    def closeEvent(self, event):  # noqa: N802 - Qt's name
        self.cancel()  # a closing dock must not leave training running for nobody
        self.image_combo.disconnect_viewer()
        self.labels_combo.disconnect_viewer()
        self.adapt_combo.disconnect_viewer()
        super().closeEvent(event)

    def cancel(self) -> None:
        """Stop within one step; the best model so far is kept."""
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("Cancelling: finishing the step and keeping the best model…")

    def _class_names(self, kwargs) -> list[str]:
        n = kwargs["num_classes"]
        if kwargs.get("task") == "instance":
            return ["object F1"]
        if n is None:
            return ["background", "object"]
        return ["background"] + ([f"class {i}" for i in range(1, n)] if n > 2 else ["foreground"])

    def _on_event(self, ev) -> None:
        if ev.kind == "step":
            self.plot.add_step(ev.step, ev.loss, ev.steps)
            if self._progress is not None:
                self._progress.update(1)
                self._progress.set_description(f"Training: loss {ev.loss:.3f}")
        elif ev.kind == "validation":
            self.plot.add_validation(ev.step, ev.val_dice)
        elif ev.kind == "done":
            self._done = ev
        self.status.setText(ev.message)

    def _on_returned(self, model) -> None:
        self.model = model
        self.save_button.setEnabled(True)
        dice = (model.validation or {}).get("patch_dice")
        summary = "" if not dice else f"; validation Dice {np.nanmean(dice[1:]):.3f}"
        cancelled = self._done is not None and self._done.cancelled
        iou = (model.validation or {}).get("object_iou")
        summary += "" if iou is None else f", held-out object IoU {iou:.3f}"
        f1 = (model.validation or {}).get("object_f1")
        summary += "" if f1 is None else f"; held-out object F1 at IoU 0.5 {f1:.3f}"
        where = "Extreme points" if model.task == "interactive" else "Segment"
        if model.instance:
            where = "Segment (output: instances)"
        if cancelled:  # not offered elsewhere unless asked: a stopped run is often a false start
            self.model_name = None
            self.keep_button.setVisible(True)
            self.status.setText(f"Cancelled: the best model so far is kept here{summary}. Add to session offers it "
                                f"in the {where} widget; Save model… writes it to a file.")
            return
        kind = " instances" if model.instance else ""
        self.model_name = SESSION.add(f"{model.arch} {model.spatial_dims}D{kind}", model)
        self.status.setText(f"Trained: {self.model_name!r}{summary}. "
                            f"It is offered in the {where} widget; Save model… writes it to a file.")

    def keep_in_session(self) -> str:
        """Offer the last (cancelled) model in the other widgets; returns its session name."""
        if self.model is None:
            raise ValueError("Nothing trained yet: click Train first.")
        if self.model_name is None:
            self.model_name = SESSION.add(f"{self.model.arch} {self.model.spatial_dims}D", self.model)
        self.keep_button.setVisible(False)
        self.status.setText(f"{self.model_name!r} is offered in the other widgets now.")
        return self.model_name

    def _on_errored(self, err: BaseException) -> None:
        message = str(err) if isinstance(err, ValueError) and str(err) else f"{type(err).__name__}: {err}"
        self._error(f"Training failed: {message}")

    def _on_finished(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(message)
        show_error(message)

    # ------------------------------------------------------------------------------------- saving

    def save_model(self, path: str) -> str:
        """Write the last trained model to ``path`` (``.safetensors``)."""
        import segarch

        if self.model is None:
            raise ValueError("Nothing trained yet: click Train first.")
        if not str(path).endswith(".safetensors"):
            path = f"{path}.safetensors"
        segarch.save_model(self.model, path)
        self.status.setText(f"Saved {self.model_name or 'the model'!r} to {path}.")
        return str(path)

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "model.safetensors", "Model files (*.safetensors)")
        if path:
            try:
                self.save_model(path)
            except (ValueError, OSError) as err:
                self._error(f"Could not save: {err}")


def _train_job(kwargs: dict[str, Any]):
    """The worker's generator (off the GUI thread): the engine's events, then the model."""
    from segarch.training import train_iter

    model = yield from train_iter(**kwargs)
    return model


