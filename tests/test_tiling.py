"""The tiled inference engine: stitching, axes, outputs, resume, cancel, cluster, and its errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import segarch
from segarch.tiling.grid import axis_grid


class SmallConvNet(nn.Module):
    """Two 3×3(×3) convolutions: a receptive-field radius of 2 pixels."""

    def __init__(self, dims: int, in_channels: int = 1, out_channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        torch.manual_seed(seed)
        self.spatial_dims = dims
        self.body = nn.Sequential(conv(in_channels, 6, 3, padding=1), nn.Tanh(), conv(6, out_channels, 3, padding=1))

    def forward(self, x):
        return self.body(x)


class StridedNet(SmallConvNet):
    """Down-samples by 2 and back: tiles must keep the pixel phase (size_divisor 2)."""

    size_divisor = 2

    def __init__(self, dims: int) -> None:
        super().__init__(dims)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.down = conv(1, 1, 2, stride=2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        return self.body(self.up(self.down(x)))


def assert_labels_match(labels: np.ndarray, probabilities: np.ndarray, tolerance: float = 1e-5) -> None:
    """``labels`` equal the argmax of ``probabilities`` wherever the top two classes are not a float tie
    (the engine runs convolutions channels-last, which rounds differently from the reference pass)."""
    top2 = np.sort(probabilities, axis=0)[-2:]
    decided = (top2[1] - top2[0]) > tolerance
    np.testing.assert_array_equal(labels[decided], probabilities.argmax(0)[decided])
    assert decided.mean() > 0.99


def whole_image_probabilities(net: nn.Module, image: np.ndarray, divisor: int = 1) -> np.ndarray:
    pad = [(0, -(-s // divisor) * divisor - s) for s in image.shape]
    x = torch.from_numpy(np.pad(image, pad, mode="reflect").astype(np.float32))[None, None]
    with torch.inference_mode():
        logits = net(x)[0][(slice(None),) + tuple(slice(0, s) for s in image.shape)]
    return torch.softmax(logits, 0).numpy()


@pytest.mark.parametrize("dims,shape,tile", [
    (2, (203, 157), 64),      # odd sizes, many tiles
    (2, (37, 250), 64),       # smaller than a tile along one axis
    (2, (21, 30), 64),        # smaller than a tile along both
    (3, (23, 41, 37), 16),
    (3, (9, 70, 12), 24),
])
def test_crop_blend_equals_whole_image_forward(dims, shape, tile):
    rng = np.random.default_rng()
    image = rng.normal(size=shape).astype(np.float32)
    net = SmallConvNet(dims, seed=int(rng.integers(1000))).eval()
    tiled = segarch.predict(net, image, axes="ZYX"[-dims:], tile=tile, overlap=2, blend="crop", output="probabilities")
    np.testing.assert_allclose(tiled, whole_image_probabilities(net, image), atol=1e-5)
    labels = segarch.predict(net, image, axes="ZYX"[-dims:], tile=tile, overlap=2, blend="crop")
    assert_labels_match(labels, whole_image_probabilities(net, image))


@pytest.mark.parametrize("dims,shape", [(2, (101, 77)), (3, (19, 33, 27))])
def test_tiles_keep_the_pixel_phase_of_downsampling_nets(dims, shape):
    image = np.random.default_rng().normal(size=shape).astype(np.float32)
    net = StridedNet(dims).eval()
    tiled = segarch.predict(net, image, axes="ZYX"[-dims:], tile=16, overlap=4, blend="crop", output="probabilities")
    np.testing.assert_allclose(tiled, whole_image_probabilities(net, image, divisor=2), atol=1e-5)


def test_gaussian_blending_leaves_no_seam_on_tile_borders():
    # A smooth input; a net with zero padding whose tile outputs disagree near tile edges.
    yy, xx = np.mgrid[0:300, 0:300] / 300.0
    image = (np.sin(3 * yy) + np.cos(2 * xx)).astype(np.float32)
    net = SmallConvNet(2, out_channels=2, seed=3).eval()
    tile, overlap = 64, 16
    grid = axis_grid(300, tile, overlap, 1, "gaussian")
    borders = sorted({s for s in grid.starts if s > 0} | {s + tile for s in grid.starts if s + tile < 300})

    def seam_ratio(blend: str) -> float:
        prob = segarch.predict(net, image, axes="YX", tile=tile, overlap=0.25, blend=blend, output="probabilities")[1]
        grad = np.abs(np.diff(prob, axis=1))  # between column x-1 and x
        on_border = grad[:, [b - 1 for b in borders]].mean()
        return on_border / grad.mean()

    assert seam_ratio("gaussian") <= 1.0
    # The measure can fail: with no overlap the tile edges show.
    no_overlap = segarch.predict(net, image, axes="YX", tile=tile, overlap=0.0, blend="constant",
                                 output="probabilities")[1]
    grad = np.abs(np.diff(no_overlap, axis=1))
    edges = [s - 1 for s in axis_grid(300, tile, 0, 1, "constant").starts if s > 0]
    assert grad[:, edges].mean() > 1.5 * grad.mean()


def test_2d_model_segments_a_stack_slice_by_slice_and_loops_time():
    rng = np.random.default_rng()
    net = SmallConvNet(2).eval()
    stack = rng.normal(size=(2, 3, 40, 50)).astype(np.float32)
    out = segarch.predict(net, stack, axes="TZYX", tile=32, overlap=4, blend="crop")
    assert out.shape == stack.shape
    for t in range(2):
        for z in range(3):
            assert_labels_match(out[t, z], whole_image_probabilities(net, stack[t, z]))


def test_channels_anywhere_and_probabilities_axes():
    rng = np.random.default_rng()
    net = SmallConvNet(2, in_channels=3).eval()
    rgb = rng.normal(size=(45, 38, 3)).astype(np.float32)
    probs = segarch.predict(net, rgb, axes="YXC", tile=32, overlap=4, blend="crop", output="probabilities")
    assert probs.shape == (3, 45, 38) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, whole_image_probabilities_c(net, np.moveaxis(rgb, -1, 0)), atol=1e-5)
    assert segarch.predict(net, np.moveaxis(rgb, -1, 0), tile=32).shape == (45, 38)  # "CYX" inferred


def whole_image_probabilities_c(net, image):
    with torch.inference_mode():
        return torch.softmax(net(torch.from_numpy(image)[None])[0], 0).numpy()


def test_model_preprocessing_is_frozen_over_the_whole_image():
    rng = np.random.default_rng()
    net = SmallConvNet(2, out_channels=2).eval()
    net.size_divisor = 1  # the engine asks the network first, the architecture's card second
    model = segarch.Model(net, "unet", out_channels=2)
    image = rng.gamma(2.0, 100.0, size=(150, 130)).astype(np.float32)
    image[:20] *= 5  # a bright band: per-tile percentiles would give tiles different contrasts
    lo, hi = np.percentile(image, [1, 99])
    normalised = np.clip((image - lo) / (hi - lo), 0, 1)
    tiled = segarch.predict(model, image, tile=32, overlap=4, blend="crop", output="probabilities")
    expected = whole_image_probabilities(model.network, normalised)
    # Percentiles are measured on a sample of tiles, so they match the whole image's closely, not exactly.
    np.testing.assert_allclose(tiled, expected, atol=2e-2)


@pytest.mark.slow
def test_zoo_model_on_lazy_inputs_equals_numpy(tmp_path):
    import dask.array as da
    import tifffile
    import zarr

    torch.manual_seed(0)
    model = segarch.Model.from_zoo("unet", features=(4, 8, 16), norm="batch")
    model.network.eval()
    image = (np.random.default_rng().random((150, 170)) * 1000).astype(np.uint16)
    expected = segarch.predict(model, image, tile=64)
    store = zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=image.shape, chunks=(64, 64), dtype=image.dtype)
    store[:] = image
    tifffile.imwrite(tmp_path / "img.tif", image, tile=(64, 64))
    np.save(tmp_path / "img.npy", image)
    for source in (da.from_array(image, chunks=50), store, str(tmp_path / "img.zarr"), tmp_path / "img.tif",
                   str(tmp_path / "img.npy")):
        np.testing.assert_array_equal(segarch.predict(model, source, tile=64), expected)


def test_zarr_output_is_ome_zarr_and_refuses_to_clobber(tmp_path):
    import zarr

    net = SmallConvNet(2).eval()
    image = np.random.default_rng().normal(size=(130, 90)).astype(np.float32)
    expected = segarch.predict(net, image, axes="YX", tile=32)
    out = segarch.predict(net, image, axes="YX", tile=32, out=tmp_path / "seg.zarr")
    assert isinstance(out, zarr.Array)
    np.testing.assert_array_equal(out[:], expected)
    group = zarr.open_group(str(tmp_path / "seg.zarr"), mode="r")
    ome = group.attrs["ome"]  # NGFF 0.5 on Zarr v3: nested under "ome"
    assert ome["version"] == "0.5" and [a["name"] for a in ome["multiscales"][0]["axes"]] == ["y", "x"]
    assert "image-label" in ome and group.attrs["segarch"]["settings"]["tile"] == [32, 32]
    assert group["0"].attrs["complete"] is True
    with pytest.raises(ValueError, match="already exists; pass resume=True"):
        segarch.predict(net, image, axes="YX", tile=32, out=tmp_path / "seg.zarr")
    with pytest.raises(ValueError, match="holds a run with other settings"):
        segarch.predict(net, image, axes="YX", tile=48, out=tmp_path / "seg.zarr", resume=True)
    again = segarch.predict(net, image, axes="YX", tile=32, out=tmp_path / "seg.zarr", overwrite=True)
    np.testing.assert_array_equal(again[:], expected)


def test_an_open_ome_zarr_group_is_read_at_full_resolution_with_its_axes(tmp_path):
    import zarr

    net = SmallConvNet(2).eval()
    image = np.random.default_rng().normal(size=(96, 80)).astype(np.float32)
    segarch.io.write_ome_zarr(tmp_path / "im.zarr", image, axes="YX", levels=2)
    group = zarr.open_group(str(tmp_path / "im.zarr"), mode="r")
    expected = segarch.predict(net, image, axes="YX", tile=32)
    np.testing.assert_array_equal(segarch.predict(net, group, tile=32), expected)  # axes from the metadata
    np.testing.assert_array_equal(segarch.predict(net, str(tmp_path / "im.zarr"), tile=32), expected)


def test_cancel_stops_within_a_batch_and_resume_completes(tmp_path):
    net = SmallConvNet(2).eval()
    image = np.random.default_rng().normal(size=(1100, 300)).astype(np.float32)
    reference = segarch.predict(net, image, axes="YX", tile=64)
    cancel = threading.Event()
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 60:
            cancel.set()

    with pytest.raises(segarch.PredictionCancelled) as err:
        segarch.predict(net, image, axes="YX", tile=64, batch_size=2, out=tmp_path / "c.zarr",
                        progress=progress, cancel=cancel)
    assert len(calls) == 60  # not one batch more
    partial = err.value.output
    assert 0 < err.value.blocks_done < err.value.blocks_total
    assert partial.attrs["complete"] is False
    resumed = segarch.predict(net, image, axes="YX", tile=64, batch_size=2, out=tmp_path / "c.zarr", resume=True)
    np.testing.assert_array_equal(resumed[:], reference)


KILLED_RUN = """
import os, signal, sys
import numpy as np, torch
sys.path.insert(0, {tests!r})
from test_tiling import SmallConvNet
import segarch
image = np.load({image!r})
net = SmallConvNet(2).eval()
def progress(done, total):
    if done >= total // 2:
        os.kill(os.getpid(), signal.SIGKILL)
