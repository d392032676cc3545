"""Train the shipped extreme-point model ``dextr_light`` on the CPU, from a seed.

Data: generated scenes (:func:`segarch.prompts.object_scene`: blobs, star-convex cells, polygons, bent
rods, touching neighbours; textures, brightness, backgrounds, blur, noise) turned into DEXTR training
pairs by :func:`segarch.prompts.training_pairs` (one per object, extreme points jittered as clicks are).
The pairs are 2-channel images (image, heat map) with the object as class 1. :func:`segarch.train` takes
semantic models only, so a small loop here uses the pipeline's loss (Dice + cross-entropy) and log; flips
and 90° rotations are the only augmentation (they move image and heat map together; intensity changes
would corrupt the heat map). Training stops at ``--cpu-seconds`` of CPU
time (the best validated weights are kept), then the model is measured on fresh scenes (other seeds)
through :func:`segarch.prompts.segment_from_points`, and written with its card to
``src/segarch/pretrained/weights/dextr_light.{safetensors,json,csv,png}``.

Usage::

    python scripts/train_dextr_light.py                       # the shipped model
    python scripts/train_dextr_light.py --steps 50 --out /tmp/w   # a quick try
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import segarch
from segarch.prompts import DEFAULTS, object_scene, training_pairs
from segarch.prompts.evaluate import evaluate_prompts
from segarch.training.log import TrainingLog, plot_png
from segarch.training.losses import SegmentationLoss

__all__ = ["RECIPE", "main"]

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "segarch" / "pretrained" / "weights"

RECIPE = {
    "name": "dextr_light",
    "arch": "dextr_light",
    "options": {"features": [16, 32, 64, 128], "bins": [1, 2, 4]},
    "scenes": 500, "shape": [160, 160], "seed": 11,
    "batch_size": 16, "steps": 1800, "lr": 3e-3, "loss": "dice_ce",
    "test_scenes": 40, "test_seed": 7001,
}

def _augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and 90° rotations per pair: image, heat map and target move together."""
    xs, ys = [], []
    for xi, yi in zip(x, y):
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        xi, yi = torch.rot90(xi, k, (1, 2)), torch.rot90(yi, k, (0, 1))
        if flip:
            xi, yi = xi.flip(2), yi.flip(1)
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


