"""Pre-processing has one home: the allow-list, and the Preprocessor whose percentiles are measured over a
whole image (as predict, training and Model.preprocess apply them)."""

from __future__ import annotations

import numpy as np
import pytest

import segarch
from segarch.preprocessing import Preprocessor


@pytest.mark.parametrize("step", [
    {"lower": 1, "upper": 99, "b_min": 0.0, "b_max": 1.0, "clip": True, "channel_wise": True},
    {"lower": 5, "upper": 95, "b_min": -1.0, "b_max": 2.0, "clip": False, "channel_wise": False},
    {"lower": 10, "upper": 90, "b_min": 0.0, "b_max": 10.0, "clip": True, "relative": True, "channel_wise": True},
    {"lower": 2, "upper": 98, "b_min": None, "b_max": None, "channel_wise": True},
])
def test_frozen_percentiles_equal_monai_on_the_whole_image(step):
    from monai.transforms import ScaleIntensityRangePercentiles

    rng = np.random.default_rng()
    image = np.stack([rng.normal(100, 10, (30, 20)), rng.gamma(2.0, 500, (30, 20))]).astype(np.float32)
    config = [{"_target_": "ScaleIntensityRangePercentiles", **step}]
    expected = np.asarray(ScaleIntensityRangePercentiles(**step)(image))
    model = segarch.Model.from_zoo("unet", in_channels=2, features=(4, 8, 16))
    model.preprocessing = config
    np.testing.assert_allclose(model.preprocess(image), expected, rtol=1e-4, atol=1e-4)
    frozen = Preprocessor.for_image(config, lambda: image.reshape(2, -1))
    np.testing.assert_allclose(frozen(image[:, :7, :5]), expected[:, :7, :5], rtol=1e-4, atol=1e-4)  # a tile


def test_the_image_is_sampled_only_for_percentiles():
    def refuse():
        raise AssertionError("sampled without a percentile step")

    steps = [{"_target_": "ScaleIntensityRange", "a_min": 0, "a_max": 10, "b_min": 0, "b_max": 1, "clip": True}]
    frozen = Preprocessor.for_image(steps, refuse)
    np.testing.assert_allclose(frozen(np.full((1, 2, 2), 20.0)), np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="not an allowed transform"):
        Preprocessor.for_image([{"_target_": "os.system"}], refuse)
