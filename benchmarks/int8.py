"""``segarch.predict(..., precision="int8")`` against fp32, side by side in one run.

The shipped ``unet.nuclei2d`` on a fresh generated 2D nuclei image and ``unet.nuclei3d`` on a 3D one go through
``segarch.predict`` end to end with eager torch, and with each fast runtime in fp32 and in int8 (quantised on 16
of the image's own tiles, :mod:`segarch.runtimes.int8`; quantisation and compilation made before timing). Timed
round-robin (one run of each per round); prints each median ÷ torch's, whether int8 was used or refused, the
agreement measured on the calibration tiles (what decides), and the labels' agreement with the same runtime's
fp32 over the whole image.

Run: ``python benchmarks/int8.py [--size2d 1024] [--size3d 128] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import time

import numpy as np

import segarch

RUNTIMES = ("onnxruntime",) + (("openvino",) if importlib.util.find_spec("openvino") else ())


class _Agreement(logging.Handler):
    """The agreement :mod:`segarch.runtimes.int8` logs (used or refused), by runtime."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("int8 "):
            self.seen[message.split()[1]] = message.split("agree with fp32 on ")[1].split("%")[0] + "%"
        if "int8 refused" in message:
            self.seen[message.split(", ")[1].split()[0] + " refused"] = "yes"


def run(name: str, shape: tuple[int, ...], repeats: int, watcher: _Agreement) -> None:
    from segarch.samples import nuclei

    model = segarch.models.resolve(name)
    image, _ = nuclei(shape, seed=int(np.random.default_rng().integers(1 << 16)))
    variants = {"torch": ("torch", "fp32")}
    for runtime in RUNTIMES:
        variants[f"{runtime} fp32"] = (runtime, "fp32")
        variants[f"{runtime} int8"] = (runtime, "int8")

    def call(variant):
        runtime, precision = variants[variant]
        return segarch.predict(model, image, device="cpu", runtime=runtime, precision=precision)

    labels = {variant: call(variant) for variant in variants}  # warm-up: exports, quantisation, compilation
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(repeats):
        for variant in variants:
            start = time.perf_counter()
            call(variant)
            times[variant].append(time.perf_counter() - start)
    torch_time = statistics.median(times["torch"])
    print(f"{name} on a fresh generated {'×'.join(map(str, shape))} nuclei image (foreground "
          f"{100 * (labels['torch'] > 0).mean():.0f}%), median of {repeats} round-robin runs, ÷ torch fp32:")
    for variant in variants:
        runtime, precision = variants[variant]
        line = f"  {variant:<17} {statistics.median(times[variant]) / torch_time:5.2f}"
        if precision == "int8":
            refused = watcher.seen.get(f"{runtime} refused")
            line += (f"   {'REFUSED (fp32 ran)' if refused else 'used'}; calibration tiles agree "
                     f"{watcher.seen.get(runtime, '?')}; whole image agrees with {runtime} fp32 "
                     f"{100 * (labels[variant] == labels[f'{runtime} fp32']).mean():.3f}%")
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size2d", type=int, default=1024)
    parser.add_argument("--size3d", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    watcher = _Agreement()
    logger = logging.getLogger("segarch.runtimes")
    logger.addHandler(watcher)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # read by the watcher, not printed
    logging.getLogger().setLevel(logging.ERROR)  # ONNX Runtime's quantiser advises on the root logger
    for name, shape in (("unet.nuclei2d", (args.size2d,) * 2), ("unet.nuclei3d", (args.size3d,) * 3)):
        watcher.seen.clear()
        run(name, shape, args.repeats, watcher)


if __name__ == "__main__":
    main()
