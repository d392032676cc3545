"""Panoptic output's cost beyond the network, and tiled vs whole-image agreement, side by side in one run.

On a generated ``--size``² image of nuclei (``segarch.synthetic``, hard conditions; each nucleus of class 1 or 2 at
random), prints the medians of ``--repeats`` runs of:

  (a) the network pass alone: a Panoptic-DeepLab's heads through the tiled engine
      (``segarch.tiling.predict(output="raw")``, in memory), for ``--config small`` (Xception-71 at width 0.25
      with 4 middle-flow units) or ``paper`` (the paper's Xception-71; slow on a CPU);
  (b) the passes ``output="panoptic"`` adds: grouping block by block with objects merged across seams, then each
      object's class (``predict_panoptic``'s report ``seconds``), on realistic heads: an oracle network returning
      the training targets of its tile (tests/panoptic_helpers.py; an untrained network's heads would be noise);

and the ratio (a + b) / a, the panoptic pass over the network pass; then the agreement of the tiled result with the
whole-image decoding (Panoptic-DeepLab's grouping on the whole image's heads): objects matched at IoU 0.9 and
objects of the same class.

Run: ``python benchmarks/panoptic.py [--size 1024] [--repeats 3] [--config small] [--threads 1]``
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import segarch
from segarch.instances import match
from segarch.instances.panoptic import PanopticDeepLabDecoder
from segarch.instances.panoptic_predict import HeadsAsChannels
from segarch.synthetic import nuclei_sample
from segarch.tiling import predict as predict_tiles

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from panoptic_helpers import OracleHeads  # noqa: E402

CONFIGS = {"small": {"width": 0.25, "middle_units": 4}, "paper": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None, help="the scene's seed (default: a fresh draw)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed = int(np.random.default_rng(args.seed).integers(1 << 31)) if args.seed is None else args.seed
    sample = nuclei_sample((args.size, args.size), seed=seed, hard=True)
    labels = sample.labels.astype(np.int64)
    object_class = np.random.default_rng(seed).integers(1, 3, size=int(labels.max()) + 1)
    classes = np.where(labels > 0, object_class[labels], 0)
    tiled = dict(tile=256, overlap=0.5, device="cpu", batch_size=4)

    model = segarch.Model.from_zoo("panoptic_deeplab", in_channels=1, out_channels=3, **CONFIGS[args.config])
    model.network.eval()
    dense = dataclasses.replace(model, network=HeadsAsChannels(model.network), out_channels=3 + 1 + 2,
                                class_names=HeadsAsChannels(model.network).channel_names())
    network_s = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        predict_tiles(dense, sample.image.astype(np.float32), output="raw", axes="YX", **tiled)
        network_s.append(time.perf_counter() - start)

    oracle = OracleHeads("panoptic_deeplab")
    truth = segarch.Model(oracle, "panoptic_deeplab", spatial_dims=2, in_channels=2, out_channels=3,
                          preprocessing=[], class_names=["background", "a", "b"])
    image = np.stack([labels, classes]).astype(np.float32)
    added_s = []
    for _ in range(args.repeats):
        result, report = segarch.predict(truth, image, axes="CYX", output="panoptic", blend="crop", **tiled,
                                         instance_options={"return_report": True, "table": False})
        added_s.append(report["seconds"]["objects"] + report["seconds"]["classes"])
    whole = PanopticDeepLabDecoder(top_k=None)(oracle.heads_for(labels, classes))
    found = result.instances.astype(np.int64)
    matched = match(whole.instances, found, thresholds=(0.9,))
    same_class = sum(int(result.classes[found == f][0]) == int(whole.semantic[whole.instances == w][0])
                     for w, f in _pairs(whole.instances, found))
    a, b = statistics.median(network_s), statistics.median(added_s)
    print(f"panoptic, {args.size}² nuclei (seed {seed}, {int(labels.max())} objects), Panoptic-DeepLab "
          f"{args.config}, tiles 256 overlap 0.5, {args.threads} thread(s), medians of {args.repeats}:")
    print(f"  (a) network pass (heads, tiled):             {a:8.2f} s")
    print(f"  (b) grouping + classes (block by block):     {b:8.2f} s   ({report['blocks']} blocks, "
          f"{report['merged_across_seams']} objects merged across seams)")
    print(f"  panoptic pass / network pass (a + b) / a:    x{(a + b) / a:.2f}")
    print(f"  tiled vs whole image: {report['objects']} vs {int(whole.instances.max())} objects, "
          f"{int(matched.tp[0])} matched at IoU 0.9, {same_class} of them with the same class; classes agree on "
          f"{100 * (result.classes == whole.semantic).mean():.3f}% of pixels")


def _pairs(reference: np.ndarray, found: np.ndarray):
    """(reference id, found id) of the pairs that share most of each other's pixels."""
    both = (reference > 0) & (found > 0)
    pairs, counts = np.unique(np.stack([reference[both], found[both]]), axis=1, return_counts=True)
    sizes_r = np.bincount(reference.ravel())
    sizes_f = np.bincount(found.ravel())
    keep = (2 * counts > sizes_r[pairs[0]]) & (2 * counts > sizes_f[pairs[1]])
    return [tuple(p) for p in pairs[:, keep].T]


if __name__ == "__main__":
    main()
