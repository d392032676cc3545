"""Whole slides through tiffslide: levels and µm/px, the level picked for a pixel size, tissue detection.

The slides are generated (tests/slide_helpers.py) and written as real pyramidal TIFFs, in the Aperio
SVS layout and as generic tiled TIFFs with SubIFD levels and resolution tags.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

pytest.importorskip("tiffslide")

import segarch.io as io  # noqa: E402
from slide_helpers import tissue_slide, write_slide  # noqa: E402


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    # A fresh slide each run; the seed is in the file name, so a failure names it.
    seed = int(np.random.default_rng().integers(2 ** 31))
    rgb, tissue = tissue_slide((1536, 2048), background=0.7, seed=seed)
    path = write_slide(tmp_path_factory.mktemp("slides") / f"biopsy-seed{seed}.svs", rgb, mpp=0.25,
                       downsamples=(1, 4, 16))
    return path, rgb, tissue


def test_svs_opens_lazily_with_levels_and_microns_per_pixel(slide):
    path, rgb, _ = slide
    image = io.open_image(path)
    assert "slide" in image.metadata  # a vendor slide goes through tiffslide
    assert image.axes == "YXC" and image.units == {"Y": "micrometer", "X": "micrometer"}
    assert [lv.shape for lv in image.levels] == [(1536, 2048, 3), (384, 512, 3), (96, 128, 3)]
    assert image.metadata["slide"]["mpp"] == (0.25, 0.25) and image.metadata["slide"]["vendor"] == "aperio"
    assert [s[:2] for s in image.level_scales] == [(0.25, 0.25), (1.0, 1.0), (4.0, 4.0)]
    np.testing.assert_array_equal(image.levels[0][700:833, 1001:1290].compute(), rgb[700:833, 1001:1290])
    np.testing.assert_array_equal(image.levels[1].compute(), rgb[::4, ::4])


@pytest.mark.parametrize("target, level, zoom", [
    (0.25, 0, 1.0),      # level 0 is exactly it
    (0.5, 0, 0.5),       # 0.25 and 1.0 are equally far (×2) from 0.5: the finer one, halved
    (0.8, 1, 1.25),      # nearest is 1.0 µm/px, enlarged by 1.25 to reach 0.8
    (3.0, 2, 4 / 3),
    (40.0, 2, 0.1),      # coarser than any level: the coarsest, shrunk
])
def test_the_level_nearest_a_pixel_size_is_picked_with_the_zoom_left(slide, target, level, zoom):
    choice = io.pick_level(io.open_image(slide[0]), target)
    assert choice.level == level and choice.zoom == pytest.approx((zoom, zoom))
    assert choice.exact == (zoom == 1.0)
    assert choice.pixel_size[0] * 1 == pytest.approx(target * zoom)


def test_prefer_finer_never_enlarges(slide):
    image = io.open_image(slide[0])
    choice = io.pick_level(image, 0.8, prefer="finer")
    assert choice.level == 0 and choice.zoom == pytest.approx((0.3125, 0.3125))
    with pytest.raises(ValueError, match="`prefer` must be"):
        io.pick_level(image, 0.8, prefer="closest")


def test_generic_pyramidal_tiff_with_resolution_tags(tmp_path):
    rgb, _ = tissue_slide((512, 768), seed=3)
    path = write_slide(tmp_path / "scan.tif", rgb, kind="generic", mpp=0.5, downsamples=(1, 2, 4))
    image = io.read_slide(path)
    assert image.metadata["slide"]["mpp"] == pytest.approx((0.5, 0.5))
    assert [lv.shape[:2] for lv in image.levels] == [(512, 768), (256, 384), (128, 192)]
    assert io.pick_level(image, 2.0).level == 2
    # open_image keeps generic pyramidal TIFFs on tifffile (no vendor description), with the same levels
    plain = io.open_image(path)
    assert "slide" not in plain.metadata and [lv.shape for lv in plain.levels] == [lv.shape for lv in image.levels]


def test_a_slide_with_no_pixel_size_asks_for_pixel_size(tmp_path):
    rgb, _ = tissue_slide((512, 512), seed=4)
    path = write_slide(tmp_path / "unknown.tif", rgb, kind="generic", mpp=None, downsamples=(1, 4))
    image = io.read_slide(path)  # opening works: pixels need no size
    assert image.metadata["slide"]["mpp"] is None and image.units == {}
    with pytest.raises(ValueError, match=r"unknown.tif.*no pixel size.*`pixel_size=`"):
        io.pick_level(image, 0.5)
    assert io.pick_level(image, 1.0, pixel_size=0.25).level == 1  # ... and with it, the level is found
    given = io.read_slide(path, pixel_size=0.25)
    assert given.scale[:2] == (0.25, 0.25) and given.metadata["slide"]["mpp_from"] == "pixel_size"
    with pytest.raises(ValueError, match="`pixel_size` must be a positive number"):
        io.read_slide(path, pixel_size=-1)


def test_tissue_detection_finds_the_tissue_on_a_slide_with_70_percent_background(slide):
    path, _, tissue = slide
    image = io.open_image(path)
    found = io.tissue_mask(image)
    assert found.level == 1 and not found.uniform  # 512 px wide: the coarsest level of at least 512
    truth = tissue[::4, ::4]
    iou = (found.mask & truth).sum() / (found.mask | truth).sum()
    assert iou > 0.9, (iou, path.name)
    assert found.fraction == pytest.approx(0.3, abs=0.04)
    # A tile grid over level 0: every tile that holds tissue is kept; most glass tiles are skipped.
    grid = found.tiles(256)
    truth_grid = np.array([[tissue[i * 256:(i + 1) * 256, j * 256:(j + 1) * 256].any() for j in range(8)]
                           for i in range(6)])
    assert grid.shape == (6, 8)
    assert not (truth_grid & ~grid).any(), f"a tile with tissue would be skipped ({path.name})"
    assert (~grid).sum() >= 0.8 * (~truth_grid).sum()
    assert found.has_tissue(slice(0, 1536), slice(0, 2048)) and found.region_fraction((0, 1536), (0, 2048)) > 0.2


def test_tissue_detection_on_blank_glass_and_on_all_tissue(tmp_path):
    rng = np.random.default_rng(5)
    glass = np.clip(rng.normal(238, 3, (256, 256, 3)), 0, 255).astype(np.uint8)
    tissue = np.clip(rng.normal((200, 120, 170), 25, (256, 256, 3)), 0, 255).astype(np.uint8)
    for rgb, expected in ((glass, False), (tissue, True)):
        image = io.read_slide(write_slide(tmp_path / f"{expected}.svs", rgb, downsamples=(1, 4)))
        found = io.tissue_mask(image)
        assert found.uniform and found.mask.all() == expected and found.mask.any() == expected


def test_without_tiffslide_the_message_names_the_extra_and_svs_still_opens(slide, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tiffslide", None)
    with pytest.raises(ImportError, match=r"napari-segarch\[slides\]"):
        io.read_slide(slide[0])
    with caplog.at_level(logging.WARNING, logger="segarch.io.api"):
        image = io.open_image(slide[0])
    assert "slide" not in image.metadata and "napari-segarch[slides]" in caplog.text
    assert image.scale[:2] == (0.25, 0.25)  # tifffile reads the Aperio MPP too


def test_a_foreign_file_named_svs_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "fake.svs"
    bad.write_bytes(b"II*\x00" + b"\x00" * 32)
    with pytest.raises(ValueError, match="fake.svs"):
        io.read_slide(bad)
    with pytest.raises(ValueError, match="fake.svs"):
        io.open_image(bad)
