"""What the prediction store's coarse levels cost, and what they save a viewer.

Side by side in one run, median of ``--repeats``: ``segarch.predict`` from a Zarr image to a Zarr store
with the coarse levels written as blocks finish (the default) and with them switched off; then the time to
read an overview (a screenful of the whole result) from the store's coarsest level and, without levels,
by striding level 0 (what the napari widget's live layer did before: every level-0 chunk is read).

Run: ``python benchmarks/pyramid.py [--size 8192] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_image(path: Path, size: int) -> None:
    import zarr

    rng = np.random.default_rng(0)
    array = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(2048, 2048), dtype=np.uint8)
    for i in range(0, size, 2048):
        for j in range(0, size, 2048):
            array[i:i + 2048, j:j + 2048] = rng.integers(0, 255, (min(2048, size - i), min(2048, size - j)))


def run(image: Path, out: Path, levels: bool) -> float:
    import torch
    import zarr

    import segarch
    from segarch.tiling import pyramid

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))
    net.spatial_dims = 2
    create = pyramid.create_levels
    if not levels:
        pyramid.create_levels = lambda group, plan: None
    try:
        start = time.perf_counter()
        segarch.predict(net, zarr.open_array(str(image), mode="r"), axes="YX", tile=512, overlap=0.1,
                        batch_size=4, device="cpu", out=out)
        return time.perf_counter() - start
    finally:
        pyramid.create_levels = create


def overview_seconds(store: Path, coarse: bool) -> float:
    import zarr

    group = zarr.open_group(str(store), mode="r")
    start = time.perf_counter()
    if coarse:
        last = max((k for k in group.array_keys() if k.isdigit()), key=int)
        np.asarray(group[last][:])
    else:
        level0 = group["0"]
        step = max(1, level0.shape[0] // 256)
        np.asarray(level0[::step, ::step])
    return time.perf_counter() - start


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image.zarr"
        make_image(image, args.size)
        with_levels, without, coarse, strided = [], [], [], []
        for r in range(args.repeats):
            with_levels.append(run(image, Path(tmp) / f"with{r}.zarr", True))
            without.append(run(image, Path(tmp) / f"without{r}.zarr", False))
            coarse.append(overview_seconds(Path(tmp) / f"with{r}.zarr", True))
            strided.append(overview_seconds(Path(tmp) / f"without{r}.zarr", False))
        a, b = statistics.median(with_levels), statistics.median(without)
        c, d = statistics.median(coarse), statistics.median(strided)
        print(f"{args.size}² uint8 Zarr -> Zarr, tile 512, 1 thread, median of {args.repeats}")
        print(f"predict with levels / without: {a:.1f} s / {b:.1f} s = {a / b:.2f}")
        print(f"overview from the coarsest level / by striding level 0: {c * 1e3:.0f} ms / {d * 1e3:.0f} ms "
              f"= {c / d:.3f}")


if __name__ == "__main__":
    main()
