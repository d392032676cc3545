"""IoU and click-to-mask latency of an extreme-point model on fresh generated objects.

Run: ``python benchmarks/prompts.py [--model dextr_light] [--scenes 40] [--seed 9100] [--threads 1]``.
Every object of the generated scenes (:func:`segarch.prompts.object_scene`, seeds never used in
training) is prompted with its exact extreme points, then with the points moved by up to 2 pixels
(as clicks are); prints mean/median/min IoU and the median and 90th-percentile latency of the whole
:func:`segarch.prompts.segment_from_points` call (crop, heat map, network, paste). Targets for the
shipped light model: mean IoU >= 0.90, median latency <= 150 ms on a 2-core CPU.
"""

from __future__ import annotations

import argparse

import torch

from segarch.prompts.evaluate import evaluate_prompts
from segarch.prompts.segment import resolve_prompt_model

__all__ = ["main"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dextr_light", help="shipped model name or model file")
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=9100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jitter", type=float, default=2.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = resolve_prompt_model(args.model)
    exact = evaluate_prompts(model, scenes=args.scenes, seed=args.seed)
    jittered = evaluate_prompts(model, scenes=args.scenes, seed=args.seed, jitter=args.jitter)
    print(f"model {args.model} ({model.num_parameters / 1e6:.2f}M parameters), {args.threads} thread(s), "
          f"{exact['objects']} objects in {args.scenes} generated scenes (seed {args.seed}+)")
    for name, r in (("exact extreme points", exact), (f"points jittered by <= {args.jitter:g} px", jittered)):
        print(f"  {name:32s} IoU mean {r['mean_iou']:.4f}  median {r['median_iou']:.4f}  min {r['min_iou']:.4f}  "
              f"| latency median {r['median_ms']:.1f} ms  p90 {r['p90_ms']:.1f} ms")
    return {"exact": exact, "jittered": jittered}


if __name__ == "__main__":
    main()
