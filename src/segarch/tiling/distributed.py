"""Running a prediction on a Dask cluster: one task per region of output blocks.

Each task computes the tiles its blocks need (tiles shared inside the region, recomputed at region
borders) and writes the finished blocks straight into the Zarr output, so no pixels travel through
the scheduler. The network is scattered to every worker once and built into a runner once per worker.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any


from segarch.tiling.pipeline import pad_batch, read_tile
from segarch.tiling.plan import Assembler, Plan, Region

__all__ = ["run_distributed", "connect"]

log = logging.getLogger("segarch.tiling")
_RUNNERS: dict[str, Any] = {}  # per worker process: token → NetworkRunner


def connect(scheduler):
    """A ``dask.distributed.Client`` for ``scheduler`` (a Client, or an address such as ``tcp://host:8786``).

    Raises:
        ValueError: one line naming the address when it cannot be reached (no traceback).
    """
    import dask
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler
    if not isinstance(scheduler, str):
        raise ValueError(f"`scheduler` must be a dask.distributed.Client or a scheduler address, got {scheduler!r}.")
    # How long to try: Dask's own setting (distributed.comm.timeouts.connect, 30 s by default).
    seconds = dask.utils.parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds")
    try:
        return Client(scheduler, timeout=seconds)
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        raise ValueError(f"`scheduler`={scheduler!r}: could not connect to a Dask scheduler there within "
                         f"{seconds:g} s ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
                         "Check the address (e.g. tcp://host:8786) and that the scheduler is running, or run "
                         "without a scheduler.") from None


def _runner(token: str, payload: dict[str, Any]):
    runner = _RUNNERS.get(token)
    if runner is None:
        import torch

        from segarch.devices import resolve_device
        from segarch.tiling.runner import NetworkRunner

        torch.set_num_threads(payload["threads"])  # no oversubscription between workers on one machine
        if payload.get("runtime", "torch") == "torch":
            runner = NetworkRunner(payload["network"], resolve_device(payload["device"]), payload["amp"])
        else:  # the export the client made and checked is found in the cache (or made again on another disk)
            from segarch.runtimes import make_runner

            runner = make_runner(payload["model"], resolve_device(payload["device"]), payload["amp"],
                                 payload["runtime"], payload["tile_shape"])
        _RUNNERS[token] = runner
    return runner


def _run_region(token: str, payload: dict[str, Any], plan: Plan, source, preprocess, sink, blocks, batch_size: int) -> int:
    from segarch.tiling import pipeline
    from segarch.tiling.skipping import TileSkipper

    # nodata and glass tiles are not run, constant tiles once per value (per region), as in this process
    skipper = TileSkipper(_runner(token, payload), plan.out_channels, reuse_constant=pipeline.SKIP_CONSTANT_TILES)
    region = Region(plan, blocks)
    assembler = Assembler(plan, region)
    pending: list[tuple] = []

    def run(batch):
        x = pad_batch([tile for _, tile in batch], batch_size)
        for (key, _), logits in zip(batch, skipper(x, batch_size)):
            yield key, logits

    def assemble(key, logits):
        for block, data in assembler.add(key, logits):
            sink.write(block, data)

    order = region.tile_order
    for key in order:
        tile = read_tile(plan, source, preprocess, key)
        known = skipper.lookup(tile)
        if known is not None:
            assemble(key, known)
            continue
        pending.append((key, tile))
        if len(pending) == batch_size:
            for done_key, logits in run(pending):
                assemble(done_key, logits)
            pending.clear()
    for done_key, logits in run(pending) if pending else ():
        assemble(done_key, logits)
    return len(order)


def run_distributed(scheduler, plan: Plan, source, preprocess, network, device: str, amp, sink, batch_size: int,
                    progress, cancel, runtime: str = "torch", model=None) -> int:
    """Run every unfinished block on the cluster; returns the number of tiles computed.

    ``runtime`` other than ``"torch"`` (``model``: the :class:`segarch.Model`): the runtime that
    :func:`segarch.runtimes.make_runner` gives here (exported and checked once, here) runs on the workers.
    """
    from distributed import as_completed

    client = connect(scheduler)
    workers = client.scheduler_info().get("workers", {})
    threads = sum(w.get("nthreads", 1) for w in workers.values()) or 1
    payload = {"network": network.cpu(), "device": device, "amp": amp,
               "threads": max(1, (os.cpu_count() or 1) // threads), "runtime": "torch"}
    if runtime != "torch":
        import torch

        from segarch.runtimes import make_runner
        from segarch.runtimes.onnx import OnnxRunner
        from segarch.runtimes.openvino import OpenVinoRunner

        chosen = make_runner(model, torch.device(device), amp, runtime, plan.tile_shape)  # errors and auto's choice
        resolved = ("onnxruntime" if isinstance(chosen, OnnxRunner) else
                    "openvino" if isinstance(chosen, OpenVinoRunner) else "torch")
        payload.update(runtime=resolved, model=model, tile_shape=plan.tile_shape)
    token = uuid.uuid4().hex
    payload_future = client.scatter(payload, broadcast=True, hash=False)
    source_future = client.scatter(source, broadcast=True, hash=False) if source.in_memory else source
    # Enough tasks to keep every worker busy, each big enough to share most of its tiles.
    rows = max(1, plan.blocks_per_axis[0] // max(1, 2 * threads))
    regions = plan.columns(done=sink.done(), rows_per_region=rows)
    total = sum(len(r.tile_order) for r in regions)
    if progress is not None:
        progress(0, total)
    futures = [client.submit(_run_region, token, payload_future, plan, source_future, preprocess, sink, r.blocks,
                             batch_size, pure=False) for r in regions]
    done = 0
    for future in as_completed(futures):
        done += future.result()
        if progress is not None:
            progress(done, total)
        if cancel is not None and cancel.is_set():
            for f in futures:
                f.cancel()
            break
    log.info("distributed: %d regions on %d worker threads", len(regions), threads)
    return done