segarch.predict(net, image, axes="YX", tile=64, batch_size=4, out={out!r}, progress=progress)
"""


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_to_identical_bytes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    image = np.random.default_rng().normal(size=(1200, 1000)).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    code = KILLED_RUN.format(tests=str(Path(__file__).parent), image=str(tmp_path / "image.npy"),
                             out=str(tmp_path / "killed.zarr"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == -9, result.stderr
    from segarch.tiling.output import finished_blocks

    assert 0 < len(finished_blocks(tmp_path / "killed.zarr"))
    net = SmallConvNet(2).eval()
    resumed = segarch.predict(net, image, axes="YX", tile=64, batch_size=4, out=tmp_path / "killed.zarr", resume=True)
    clean = segarch.predict(net, image, axes="YX", tile=64, batch_size=4, out=tmp_path / "clean.zarr")
    assert resumed[:].tobytes() == clean[:].tobytes()


@pytest.mark.slow
def test_dask_cluster_gives_the_single_process_result(tmp_path):
    from distributed import Client, LocalCluster

    net = SmallConvNet(2).eval()
    image = np.random.default_rng().normal(size=(700, 650)).astype(np.float32)
    single = segarch.predict(net, image, axes="YX", tile=64, output="probabilities")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        seen = []
        out = segarch.predict(net, image, axes="YX", tile=64, output="probabilities", out=tmp_path / "d.zarr",
                              scheduler=client, progress=lambda d, t: seen.append((d, t)))
        workers = {w for w in client.run(lambda: 1)}
    assert len(workers) == 2
    np.testing.assert_allclose(out[:], single, atol=1e-6)
    assert seen[-1][0] == seen[-1][1]


@pytest.mark.parametrize("kwargs,message", [
    ({"axes": "YXQ"}, "`axes`='YXQ' is not valid"),
    ({"axes": "ZYX"}, "has 3 axes but the image has 2"),
    ({"axes": "CX"}, "lacks Y"),
    ({"tile": 30}, r"`tile`=30 must be a multiple of the model's size_divisor 4; e.g. \(32, 32\)"),
    ({"tile": (32,)}, "`tile` must be a positive int or 2 positive ints"),
    ({"overlap": 1.0}, r"`overlap` must be a fraction in \[0, 1\)"),
    ({"overlap": 20}, r"2 × halo < tile \(32\)"),
    ({"blend": "max"}, "`blend` must be one of"),
    ({"output": "logits"}, "`output` must be one of"),
    ({"batch_size": 0}, "`batch_size` must be a positive integer"),
    ({"device": "tpu"}, "`device` must be"),
    ({"device": "cuda:7"}, "is not available here"),
])
def test_bad_parameters_are_named_and_nothing_is_written(tmp_path, kwargs, message):
    model = segarch.Model.from_zoo("unet", features=(4, 8, 16))
    kwargs = {"tile": 32} | kwargs
    with pytest.raises(ValueError, match=message):
        segarch.predict(model, np.zeros((40, 40), np.float32), out=tmp_path / "o.zarr", **kwargs)
    assert not (tmp_path / "o.zarr").exists()


def test_bad_images(tmp_path):
    import zarr

    model = segarch.Model.from_zoo("unet", features=(4, 8, 16), in_channels=2)
    with pytest.raises(ValueError, match=r"Channel mismatch: the model expects `in_channels`=2 .* C axis has 3"):
        segarch.predict(model, np.zeros((3, 40, 40), np.float32), axes="CYX")
    with pytest.raises(ValueError, match="`axes` cannot be inferred"):
        segarch.predict(model, np.zeros((4, 5, 40, 40), np.float32))
    with pytest.raises(ValueError, match="is empty"):
        segarch.predict(model, np.zeros((2, 0, 40), np.float32))
    with pytest.raises(ValueError, match="must hold numbers"):
        segarch.predict(model, np.array([["a"]]))
    image = np.zeros((2, 40, 40), np.float32)
    image[1, 7, 9] = np.nan
    image[0, 30, 1] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN or inf values, the first at index \(0, 30, 1\)"):
        segarch.predict(model, image, out=tmp_path / "n.zarr")
    assert not (tmp_path / "n.zarr").exists()
    lazy = zarr.open_array(str(tmp_path / "lazy.zarr"), mode="w", shape=image.shape, dtype=image.dtype)
    lazy[:] = image
    with pytest.raises(ValueError, match=r"holds NaN or inf: .* first at \{'C': 0, 'Y': 30, 'X': 1\}"):
        segarch.predict(model, lazy, tile=32)
    with pytest.raises(ValueError, match="`axes` is required with a bare torch.nn.Module"):
        segarch.predict(nn.Conv2d(1, 2, 3, padding=1), np.zeros((8, 8), np.float32))
    with pytest.raises(FileNotFoundError):
        segarch.predict(model, tmp_path / "absent.zarr")
