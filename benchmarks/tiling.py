"""Tiled inference throughput, measured side by side in one run (2D and 3D).

For the same image, model, tile, overlap and batch size, prints the median of ``--repeats`` runs of:

  (a) the pure forward time over exactly the tiles the engine computes, with the engine's own forward
      (the network in channels-last memory format): the floor,
  (b) ``segarch.predict`` end to end, from a Zarr store to a Zarr store (labels),
  (c) MONAI's ``sliding_window_inference`` on the image held in memory (Gaussian blending, then argmax),
      with the network as the user has it, and (c') with the same channels-last network the engine runs,

and the ratios (b)/(a), (b)/(c) and (b)/(c'). Machines are shared and noisy: compare the ratios.

Run: ``python benchmarks/tiling.py [--repeats 3] [--size2d 2048] [--size3d 256] [--device cpu]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import segarch
from segarch.tiling.engine import check_tile, overlap_pixels
from segarch.tiling.grid import axis_grid
from segarch.tiling.runner import NetworkRunner


def median_time(fn, repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``fn`` (also used by benchmarks/runtimes.py)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def engine_tile_count(shape, tile, overlap, divisor, blend) -> int:
    grids = [axis_grid(s, t, overlap_pixels(overlap, t), divisor, blend) for s, t in zip(shape, tile)]
    return int(np.prod([len(g.starts) for g in grids]))


def run_case(name: str, model: segarch.Model, shape: tuple[int, ...], tile: int, overlap: float, batch: int,
             device: str, repeats: int, workdir: Path) -> dict[str, float]:
    import zarr
    from monai.inferers import sliding_window_inference

    rng = np.random.default_rng(0)
    image = (rng.random(shape) * 255).astype(np.uint8)
    store = zarr.open_array(str(workdir / f"{name}_in.zarr"), mode="w", shape=shape, dtype=np.uint8,
                            chunks=(tile,) * len(shape))
    store[:] = image
    net = model.network.to(device).eval()
    tiles = check_tile(tile, len(shape), model.size_divisor)
    grid_tiles = engine_tile_count(shape, tiles, overlap, model.size_divisor, "gaussian")
    counted = []
    runner = NetworkRunner(net, torch.device(device), amp=None)  # the engine's own forward (channels-last)
    x = rng.random((batch, 1, *tiles), dtype=np.float32)

    def floor():
        for _ in range(-(-counted[-1] // batch)):  # exactly the tiles the engine computed
            runner(x, batch)

    def engine():
        segarch.predict(model, store, tile=tile, overlap=overlap, batch_size=batch, device=device,
                        out=workdir / f"{name}_out.zarr", overwrite=True, progress=lambda d, t: counted.append(t))

    tensor = torch.from_numpy(image.astype(np.float32))[None, None]

    fmt = runner._channels_last(len(shape) + 2)

    def monai(network, memory_format=None):
        def predictor(t):
            return network(t.contiguous(memory_format=memory_format) if memory_format else t)

        with torch.inference_mode():
            logits = sliding_window_inference(tensor, roi_size=tiles, sw_batch_size=batch, predictor=predictor,
                                              overlap=overlap, mode="gaussian", sw_device=device, device="cpu")
            logits.argmax(1).to(torch.uint8).numpy()

    engine()  # warm-up: threads, allocator, first-touch of the store
    a, b = median_time(floor, repeats), median_time(engine, repeats)
    c = median_time(lambda: monai(net), repeats)
    c_same = median_time(lambda: monai(runner.network, fmt), repeats)
    return {"tiles": counted[-1], "grid_tiles": grid_tiles, "a": a, "b": b, "c": c, "c_same": c_same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size2d", type=int, default=2048)
    parser.add_argument("--size3d", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    cases = [
        ("2D", segarch.Model.from_zoo("unet", spatial_dims=2, features=(16, 32, 64, 128, 256), norm="batch"),
         (args.size2d, args.size2d), 256),
        ("3D", segarch.Model.from_zoo("unet", spatial_dims=3, features=(8, 16, 32, 64), norm="batch"),
         (args.size3d,) * 3, 64),
    ]
    print(f"device {args.device}, overlap 0.25, batch 4, median of {args.repeats}; torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'case':<4} {'image':<16} {'tile':<6} {'tiles':>11}  {'(b)/(a) engine/floor':>21}  "
          f"{'(b)/(c) engine/MONAI':>21}  {'(b)/(c) same network':>21}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, shape, tile in cases:
            model.preprocessing = []  # the same work for all three: the raw image into the network
            r = run_case(name, model, shape, tile, 0.25, 4, args.device, args.repeats, Path(tmp))
            tiles = f"{r['tiles']}/{r['grid_tiles']}"  # computed / on the grid (more: recomputed at column borders)
            print(f"{name:<4} {'×'.join(map(str, shape)):<16} {tile:<6} {tiles:>11}  {r['b'] / r['a']:>21.2f}  "
                  f"{r['b'] / r['c']:>21.2f}  {r['b'] / r['c_same']:>21.2f}")


if __name__ == "__main__":
    main()
