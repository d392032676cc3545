"""``segarch.predict(..., output="panoptic")``: refused with a reason fitted to the model, nothing written.

An instance-only model (a detector, or a network trained on a decoder's classes) predicts no classes of stuff,
so it has no panoptic output; a semantic model has no objects (the panoptic networks run through the tiled path:
tests/test_panoptic_predict*.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import segarch
from segarch import zoo
from segarch.models.model import Model


def _image():
    return np.random.default_rng().random((64, 64), dtype=np.float32)


def _refused(model, tmp_path, match):
    out = tmp_path / "panoptic.zarr"
    with pytest.raises(ValueError, match=match):
        segarch.predict(model, _image(), axes="YX", output="panoptic", out=str(out))
    assert not out.exists()


@pytest.mark.parametrize("name", ["mask_rcnn", "panet", "pointrend"])
def test_a_detector_is_instance_only(name, tmp_path):
    options = zoo.card(name).test_config
    model = Model.from_zoo(name, in_channels=1, out_channels=2, **options)
    _refused(model, tmp_path, rf"`output`='panoptic' is offered for the panoptic networks \('deeperlab', "
                              rf"'efficientps', 'panoptic_deeplab'\) only.*\({name!r}\) is an instance-only model.*"
                              r"no classes of stuff.*`output`='instances'.*efficientps")
    # the bare network too, named from the zoo's cards
    _refused(model.network, tmp_path, rf"\({name!r}\) is an instance-only model")


def test_a_model_trained_on_a_decoders_classes_is_instance_only(tmp_path):
    model = Model.from_zoo("unet", in_channels=1, out_channels=3, features=(4, 8, 16, 32, 64),
                           class_names=["background", "interior", "boundary"])
    _refused(model, tmp_path, r"\('unet'\) is an instance-only model")


def test_a_semantic_model_is_pointed_to_labels(tmp_path):
    model = Model.from_zoo("unet", in_channels=1, out_channels=2, features=(4, 8, 16, 32, 64))
    _refused(model, tmp_path, r"\('unet'\) predicts classes per pixel: use `output`='labels'")
