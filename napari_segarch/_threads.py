"""Workers and napari quitting: a worker still running when Qt is torn down emits into deleted objects
(a traceback, or a crash). The widgets stop theirs and wait for them when the application is about to quit."""

from __future__ import annotations

from typing import Callable

__all__ = ["wait_at_quit"]

_WAIT_MS = 60_000


def wait_at_quit(stop: Callable[[], None]) -> None:
    """When the application is about to quit: call ``stop`` (ask the widget's workers to stop), then wait
    (at most a minute) for napari's worker threads to finish."""
    from qtpy.QtCore import QThreadPool
    from qtpy.QtWidgets import QApplication

    def quitting() -> None:
        try:
            stop()
        except RuntimeError:  # the widget is gone: nothing of it to stop
            pass
        QThreadPool.globalInstance().waitForDone(_WAIT_MS)

    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(quitting)
