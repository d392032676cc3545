"""The training log: one CSV row per step, and a PNG plot of the loss and the validation Dice.

The plot is drawn with Pillow (already installed with napari and imageio), so the engine needs no
plotting library; when Pillow is missing the PNG is skipped with a log message.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["TrainingLog", "plot_png", "smooth"]

log = logging.getLogger("segarch.training")


class TrainingLog:
    """Rows of ``step, loss, lr, seconds`` plus ``val_loss, val_dice, dice_<class>`` on validation steps.

    ``metric`` names the validation columns (``val_<metric>``, ``<metric>_<class>``; ``"dice"`` by default)
    and ``metric_name`` the plot's panel (``"Dice"``).
    """

    def __init__(self, class_names: Sequence[str], *, metric: str = "dice", metric_name: str = "Dice") -> None:
        self.class_names = list(class_names)
        self.metric, self.metric_name = metric, metric_name
        self.rows: list[dict[str, Any]] = []

    @property
    def columns(self) -> list[str]:
        return (["step", "loss", "lr", "seconds", "val_loss", f"val_{self.metric}"]
                + [f"{self.metric}_{n}" for n in self.class_names])

    def add(self, step: int, loss: float, lr: float, seconds: float, *, val_loss: float | None = None,
            val_dice: Sequence[float] | None = None, mean_dice: float | None = None) -> dict[str, Any]:
        """A row for ``step``; ``val_dice``/``mean_dice``: the metric per class and its summary, if validated."""
        row = {"step": step, "loss": loss, "lr": lr, "seconds": round(seconds, 3), "val_loss": val_loss,
               f"val_{self.metric}": mean_dice}
        for name, d in zip(self.class_names, val_dice or []):
            row[f"{self.metric}_{name}"] = d
        self.rows.append(row)
        return row

    def add_validation(self, step: int, loss: float, val_loss: float, per_class: Sequence[float],
                       score: float) -> dict[str, Any]:
        """Put a validation of ``step`` on that step's row (a new row if the step has none)."""
        row = self.rows[-1] if self.rows and self.rows[-1]["step"] == step else None
        if row is None:
            return self.add(step, loss, math.nan, 0.0, val_loss=val_loss, val_dice=per_class, mean_dice=score)
        row.update({"val_loss": val_loss, f"val_{self.metric}": score,
                    **{f"{self.metric}_{n}": d for n, d in zip(self.class_names, per_class)}})
        return row

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [(r["step"], r[key]) for r in self.rows if r.get(key) is not None and not _isnan(r[key])]
        if not pts:
            return np.zeros(0), np.zeros(0)
        steps, values = zip(*pts)
        return np.asarray(steps, float), np.asarray(values, float)

    def write_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        os.replace(tmp, path)
        return path


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def smooth(values: np.ndarray, window: int = 0) -> np.ndarray:
    """Running mean over ``window`` values (default: about 1/20 of the series)."""
    values = np.asarray(values, float)
    window = window or max(1, len(values) // 20)
    if len(values) < 2 or window < 2:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def plot_png(training_log: TrainingLog, path: str | os.PathLike, *, title: str = "") -> Path | None:
    """Two panels, loss (training, smoothed; validation) and the validation metric per class, written as PNG."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        log.info("Pillow is not installed: no training plot written.")
        return None
    width, height, margin = 900, 380, 52
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((margin, 6), title, fill="black")
    panel_w = (width - 3 * margin) // 2
    panels = [(margin, 28, margin + panel_w, height - 36), (2 * margin + panel_w, 28, width - margin // 2, height - 36)]
    steps, loss = training_log.series("loss")
    vsteps, vloss = training_log.series("val_loss")
    max_step = max([1.0] + list(steps) + list(vsteps))
    curves = [("loss", [(steps, smooth(loss), (31, 119, 180), "training (smoothed)"),
                        (vsteps, vloss, (255, 127, 14), "validation")], None)]
    colours = [(44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)]
    dice_curves = []
    for i, name in enumerate(training_log.class_names[1:]):
        s, v = training_log.series(f"{training_log.metric}_{name}")
        dice_curves.append((s, v, colours[i % len(colours)], name))
    curves.append((f"validation {training_log.metric_name}", dice_curves, (0.0, 1.0)))
    for (x0, y0, x1, y1), (label, series, fixed) in zip(panels, curves):
        values = np.concatenate([v for _, v, _, _ in series if len(v)] or [np.zeros(1)])
        lo, hi = fixed if fixed else (float(min(0.0, values.min())), float(values.max()) or 1.0)
        hi = hi if hi > lo else lo + 1.0
        draw.rectangle((x0, y0, x1, y1), outline="black")
        draw.text((x0 + 4, y0 + 2), label, fill="black")
        for frac in (0.0, 0.5, 1.0):
            y = y1 - frac * (y1 - y0)
            draw.text((x0 - 44, y - 6), f"{lo + frac * (hi - lo):.3g}", fill="black")
            draw.text((x0 + frac * (x1 - x0) - 10, y1 + 4), f"{frac * max_step:.0f}", fill="black")
        draw.text(((x0 + x1) // 2 - 12, y1 + 18), "step", fill="black")
        for j, (s, v, colour, name) in enumerate(series):
            draw.text((x1 - 150, y0 + 4 + 12 * j), name, fill=colour)
            if not len(s):
                continue
            pts = [(x0 + (a / max_step) * (x1 - x0), y1 - (b - lo) / (hi - lo) * (y1 - y0)) for a, b in zip(s, v)]
            if len(pts) == 1:
                draw.ellipse((pts[0][0] - 3, pts[0][1] - 3, pts[0][0] + 3, pts[0][1] + 3), fill=colour)
            else:
                draw.line(pts, fill=colour, width=2)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
