"""Dock widgets. Thin: they collect parameters and call the :mod:`segarch` engine."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QAbstractItemView, QComboBox, QFormLayout, QHBoxLayout, QLabel, QTableWidget, QTableWidgetItem,
    QTextBrowser, QVBoxLayout, QWidget,
)

from segarch import zoo

if TYPE_CHECKING:
    import napari

__all__ = ["ZooWidget"]

_COLUMNS = ("name", "task", "dims", "params (M)", "paper (M)", "year")


class ZooWidget(QWidget):
    """The model zoo: every architecture with its card, filterable by task and dimensionality.

    Later widgets pick models through the same list (:meth:`selected_name`).
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer | None" = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.task_filter = QComboBox()
        self.task_filter.addItems(["all tasks", *zoo.TASKS])
        self.dims_filter = QComboBox()
        self.dims_filter.addItems(["2D and 3D", "2D", "3D"])
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.details = QTextBrowser()
        self.details.setOpenExternalLinks(True)
        self.count_label = QLabel()

        filters = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.task_filter)
        row.addWidget(self.dims_filter)
        filters.addRow("Show", row)
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.table, stretch=2)
        layout.addWidget(self.count_label)
        layout.addWidget(self.details, stretch=1)

        self.task_filter.currentIndexChanged.connect(self.refresh)
        self.dims_filter.currentIndexChanged.connect(self.refresh)
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.refresh()

    def visible_names(self) -> list[str]:
        """Names listed under the current filters, in table order."""
        return [self.table.item(r, 0).text() for r in range(self.table.rowCount())]

    def selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.table.item(rows[0].row(), 0).text() if rows else None

    def set_filters(self, task: str | None = None, dims: int | None = None) -> None:
        self.task_filter.setCurrentText(task or "all tasks")
        self.dims_filter.setCurrentText(f"{dims}D" if dims else "2D and 3D")

    def refresh(self) -> None:
        task = self.task_filter.currentText()
        task = None if task == "all tasks" else task
        dims = {"2D": 2, "3D": 3}.get(self.dims_filter.currentText())
        entries = [c for c in zoo.cards() if dims is None or dims in c.spatial_dims]
        entries = [c for c in entries if task is None or c.task == task]
        self.table.setRowCount(len(entries))
        for r, entry in enumerate(entries):
            values = (
                entry.name, entry.task, "/".join(f"{d}D" for d in entry.spatial_dims),
                f"{zoo.parameter_count(entry.name) / 1e6:.2f}",
                "—" if entry.paper_params is None else f"{entry.paper_params:.2f}", str(entry.year),
            )
            for c, value in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        self.count_label.setText(f"{len(entries)} of {len(zoo.names())} architectures")
        if entries:
            self.table.selectRow(0)
        else:
            self.details.clear()

    def _show_selected(self) -> None:
        name = self.selected_name()
        if name is None:
            return
        self.details.setHtml(card_html(zoo.card(name)))


def card_html(entry: zoo.ModelCard) -> str:
    """A model card as HTML for the details pane."""
    ref = entry.reference
    if ref.startswith("arXiv:"):
        url = f"https://arxiv.org/abs/{ref.split(':', 1)[1]}"
    else:
        url = f"https://doi.org/{ref.split(':', 1)[-1]}"
    e = html.escape
    counted = zoo.parameter_count(entry.name) / 1e6
    paper = "none reported" if entry.paper_params is None else f"{entry.paper_params:.2f}M"
    config = ", ".join(f"{k}={v!r}" for k, v in entry.paper_config.items())
    return (
        f"<h3>{e(entry.full_name)} <small>({e(entry.name)})</small></h3>"
        f"<p><i>{e(entry.paper)}</i> ({entry.year}), <a href='{e(url)}'>{e(ref)}</a></p>"
        f"<p>Task: {e(entry.task)} &middot; dims: {', '.join(f'{d}D' for d in entry.spatial_dims)}"
        f" &middot; input sizes: multiples of {entry.size_divisor}</p>"
        f"<p>Parameters at the paper's configuration: {counted:.2f}M (paper: {paper})<br>"
        f"<small>{e(entry.paper_params_source)}</small></p>"
        f"<p>Paper configuration: <code>{e(config)}</code></p>"
        + (f"<p>{e(entry.notes)}</p>" if entry.notes else "")
    )
