"""Small batches and small inputs: every zoo network trains or says clearly why not (never PyTorch's bare error).

Batch norm needs more than one value per channel in training. With a batch of one image, a network's coarsest
batch-normalised map must have more than one position; a classifier that batch-normalises pooled features
(OSNet, STDC) needs two images whatever their size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segarch import zoo
from segarch.layers.batch_statistics import POOLED, single_value_error

pytestmark = pytest.mark.slow  # builds, runs and trains networks of the zoo

# Detectors train on boxes and masks (`net(x, targets)`), not on a dense loss: the shared zoo tester covers them.
NAMES = [n for n in zoo.names() if not getattr(zoo.card(n).builder, "is_detector", False)]


def _build(name: str, **options):
    return zoo.create(name, spatial_dims=2, in_channels=1, out_channels=2, **{**zoo.card(name).test_config, **options})


@pytest.mark.parametrize("name", NAMES)
def test_one_image_as_small_as_the_divisor_trains_or_raises_a_clear_error(name):
    torch.manual_seed(0)
    net = _build(name).train()
    side = zoo.card(name).size_divisor
    x = torch.randn(1, 1, side, side)
    try:
        y = net(x)
    except ValueError as err:
        message = str(err)
        assert "`x` of shape (1, 1, " in message and "at least 2" in message, message
        assert "Expected more than 1 value" not in message
        return
    assert torch.isfinite(y).all()


def test_semantic_fpn_at_small_widths_predicts_a_32_px_image():
    # P5 is 1x1 for a 32-px input: a group norm group of one channel would hold one value (the eval-mode crash).
    torch.manual_seed(0)
    for widths in ({"fpn_channels": 16, "head_channels": 8}, {"fpn_channels": 8, "head_channels": 4},
                   {"fpn_channels": 8, "head_channels": 2}):
        net = _build("semantic_fpn", **widths).eval()
        with torch.no_grad():
            y = net(torch.randn(1, 1, 32, 32))
        assert y.shape == (1, 2, 32, 32) and torch.isfinite(y).all()


def test_semantic_fpn_keeps_the_papers_32_groups_of_4_channels():
    with torch.device("meta"):
        net = zoo.create("semantic_fpn", **zoo.card("semantic_fpn").paper_config)
    norms = [m for m in net.branches.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 32 and m.num_channels == 128 for m in norms)


def test_lednet_one_image_needs_a_side_longer_than_64():
    torch.manual_seed(0)
    net = _build("lednet").train()
    with pytest.raises(ValueError, match=r"LEDNet cannot train on `x` of shape \(1, 1, 64, 64\).*1/64.*"
                                         r"at least 2.*\(72, 64\)"):
        net(torch.randn(1, 1, 64, 64))
    assert net(torch.randn(1, 1, 72, 64)).shape == (1, 2, 72, 64)  # the size the message suggests trains
    assert net(torch.randn(2, 1, 64, 64)).shape == (2, 2, 64, 64)  # so does a batch of 2
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)


@pytest.mark.parametrize("name,label", [("osnet", "OSNet"), ("stdc1", "STDC"), ("stdc2", "STDC")])
def test_classifiers_with_batch_normalised_pooled_features_need_two_images(name, label):
    torch.manual_seed(0)
    net = _build(name).train()
    side = 2 * zoo.card(name).size_divisor
    with pytest.raises(ValueError, match=rf"{label} cannot train on `x` of shape \(1, 1, {side}, {side}\): a batch "
                                         r"of 1 image.*at least 2 images"):
        net(torch.randn(1, 1, side, side))
    y = net(torch.randn(2, 1, side, side))
    y.square().mean().backward()
    assert y.shape == (2, 2)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, side, side)).shape == (1, 2)


def test_the_message_is_only_for_the_single_value_error():
    net = _build("unet").train()
    with pytest.raises(ValueError, match="multiples of"):  # other errors pass through unchanged
        net(torch.randn(1, 1, 17, 17))


@pytest.mark.parametrize("shape,stride,divisor,example", [((1, 3, 32, 32), 32, 32, "(64, 32)"),
                                                           ((1, 1, 16, 48), 64, 16, "(80, 48)"),
                                                           ((1, 1, 8, 8, 8), 8, 8, "(16, 8, 8)")])
def test_the_suggested_input_has_a_second_position_at_the_stride(shape, stride, divisor, example):
    message = str(single_value_error("Net", shape, stride, divisor))
    assert example in message and f"1/{stride}" in message
    suggested = tuple(int(s) for s in example.strip("()").split(", "))
    assert all(s % divisor == 0 for s in suggested)
    assert np.prod([-(-s // stride) for s in suggested]) > 1
    assert "a batch of 1 image" in str(single_value_error("Net", shape, POOLED))
