"""Fine-tuning the 2D extreme-point model on annotated objects: IoU and clicks (NoC) before and after, on held-out
objects of the same (new) style.

Run: ``python benchmarks/finetune_prompts.py [--annotated 6] [--held-out 12] [--steps 100] [--seed 9500]
[--model dextr_light.clicks2d]``.
The style is one the shipped model never saw: membrane-stained cells (each object of
:func:`segarch.prompts.object_scene` drawn as a bright outline around a faint inside). The objects of
``--annotated`` scenes are "what a user annotated" (their final masks); :func:`segarch.training.annotations.
fine_tune_on_annotations` fine-tunes ``--model`` on them through :func:`segarch.train` (for a model that takes
corrective clicks, as ``dextr_light.clicks2d``, with simulated clicks, as it was trained); every object of
``--held-out`` other scenes is then segmented from its exact extreme points by the model before and after.
Prints the mean and median IoU, the share of objects at IoU >= 0.85 and >= 0.90 with the 4 extreme points
alone, and the fine-tuning time; for a model that takes corrections also the clicks-to-IoU curve on the same
held-out objects (:func:`segarch.prompts.evaluate.click_curve_on`: each click at the centre of the largest error
region): mean IoU after 0-3 corrections and NoC@85 / NoC@90 (clicks, the 4 extreme points included, capped at 20).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from segarch import pretrained
from segarch.prompts import extreme_points, object_scene, segment_from_points
from segarch.prompts.evaluate import click_curve_on, iou
from segarch.training.annotations import fine_tune_on_annotations

__all__ = ["main", "membrane_scene"]


def membrane_scene(seed: int, shape=(160, 160)) -> tuple[np.ndarray, np.ndarray]:
    """A generated scene restyled as membrane-stained cells: bright outlines, faint insides, noise."""
    _, labels = object_scene(shape, seed=seed)
    rng = np.random.default_rng(seed + 7)
    outline = (labels > 0) & (ndimage.grey_erosion(labels, size=3) != labels)
    image = 0.15 * (labels > 0) + 1.0 * ndimage.gaussian_filter(outline.astype(np.float32), 0.8)
    image = image + rng.normal(0, 0.08, shape) + 0.2
    return (image * 500).astype(np.float32), labels


def held_out_ious(model, scenes) -> np.ndarray:
    ious = []
    for image, labels in scenes:
        for value in range(1, int(labels.max()) + 1):
            mask = labels == value
            if mask.sum() >= 12:
                ious.append(iou(segment_from_points(model, image, extreme_points(mask)), mask))
    return np.asarray(ious)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotated", type=int, default=6)
    parser.add_argument("--held-out", type=int, default=12)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=9500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="dextr_light.clicks2d", help="shipped 2D extreme-point model to fine-tune")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = pretrained.load(args.model)
    takes_clicks = bool((model.prompt or {}).get("corrections"))
    annotated = [membrane_scene(args.seed + i) for i in range(args.annotated)]
    held_out = [membrane_scene(args.seed + 1000 + i) for i in range(args.held_out)]
    # The annotated scenes side by side in one image, each object a region as the widget records them.
    image = np.concatenate([a[0] for a in annotated], axis=1)
    labels = np.zeros(image.shape, np.uint32)
    regions, width, next_id = [], annotated[0][0].shape[1], 1
    for i, (_, lab) in enumerate(annotated):
        for value, box in enumerate(ndimage.find_objects(lab), start=1):
            if box is None:
                continue
            labels[:, i * width:(i + 1) * width][lab == value] = next_id
            regions.append((next_id, (box[0], slice(box[1].start + i * width, box[1].stop + i * width))))
            next_id += 1
    before = held_out_ious(model, held_out)
    curves = {"before": click_curve_on(model, held_out)} if takes_clicks else {}
    started = time.perf_counter()
    tuned = fine_tune_on_annotations(model, image, labels, regions, steps=args.steps, batch_size=8)
    seconds = time.perf_counter() - started
    after = held_out_ious(tuned, held_out)
    if takes_clicks:
        curves["after"] = click_curve_on(tuned, held_out)
    print(f"fine-tuning {args.model} on {len(regions)} annotated objects ({args.annotated} membrane-style "
          f"scenes), {args.steps} steps: {seconds:.0f} s on {args.threads} thread(s); {len(before)} held-out objects "
          f"({args.held_out} other scenes, seed {args.seed}+)")
    for name, v in (("before", before), ("after", after)):
        print(f"  {name:6s} IoU mean {v.mean():.3f} median {np.median(v):.3f} | IoU >= 0.85 with the extreme points "
              f"alone {np.mean(v >= 0.85):.0%}, >= 0.90 {np.mean(v >= 0.90):.0%}")
    for name, c in curves.items():
        print(f"  {name:6s} clicks: mean IoU after 0/1/2/3 corrections "
              f"{' / '.join(f'{v:.3f}' for v in c['mean_iou'])}, NoC@85 {c['noc85']:.2f}, NoC@90 {c['noc90']:.2f} "
              f"({c['missed90']} of {c['objects']} objects never reach 0.90 in 20 clicks)")
    if len(curves) == 2:
        print(f"  NoC@90 after / before: {curves['after']['noc90'] / curves['before']['noc90']:.2f}")
    return {"before": before, "after": after, "seconds": seconds, "objects": len(regions), "curves": curves}


if __name__ == "__main__":
    main()
