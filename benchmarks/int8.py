"""int8 post-training quantisation with ONNX Runtime, measured: not a feature yet, the numbers that decide it.

The shipped ``unet.nuclei2d`` is exported to ONNX (the engine's cache), statically quantised by ONNX Runtime
(QDQ, per-channel weights, calibrated on tiles of the image itself), and both graphs run on the same tiles of a
fresh generated nuclei image: prints the labels' agreement of int8 with fp32 and the median time ratio.

Run: ``python benchmarks/int8.py [--size 1024] [--tile 256] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import segarch
from segarch.runtimes.onnx import cached_onnx, ort_session
from tiling import median_time  # benchmarks/tiling.py: the same clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from segarch.samples import nuclei

    model = segarch.models.resolve("unet.nuclei2d")
    image, _ = nuclei((args.size, args.size), seed=int(np.random.default_rng().integers(1 << 16)))
    x = np.asarray(model.preprocess(image), np.float32).reshape(1, *image.shape)
    t = args.tile
    tiles = np.stack([x[:, i:i + t, j:j + t] for i in range(0, args.size, t) for j in range(0, args.size, t)])
    path = cached_onnx(model, (t, t), torch.get_num_threads())

    class Tiles(CalibrationDataReader):
        def __init__(self):
            self.rest = iter(tiles[::2])  # half the image's tiles calibrate; all are compared

        def get_next(self):
            tile = next(self.rest, None)
            return None if tile is None else {"tiles": tile[None]}

    with tempfile.TemporaryDirectory() as folder:
        quantised = Path(folder) / "int8.onnx"
        quantize_static(str(path), str(quantised), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        fp32, int8 = ort_session(path, torch.get_num_threads()), ort_session(quantised, torch.get_num_threads())

        def run(session):
            return np.concatenate([session.run(None, {"tiles": tiles[i:i + 4]})[0] for i in range(0, len(tiles), 4)])

        labels32, labels8 = run(fp32).argmax(1), run(int8).argmax(1)
        a = median_time(lambda: run(fp32), args.repeats)
        b = median_time(lambda: run(int8), args.repeats)
    agree = float((labels32 == labels8).mean())
    print(f"unet.nuclei2d, {len(tiles)} tiles of {t}², fresh {args.size}² nuclei image "
          f"(foreground {100 * (labels32 > 0).mean():.0f}%): int8 labels agree with fp32 {100 * agree:.3f}% "
          f"(bar: 99.5%); int8 ÷ fp32 time {b / a:.2f} (median of {args.repeats})")


if __name__ == "__main__":
    main()
