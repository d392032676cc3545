"""Forward-pass cost of each zoo architecture, as a ratio to U-Net's, measured side by side.

Run: ``python benchmarks/zoo_forward.py [--size 256] [--repeats 5]``. Prints, per architecture at
its paper's widths on one 2D image, the median forward time relative to U-Net's median in the
same run (machines are shared and noisy: compare ratios, not seconds).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from segarch import zoo
from segarch.layers.checks import padded_shape


def median_forward_seconds(net: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    times = []
    with torch.inference_mode():
        net(x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {}
    for name in zoo.names():
        entry = zoo.card(name)
        if 2 not in entry.spatial_dims:
            continue
        config = dict(entry.paper_config, spatial_dims=2, in_channels=1)
        net = zoo.create(name, **config).eval()
        shape = padded_shape((args.size, args.size), net.size_divisor)
        results[name] = median_forward_seconds(net, torch.randn(1, 1, *shape), args.repeats)
    base = results["unet"]
    print(f"{'architecture':<18} forward time / U-Net's (2D, {args.size}², median of {args.repeats})")
    for name, seconds in sorted(results.items(), key=lambda kv: kv[1]):
        print(f"{name:<18} {seconds / base:6.2f}")


if __name__ == "__main__":
    main()
