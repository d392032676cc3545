"""What tissue detection saves on a whole slide that is mostly glass.

A generated H&E-like slide (``--background`` of it glass, 0.7 by default) is written as a real Aperio SVS
pyramid at 0.25 µm/px; a U-Net trained-size model at 0.5 µm/px runs over it with ``segarch.predict``
(level 0 resampled to 0.5 µm/px), once computing every tile and once with ``tissue=True`` (Otsu on a low
level; tiles on glass alone are not run). Side by side in one run, alternating, median of ``--repeats``;
the ratio is what the README quotes. The two results agree wherever there is tissue (checked).

Run: ``python benchmarks/tissue.py [--size 2048 3072] [--repeats 3] [--tile 128]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from slide_helpers import tissue_slide, write_slide  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(2048, 3072), help="level-0 rows and columns")
    parser.add_argument("--background", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    import segarch
    import segarch.io as io

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = segarch.Model.from_zoo("unet", in_channels=3, out_channels=2, features=(8, 16, 32, 64),
                                   class_names=["background", "nucleus"])
    model.pixel_size = [0.5, 0.5]
    model.network.eval()
    rgb, _ = tissue_slide(tuple(args.size), background=args.background, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_slide(Path(tmp) / "slide.svs", rgb, mpp=0.25, downsamples=(1, 4, 16))
        mask = io.tissue_mask(io.open_image(path))
        times = {False: [], True: []}
        results = {}
        for _ in range(args.repeats):
            for tissue in (False, True):
                start = time.perf_counter()
                results[tissue] = segarch.predict(model, str(path), tile=args.tile, tissue=tissue, device="cpu")
                times[tissue].append(time.perf_counter() - start)
        every, only = results[False], results[True]
        fy, fx = 2 / mask.downsample[0], 2 / mask.downsample[1]
        rows = np.clip(((np.arange(every.shape[0]) + 0.5) * fy).astype(int), 0, mask.mask.shape[0] - 1)
        cols = np.clip(((np.arange(every.shape[1]) + 0.5) * fx).astype(int), 0, mask.mask.shape[1] - 1)
        on = mask.mask[np.ix_(rows, cols)]
        agree = float((every[on] == only[on]).mean())
    full, skip = statistics.median(times[False]), statistics.median(times[True])
    print(f"slide {args.size[0]}×{args.size[1]} px at 0.25 µm/px, run at 0.5 µm/px ({every.shape[0]}×{every.shape[1]}),"
          f" tile {args.tile}, {args.threads} threads; tissue found on {mask.fraction:.0%} of the slide "
          f"(generated with {1 - args.background:.0%})")
    print(f"every tile:   median {full:.2f} s over {args.repeats} runs")
    print(f"tissue only:  median {skip:.2f} s over {args.repeats} runs")
    print(f"ratio (every tile / tissue only): {full / skip:.2f}×; labels agree on {agree:.2%} of the tissue pixels")


if __name__ == "__main__":
    main()
