"""Peak memory of ``segarch.predict`` versus image size: bounded by the work in flight, not the image.

Writes uint8 Zarr images of 8192² and 32768² (one value per chunk, so they are quick to make),
segments each from Zarr to Zarr in a fresh process with the same model and tile, and prints each
run's peak resident memory and the ratio (target: at most 1.2).

``--output instances`` does the same for instance output (``segarch.predict(output="instances")``: the
network pass into a probabilities store, the block-wise decoding with merges across seams, the
per-object table measured chunk by chunk), and prints each run's peak per phase (network, decode, merge,
final_ids, table, csv; ``setup`` is the time between them). Its images hold a field of discs (a 4096² pattern repeated
chunk by chunk), and its network is a fixed one that turns them into a distance decoder's classes (a
box blur then one logit per class), so every block holds hundreds of objects, many across seams.

Run: ``python benchmarks/memory.py [--small 8192] [--large 32768] [--tile 512] [--output instances]``
"""

from __future__ import annotations

import argparse
import json
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


RUN_INSTANCES = """
import importlib, json, os, resource, sys, threading, time, torch, zarr
import segarch
from torch import nn

torch.set_num_threads(1)
# Peak resident memory per phase: /proc/self/statm sampled every 20 ms, charged to the phase running then.
phase, peaks = ["setup"], {{}}


def sample():
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        with open("/proc/self/statm") as f:
            mib = int(f.read().split()[1]) * page // 2 ** 20
        peaks[phase[0]] = max(peaks.get(phase[0], 0), mib)
        time.sleep(0.02)


def timed(module, name, label):
    module = importlib.import_module(module)
    function = getattr(module, name)

    def wrapper(*args, **kwargs):
        outer, phase[0] = phase[0], label
        try:
            return function(*args, **kwargs)
        finally:
            phase[0] = outer
    setattr(module, name, wrapper)


for module, name, label in [("segarch.tiling", "predict", "network"), ("segarch.instances.blocks", "_decode_block",
                            "decode"), ("segarch.instances.blocks", "_merge", "merge"),
                            ("segarch.instances.blocks", "_write_final", "final_ids"),
                            ("segarch.instances.predict", "measure_objects", "table"),
                            ("segarch.instances.measure", "write_table", "csv")]:
    timed(module, name, label)
threading.Thread(target=sample, daemon=True).start()


class DiscsToClasses(nn.Module):
    # A fixed network: a 9x9 box blur of the disc image, then one logit per distance class (the blur is
    # high deep inside a disc, about half at its edge, low outside).
    spatial_dims = 2

    def __init__(self):
        super().__init__()
        self.blur = nn.Conv2d(1, 1, 9, padding=4, bias=False)
        nn.init.constant_(self.blur.weight, 1 / 81 / 255)
        self.centres = torch.tensor([0.0, 0.55, 0.7, 0.85, 1.0]).view(1, 5, 1, 1)

    def forward(self, x):
        return -40 * (self.blur(x) - self.centres) ** 2


start = time.perf_counter()
labels, report = segarch.predict(DiscsToClasses(), zarr.open_array(sys.argv[1], mode="r"), axes="YX",
                                 tile={tile}, overlap=0.1, batch_size=4, device="cpu", out=sys.argv[2],
                                 output="instances", instance_options=dict(decoder="distance", return_report=True))
phase[0] = "end"
time.sleep(0.05)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - start, report["objects"],
      report["merged_across_seams"], json.dumps(peaks, separators=(",", ":")))
"""


def make_image(path: Path, size: int, chunk: int = 4096, discs: bool = False) -> None:
    import zarr

    array = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(chunk, chunk), dtype=np.uint8)
    pattern = _discs(chunk) if discs else None
    for i in range(0, size, chunk):
        for j in range(0, size, chunk):
            if pattern is not None:
                array[i:i + chunk, j:j + chunk] = pattern[:min(chunk, size - i), :min(chunk, size - j)]
            else:
                array[i:i + chunk, j:j + chunk] = (i // chunk * 7 + j // chunk * 13) % 256


def _discs(size: int, spacing: int = 40, seed: int = 0) -> np.ndarray:
    """A ``size``² uint8 field of discs (radius 8-14 px) on a jittered grid: 255 inside, 0 outside."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[-15:16, -15:16]
    for cy in range(spacing // 2, size - 16, spacing):
        for cx in range(spacing // 2, size - 16, spacing):
            y, x = cy + rng.integers(-4, 5), cx + rng.integers(-4, 5)
            r = rng.uniform(8, 14)
            disc = (yy ** 2 + xx ** 2) <= r * r
            image[y - 15:y + 16, x - 15:x + 16][disc] = 255
    return image


def peak_rss_mb(image: Path, out: Path, tile: int, output: str = "labels") -> tuple[float, float, str]:
    script = (RUN_INSTANCES if output == "instances" else RUN).format(tile=tile)
    result = subprocess.run([sys.executable, "-c", script, str(image), str(out)],
                            capture_output=True, text=True, check=True)
    kib, seconds, *rest = result.stdout.split()
    objects = f", {rest[0]} objects ({rest[1]} merged across block seams)" if rest else ""
    if len(rest) > 2:  # instances: where the peak was
        phases = json.loads(rest[2])
        objects += "\n  peak RSS per phase (MiB): " + ", ".join(f"{k} {v}" for k, v in phases.items())
    return int(kib) / 1024, float(seconds), objects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=8192)
    parser.add_argument("--large", type=int, default=32768)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--output", choices=("labels", "instances"), default="labels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for size in (args.small, args.large):
            image = Path(tmp) / f"image_{size}.zarr"
            make_image(image, size, discs=args.output == "instances")
            rss, seconds, objects = peak_rss_mb(image, Path(tmp) / f"out_{size}.zarr", args.tile, args.output)
            rows.append((size, rss, seconds))
            print(f"{size}×{size} uint8, output {args.output}, tile {args.tile}: peak RSS {rss:.0f} MiB{objects}")
        print(f"peak RSS ratio {args.large}² / {args.small}²: {rows[1][1] / rows[0][1]:.2f} "
              f"(pixels ×{(args.large / args.small) ** 2:.0f})")


if __name__ == "__main__":
    main()
