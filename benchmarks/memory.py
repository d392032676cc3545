"""Peak memory of ``segarch.predict`` versus image size: bounded by the work in flight, not the image.

Writes uint8 Zarr images of 8192² and 32768² (one value per chunk, so they are quick to make),
segments each from Zarr to Zarr in a fresh process with the same model and tile, and prints each
run's peak resident memory and the ratio (target: at most 1.2).

Run: ``python benchmarks/memory.py [--small 8192] [--large 32768] [--tile 512]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RUN = """
import resource, sys, time, torch, zarr
import segarch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
net.spatial_dims = 2
start = time.perf_counter()
segarch.predict(net, zarr.open_array(sys.argv[1], mode="r"), axes="YX", tile={tile}, overlap=0.1,
                batch_size=4, device="cpu", out=sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - start)
"""


def make_image(path: Path, size: int, chunk: int = 4096) -> None:
    import zarr

    array = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(chunk, chunk), dtype=np.uint8)
    for i in range(0, size, chunk):
        for j in range(0, size, chunk):
            array[i:i + chunk, j:j + chunk] = (i // chunk * 7 + j // chunk * 13) % 256


def peak_rss_mb(image: Path, out: Path, tile: int) -> tuple[float, float]:
    result = subprocess.run([sys.executable, "-c", RUN.format(tile=tile), str(image), str(out)],
                            capture_output=True, text=True, check=True)
    kib, seconds = result.stdout.split()
    return int(kib) / 1024, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=8192)
    parser.add_argument("--large", type=int, default=32768)
    parser.add_argument("--tile", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for size in (args.small, args.large):
            image = Path(tmp) / f"image_{size}.zarr"
            make_image(image, size)
            rss, seconds = peak_rss_mb(image, Path(tmp) / f"out_{size}.zarr", args.tile)
            rows.append((size, rss, seconds))
            print(f"{size}×{size} uint8, tile {args.tile}: peak RSS {rss:.0f} MiB")
        print(f"peak RSS ratio {args.large}² / {args.small}²: {rows[1][1] / rows[0][1]:.2f} "
              f"(pixels ×{(args.large / args.small) ** 2:.0f})")


if __name__ == "__main__":
    main()
