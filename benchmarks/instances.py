"""Instance decoding cost vs the network, and block-wise vs whole-image agreement (2D and 3D), side by side.

For one generated image per dimensionality (``segarch.synthetic``, hard conditions), prints the median
of ``--repeats`` runs of:

  (a) the network pass: ``segarch.predict(output="probabilities")`` with the small U-Net the decoder
      comparison used (``features=(16, 32, 64, 128)``, batch norm) on the image, in memory;
  (b) decoding the whole image at once (``decoder.decode``);
  (c) decoding block by block with a halo (``segarch.instances.decode_blocks``, in memory);
  (d) the same into a Zarr store (out of core, resumable);

and the ratios (b)/(a), (c)/(a), (d)/(a) (the target: decoding at most 0.5x the network), plus the
agreement of (c) with (b): whether they are the same objects up to a renumbering, and the F1 at IoU 0.5
between them. The decoders read realistic probabilities: the true targets one-hot, smoothed and with
noise (an untrained network's output would be too easy to decode, a trained one is not shipped yet).

Run: ``python benchmarks/instances.py [--repeats 3] [--size2d 1024] [--size3d 48 192 192] [--threads 1]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

import segarch
from segarch.instances import DistanceDecoder, decode_blocks, match
from segarch.synthetic import nuclei_sample


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def network_like(labels: np.ndarray, decoder, spacing, seed: int = 0) -> np.ndarray:
    """The decoder's targets one-hot, smoothed (sigma 1 pixel) and noisy: probabilities as a network gives them."""
    p = np.moveaxis(np.eye(decoder.channels, dtype=np.float32)[decoder.targets(labels, spacing)], -1, 0)
    rng = np.random.default_rng(seed)
    p = np.stack([ndimage.gaussian_filter(c, 1.0) for c in p]) + rng.uniform(0, 0.05, p.shape).astype(np.float32)
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size


def run(shape: tuple[int, ...], repeats: int, block, halo) -> dict:
    dims = len(shape)
    decoder = DistanceDecoder()
    sample = nuclei_sample(shape, seed=1, hard=True)
    model = segarch.Model.from_zoo("unet", spatial_dims=dims, out_channels=decoder.channels,
                                   class_names=decoder.class_names, features=(16, 32, 64, 128), norm="batch")
    model.network.eval()
    forward, _ = _timed(lambda: segarch.predict(model, sample.image, output="probabilities", device="cpu"), repeats)
    probabilities = network_like(sample.labels, decoder, sample.spacing)
    whole_s, whole = _timed(lambda: decoder.decode(probabilities), repeats)
    blocked_s, blocked = _timed(lambda: decode_blocks(probabilities, decoder, block=block, halo=halo).labels, repeats)
    tmp = Path(tempfile.mkdtemp())
    try:
        def to_zarr():
            return decode_blocks(probabilities, decoder, tmp / "labels.zarr", block=block, halo=halo, overwrite=True)
        zarr_s, stored = _timed(to_zarr, repeats)
        stored_labels = np.asarray(stored.labels)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"shape": shape, "objects": int(whole.max()), "forward": forward, "whole": whole_s, "blocked": blocked_s,
            "zarr": zarr_s, "same": same_objects(whole, blocked) and same_objects(whole, stored_labels),
            "f1": match(whole, blocked).f1(0.5), "truth_f1": match(sample.labels, whole).f1(0.5),
            "report": stored.report}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size2d", type=int, default=1024)
    parser.add_argument("--size3d", type=int, nargs=3, default=[48, 192, 192])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [run((args.size2d, args.size2d), args.repeats, block=256, halo=48),
            run(tuple(args.size3d), args.repeats, block=(24, 96, 96), halo=(12, 24, 24))]
    print(f"\nmedian of {args.repeats} runs, {args.threads} thread(s); decoder 'distance'; "
          f"blocks 256² (halo 48) in 2D, 24×96×96 (halo 12×24×24) in 3D")
    print(f"{'image':>14} {'objects':>7} {'network s':>9} {'whole s':>8} {'blocked s':>9} {'zarr s':>7} "
          f"{'whole/net':>9} {'blocked/net':>11} {'zarr/net':>8} {'blocked=whole':>13} {'F1 b-vs-w':>9}")
    for r in rows:
        print(f"{'×'.join(map(str, r['shape'])):>14} {r['objects']:>7} {r['forward']:>9.2f} {r['whole']:>8.2f} "
              f"{r['blocked']:>9.2f} {r['zarr']:>7.2f} {r['whole'] / r['forward']:>9.2f} "
              f"{r['blocked'] / r['forward']:>11.2f} {r['zarr'] / r['forward']:>8.2f} {str(r['same']):>13} "
              f"{r['f1']:>9.3f}")
    for r in rows:
        print(f"seam report {'×'.join(map(str, r['shape']))}: {r['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
