"""The shipped models: listed, carded, loadable, and as good on fresh generated data as their cards say."""

from __future__ import annotations

import numpy as np
import pytest

import segarch
from segarch import pretrained
from segarch.synthetic import dataset
from segarch.training.metrics import dice_per_class

pytestmark = pytest.mark.slow  # trains models

MARGIN = 0.08  # fresh images differ from the card's test set; the card's Dice minus this must hold


def test_names_and_cards():
    assert {"unet.nuclei2d", "unet.nuclei3d"} <= set(pretrained.names())
    assert set(pretrained.names(task="semantic")) == {"unet.nuclei2d", "unet.nuclei3d", "unet.landcover4"}
    assert pretrained.names(task="interactive") == ["dextr_light.clicks2d", "dextr_light.clicks3d",
                                                    "dextr_light.objects2d", "dextr_light.objects3d"]
    for name in ("unet.nuclei2d", "unet.nuclei3d"):  # unet.landcover4: tests/test_landcover_model.py
        card = pretrained.card(name)
        assert card["name"] == name and card["arch"] in segarch.zoo.names()
        assert card["test"]["dice_nucleus"] > 0.5 and card["training"]["steps"] > 0
        assert pretrained.path(name).stat().st_size < 5 * 2 ** 20  # a few MB at most
        model = pretrained.load(name)
        assert model.trained and model.class_names == ["background", "nucleus"]
        assert model.spatial_dims == card["spatial_dims"] and model.num_parameters == card["parameters"]
    with pytest.raises(ValueError, match="Did you mean 'unet.nuclei2d'"):
        pretrained.load("unet.nuclei_2d")


@pytest.mark.parametrize("old, new", sorted(pretrained.FORMER_NAMES.items()))
def test_former_names_still_load_and_warn(old, new):
    with pytest.warns(FutureWarning, match=rf"The shipped model name '{old}' is deprecated: use '{new}'"):
        model = pretrained.load(old)
    assert model.name == new and pretrained.card(new)["arch"] == model.arch


@pytest.mark.parametrize("name, n, shape", [("unet.nuclei2d", 4, (192, 192)), ("unet.nuclei3d", 2, (40, 96, 96))])
def test_shipped_models_reach_their_stated_dice_on_fresh_data(name, n, shape):
    model = pretrained.load(name)
    stated = pretrained.card(name)["test"]["dice_nucleus"]
    images, labels = dataset(n, shape, seed=777)  # seeds used neither for training nor for the card
    preds = [np.asarray(segarch.predict(model, im, device="cpu")) for im in images]
    dice = dice_per_class(np.concatenate([p.ravel() for p in preds]),
                          np.concatenate([(lab > 0).ravel() for lab in labels]), num_classes=2)[1]
    assert dice >= stated - MARGIN, f"{name}: Dice {dice:.3f} on fresh data, the card states {stated:.3f}"


def test_demo_uses_the_shipped_model(capsys):
    from segarch.cli import main

    # (With no --model, the 2D demo shows the shipped instance model: tests/test_cli_instances.py.)
    assert main(["demo", "--size", "128", "--model", "unet.nuclei2d"]) == 0
    out = capsys.readouterr().out
    assert "trained" in out and "untrained" not in out
    dice = float(out.split("Dice of the labels against the generated ground truth: ")[1].split()[0])
    assert dice > 0.8  # the simple demo image (segarch.samples.nuclei) is segmented properly
