"""Dock widgets. Thin: they collect parameters and call the :mod:`segarch` engine."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QAbstractItemView, QComboBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QTableWidget,
    QTableWidgetItem, QTextBrowser, QVBoxLayout, QWidget,
)

from napari_segarch._threads import wait_at_quit

if TYPE_CHECKING:
    import napari

    from segarch import zoo

__all__ = ["ZooWidget", "card_html"]

_COLUMNS = ("name", "task", "dims", "params (M)", "paper (M)", "year")
_ALL_TASKS = "all tasks"
# A link colour that reads on napari's dark theme as on the light one (Qt's default dark blue does not).
_LINK_STYLE = "a { color: #58a6ff; }"


def _load_cards():
    """The loader's job (off the GUI thread: the zoo imports torch and every network): the cards first, then
    each architecture's parameter count as it is counted."""
    from segarch import zoo

    cards = zoo.cards()
    yield ("cards", cards)
    for card in cards:
        yield ("count", card.name, zoo.parameter_count(card.name))


class ZooWidget(QWidget):
    """The model zoo: every architecture with its card, filterable by task, dimensionality and a search.

    The cards and parameter counts load in a worker, so opening the dock never freezes napari.
    Later widgets pick models through the same list (:meth:`selected_name`).
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer | None" = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("search name, paper, year…")
        self.search_edit.setClearButtonEnabled(True)
        self.task_filter = QComboBox()
        self.task_filter.addItem(_ALL_TASKS)
        self.dims_filter = QComboBox()
        self.dims_filter.addItems(["2D and 3D", "2D", "3D"])
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.details = QTextBrowser()
        self.details.setOpenExternalLinks(True)
        self.details.document().setDefaultStyleSheet(_LINK_STYLE)
        self.count_label = QLabel("Loading the zoo…")

        filters = QFormLayout()
        filters.addRow("Search", self.search_edit)
        row = QHBoxLayout()
        row.addWidget(self.task_filter)
        row.addWidget(self.dims_filter)
        filters.addRow("Show", row)
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.table, stretch=2)
        layout.addWidget(self.count_label)
        layout.addWidget(self.details, stretch=1)

        self._cards: list[Any] | None = None
        self._counts: dict[str, int] = {}
        self.loader = None
        self.search_edit.textChanged.connect(self.refresh)
        self.task_filter.currentIndexChanged.connect(self.refresh)
        self.dims_filter.currentIndexChanged.connect(self.refresh)
        self.table.itemSelectionChanged.connect(self._show_selected)
        wait_at_quit(self._stop_loading)
        self._start_loading()

    # --- loading -------------------------------------------------------------------------------------------

    def _start_loading(self) -> None:
        from napari.qt.threading import create_worker

        self.loader = create_worker(_load_cards, _start_thread=False, _ignore_errors=True)
        self.loader.yielded.connect(self._on_loaded)
        self.loader.errored.connect(lambda err: self.count_label.setText(f"Could not load the zoo: {err}"))
        self.loader.start()

    def _stop_loading(self) -> None:
        if self.loader is not None:
            self.loader.quit()  # a generator: stops at its next count

    def _on_loaded(self, item) -> None:
        try:
            if item[0] == "cards":
                self._set_cards(item[1])
            else:
                self._set_count(item[1], item[2])
        except RuntimeError:  # the dock closed while loading
            if self.loader is not None:
                self.loader.quit()

    def ready(self) -> bool:
        """Whether the cards are listed."""
        return self._cards is not None

    def counts_ready(self) -> bool:
        """Whether every parameter count is shown."""
        return self._cards is not None and len(self._counts) == len(self._cards)

    def _set_cards(self, cards) -> None:
        self._cards = list(cards)
        # Only the tasks that have architectures: an empty filter is a dead end.
        tasks = [t for t in dict.fromkeys(c.task for c in self._cards)]
        self.task_filter.blockSignals(True)
        current = self.task_filter.currentText()
        self.task_filter.clear()
        self.task_filter.addItems([_ALL_TASKS, *tasks])
        self.task_filter.setCurrentText(current if current in tasks else _ALL_TASKS)
        self.task_filter.blockSignals(False)
        self.refresh()

    def _set_count(self, name: str, count: int) -> None:
        self._counts[name] = count
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).text() == name:
                self.table.setItem(r, 3, QTableWidgetItem(f"{count / 1e6:.2f}"))
        if self.selected_name() == name:
            self._show_selected()
        if self.counts_ready():
            self._fit_columns()

    # --- the table -----------------------------------------------------------------------------------------

    def visible_names(self) -> list[str]:
        """Names listed under the current filters, in table order."""
        return [self.table.item(r, 0).text() for r in range(self.table.rowCount())]

    def selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.table.item(rows[0].row(), 0).text() if rows else None

    def set_filters(self, task: str | None = None, dims: int | None = None, search: str = "") -> None:
        self.task_filter.setCurrentText(task or _ALL_TASKS)
        self.dims_filter.setCurrentText(f"{dims}D" if dims else "2D and 3D")
        self.search_edit.setText(search)

    def refresh(self, *_: Any) -> None:
        if self._cards is None:
            return
        task = self.task_filter.currentText()
        task = None if task == _ALL_TASKS else task
        dims = {"2D": 2, "3D": 3}.get(self.dims_filter.currentText())
        words = self.search_edit.text().lower().split()
        entries = [c for c in self._cards if (dims is None or dims in c.spatial_dims)
                   and (task is None or c.task == task)
                   and all(w in f"{c.name} {c.full_name} {c.paper} {c.year} {c.task}".lower() for w in words)]
        self.table.setRowCount(len(entries))
        for r, entry in enumerate(entries):
            count = self._counts.get(entry.name)
            values = (
                entry.name, entry.task, "/".join(f"{d}D" for d in entry.spatial_dims),
                "…" if count is None else f"{count / 1e6:.2f}",
                "—" if entry.paper_params is None else f"{entry.paper_params:.2f}", str(entry.year),
            )
            for c, value in enumerate(values):
                item = QTableWidgetItem(value)
                if c == 0:
                    item.setToolTip(entry.full_name)
                self.table.setItem(r, c, item)
        self._fit_columns()
        self.count_label.setText(f"{len(entries)} of {len(self._cards)} architectures")
        if entries:
            self.table.selectRow(0)
        else:
            self.details.clear()

    def _fit_columns(self) -> None:
        # Wide enough to show every column whole at the dock's default width.
        self.table.resizeColumnsToContents()
        width = sum(self.table.columnWidth(c) for c in range(self.table.columnCount()))
        self.table.setMinimumWidth(width + self.table.verticalScrollBar().sizeHint().width() + 4)

    def _show_selected(self) -> None:
        name = self.selected_name()
        if name is None or self._cards is None:
            return
        card = next(c for c in self._cards if c.name == name)
        self.details.setHtml(card_html(card, self._counts.get(name)))


def card_html(entry: "zoo.ModelCard", counted: int | None = None) -> str:
    """A model card as HTML for the details pane (``counted``: its parameter count, when known)."""
    ref = entry.reference
    if ref.startswith("arXiv:"):
        url = f"https://arxiv.org/abs/{ref.split(':', 1)[1]}"
    else:
        url = f"https://doi.org/{ref.split(':', 1)[-1]}"
    e = html.escape
    counted_text = "counting…" if counted is None else f"{counted / 1e6:.2f}M"
    paper = "none reported" if entry.paper_params is None else f"{entry.paper_params:.2f}M"
    config = ", ".join(f"{k}={v!r}" for k, v in entry.paper_config.items())
    return (
        f"<h3>{e(entry.full_name)} <small>({e(entry.name)})</small></h3>"
        f"<p><i>{e(entry.paper)}</i> ({entry.year}), <a href='{e(url)}'>{e(ref)}</a></p>"
        f"<p>Task: {e(entry.task)} &middot; dims: {', '.join(f'{d}D' for d in entry.spatial_dims)}"
        f" &middot; input sizes: multiples of {entry.size_divisor}</p>"
        f"<p>Parameters at the paper's configuration: {counted_text} (paper: {paper})<br>"
        f"<small>{e(entry.paper_params_source)}</small></p>"
        f"<p>Paper configuration: <code>{e(config)}</code></p>"
        + (f"<p>{e(entry.notes)}</p>" if entry.notes else "")
    )
