"""Many images, one model: each file predicted into its own result, here or in parallel on a Dask cluster.

:func:`predict_file` runs one file (into a ``.zarr`` store, or a ``.tif`` computed into a resumable
``.partial.zarr`` and converted at the end) and returns its run-report row. :func:`predict_files` runs
a list of them, one after the other or, given a ``scheduler``, **one task per file** on a cluster: each
worker reads its file, runs the network on its own tiles and writes its own output, so no pixels pass
through the scheduler, and a file that fails is reported without stopping the others.

How the two kinds of parallelism combine: a folder run with a scheduler spreads the *files* over the
workers (a file's tiles then run inside one worker); a single image with a scheduler spreads its *tile
regions* over the workers (:mod:`segarch.tiling.distributed`). ``scheduler="local"`` or ``"local:N"``
(:func:`open_client`) starts a cluster of N single-threaded worker processes on this machine.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

from segarch.tiling.report import ReportRow, count_objects

__all__ = ["partial_store", "predict_file", "predict_files", "open_client", "BatchInterrupted"]

#: Bad input, unreadable or corrupt files: reported with their message alone. Any other error of one file
#: (e.g. out of memory on one huge scene) is reported with its type too; either way the batch goes on.
FILE_ERRORS = (ValueError, OSError)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl+C during :func:`predict_files`: ``rows`` are the files finished so far, then the interrupted one(s)
    (status ``interrupted``, output: the store that keeps their finished blocks for ``resume``)."""

    def __init__(self, rows: list[ReportRow]) -> None:
        super().__init__()
        self.rows = rows


def partial_store(target: Path) -> Path:
    """The resumable store a ``.tif`` result is computed into before it is converted."""
    return target.with_name(target.name + ".partial.zarr")


def open_client(scheduler: Any):
    """``(client, owned)``: a ``dask.distributed.Client`` for ``scheduler``, and whether it was started here.

    ``scheduler``: a ``Client``; an address such as ``tcp://host:8786``; ``"local"`` (a local cluster of one
    single-threaded worker process per CPU core, up to 4) or ``"local:N"`` (N worker processes). A cluster
    started here stops when its client is closed.

    Raises:
        ValueError: a ``local:N`` whose N is not a positive integer, or an address that cannot be reached.
    """
    from segarch.tiling.distributed import connect

    if isinstance(scheduler, str) and (scheduler == "local" or scheduler.startswith("local:")):
        count = scheduler.partition(":")[2]
        if count and not (count.isdigit() and int(count) >= 1):
            raise ValueError(f"`scheduler`={scheduler!r}: 'local:N' needs N, the number of worker processes, as a "
                             "positive integer (e.g. local:4).")
        workers = int(count) if count else max(1, min(4, os.cpu_count() or 1))
        from distributed import Client

        # One thread per worker process: the network's own threads are set per task, so workers do not fight.
        return Client(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None), True
    return connect(scheduler), False


class _Progress:
    """Remembers a file's last ``(done, total)`` tiles, and passes them on to ``show`` when given."""

    def __init__(self, show: Callable[[int, int], None] | None = None) -> None:
        self.show, self.done, self.total = show, 0, 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.show is not None:
            self.show(done, total)


