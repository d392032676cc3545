"""Train the shipped extreme-point model ``dextr_light`` on the CPU, from a seed.

Data: generated scenes (:func:`segarch.prompts.object_scene`: blobs, star-convex cells, polygons, bent
rods, touching neighbours; textures, brightness, backgrounds, blur, noise) turned into DEXTR training
pairs by :func:`segarch.prompts.training_pairs` (one per object, extreme points jittered as clicks are).
The pairs are 2-channel images (image, heat map) with the object as class 1, trained by
:func:`segarch.prompts.training.fit_pairs` (:func:`segarch.train` takes semantic models only; this is its
loop in small, with the pipeline's Dice + cross-entropy loss and log, flips and 90° rotations).
Training stops at ``--cpu-seconds`` of CPU time (the best validated weights are kept), then the model
is measured on fresh scenes (other seeds) through :func:`segarch.prompts.segment_from_points`, and
written with its card to ``src/segarch/pretrained/weights/dextr_light.{safetensors,json,csv,png}``.

Usage::

    python scripts/train_dextr_light.py                       # the shipped model
    python scripts/train_dextr_light.py --dims 3 --out /tmp/w   # a 3D model (6 points, 32³ crops)
    python scripts/train_dextr_light.py --steps 50 --out /tmp/w   # a quick try
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

import segarch
from segarch.prompts import DEFAULTS, object_scene, training_pairs
from segarch.prompts.evaluate import evaluate_prompts
from segarch.prompts.training import fit_pairs
from segarch.training.log import plot_png

__all__ = ["RECIPE", "RECIPE_3D", "main"]

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "segarch" / "pretrained" / "weights"

RECIPE = {
    "name": "dextr_light",
    "arch": "dextr_light",
    "options": {"features": [16, 32, 64, 128], "bins": [1, 2, 4]},
    "scenes": 500, "shape": [160, 160], "seed": 11,
    "batch_size": 16, "steps": 1800, "lr": 3e-3, "loss": "dice_ce",
    "test_scenes": 40, "test_seed": 7001,
}

#: ``--dims 3``: the same recipe on generated volumes, 6 points per object, 32³ crops.
RECIPE_3D = {
    "name": "dextr_light3d",
    "arch": "dextr_light",
    "options": {"features": [8, 16, 32, 64], "bins": [1, 2, 4]},
    "scenes": 150, "shape": [48, 64, 64], "seed": 12,
    "batch_size": 8, "steps": 900, "lr": 3e-3, "loss": "dice_ce",
    "test_scenes": 12, "test_seed": 7002,
}

def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2)
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--scenes", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--cpu-seconds", type=float, default=600.0, help="stop after this much CPU time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--features", type=int, nargs="+", default=None, help="default: the recipe's")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    dims = args.dims
    recipe = dict(RECIPE if dims == 2 else RECIPE_3D)
    recipe["options"] = dict(recipe["options"], features=list(args.features or recipe["options"]["features"]))
    args.steps = args.steps or recipe["steps"]
    args.scenes = args.scenes or recipe["scenes"]
    settings = DEFAULTS["dextr_light"][dims]

    t0 = time.perf_counter()
    images, labels = [], []
    for s in range(args.scenes):
        image, lab = object_scene(tuple(recipe["shape"]), seed=recipe["seed"] * 100003 + s)
        images.append(image)
        labels.append(lab)
    inputs, targets = training_pairs(images, labels, spatial_dims=dims, settings=settings, seed=recipe["seed"])
    logging.info("%d training pairs from %d scenes in %.0f s", len(inputs), args.scenes, time.perf_counter() - t0)

    model = segarch.Model.from_zoo(recipe["arch"], spatial_dims=dims, in_channels=2, out_channels=2,
                                   class_names=["background", "object"], **recipe["options"])
    start = time.perf_counter()
    cpu0 = time.process_time()
    history, steps_done, best = fit_pairs(model, inputs, targets, steps=args.steps, batch_size=recipe["batch_size"],
                                          lr=recipe["lr"], loss=recipe["loss"], seed=recipe["seed"],
                                          cpu_seconds=args.cpu_seconds)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu0
    model.preprocessing = []
    model.trained = True
    model.description = ("DEXTR-style extreme-point model (grey image + heat map -> object), trained on generated "
                         "objects by scripts/train_dextr_light.py.")

    torch.set_num_threads(1)  # latency as a user's interactive call would see it on a busy CPU
    shape = tuple(recipe["shape"])
    test = evaluate_prompts(model, scenes=recipe["test_scenes"], seed=recipe["test_seed"], shape=shape)
    jittered = evaluate_prompts(model, scenes=recipe["test_scenes"] // 2, seed=recipe["test_seed"] + 500, jitter=2.0,
                                shape=shape)
    logging.info("held-out: %d objects, mean IoU %.4f (median %.4f, min %.4f), median %.1f ms; jitter 2 px: %.4f",
                 test["objects"], test["mean_iou"], test["median_iou"], test["min_iou"], test["median_ms"],
                 jittered["mean_iou"])

    args.out.mkdir(parents=True, exist_ok=True)
    segarch.save_model(model, args.out / f"{recipe['name']}.safetensors")
    history.write_csv(args.out / f"{recipe['name']}.csv")
    plot_png(history, args.out / f"{recipe['name']}.png", title=f"{recipe['name']}: training loss and validation IoU")
    card = {
        "name": recipe["name"],
        "title": f"Extreme points to object mask (DEXTR-style, light), {dims}D, grey images",
        "arch": recipe["arch"],
        "options": recipe["options"],
        "spatial_dims": dims,
        "parameters": model.num_parameters,
        "classes": ["background", "object"],
        "prompt": {"points": 2 * dims, "size": settings.size, "margin": settings.margin,
                   "min_margin": settings.min_margin, "sigma": settings.sigma},
        "trained_on": (f"{len(inputs)} objects from {args.scenes} generated scenes "
                       f"{'x'.join(map(str, recipe['shape']))} (segarch.prompts.object_scene, "
                       f"seed {recipe['seed']}): blobs, "
                       "star-convex cells, polygons, bent rods, touching and partly covered neighbours; object and "
                       "background texture, brighter and darker objects, illumination gradient, clutter, blur, "
                       "Poisson and Gaussian noise. Extreme points jittered by up to 2% of the object's size (at "
                       "least 1 px). 10% of the objects held out for validation."),
        "training": {
            "steps": steps_done, "planned_steps": args.steps, "batch_size": recipe["batch_size"],
            "patch": [settings.size] * dims, "lr": recipe["lr"], "loss": recipe["loss"],
            "augment": "flips and 90-degree rotations", "optimizer": "AdamW, 5% warm-up, cosine decay",
            "seed": recipe["seed"], "seconds": round(seconds), "cpu_seconds": round(cpu_seconds),
            "device": f"cpu ({args.threads} thread{'s' if args.threads > 1 else ''}, shared)",
            "torch": torch.__version__, "python": platform.python_version(),
            "held_out_pairs": best["pairs"], "held_out_crop_iou": round(best["iou"], 4), "best_step": best["step"],
        },
        "test": {
            "mean_iou": round(test["mean_iou"], 4), "median_iou": round(test["median_iou"], 4),
            "min_iou": round(test["min_iou"], 4), "objects": test["objects"], "scenes": recipe["test_scenes"],
            "shape": recipe["shape"], "seed": recipe["test_seed"], "points": "exact extreme points",
            "mean_iou_jitter_2px": round(jittered["mean_iou"], 4),
            "median_latency_ms": round(test["median_ms"], 1),
            "latency_note": "click to mask (crop, network, paste), 1 thread, on a shared 2-core CPU",
        },
        "script": "scripts/train_dextr_light.py",
    }
    (args.out / f"{recipe['name']}.json").write_text(json.dumps(card, indent=2, default=float) + "\n")
    logging.info("wrote %s", args.out / f"{recipe['name']}.safetensors")
    return card


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
