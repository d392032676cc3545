"""``segarch.predict`` on whole slides: the level nearest the model's µm/px, resampled the rest of the way,
the result's pixel size recorded with a pyramid; tissue detection leaves the glass uncomputed.

The slides are real pyramidal TIFFs (Aperio SVS layout and generic SubIFD TIFFs) written by tifffile.
The model is a 1×1 convolution ("dark pixels"), so the expected labels are computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("tiffslide")

import segarch  # noqa: E402
import segarch.io as io  # noqa: E402
from slide_helpers import tissue_slide, write_slide  # noqa: E402


class Dark(nn.Module):
    """Class 1 where the red channel is below ``threshold``; counts the tiles it runs."""

    size_divisor = 1
    tiles = 0

    def __init__(self, threshold: float = 200.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, 0] = -1.0
            self.conv.bias[1] = threshold

    def forward(self, x):
        assert torch.isfinite(x).all()
        type(self).tiles += x.shape[0]
        return self.conv(x)


def dark_model(pixel_size=(0.5, 0.5)):
    # "fcn" only names a zoo card; the network's own size_divisor applies.
    return segarch.Model(Dark(), arch="fcn", in_channels=3, out_channels=2, class_names=["background", "dark"],
                         preprocessing=[], pixel_size=list(pixel_size) if pixel_size else None)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    rgb, tissue = tissue_slide((512, 768), background=0.7, seed=int(np.random.default_rng().integers(1000)))
    root = tmp_path_factory.mktemp("slides")
    return {"svs": write_slide(root / "slide.svs", rgb, kind="svs", mpp=0.25, downsamples=(1, 4, 16)),
            "bare": write_slide(root / "bare.tif", rgb, kind="generic", mpp=None, downsamples=(1, 4, 16)),
            "rgb": rgb, "tissue": tissue}


def _expected_at_half(rgb, threshold=200.0):
    # Bilinear at pixel centres for a zoom of 1/2 is the mean of each 2×2 block.
    red = rgb[..., 0].astype(np.float64)
    half = np.rint((red[0::2, 0::2] + red[1::2, 0::2] + red[0::2, 1::2] + red[1::2, 1::2]) / 4)
    return (half < threshold).astype(np.uint8)


def test_a_slide_runs_at_the_model_s_pixel_size_and_the_result_records_it(slide, tmp_path):
    store = segarch.predict(dark_model((0.5, 0.5)), str(slide["svs"]), tile=64, out=str(tmp_path / "s.zarr"))
    labels = np.asarray(store)
    assert labels.shape == (256, 384)  # level 0 at 0.25 µm/px, halved
    assert (labels == _expected_at_half(slide["rgb"])).mean() > 0.999
    result = io.open_image(tmp_path / "s.zarr")
    assert result.scale[result.axes.index("Y")] == pytest.approx(0.5)
    assert result.scale[result.axes.index("X")] == pytest.approx(0.5)
    assert len(result.levels) > 1  # written with a pyramid
    import zarr

    settings = dict(zarr.open_group(str(tmp_path / "s.zarr")).attrs)["segarch"]["settings"]
    assert settings["source_pixel_size"] == pytest.approx([0.5, 0.5]) and settings["to_level0"] == [2.0, 2.0]


def test_a_level_that_has_the_model_s_pixel_size_is_read_as_it_is(slide):
    labels = segarch.predict(dark_model((1.0, 1.0)), str(slide["svs"]), tile=64)
    level1 = slide["rgb"][::4, ::4]
    np.testing.assert_array_equal(labels, (level1[..., 0] < 200).astype(np.uint8))


def test_a_slide_without_pixel_size_asks_for_it(slide):
    with pytest.raises(ValueError, match=r"has no pixel size in its metadata; pass `pixel_size=`"):
        segarch.predict(dark_model(), str(slide["bare"]), tile=64)
    labels = segarch.predict(dark_model(), str(slide["bare"]), tile=64, pixel_size=0.25)
    assert (labels == _expected_at_half(slide["rgb"])).mean() > 0.999


def test_tissue_only_leaves_the_glass_uncomputed_and_zero(slide):
    Dark.tiles = 0
    everything = segarch.predict(dark_model(), str(slide["svs"]), tile=32, batch_size=1)
    all_tiles, Dark.tiles = Dark.tiles, 0
    tissue_only = segarch.predict(dark_model(), str(slide["svs"]), tile=32, batch_size=1, tissue=True)
    assert 0 < Dark.tiles < all_tiles  # tiles on glass alone are not run
    mask = io.tissue_mask(io.open_image(slide["svs"]))
    rows = np.clip(((np.arange(everything.shape[0]) + 0.5) * 2 / mask.downsample[0]).astype(int), 0,
                   mask.mask.shape[0] - 1)
    cols = np.clip(((np.arange(everything.shape[1]) + 0.5) * 2 / mask.downsample[1]).astype(int), 0,
                   mask.mask.shape[1] - 1)
    on_tissue = mask.mask[np.ix_(rows, cols)]
    assert 0.1 < on_tissue.mean() < 0.6
    assert not tissue_only[~on_tissue].any()
    np.testing.assert_array_equal(tissue_only[on_tissue], everything[on_tissue])


def test_a_slide_result_converts_to_a_pyramidal_tiff_and_qupath_objects_in_level0_pixels(slide, tmp_path):
    import json

    pytest.importorskip("shapely")
    pytest.importorskip("rasterio")
    from segarch.io.convert import convert_store, store_vectors

    store = tmp_path / "s.zarr"
    labels = np.asarray(segarch.predict(dark_model((0.5, 0.5)), str(slide["svs"]), tile=64, out=str(store)))
    tif = convert_store(store, tmp_path / "s.tif")
    back = io.open_image(tif)
    assert back.scale[back.axes.index("Y")] == pytest.approx(0.5) and len(back.levels) > 1
    np.testing.assert_array_equal(np.asarray(back.levels[0]), labels)
    from segarch.io.convert import store_settings
    from segarch.io.tiff import read_annotations

    provenance = json.loads(read_annotations(tif)["segarch_provenance"])  # it travels into the OME-TIFF
    assert provenance == json.loads(json.dumps(store_settings(store), default=str))
    assert provenance["tile"] == [64, 64] and "weights_sha256" in json.dumps(provenance)
    objects = json.loads(store_vectors(store, tmp_path / "cells.geojson", qupath=True).read_text())
    xs = [x for f in objects["features"] for ring in f["geometry"]["coordinates"] for x, _ in ring]
    ys = [y for f in objects["features"] for ring in f["geometry"]["coordinates"] for _, y in ring]
    assert objects["features"] and max(xs) > 384 and max(xs) <= 768 and max(ys) <= 512  # level-0 pixels