def predict_file(model, source: Path, target: Path, settings: dict[str, Any], *, resume: bool = False,
                 overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> ReportRow:
    """Predict ``source`` into ``target`` (``.zarr``, or ``.tif`` through a resumable partial store).

    ``settings`` are :func:`segarch.predict`'s keywords (``output``, ``tile``, ``bands``, ``nodata`` ...).
    Returns the file's run-report row (``done``, or ``complete`` when a resumed store had nothing left);
    its ``extra`` holds ``shape``, ``dtype``, ``tiles``, ``resumed`` and, for instances, ``instances``
    (the decoding report).

    Raises:
        ValueError, OSError: the file could not be read or predicted (the caller decides whether the batch
            goes on); KeyboardInterrupt: the finished blocks stay in the store for ``resume``.
    """
    import numpy as np

    from segarch.inference import predict
    from segarch.io.convert import convert_store

    source, target = Path(source), Path(target)
    to_tiff = target.suffix.lower() in (".tif", ".tiff")
    store = partial_store(target) if to_tiff else target
    resumed = bool(resume) and store.exists()
    output = settings.get("output", "labels")
    tracker = _Progress(progress)
    start = time.perf_counter()
    options = dict(settings)
    if output in ("instances", "panoptic"):
        options["instance_options"] = {**(settings.get("instance_options") or {}), "return_report": True}
    result = predict(model, str(source), out=str(store), resume=resume, overwrite=overwrite, progress=tracker,
                     **options)
    objects = pixels = instance_report = None
    if output in ("instances", "panoptic"):
        result, instance_report = result
        if output == "panoptic":  # two label images in the store: the instances stand for both in the row
            result = result.instances
        instance_report.pop("measurements", None)  # the table is in its file; a row stays small (workers send it)
        objects = {"objects": instance_report["objects"]}
    elif output == "labels":
        objects, pixels = count_objects(result, list(model.class_names))
    if to_tiff:  # a GeoTIFF/COG when the source was georeferenced, else a pyramidal OME-TIFF
        convert_store(store, target, overwrite=overwrite)
        if instance_report is not None and instance_report.get("table"):  # the table goes beside the .tif
            from segarch.instances.predict import table_path

            instance_report["table"] = str(Path(instance_report["table"]).replace(table_path(target)))
        shutil.rmtree(store)
    seconds = time.perf_counter() - start
    size = int(np.prod(result.shape))
    return ReportRow(str(source), "complete" if tracker.total == 0 else "done", seconds=round(seconds, 3),
                     pixels_per_s=round(size / max(seconds, 1e-9), 1), objects=objects, class_pixels=pixels,
                     output=str(target),
                     extra={"shape": tuple(int(n) for n in result.shape), "dtype": str(result.dtype),
                            "tiles": tracker.done, "resumed": resumed, "instances": instance_report})


def _failed(source: Path, err: BaseException, seconds: float) -> ReportRow:
    if isinstance(err, OSError):
        from segarch.destinations import describe_os_error

        message = describe_os_error(err)
    elif isinstance(err, FILE_ERRORS):
        message = str(err) or type(err).__name__
    else:  # not a bad-input error (e.g. torch out of memory on one huge file): its type says what happened
        message = f"{type(err).__name__}: {err}"
    return ReportRow(str(source), "failed", error=message, seconds=round(seconds, 3))


class _LocalDask:
    """Inside a worker's task, Dask computes on the worker's own threads, not back on the cluster.

    A compute in a task would otherwise go to the cluster and wait on itself (a worker of one thread never
    frees). ``dask.config`` is process-wide and tasks of one process overlap (threaded workers): the first
    task in sets the scheduler, the last one out restores what was there.
    """

    _lock = threading.Lock()
    _inside = 0
    _context: Any = None

    def __enter__(self) -> None:
        import dask

        with self._lock:
            if _LocalDask._inside == 0:
                _LocalDask._context = dask.config.set(scheduler="threads")
            _LocalDask._inside += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            _LocalDask._inside -= 1
            if _LocalDask._inside == 0:
                _LocalDask._context.__exit__(None, None, None)
                _LocalDask._context = None


def _task(model, source: Path, target: Path, settings: dict[str, Any], resume: bool, overwrite: bool,
          threads: int) -> ReportRow:
    """One file on a worker: its tiles run here (the worker's own threads), a failure becomes its row."""
    import torch

    torch.set_num_threads(threads)  # the machine's cores shared among the workers' threads
    start = time.perf_counter()
    try:
        with _LocalDask():
            return predict_file(model, source, target, settings, resume=resume, overwrite=overwrite)
    except Exception as err:  # one file's failure, whatever it is, is that file's row: the others go on
        return _failed(source, err, time.perf_counter() - start)


def predict_files(model, jobs: Sequence[tuple[Path, Path]], settings: dict[str, Any], *, scheduler: Any = None,
                  resume: bool = False, overwrite: bool = False,
                  progress: Callable[[Path], Callable[[int, int], None]] | None = None,
                  on_row: Callable[[ReportRow], None] | None = None) -> list[ReportRow]:
    """Predict every ``(source, target)`` of ``jobs``; one report row per job, in the jobs' order.

    Args:
        model: a :class:`segarch.Model` (sent to every worker once).
        jobs: ``(source, target)`` paths (targets ``.zarr`` or ``.tif``), all on storage the workers share.
        settings: :func:`segarch.predict`'s keywords for every file (not ``out``/``resume``/``scheduler``).
        scheduler: ``None`` (here, one file after the other), a ``dask.distributed.Client``, an address or
            ``"local"``/``"local:N"`` (:func:`open_client`): one task per file on the cluster.
        progress: here only: ``progress(source)`` gives a file's tile-progress callback.
        on_row: called with each row as its file finishes (in the order they finish).

    A file that fails (unreadable, corrupt, bad settings for it, or any other error such as running out of memory)
    gives a ``failed`` row with the error; the others go on. Returns the rows. Ctrl+C cancels what is left and
    raises :class:`BatchInterrupted` with the rows so far.
    """
    jobs = [(Path(s), Path(t)) for s, t in jobs]
    if "out" in settings or (scheduler is not None and "scheduler" in settings):
        raise ValueError("`settings` must not hold `out` (the jobs' targets say it), nor `scheduler` when the "
                         "files themselves go to a cluster (`scheduler=`).")
    if scheduler is None:  # (a `scheduler` in `settings` spreads each file's tiles instead)
        rows = []
        for source, target in jobs:
            start = time.perf_counter()
            try:
                row = predict_file(model, source, target, settings, resume=resume, overwrite=overwrite,
                                   progress=progress(source) if progress else None)
            except Exception as err:  # as on a cluster: one file's failure is its row, the others go on
                row = _failed(source, err, time.perf_counter() - start)
            except KeyboardInterrupt:
                store = partial_store(target) if target.suffix.lower() in (".tif", ".tiff") else target
                rows.append(ReportRow(str(source), "interrupted", seconds=round(time.perf_counter() - start, 3),
                                      output=str(store)))
                raise BatchInterrupted(rows) from None
            rows.append(row)
            if on_row is not None:
                on_row(row)
        return rows
    return _on_cluster(model, jobs, settings, scheduler, resume, overwrite, on_row)


def _on_cluster(model, jobs, settings, scheduler, resume, overwrite, on_row) -> list[ReportRow]:
    from distributed import as_completed

    client, owned = open_client(scheduler)
    try:
        workers = client.scheduler_info().get("workers", {})
        slots = sum(w.get("nthreads", 1) for w in workers.values()) or 1
        threads = max(1, (os.cpu_count() or 1) // slots)
        model_future = client.scatter(model, broadcast=True, hash=False)
        run = uuid.uuid4().hex
        futures = {client.submit(_task, model_future, source, target, dict(settings), resume, overwrite, threads,
                                 key=f"segarch-file-{run}-{i}"): i for i, (source, target) in enumerate(jobs)}
        rows: list[ReportRow | None] = [None] * len(jobs)
        try:
            for future in as_completed(list(futures)):
                i = futures[future]
                try:
                    row = future.result()
                except Exception as err:  # a worker lost, or an error the task could not turn into a row
                    row = _failed(jobs[i][0], err, 0.0)
                rows[i] = row
                if on_row is not None:
                    on_row(row)
        except KeyboardInterrupt:
            client.cancel(list(futures))
            done = [r for r in rows if r is not None]
            for (source, target), row in zip(jobs, rows):
                if row is None:
                    store = partial_store(target) if target.suffix.lower() in (".tif", ".tiff") else target
                    done.append(ReportRow(str(source), "interrupted", output=str(store)))
            raise BatchInterrupted(done) from None
        return [r for r in rows if r is not None]
    finally:
        if owned:
            client.close()
