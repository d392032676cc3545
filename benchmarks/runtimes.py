"""Runtimes and constant-tile skipping, measured side by side in one run.

For the same image, model, tile, overlap and batch size, prints the median of ``--repeats`` runs of:

  (a) the eager floor: the pure forward of the engine's own torch runner (channels-last) over exactly the
      tiles the engine computes,
  (b) ``segarch.predict(..., runtime="torch")`` end to end (Zarr in, Zarr out),
  (c) ``segarch.predict(..., runtime="onnxruntime")`` end to end (the export cached beforehand: a one-off),

the ratios (c)/(a) and (c)/(b), the labels' agreement between (b) and (c), and the largest difference of the
probabilities. Then, on an image whose right 70% is empty (constant), ``predict`` with constant tiles computed
once vs every tile sent to the network. Labels of an untrained network are nearly one class, so agreement is
also measured with the shipped ``unet.nuclei2d`` on a generated nuclei image.

Run: ``python benchmarks/runtimes.py [--repeats 3] [--size2d 2048] [--size3d 256] [--no-3d]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import segarch
from segarch.runtimes import make_runner
from segarch.tiling import pipeline
from segarch.tiling.engine import check_tile
from segarch.tiling.runner import NetworkRunner
from tiling import engine_tile_count, median_time  # benchmarks/tiling.py: the same clock and tile count


def run_case(name, model, image, tile, repeats, workdir: Path, batch: int = 4, overlap: float = 0.25) -> dict:
    import zarr

    store = zarr.open_array(str(workdir / f"{name}_in.zarr"), mode="w", shape=image.shape, dtype=image.dtype,
                            chunks=(tile,) * image.ndim)
    store[:] = image
    tiles = check_tile(tile, image.ndim, model.size_divisor)
    count = engine_tile_count(image.shape, tiles, overlap, model.size_divisor, "gaussian")
    runner = NetworkRunner(model.network, torch.device("cpu"), amp=None)
    x = np.random.default_rng(0).random((batch, model.in_channels, *tiles), dtype=np.float32)
    make_runner(model, torch.device("cpu"), None, "onnxruntime", tiles)  # the export, once, outside the timing

    def floor():
        for _ in range(-(-count // batch)):
            runner(x, batch)

    def predict(runtime, output="labels"):
        return segarch.predict(model, store, tile=tile, overlap=overlap, batch_size=batch, device="cpu",
                               runtime=runtime, output=output, out=workdir / f"{name}_{runtime}.zarr",
                               overwrite=True)[:]

    predict("torch"), predict("onnxruntime")  # warm-up
    a = median_time(floor, repeats)
    b = median_time(lambda: predict("torch"), repeats)
    c = median_time(lambda: predict("onnxruntime"), repeats)
    agree = float((predict("torch") == predict("onnxruntime")).mean())
    diff = float(np.abs(predict("torch", "probabilities") - predict("onnxruntime", "probabilities")).max())
    return {"tiles": count, "a": a, "b": b, "c": c, "agree": agree, "diff": diff}


def run_empty(model, size: int, tile: int, repeats: int, runtime: str) -> dict:
    rng = np.random.default_rng(1)
    image = np.zeros((size, size), np.uint8)  # 70% empty: content in the left 30%
    image[:, : int(0.3 * size)] = rng.integers(0, 255, (size, int(0.3 * size)))
    results = {}

    def run(skip):
        pipeline.SKIP_CONSTANT_TILES = skip
        results[skip] = segarch.predict(model, image, tile=tile, overlap=0.25, batch_size=4, device="cpu",
                                        runtime=runtime)

    try:
        every = median_time(lambda: run(False), repeats)
        skipped = median_time(lambda: run(True), repeats)
    finally:
        pipeline.SKIP_CONSTANT_TILES = True
    return {"ratio": skipped / every, "equal": bool(np.array_equal(results[True], results[False]))}


def trained_agreement(size: int) -> tuple[float, float]:
    from segarch.samples import nuclei

    model = segarch.models.resolve("unet.nuclei2d")
    image, _ = nuclei((size, size), seed=7)
    eager = segarch.predict(model, image, device="cpu", runtime="torch")
    fast = segarch.predict(model, image, device="cpu", runtime="onnxruntime")
    return float((eager == fast).mean()), float((eager > 0).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size2d", type=int, default=2048)
    parser.add_argument("--size3d", type=int, default=256)
    parser.add_argument("--no-3d", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    unet2d = segarch.Model.from_zoo("unet", spatial_dims=2, features=(16, 32, 64, 128, 256), norm="batch")
    cases = [("2D", unet2d, (rng.random((args.size2d,) * 2) * 255).astype(np.uint8), 256)]
    if not args.no_3d:
        unet3d = segarch.Model.from_zoo("unet", spatial_dims=3, features=(8, 16, 32, 64), norm="batch")
        cases.append(("3D", unet3d, (rng.random((args.size3d,) * 3) * 255).astype(np.uint8), 64))
    print(f"CPU, fp32, overlap 0.25, batch 4, median of {args.repeats}; torch threads {torch.get_num_threads()}")
    print(f"{'case':<4} {'image':<13} {'tile':>4} {'tiles':>5}  {'(c)/(a) ORT/floor':>17}  {'(c)/(b) ORT/torch':>17}"
          f"  {'(b)/(a)':>7}  {'labels agree':>12}  {'max |Δp|':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, image, tile in cases:
            model.preprocessing = []  # the raw image into the network, as benchmarks/tiling.py
            r = run_case(name, model, image, tile, args.repeats, Path(tmp))
            print(f"{name:<4} {'×'.join(map(str, image.shape)):<13} {tile:>4} {r['tiles']:>5}  "
                  f"{r['c'] / r['a']:>17.2f}  {r['c'] / r['b']:>17.2f}  {r['b'] / r['a']:>7.2f}  "
                  f"{100 * r['agree']:>11.3f}%  {r['diff']:>9.1e}")
    agree, foreground = trained_agreement(1024)
    print(f"shipped unet.nuclei2d on a generated 1024² nuclei image: labels agree {100 * agree:.3f}% "
          f"(foreground {100 * foreground:.0f}%)")
    unet2d.preprocessing = []
    for runtime in ("torch", "onnxruntime"):
        e = run_empty(unet2d, args.size2d // 2, 256, args.repeats, runtime)
        print(f"70%-empty {args.size2d // 2}² image, {runtime}: constant tiles computed once ÷ every tile computed "
              f"= {e['ratio']:.2f}; labels identical: {e['equal']}")


if __name__ == "__main__":
    main()
