"""``segarch.predict(..., output="panoptic")``: refused with a reason fitted to the model, nothing written.

An instance-only model (a detector, or a network trained on a decoder's classes) predicts no classes of stuff,
so it has no panoptic output; a panoptic network is fused per image by its own decoder, outside the tiled path.
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
    _refused(model, tmp_path, rf"`output`='panoptic' is not offered.*\({name!r}\) is an instance-only model.*"
                              r"no classes of stuff.*`output`='instances'.*efficientps")
    # the bare network too, named from the zoo's cards
    _refused(model.network, tmp_path, rf"\({name!r}\) is an instance-only model")


def test_a_model_trained_on_a_decoders_classes_is_instance_only(tmp_path):
    model = Model.from_zoo("unet", in_channels=1, out_channels=3, features=(4, 8, 16, 32, 64),
                           class_names=["background", "interior", "boundary"])
    _refused(model, tmp_path, r"\('unet'\) is an instance-only model")


@pytest.mark.parametrize("name,fusion", [("efficientps", "EfficientPSFusion"),
                                         ("panoptic_deeplab", "PanopticDeepLabDecoder"),
                                         ("deeperlab", "DeeperLabDecoder")])
def test_a_panoptic_network_is_pointed_to_its_fusion(name, fusion, tmp_path):
    network = zoo.create(name, in_channels=1, out_channels=2, **zoo.card(name).test_config)
    _refused(network, tmp_path, rf"`model` is {name!r}, a panoptic network; fuse one image's outputs with "
                                rf"segarch\.instances\.\w+\.{fusion}")


def test_a_semantic_model_is_pointed_to_labels(tmp_path):
    model = Model.from_zoo("unet", in_channels=1, out_channels=2, features=(4, 8, 16, 32, 64))
    _refused(model, tmp_path, r"\('unet'\) predicts classes per pixel: use `output`='labels'")