def _crop_iou(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean IoU over held-out pairs, at the network's resolution."""
    net.eval()
    ious = []
    with torch.no_grad():
        for i in range(0, len(x), 64):
            pred = net(x[i:i + 64]).argmax(1).bool()
            t = y[i:i + 64].bool()
            inter = (pred & t).flatten(1).sum(1).float()
            union = (pred | t).flatten(1).sum(1).float().clamp_min(1)
            ious.extend((inter / union).tolist())
    net.train()
    return float(np.mean(ious))


def fit(model: segarch.Model, inputs: np.ndarray, targets: np.ndarray, *, steps: int, cpu_seconds: float):
    """Train on the pairs (10% held out) with the project's Dice + cross-entropy loss; keep the best weights.

    The project's :func:`segarch.train` takes semantic models only, so this is its loop in small: AdamW,
    5% warm-up then cosine decay, validation every 50 steps, stop at ``cpu_seconds`` of CPU time.
    """
    rng = np.random.default_rng(RECIPE["seed"])
    torch.manual_seed(RECIPE["seed"])
    order = rng.permutation(len(inputs))
    n_val = max(1, len(inputs) // 10)
    val_x, val_y = torch.from_numpy(inputs[order[:n_val]]), torch.from_numpy(targets[order[:n_val]].astype(np.int64))
    train_x, train_y = torch.from_numpy(inputs[order[n_val:]]), torch.from_numpy(targets[order[n_val:]].astype(np.int64))
    net = model.network
    net.train()
    criterion = SegmentationLoss(RECIPE["loss"], 2)
    optimiser = torch.optim.AdamW(net.parameters(), lr=RECIPE["lr"], weight_decay=1e-5)
    warm = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    history = TrainingLog(["background", "object"])
    best = {"iou": -1.0, "step": 0, "state": None, "pairs": n_val}
    cpu0, t0 = time.process_time(), time.perf_counter()
    step = 0
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(train_x), RECIPE["batch_size"])
        x, y = _augment(train_x[idx], train_y[idx], rng)
        optimiser.zero_grad()
        logits = net(x)
        loss = criterion(logits, y[:, None], torch.ones_like(y[:, None], dtype=torch.float32))
        loss.backward()
        optimiser.step()
        lr = schedule.get_last_lr()[0]
        schedule.step()
        history.add(step, loss.item(), lr, time.perf_counter() - t0)
        out_of_time = time.process_time() - cpu0 > cpu_seconds
        if step % 50 == 0 or step == steps or out_of_time:
            score = _crop_iou(net, val_x, val_y)
            history.rows[-1].update(val_dice=score)
            if score > best["iou"]:
                best.update(iou=score, step=step, state={k: v.detach().clone() for k, v in net.state_dict().items()})
            logging.info("step %d/%d loss %.4f held-out crop IoU %.4f (best %.4f at %d), %.0f s CPU", step, steps,
                         float(loss), score, best["iou"], best["step"], time.process_time() - cpu0)
        if out_of_time:
            break
    net.load_state_dict(best["state"])
    net.eval()
    best.pop("state")
    return history, step, best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=RECIPE["steps"])
    parser.add_argument("--scenes", type=int, default=RECIPE["scenes"])
    parser.add_argument("--cpu-seconds", type=float, default=600.0, help="stop after this much CPU time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--features", type=int, nargs="+", default=RECIPE["options"]["features"])
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    settings = DEFAULTS["dextr_light"][2]
    RECIPE["options"]["features"] = list(args.features)

    t0 = time.perf_counter()
    images, labels = [], []
    for s in range(args.scenes):
        image, lab = object_scene(tuple(RECIPE["shape"]), seed=RECIPE["seed"] * 100003 + s)
        images.append(image)
        labels.append(lab)
    inputs, targets = training_pairs(images, labels, spatial_dims=2, settings=settings, seed=RECIPE["seed"])
    logging.info("%d training pairs from %d scenes in %.0f s", len(inputs), args.scenes, time.perf_counter() - t0)

    model = segarch.Model.from_zoo(RECIPE["arch"], spatial_dims=2, in_channels=2, out_channels=2,
                                   class_names=["background", "object"], **RECIPE["options"])
    start = time.perf_counter()
    cpu0 = time.process_time()
    history, steps_done, best = fit(model, inputs, targets, steps=args.steps, cpu_seconds=args.cpu_seconds)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu0
    model.preprocessing = []
    model.trained = True
    model.description = ("DEXTR-style extreme-point model (grey image + heat map -> object), trained on generated "
                         "objects by scripts/train_dextr_light.py.")

    torch.set_num_threads(1)  # latency as a user's interactive call would see it on a busy CPU
    test = evaluate_prompts(model, scenes=RECIPE["test_scenes"], seed=RECIPE["test_seed"])
    jittered = evaluate_prompts(model, scenes=RECIPE["test_scenes"] // 2, seed=RECIPE["test_seed"] + 500, jitter=2.0)
    logging.info("held-out: %d objects, mean IoU %.4f (median %.4f, min %.4f), median %.1f ms; jitter 2 px: %.4f",
                 test["objects"], test["mean_iou"], test["median_iou"], test["min_iou"], test["median_ms"],
                 jittered["mean_iou"])

    args.out.mkdir(parents=True, exist_ok=True)
    segarch.save_model(model, args.out / f"{RECIPE['name']}.safetensors")
    history.write_csv(args.out / f"{RECIPE['name']}.csv")
    plot_png(history, args.out / f"{RECIPE['name']}.png", title="dextr_light: training loss and validation Dice")
    card = {
        "name": RECIPE["name"],
        "title": "Extreme points to object mask (DEXTR-style, light), 2D, grey images",
        "arch": RECIPE["arch"],
        "options": RECIPE["options"],
        "spatial_dims": 2,
        "parameters": model.num_parameters,
        "classes": ["background", "object"],
        "prompt": {"points": 4, "size": settings.size, "margin": settings.margin, "min_margin": settings.min_margin,
                   "sigma": settings.sigma},
        "trained_on": (f"{len(inputs)} objects from {args.scenes} generated scenes {RECIPE['shape'][0]}x"
                       f"{RECIPE['shape'][1]} (segarch.prompts.object_scene, seed {RECIPE['seed']}): blobs, "
                       "star-convex cells, polygons, bent rods, touching and partly covered neighbours; object and "
                       "background texture, brighter and darker objects, illumination gradient, clutter, blur, "
                       "Poisson and Gaussian noise. Extreme points jittered by up to 2% of the object's size (at "
                       "least 1 px). 10% of the objects held out for validation."),
        "training": {
            "steps": steps_done, "planned_steps": args.steps, "batch_size": RECIPE["batch_size"],
            "patch": [settings.size, settings.size], "lr": RECIPE["lr"], "loss": RECIPE["loss"],
            "augment": "flips and 90-degree rotations", "optimizer": "AdamW, 5% warm-up, cosine decay", "seed": RECIPE["seed"], "seconds": round(seconds),
            "cpu_seconds": round(cpu_seconds), "device": f"cpu ({args.threads} thread{'s' if args.threads > 1 else ''}, shared)",
            "torch": torch.__version__, "python": platform.python_version(),
            "held_out_pairs": best["pairs"], "held_out_crop_iou": round(best["iou"], 4), "best_step": best["step"],
        },
        "test": {
            "mean_iou": round(test["mean_iou"], 4), "median_iou": round(test["median_iou"], 4),
            "min_iou": round(test["min_iou"], 4), "objects": test["objects"], "scenes": RECIPE["test_scenes"],
            "shape": RECIPE["shape"], "seed": RECIPE["test_seed"], "points": "exact extreme points",
            "mean_iou_jitter_2px": round(jittered["mean_iou"], 4),
            "median_latency_ms": round(test["median_ms"], 1),
            "latency_note": "click to mask (crop, network, paste), 1 thread, on a shared 2-core CPU",
        },
        "script": "scripts/train_dextr_light.py",
    }
    (args.out / f"{RECIPE['name']}.json").write_text(json.dumps(card, indent=2, default=float) + "\n")
    logging.info("wrote %s", args.out / f"{RECIPE['name']}.safetensors")
    return card


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
