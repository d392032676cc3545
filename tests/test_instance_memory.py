"""benchmarks/memory.py --output instances, small: instance output's peak memory does not follow the image.

A lazy Zarr image of 3072² (9 decoding blocks, thousands of objects, hundreds across seams) against one of
1024² (one block), each in a fresh process: were the probabilities or labels held whole, the larger run would
hold ~230 MiB more (ratio ~1.5); the benchmark's full-size run (8192² vs 32768²) is in the README."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"


def test_instance_output_memory_stays_flat_as_the_image_grows():
    result = subprocess.run([sys.executable, str(BENCHMARK), "--small", "1024", "--large", "3072", "--tile", "256",
                             "--output", "instances"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = re.findall(r"(\d+)×\d+ uint8, output instances, tile 256: peak RSS (\d+) MiB, (\d+) objects "
                      r"\((\d+) merged across block seams\)", result.stdout)
    assert [int(r[0]) for r in runs] == [1024, 3072], result.stdout
    small, large = (dict(rss=int(r[1]), objects=int(r[2]), merged=int(r[3])) for r in runs)
    # a 40-px grid of discs: ~26² per 1024² and ~77² per 3072²
    assert 550 < small["objects"] < 760 and 5000 < large["objects"] < 6500 and large["merged"] > 100
    ratio = float(re.search(r"peak RSS ratio 3072² / 1024²: ([\d.]+)", result.stdout).group(1))
    assert ratio == round(large["rss"] / small["rss"], 2) or abs(ratio - large["rss"] / small["rss"]) < 0.02
    assert ratio < 1.35, result.stdout
