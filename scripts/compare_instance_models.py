"""Train a wave-3 detector (Mask R-CNN) on generated nuclei and compare it with the shipped instance model.

The detector learns from the same kind of images the shipped ``unet.nuclei2d_instances`` was trained on
(``segarch.synthetic.samples(..., hard=True)``, the training seed of its recipe in ``train_instances.py``),
through ``segarch.train(..., task="instance")`` on the CPU under a time budget. Both models then segment the
**same fresh test images** (the shipped card's test draw: other seeds than either training) through
``segarch.instances.predict_instances``, as a user runs them, and are scored alike: F1, precision and recall
at IoU 0.5, mean AP over IoU 0.5-0.9, and the same split by nucleus size as the shipped card.

Usage::

    python scripts/compare_instance_models.py --out /tmp/cmp     # train (<= 29 min, 1 thread), then compare
    python scripts/compare_instance_models.py --detector /tmp/cmp/mask_rcnn.nuclei2d.safetensors   # compare only

Prints one table, the models side by side; ``--json`` writes the numbers too.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

import segarch
from segarch.instances import match, predict_instances
from segarch.synthetic import samples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_instances import RECIPES, SMALL  # noqa: E402  (the shipped model's draw conventions: one home)

__all__ = ["DETECTOR", "score", "compare", "table", "main"]

SHIPPED = "unet.nuclei2d_instances"

#: The detector: Mask R-CNN narrowed to train on a shared CPU, anchors sized for nuclei of radius 3-15 px
#: (boxes 6-30 px: 8 on P2 ... 128 on P6), enough proposals and detections for a crowded 256² image.
DETECTOR = {
    "arch": "mask_rcnn",
    "options": {"base_width": 16, "fpn_channels": 32, "representation": 128, "mask_channels": 32,
                "anchor_sizes": [8, 16, 32, 64, 128], "proposals": [600, 600], "rpn_batch": 256,
                "roi_batch": 256, "detections": 400},
    "train_images": RECIPES[SHIPPED]["train_images"], "shape": RECIPES[SHIPPED]["shape"],
    "seed": RECIPES[SHIPPED]["seed"],
    "patch": [96, 96], "batch_size": 4, "steps": 2400, "lr": 3e-3, "val_fraction": 0.05, "validations": 8,
}


def score(segment: Callable[[np.ndarray, Sequence[float]], np.ndarray], test: Sequence) -> dict:
    """One model's scores on generated ``test`` samples: ``segment(image, pixel_size)`` gives its labels.

    Returns the pooled :meth:`Matching.summary` (F1/precision/recall/AP at IoU 0.5, mean AP 0.5-0.9, counts),
    ``by_size`` (the same, pooled over the images whose smallest nuclei are under / at least ``SMALL`` px in
    radius) and ``seconds`` (segmentation time, all images).
    """
    total, by_size, seconds = None, {}, 0.0
    for s in test:
        started = time.perf_counter()
        pred = segment(s.image, s.spacing)
        seconds += time.perf_counter() - started
        m = match(s.labels, pred)
        total = m if total is None else total + m
        size = f"radius {'<' if s.conditions.radius[0] < SMALL else '>='} {SMALL:g} px"
        by_size[size] = m if size not in by_size else by_size[size] + m
    return {**total.summary(), "by_size": {k: v.summary() for k, v in sorted(by_size.items())},
            "seconds": round(seconds, 1)}


def compare(models: Mapping[str, object], images: int, shape: Sequence[int], seed: int) -> dict[str, dict]:
    """Every model of ``models`` (name → model) scored by :func:`score` on one fresh draw of ``images``
    generated images of ``shape`` from ``seed``."""
    test = samples(images, tuple(shape), seed=seed, hard=True)
    return {name: score(lambda image, spacing, m=model: predict_instances(m, image, pixel_size=spacing,
                                                                          device="cpu"), test)
            for name, model in models.items()}


ROWS = [("F1@0.5", "f1@0.5"), ("precision@0.5", "precision@0.5"), ("recall@0.5", "recall@0.5"),
        ("AP@0.5", "ap@0.5"), ("AP@0.75", "ap@0.75"), ("mean AP 0.5-0.9", "mean_ap"),
        ("matched IoU", "matched_iou@0.5"), ("objects found", "n_pred"), ("objects true", "n_true")]


def table(results: Mapping[str, dict]) -> str:
    """The scores side by side, one column per model (all images, then by nucleus size)."""
    names = list(results)
    width = max(12, *(len(n) for n in names))
    lines = [f"{'':<34}" + "".join(f"{n:>{width + 2}}" for n in names)]

    def block(title: str, pick: Callable[[dict], dict]) -> None:
        lines.append(title)
        for label, key in ROWS:
            values = [pick(results[n]).get(key) for n in names]
            lines.append(f"  {label:<32}" + "".join(f"{v:>{width + 2}}" if isinstance(v, int)
                                                    else f"{v:>{width + 2}.3f}" for v in values))

    block("all images", lambda r: r)
    for size in sorted({k for r in results.values() for k in r["by_size"]}):
        block(f"images whose smallest nuclei have {size}", lambda r, s=size: r["by_size"].get(s, {}))
    lines.append(f"  {'seconds (segmentation)':<32}" + "".join(f"{results[n]['seconds']:>{width + 2}.1f}"
                                                               for n in names))
    return "\n".join(lines)


def train_detector(recipe: dict, out: Path, minutes: float, steps: int | None) -> segarch.Model:
    """Mask R-CNN trained by ``segarch.train(task="instance")`` on the shipped model's kind of images; stops
    (best validated weights kept) when ``minutes`` run out."""
    torch.manual_seed(recipe["seed"])
    data = samples(recipe["train_images"], tuple(recipe["shape"]), seed=recipe["seed"], hard=True)
    steps = int(steps or recipe["steps"])
    cancel, started, last = threading.Event(), time.perf_counter(), [0.0]

    def progress(ev):
        if time.perf_counter() - started > 60 * minutes:
            cancel.set()
        if ev.kind in ("validation", "done") or time.perf_counter() - last[0] > 60:
            last[0] = time.perf_counter()
            print(f"[detector] {ev.message} ({ev.seconds:.0f} s)", flush=True)

    return segarch.train(recipe["arch"], [s.image for s in data], [s.labels for s in data], task="instance",
                         options=recipe["options"], patch=recipe["patch"], steps=steps,
                         batch_size=recipe["batch_size"], lr=recipe["lr"], val_fraction=recipe["val_fraction"],
                         val_every=max(10, steps // recipe["validations"]), device="cpu", seed=recipe["seed"],
                         out=out, overwrite=True, progress=progress, cancel=cancel)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("compare_instances"), help="folder for the detector")
    parser.add_argument("--detector", type=Path, help="a trained detector to compare (skips the training)")
    parser.add_argument("--minutes", type=float, default=29.0, help="training time budget (default 29)")
    parser.add_argument("--steps", type=int, help=f"training steps (default {DETECTOR['steps']})")
    parser.add_argument("--test-images", type=int, default=RECIPES[SHIPPED]["test_images"])
    parser.add_argument("--test-seed", type=int, default=RECIPES[SHIPPED]["test_seed"],
                        help="seed of the test draw (default: the shipped card's)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads (default 1)")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for seed in (args.test_seed,):
        if seed in (DETECTOR["seed"], RECIPES[SHIPPED]["seed"]):
            parser.error(f"--test-seed {seed} is a training seed; pick another.")
    if args.detector:
        detector = segarch.load_model(args.detector)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        detector = train_detector(DETECTOR, args.out / "mask_rcnn.nuclei2d.safetensors", args.minutes, args.steps)
    models = {SHIPPED: segarch.pretrained.load(SHIPPED), "mask_rcnn (trained here)": detector}
    results = compare(models, args.test_images, RECIPES[SHIPPED]["test_shape"], args.test_seed)
    print(f"{args.test_images} fresh generated images {RECIPES[SHIPPED]['test_shape']} (hard=True, seed "
          f"{args.test_seed}); IoU matching as segarch.instances.match", flush=True)
    print(table(results), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
