"""The shipped land-cover model ``unet.landcover4`` end to end: a fresh generated 4-band scene written as a
GeoTIFF (bands in another order, a nodata corner) segmented from the file; Dice per class at least the
card's, with a margin; the result keeps the scene's CRS and transform."""

from __future__ import annotations

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

import segarch  # noqa: E402
from segarch import io, pretrained  # noqa: E402
from segarch.samples import SATELLITE_CLASSES, multispectral  # noqa: E402
from segarch.training.metrics import dice_per_class  # noqa: E402

NAME = "unet.landcover4"
MARGIN = 0.1
#: Every class, buildings too: the card's Dice (8 scenes) and this test's (2 other scenes) are all well above it.
FLOOR = 0.6


def test_the_card_states_dice_per_class_and_the_bands():
    card = pretrained.card(NAME)
    assert set(card["test"]["dice"]) == set(SATELLITE_CLASSES)
    assert min(card["test"]["dice"].values()) >= FLOOR  # buildings included
    assert pretrained.path(NAME).stat().st_size < 5 * 2 ** 20  # a few MB at most
    assert card["bands"] == ["red", "green", "blue", "nir"]
    model = pretrained.load(NAME)
    assert model.bands == card["bands"] and model.in_channels == 4 and model.class_names == list(SATELLITE_CLASSES)


def test_a_fresh_scene_from_a_geotiff_reaches_the_stated_dice(tmp_path):
    model = pretrained.load(NAME)
    stated = pretrained.card(NAME)["test"]["dice"]
    preds, truths = [], []
    for i, season in enumerate(("spring", "autumn")):
        scene = multispectral((256, 256), season=season, seed=7700 + i, nodata_corner=True)
        # The file holds the bands as nir, blue, green, red: predict picks the model's order by name.
        order = [3, 2, 1, 0]
        from dataclasses import replace

        geo = replace(scene.geo, band_names=tuple(scene.band_names[j] for j in order))
        path = io.write_geotiff(tmp_path / f"scene{i}.tif", scene.image[order], geo)
        out = tmp_path / f"labels{i}.zarr"
        labels = np.asarray(segarch.predict(model, str(path), out=str(out), device="cpu"))
        assert io.open_image(out).geo.transform == scene.geo.transform
        valid = scene.labels != 255
        assert not labels[~valid].any()  # the nodata corner is 0
        preds.append(labels[valid])
        truths.append(scene.labels[valid])
    dice = dice_per_class(np.concatenate(preds), np.concatenate(truths), num_classes=len(SATELLITE_CLASSES))
    for c in SATELLITE_CLASSES:
        got = dice[SATELLITE_CLASSES.index(c)]
        assert got >= stated[c] - MARGIN, f"{c}: Dice {got:.3f} on fresh scenes, the card states {stated[c]:.3f}"
        assert got >= FLOOR, f"{c}: Dice {got:.3f} on fresh scenes, below {FLOOR}"
