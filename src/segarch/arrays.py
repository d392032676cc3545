"""Reading regions of lazy arrays safely from any thread.

Training, prompts and prediction read regions of Dask arrays in worker threads while napari slices
its layers on the GUI thread: :func:`compute_here` is how they all read, so none of them disturbs
napari's block cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["compute_here"]


def compute_here(region: Any, *, parallel: bool = False) -> np.ndarray:
    """``region`` as a NumPy array; a Dask array is computed without Dask's process-wide callbacks, in the
    calling thread (``parallel=True``: on Dask's thread pool, for reductions over a whole lazy array).

    Dask's process-wide callbacks (``dask.callbacks.Callback.active``: napari registers its opportunistic
    block cache there while it slices a layer) are not thread-safe: a compute in another thread picks them up,
    swaps the global set while it runs, and the cache's bookkeeping fails (``KeyError`` on a task key) or
    keeps this thread's blocks. Passing ``callbacks=()`` makes Dask use none and leave the global set alone.
    """
    if hasattr(region, "dask") and hasattr(region, "compute"):
        region = region.compute(scheduler="threads" if parallel else "synchronous", callbacks=())
    elif hasattr(region, "compute"):  # another lazy array type: its own compute
        region = region.compute()
    return np.asarray(region)
